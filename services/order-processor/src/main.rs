//! order-processor binary: configuration from the environment, then [`order_processor::build`] under
//! the shared service runtime.

use std::process::ExitCode;

use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    orders_runtime::serve(order_processor::Config::parse(), order_processor::build).await
}
