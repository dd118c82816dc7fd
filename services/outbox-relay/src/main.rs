//! outbox-relay binary: configuration from the environment, then [`outbox_relay::build`] under
//! the shared service runtime, or an operation ([`outbox_relay::ops`]) when a subcommand is given.

use std::process::ExitCode;

use clap::Parser;
use outbox_relay::{Config, ops::Command};

#[tokio::main]
async fn main() -> ExitCode {
    let config = Config::parse();
    match config.command.clone() {
        Some(Command::Quarantine(command)) => outbox_relay::ops::quarantine(&config, command).await,
        None => orders_runtime::serve(config, outbox_relay::build).await,
    }
}
