//! `projector rebuild`: a fresh read model from the start of the topic, swapped in
//! atomically while the old one keeps serving.
//!
//! 1. Take the rebuild lock (an advisory lock: one rebuild at a time), apply migrations,
//!    drop what an interrupted rebuild left ([`NEXT`], [`RETIRED`]) and create empty
//!    tables in [`NEXT`] with `projector_create_read_model`.
//! 2. Project every partition from the beginning into [`NEXT`] (same handler, same
//!    positions table, no consumer group) until the end of every partition. The live
//!    projector keeps applying and the query API keeps serving from [`LIVE`].
//! 3. Hand over, in one transaction: `LOCK TABLE read_model.consumer_positions` (the
//!    live projector's batches wait here; queries do not touch it), read the live
//!    positions, finish projecting exactly up to them (never past them), then rename
//!    `read_model` to [`RETIRED`] and [`NEXT`] to `read_model`, and commit. The new
//!    tables hold the same events as the old ones and positions equal to the live
//!    projector's, so it goes on from where it was, now writing the new tables; queries
//!    read the new tables from their next statement. If the hand-over does not finish
//!    within [`HANDOVER_TIMEOUT`], it is rolled back and step 2 resumes.
//! 4. Drop [`RETIRED`] (waiting at most a few seconds for queries still reading it;
//!    the next rebuild drops it otherwise).
//!
//! It shows its progress in offsets of the topic read (of those there were when it
//! started; the total grows with what the live side writes meanwhile): a bar on a
//! terminal, log lines otherwise.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::{Context as _, bail};
use orders_projection::Projection;
use orders_runtime::{CancellationToken, progress::Progress};
use tokio::time::Instant;

use crate::{
    Config, PROJECTION,
    project::ReadModel,
    schema::{self, LIVE, NEXT, PoolOptions, RETIRED},
};

/// How long the live projector may be held while the rebuild finishes the hand-over.
pub const HANDOVER_TIMEOUT: Duration = Duration::from_secs(10);
/// The advisory lock key held for the whole rebuild ("projector rebuild").
const REBUILD_LOCK: i64 = 7_401_223_102;

/// What a rebuild did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// The positions of the new read model when it was swapped in.
    pub positions: BTreeMap<i32, Option<i64>>,
    /// How long it took.
    pub elapsed: Duration,
}

/// Rebuilds the read model; see the [module docs](self).
pub async fn rebuild(config: &Config, token: &CancellationToken) -> anyhow::Result<Report> {
    let started = Instant::now();
    let mut admin = schema::connect(&config.database_url, "projector-rebuild").await?;
    let locked: bool = admin
        .query_one("SELECT pg_try_advisory_lock($1)", &[&REBUILD_LOCK])
        .await
        .context("taking the rebuild lock")?
        .get(0);
    if !locked {
        bail!("another rebuild is running against this database");
    }
    schema::migrate(&config.database_url).await?;
    admin
        .batch_execute(&format!(
            "DROP SCHEMA IF EXISTS {NEXT} CASCADE; DROP SCHEMA IF EXISTS {RETIRED} CASCADE"
        ))
        .await
        .context("dropping the leftovers of an earlier rebuild")?;
    admin
        .execute("SELECT projector_create_read_model($1)", &[&NEXT])
        .await
        .context("creating the new read model's tables")?;
    tracing::info!(schema = NEXT, topic = %config.orders_topic, "rebuilding the read model from the start of the topic");

    let session = config.database_session.session();
    let options = PoolOptions {
        application_name: "projector-rebuild",
        schema: NEXT,
        session: &session,
        asynchronous_commit: true,
    };
    let pool = schema::pool(&config.database_url, config.apply_connections.into(), options)?;
    let settings = crate::projection_settings(config);
    let marks = orders_projection::watermarks(&settings.consumer, &settings.topic)
        .await
        .context("reading the topic's watermarks")?;
    let mut projection =
        Projection::assign_all(settings, pool, ReadModel).await.context("starting the rebuild's consumer")?;
    let progress =
        Arc::new(Progress::start("rebuild", marks.values().map(|(low, high)| offsets(*high - *low)).sum()));
    projection.on_commit({
        let (progress, read) = (Arc::clone(&progress), Mutex::new(BTreeMap::new()));
        move |committed| {
            let Ok(mut read) = read.lock() else { return };
            let low = marks.get(&committed.partition).map_or(0, |(low, _)| *low);
            read.insert(committed.partition, offsets(committed.next_offset - low));
            progress.set(read.values().sum());
        }
    });

    let positions = loop {
        if !projection.run_to_end(token).await? {
            bail!("rebuild interrupted; the live read model is unchanged");
        }
        tracing::info!(positions = ?projection.positions(), elapsed = ?started.elapsed(), "caught up; handing over");
        let tx = admin.transaction().await?;
        tx.batch_execute(&format!(
            "SET LOCAL lock_timeout = '30s'; LOCK TABLE {LIVE}.consumer_positions IN ACCESS EXCLUSIVE MODE"
        ))
        .await
        .context("locking the live positions")?;
        let live: BTreeMap<i32, i64> = tx
            .query(
                &format!("SELECT partition, next_offset FROM {LIVE}.consumer_positions WHERE projection = $1 AND topic = $2"),
                &[&PROJECTION, &config.orders_topic],
            )
            .await?
            .iter()
            .map(|row| (row.get(0), row.get(1)))
            .collect();
        // Cancelled, not dropped, when time runs out: the projection then rewinds what it
        // polled but did not apply.
        let handover = token.child_token();
        let timer = tokio::spawn({
            let handover = handover.clone();
            async move {
                tokio::time::sleep(HANDOVER_TIMEOUT).await;
                handover.cancel();
            }
        });
        let finished = projection.run_to(&live, &handover).await;
        timer.abort();
        if !finished? {
            if token.is_cancelled() {
                bail!("rebuild interrupted; the live read model is unchanged");
            }
            tracing::warn!("the hand-over took too long; catching up again");
            tx.rollback().await?;
            continue;
        }
        tx.batch_execute(&format!(
            "ALTER SCHEMA {LIVE} RENAME TO {RETIRED}; ALTER SCHEMA {NEXT} RENAME TO {LIVE}"
        ))
        .await
        .context("swapping the read models")?;
        tx.commit().await.context("committing the swap")?;
        break projection.positions();
    };
    drop(projection);
    if let Ok(progress) = Arc::try_unwrap(progress) {
        progress.finish();
    }
    tracing::info!(?positions, elapsed = ?started.elapsed(), "the rebuilt read model is live");

    if let Err(e) =
        admin.batch_execute(&format!("SET lock_timeout = '5s'; DROP SCHEMA {RETIRED} CASCADE")).await
    {
        tracing::warn!(error = %e, schema = RETIRED, "could not drop the old read model yet; the next rebuild will");
    }
    admin.execute("SELECT pg_advisory_unlock($1)", &[&REBUILD_LOCK]).await?;
    Ok(Report { positions, elapsed: started.elapsed() })
}

/// A count of offsets (never negative).
fn offsets(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}
