//! orders-load: the load generator and the reconciliation (see the library's docs).

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use orders_load::{access, load, poison, reconcile, report, token};

#[derive(Debug, Parser)]
#[command(
    name = "orders-load",
    about = "Load the orders platform, and reconcile what it derived with its source"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Drive the full life of orders through the APIs and measure it.
    Run(load::LoadArgs),
    /// Compare everything derived with its source; non-zero exit on any difference.
    Reconcile(Box<reconcile::ReconcileArgs>),
    /// A run's summary as Markdown tables (on standard output) and SVG charts.
    Report(report::ReportArgs),
    /// Put bad records on the consumed topics, or check they were dead-lettered.
    #[command(subcommand)]
    Poison(poison::PoisonCommand),
    /// Write one record with a client's own Kafka settings: what do the brokers allow it?
    KafkaWrite(Box<access::KafkaWriteArgs>),
    /// Issue a bearer token signed with a local key, or print the key set to check it by.
    Token(token::TokenArgs),
}

#[tokio::main]
async fn main() -> ExitCode {
    let result = match Cli::parse().command {
        Command::Run(args) => load::run(args).await,
        Command::Reconcile(args) => reconcile::run(*args).await,
        Command::Poison(command) => poison::run(command).await,
        Command::Report(args) => report::run(&args),
        Command::KafkaWrite(args) => access::kafka_write(&args).await,
        Command::Token(args) => token::run(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("orders-load: {e:#}");
            ExitCode::FAILURE
        }
    }
}
