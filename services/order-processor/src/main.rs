//! order-processor binary: configuration from the environment, then [`order_processor::build`] under
//! the shared service runtime, or an operation ([`order_processor::ops`]) when a subcommand is given.

use std::process::ExitCode;

use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    let config = order_processor::Config::parse();
    match config.command.clone() {
        Some(command) => order_processor::ops::run(&config, command).await,
        None => orders_runtime::serve(config, order_processor::build).await,
    }
}
