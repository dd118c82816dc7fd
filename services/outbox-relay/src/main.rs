//! outbox-relay binary: configuration from the environment, then [`outbox_relay::build`] under
//! the shared service runtime.

use std::process::ExitCode;

use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    orders_runtime::serve(outbox_relay::Config::parse(), outbox_relay::build).await
}
