//! Operations run by hand with the processor's configuration (`order-processor
//! <subcommand>`), instead of the service:
//!
//! - `migrate` applies the schema (the migrate job of the Helm chart);
//! - `stock set SKU N` sets the available stock of a SKU (tracking it from then on);
//!   `stock list` prints every tracked SKU;
//! - `dlq list` prints this processor's dead letters (reason, origin, key, age,
//!   attempts, events parked behind each; `--key`, `--reason`, `--limit` filter);
//! - `dlq replay <id>...|--all` hands dead letters back to the saga (directly, with the
//!   processor's retry settings), then handles the events of their orders that were
//!   parked behind them, in order, and releases the orders; `dlq discard` drops them
//!   and releases the orders the same way; both show their progress (a bar on a
//!   terminal, log lines otherwise). Commands the saga sends meanwhile go to the
//!   outbox, which the running processor relays. Replaying twice has no second effect
//!   (the inbox). Nothing is re-published to `orders`.
//!
//! `dlq.orders` is shared with the projector: each tool sees only the dead letters of
//! its own consumer (here: `CONSUMER_GROUP`). Exit status 0 on success, 1 when an id
//! given was not found, a replay failed again, or the database failed.

use std::{
    io::Write as _,
    process::ExitCode,
    time::{Duration, SystemTime},
};

use anyhow::Context as _;
use clap::{Args, Subcommand};
use orders_consumer::{DeadLetter, Selection, Store};
use orders_runtime::{postgres, progress::Progress};

use crate::{Config, SERVICE, inventory, saga::Saga};

/// The subcommands.
#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Applies the database migrations, then exits (the service also applies them when it
    /// starts; a deployment runs this first, as its migrate job).
    Migrate,
    /// The stock of tracked SKUs.
    #[command(subcommand)]
    Stock(StockCommand),
    /// Events whose handling failed for good: list, replay or discard them.
    #[command(subcommand)]
    Dlq(DlqCommand),
}

/// What to do with the stock.
#[derive(Debug, Clone, Subcommand)]
pub enum StockCommand {
    /// Sets the available stock of a SKU, tracking it from then on.
    Set {
        /// The SKU.
        sku: String,
        /// Units available (0 or more).
        available: i64,
    },
    /// Lists every tracked SKU: available, reserved, shipped.
    List,
}

/// What to do with the dead letters.
#[derive(Debug, Clone, Subcommand)]
pub enum DlqCommand {
    /// Lists dead letters, oldest first.
    List(Filter),
    /// Hands dead letters back to the saga, then releases their orders' parked events.
    Replay(Target),
    /// Drops dead letters, then releases their orders' parked events.
    Discard(Target),
}

/// Narrows a listing.
#[derive(Debug, Clone, Args)]
pub struct Filter {
    /// Only the dead letters of this order (the record key).
    #[arg(long)]
    pub key: Option<String>,
    /// Only those whose reason contains this text.
    #[arg(long)]
    pub reason: Option<String>,
    /// At most this many.
    #[arg(long, default_value_t = 100)]
    pub limit: i64,
}

/// The dead letters an operation is about.
#[derive(Debug, Clone, Args)]
pub struct Target {
    /// Ids of dead letters (as `list` shows them).
    #[arg(required_unless_present_any = ["all", "key"], conflicts_with = "all")]
    pub ids: Vec<i64>,
    /// Every dead letter of this order.
    #[arg(long, conflicts_with = "all")]
    pub key: Option<String>,
    /// Every dead letter.
    #[arg(long)]
    pub all: bool,
}

impl Target {
    fn selection(&self) -> Selection {
        Selection {
            ids: (!self.ids.is_empty()).then(|| self.ids.clone()),
            key: self.key.as_ref().map(|k| k.as_bytes().to_vec()),
            ..Selection::default()
        }
    }
}

/// Runs `command` against the database of `config`; prints the outcome on stdout,
/// errors, log lines and progress on stderr.
pub async fn run(config: &Config, command: Command) -> ExitCode {
    if let Err(e) = orders_runtime::telemetry::init_tool(&config.runtime) {
        eprintln!("{SERVICE}: {e}");
        return ExitCode::FAILURE;
    }
    match execute(config, &command).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("{SERVICE}: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn execute(config: &Config, command: &Command) -> anyhow::Result<ExitCode> {
    let pool = postgres::pool(&config.database_url, 2, SERVICE, &config.database_session.session())
        .context("create the database pool")?;
    let mut out = std::io::stdout().lock();
    let store = Store::new(pool.clone(), &config.consumer_group);
    let saga =
        Saga::new(pool.clone(), &config.consumer_group, &config.commands_topic, config.batching()).router();
    let retry = config.consumer_settings().retry;
    match command {
        Command::Migrate => {
            crate::migrate(&pool, &config.consumer_group).await.context("apply the migrations")?;
            writeln!(out, "migrations applied")?;
        }
        Command::Stock(StockCommand::Set { sku, available }) => {
            let stock = inventory::set(&pool, sku, *available).await.context("set the stock")?;
            writeln!(out, "{}", serde_json::to_string(&stock)?)?;
        }
        Command::Stock(StockCommand::List) => {
            for stock in inventory::list(&pool).await.context("list the stock")? {
                writeln!(out, "{}", serde_json::to_string(&stock)?)?;
            }
        }
        Command::Dlq(DlqCommand::List(filter)) => {
            let selection = Selection {
                key: filter.key.as_ref().map(|k| k.as_bytes().to_vec()),
                reason: filter.reason.clone(),
                limit: Some(filter.limit),
                ..Selection::default()
            };
            let letters = store.dead_letters(&selection).await.context("list the dead letters")?;
            if letters.is_empty() {
                writeln!(out, "no dead letters")?;
            }
            for letter in &letters {
                writeln!(out, "{}", describe(letter))?;
            }
        }
        Command::Dlq(DlqCommand::Replay(target) | DlqCommand::Discard(target)) => {
            let selection = target.selection();
            let found = store.dead_letters(&selection).await.context("find the dead letters")?;
            let missing: Vec<i64> =
                target.ids.iter().copied().filter(|id| !found.iter().any(|l| l.id == *id)).collect();
            let replay = matches!(command, Command::Dlq(DlqCommand::Replay(_)));
            let progress = Progress::start(if replay { "replay" } else { "discard" }, found.len() as u64);
            let show = |done: usize, total: usize| {
                progress.set_total(total as u64);
                progress.set(done as u64);
            };
            let outcome = if replay {
                store.replay_with(&saga, &selection, retry, show).await.context("replay")?
            } else {
                store.discard_with(&saga, &selection, retry, show).await.context("discard")?
            };
            progress.finish();
            writeln!(
                out,
                "{} {}, failed again {}; parked events handled {}, failed {}; orders released {}",
                if replay { "replayed" } else { "discarded" },
                outcome.settled,
                outcome.failed,
                outcome.released,
                outcome.parked_failed,
                outcome.keys_released
            )?;
            if !missing.is_empty() {
                eprintln!("not among the dead letters: {missing:?}");
                return Ok(ExitCode::FAILURE);
            }
            if outcome.failed > 0 || outcome.parked_failed > 0 {
                return Ok(ExitCode::FAILURE);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// One line per dead letter: id, key, origin, attempts, parked, age, reason.
fn describe(letter: &DeadLetter) -> String {
    let secs = SystemTime::now().duration_since(letter.dead_lettered_at).unwrap_or_default().as_secs();
    format!(
        "id={} key={} origin={} attempts={} parked={} age={} reason={}",
        letter.id,
        letter.record.key_text(),
        letter.record.origin(),
        letter.attempts,
        letter.parked,
        humantime::format_duration(Duration::from_secs(secs)),
        letter.reason
    )
}
