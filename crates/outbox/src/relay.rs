//! [`Relay`]: the workers, the lease keeper and the backlog gauge, wired together.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use deadpool_postgres::Pool;
use rdkafka::ClientConfig;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::{
    Error, RelayOptions, Result,
    lease::{LeaseKeeper, LeaseSettings},
    metric,
    publish::Publisher,
    quarantine::{Attempts, Held},
    status::{RelayStatus, Shared},
    store::Store,
    worker::{STATEMENT_TIMEOUT, Worker},
};

/// Publishes the outbox to Kafka until cancelled. See the [crate docs](crate) for the
/// design and its guarantees.
#[derive(Debug)]
pub struct Relay {
    store: Store,
    /// One producer per worker (see "Rows that can never be published" in the crate
    /// docs): a record the broker refuses stops only its worker's producer, and the
    /// broker's verdict on a batch concerns only that worker's rows.
    publishers: Vec<Arc<Publisher>>,
    session: orders_postgres::Target,
    options: RelayOptions,
    shared: Arc<Shared>,
}

impl Relay {
    /// A relay reading and clearing rows through `pool`, holding its shard leases on a
    /// session of its own opened with `session` (the same database, a direct
    /// connection; the relay sets its TCP keepalives from
    /// [`RelayOptions::lease_keepalive`]), and producing with `producer` (bootstrap
    /// servers and any client settings; idempotence, the gapless guarantee, `acks=all`
    /// and no delivery timeout are forced: see [`producer_config`](crate::producer_config)).
    ///
    /// # Errors
    /// When the options are inconsistent or the producer cannot be created.
    pub fn new(
        pool: Pool,
        session: orders_postgres::Target,
        producer: &ClientConfig,
        options: RelayOptions,
    ) -> Result<Self> {
        options.validate()?;
        metric::describe();
        let publishers =
            (0..options.workers).map(|_| Publisher::new(producer).map(Arc::new)).collect::<Result<_, _>>()?;
        let shared = Arc::new(Shared::new(options.workers, options.stall_threshold));
        Ok(Self { store: Store::new(pool), publishers, session, options, shared })
    }

    /// A handle on the relay's status (readiness, shards owned), valid after `run` too.
    pub fn status(&self) -> RelayStatus {
        RelayStatus { shared: Arc::clone(&self.shared) }
    }

    /// Runs until `token` is cancelled, then drains (see "Shutdown" in the crate docs)
    /// and releases its shards.
    ///
    /// # Errors
    /// Only when one of its tasks panicked; failures of the database or the broker are
    /// retried, not returned.
    pub async fn run(self, token: CancellationToken) -> Result<()> {
        let Self { store, publishers, session, options, shared } = self;
        let leases_token = CancellationToken::new();
        let keeper = LeaseKeeper {
            target: session,
            settings: LeaseSettings {
                shards: options.shards,
                namespace: options.lock_namespace,
                channel: options.notify_channel.clone(),
                interval: options.rebalance_interval,
                backoff: options.backoff(),
                keepalive: options.lease_keepalive,
            },
            shared: Arc::clone(&shared),
        };
        let keeper = tokio::spawn(keeper.run(leases_token.clone()));
        let backlog = tokio::spawn(backlog_gauge(store.clone(), options.backlog_interval, token.clone()));

        let mut workers = JoinSet::new();
        for (index, publisher) in publishers.into_iter().enumerate() {
            let worker = Worker {
                index,
                store: store.clone(),
                publisher,
                shared: Arc::clone(&shared),
                options: options.clone(),
                attempts: Mutex::new(Attempts::default()),
                held: Mutex::new(Held::default()),
            };
            workers.spawn(worker.run(token.clone()));
        }
        let mut outcome = Ok(());
        while let Some(joined) = workers.join_next().await {
            if let Err(e) = joined {
                token.cancel();
                outcome = Err(Error::Task(e));
            }
        }
        // Every batch is finished or left: only now may another relay take the shards.
        leases_token.cancel();
        keeper.await?;
        backlog.await?;
        outcome
    }
}

/// Refreshes the backlog gauges until `token` is cancelled.
async fn backlog_gauge(store: Store, interval: Duration, token: CancellationToken) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = token.cancelled() => return,
        }
        match tokio::time::timeout(STATEMENT_TIMEOUT, store.backlog()).await {
            Ok(Ok(backlog)) => {
                metrics::gauge!(metric::BACKLOG_ROWS).set(backlog.rows as f64);
                metrics::gauge!(metric::BACKLOG_OLDEST_AGE).set(backlog.oldest_age_seconds);
                metrics::gauge!(metric::QUARANTINE_ROWS).set(backlog.quarantined as f64);
            }
            Ok(Err(e)) => {
                metrics::counter!(metric::ERRORS, "stage" => "backlog").increment(1);
                tracing::debug!(error = crate::error_chain(&e), "cannot measure the outbox backlog");
            }
            Err(_) => metrics::counter!(metric::ERRORS, "stage" => "backlog").increment(1),
        }
    }
}
