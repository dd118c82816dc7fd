//! Operations run by hand with the relay's configuration (`outbox-relay <subcommand>`),
//! instead of the relay: the quarantine of rows that could never be published.
//!
//! `outbox-relay quarantine list` shows each quarantined row (id, order key, topic,
//! attempts, reason, when, and how many later events of its order wait behind it);
//! `requeue <id>...` (or `--all`) puts rows back in the outbox with their own ids, so a
//! running relay publishes each before the events of its order that waited, once the
//! cause is fixed (the topic created, the broker's size limit raised...); `discard
//! <id>...` (or `--all`) drops them for good and lets the waiting events go on. Both
//! wake the running relays on the notify channel. Exit status 0 when every id given
//! was found, 1 otherwise (or on a database error).

use std::{
    io::Write as _,
    process::ExitCode,
    time::{Duration, SystemTime},
};

use clap::{Args, Subcommand};
use orders_outbox::{Quarantine, QuarantinedRow, Selection};
use orders_runtime::postgres;

use crate::{Config, SERVICE};

/// The subcommands.
#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Rows the relay could never publish, set aside: list, re-queue or discard them.
    #[command(subcommand)]
    Quarantine(QuarantineCommand),
}

/// What to do with the quarantine.
#[derive(Debug, Clone, Subcommand)]
pub enum QuarantineCommand {
    /// Lists the quarantined rows, oldest first, with the reason and the number of
    /// later rows of the same key waiting behind each.
    List {
        /// At most this many rows.
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Puts rows back in the outbox, each before the rows of its key that waited.
    Requeue(Target),
    /// Drops rows for good; the rows of their keys that waited go on.
    Discard(Target),
}

/// The rows an operation is about.
#[derive(Debug, Clone, Args)]
pub struct Target {
    /// Ids of quarantined rows (as `list` shows them).
    #[arg(required_unless_present = "all", conflicts_with = "all")]
    pub ids: Vec<i64>,
    /// Every quarantined row.
    #[arg(long)]
    pub all: bool,
}

impl Target {
    fn selection(&self) -> Selection {
        if self.all { Selection::All } else { Selection::Ids(self.ids.clone()) }
    }
}

/// Runs `command` against the database of `config`; prints the outcome on stdout,
/// errors on stderr.
pub async fn quarantine(config: &Config, command: QuarantineCommand) -> ExitCode {
    match run(config, &command).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("{SERVICE} quarantine: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(config: &Config, command: &QuarantineCommand) -> anyhow::Result<ExitCode> {
    use anyhow::Context as _;

    let pool = postgres::pool(&config.database_url, 1, SERVICE, &config.database_session.session())
        .context("create the database pool")?;
    let channel = Some(config.notify_channel.clone()).filter(|c| !c.is_empty());
    let quarantine = Quarantine::new(pool, channel);
    let mut out = std::io::stdout().lock();
    let (verb, target, changed) = match command {
        QuarantineCommand::List { limit } => {
            let rows = quarantine.list(*limit).await.context("list the quarantine")?;
            if rows.is_empty() {
                writeln!(out, "no quarantined rows")?;
            }
            for row in &rows {
                writeln!(out, "{}", describe(row))?;
            }
            return Ok(ExitCode::SUCCESS);
        }
        QuarantineCommand::Requeue(target) => {
            ("re-queued", target, quarantine.requeue(&target.selection()).await.context("re-queue")?)
        }
        QuarantineCommand::Discard(target) => {
            ("discarded", target, quarantine.discard(&target.selection()).await.context("discard")?)
        }
    };
    for id in &changed {
        writeln!(out, "{verb} {id}")?;
    }
    let missing: Vec<i64> = target.ids.iter().copied().filter(|id| !changed.contains(id)).collect();
    if !missing.is_empty() {
        eprintln!("not in the quarantine: {missing:?}");
        return Ok(ExitCode::FAILURE);
    }
    if changed.is_empty() {
        writeln!(out, "no quarantined rows")?;
    }
    Ok(ExitCode::SUCCESS)
}

/// One line per row: id, key, topic, attempts, waiting rows, age, reason.
fn describe(row: &QuarantinedRow) -> String {
    let ago = |t: SystemTime| {
        let secs = SystemTime::now().duration_since(t).unwrap_or_default().as_secs();
        humantime::format_duration(Duration::from_secs(secs)).to_string()
    };
    format!(
        "id={} key={} topic={} shard={} bytes={} attempts={} waiting={} created={} ago quarantined={} ago reason={}",
        row.id,
        String::from_utf8_lossy(&row.key),
        row.topic,
        row.shard,
        row.payload_bytes,
        row.attempts,
        row.waiting,
        ago(row.created_at),
        ago(row.quarantined_at),
        row.reason
    )
}
