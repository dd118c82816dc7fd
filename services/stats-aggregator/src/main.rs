//! stats-aggregator binary: configuration from the environment, then [`stats_aggregator::build`] under
//! the shared service runtime.

use std::process::ExitCode;

use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    orders_runtime::serve(stats_aggregator::Config::parse(), stats_aggregator::build).await
}
