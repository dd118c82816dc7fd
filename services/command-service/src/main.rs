//! command-service binary: configuration from the environment, then [`command_service::build`] under
//! the shared service runtime.

use std::process::ExitCode;

use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    orders_runtime::serve(command_service::Config::parse(), command_service::build).await
}
