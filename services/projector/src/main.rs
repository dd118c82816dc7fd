//! projector binary: configuration from the environment, then [`projector::build`] under
//! the shared service runtime.

use std::process::ExitCode;

use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    orders_runtime::serve(projector::Config::parse(), projector::build).await
}
