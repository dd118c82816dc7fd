//! Shard ownership through PostgreSQL advisory locks, and the `LISTEN` that wakes the
//! workers, both on one dedicated session (see the crate docs, "Shards and their
//! owners"), whose TCP keepalives are set on both ends so that the server notices a
//! silent relay within seconds, not hours.

use std::{sync::Arc, time::Duration};

use backon::{BackoffBuilder as _, ExponentialBackoff, ExponentialBuilder};
use futures::StreamExt;
use tokio_postgres::{AsyncMessage, Client, Statement};
use tokio_util::sync::CancellationToken;

use crate::{metric, options::SessionKeepalive, status::Shared};

/// The second key of the membership lock; shard locks use `0 .. shards`.
const MEMBER_KEY: i32 = i32::MAX;

/// How long one exchange on the lease session may take before the session is deemed
/// broken (a black-holed connection would otherwise hang until TCP gives up).
const SESSION_TIMEOUT: Duration = Duration::from_secs(10);

/// How many shards each of `members` relays should own: `ceil(shards / members)`, so
/// that the targets always add up to at least `shards`.
pub(crate) fn fair_share(shards: i32, members: usize) -> usize {
    let shards = usize::try_from(shards).unwrap_or(0);
    shards.div_ceil(members.max(1))
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum LeaseError {
    #[error("{0}")]
    Database(#[from] tokio_postgres::Error),
    #[error("the session closed")]
    Closed,
    #[error("the session did not answer within {SESSION_TIMEOUT:?}")]
    Timeout,
}

/// Settings of the lease keeper.
#[derive(Debug, Clone)]
pub(crate) struct LeaseSettings {
    pub(crate) shards: i32,
    pub(crate) namespace: i32,
    pub(crate) channel: Option<String>,
    pub(crate) interval: Duration,
    pub(crate) backoff: ExponentialBuilder,
    pub(crate) keepalive: SessionKeepalive,
}

/// Keeps this relay's share of the shards for as long as it runs.
#[derive(Debug)]
pub(crate) struct LeaseKeeper {
    pub(crate) target: orders_postgres::Target,
    pub(crate) settings: LeaseSettings,
    pub(crate) shared: Arc<Shared>,
}

struct Statements {
    membership: Statement,
    try_lock: Statement,
    unlock: Statement,
}

/// Aborts the connection task when the session ends, which closes its socket: the
/// server then ends the session and releases its locks.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn timed<T>(fut: impl Future<Output = Result<T, tokio_postgres::Error>>) -> Result<T, LeaseError> {
    match tokio::time::timeout(SESSION_TIMEOUT, fut).await {
        Ok(result) => Ok(result?),
        Err(_) => Err(LeaseError::Timeout),
    }
}

impl LeaseKeeper {
    /// Runs sessions one after the other until `token` is cancelled; dropping the last
    /// session releases every lock.
    pub(crate) async fn run(self, token: CancellationToken) {
        let mut backoff = self.settings.backoff.build();
        while !token.is_cancelled() {
            let result = self.session(&token, &mut backoff).await;
            self.shared.session_lost();
            match result {
                Ok(()) => break,
                Err(e) => {
                    metrics::counter!(metric::ERRORS, "stage" => "lease").increment(1);
                    let delay = backoff.next().unwrap_or(self.settings.interval);
                    tracing::warn!(error = crate::error_chain(&e), retry_in = ?delay, "outbox lease session lost; shards released");
                    tokio::select! {
                        () = tokio::time::sleep(delay) => {}
                        () = token.cancelled() => break,
                    }
                }
            }
        }
        tracing::info!("outbox lease session closed; shards released");
    }

    async fn session(
        &self,
        token: &CancellationToken,
        backoff: &mut ExponentialBackoff,
    ) -> Result<(), LeaseError> {
        let keepalive = self.settings.keepalive;
        let mut target = self.target.clone();
        target
            .config
            .keepalives(true)
            .keepalives_idle(keepalive.idle)
            .keepalives_interval(keepalive.interval)
            .keepalives_retries(keepalive.retries)
            .tcp_user_timeout(keepalive.user_timeout);
        let (client, mut connection) = timed(target.connect()).await?;
        let (closed_tx, mut closed) = tokio::sync::oneshot::channel::<()>();
        let shared = Arc::clone(&self.shared);
        let _driver = AbortOnDrop(tokio::spawn(async move {
            let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
            while let Some(message) = messages.next().await {
                match message {
                    Ok(AsyncMessage::Notification(_)) => shared.wake_all(),
                    Ok(_) => {}
                    Err(e) => {
                        tracing::debug!(error = %e, "outbox lease connection failed");
                        break;
                    }
                }
            }
            drop(closed_tx);
        }));

        let statements = Statements {
            membership: timed(client.prepare(include_str!("sql/membership.sql"))).await?,
            try_lock: timed(client.prepare(include_str!("sql/try_lock_shard.sql"))).await?,
            unlock: timed(client.prepare(include_str!("sql/unlock_shard.sql"))).await?,
        };
        let in_effect = server_keepalive(&client, keepalive).await?;
        self.shared.set_lease_keepalive(in_effect);
        let ns = self.settings.namespace;
        timed(client.execute(include_str!("sql/join.sql"), &[&ns, &MEMBER_KEY])).await?;
        if let Some(channel) = &self.settings.channel {
            timed(client.batch_execute(&format!("LISTEN {}", quote_ident(channel)))).await?;
        }
        self.shared.session_up();
        tracing::info!(namespace = ns, "outbox lease session up");

        let mut tick = tokio::time::interval(self.settings.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = token.cancelled() => return Ok(()),
                _ = &mut closed => return Err(LeaseError::Closed),
                _ = tick.tick() => {
                    self.rebalance(&client, &statements).await?;
                    *backoff = self.settings.backoff.build();
                }
                () = self.shared.released.notified() => self.release(&client, &statements).await?,
            }
        }
    }

    /// Reads who is a member and what is held, then takes or hands back shards to reach
    /// this relay's fair share.
    async fn rebalance(&self, client: &Client, statements: &Statements) -> Result<(), LeaseError> {
        let ns = self.settings.namespace;
        let (ns64, member64) = (i64::from(ns), i64::from(MEMBER_KEY));
        let row = timed(client.query_one(&statements.membership, &[&ns64, &member64])).await?;
        let members = usize::try_from(row.get::<_, i32>(0)).unwrap_or(1).max(1);
        let held: Vec<i32> = row.get(1);
        self.shared.set_members(members);
        let target = fair_share(self.settings.shards, members);
        let mut active = self.shared.plan(target);
        self.release(client, statements).await?;

        if active < target {
            let owned = self.shared.owned();
            // Start the search at a different place in each process, so that relays
            // starting together do not all contend for shard 0 first.
            let start = usize::try_from(std::process::id()).unwrap_or(0);
            let shards = usize::try_from(self.settings.shards).unwrap_or(0);
            let mut taken = 0;
            for i in 0..shards {
                if active >= target {
                    break;
                }
                let Ok(shard) = i32::try_from((start + i) % shards) else { continue };
                if held.contains(&shard) || owned.contains(&shard) {
                    continue;
                }
                let row = timed(client.query_one(&statements.try_lock, &[&ns, &shard])).await?;
                if row.get::<_, bool>(0) {
                    self.shared.add_owned(shard);
                    active += 1;
                    taken += 1;
                }
            }
            if taken > 0 {
                tracing::info!(taken, owned = active, members, "took outbox shards");
                self.shared.wake_all();
            }
        }
        Ok(())
    }

    /// Unlocks retiring shards that no batch uses any more.
    async fn release(&self, client: &Client, statements: &Statements) -> Result<(), LeaseError> {
        let released = self.shared.take_releasable();
        let ns = self.settings.namespace;
        for shard in &released {
            timed(client.query_one(&statements.unlock, &[&ns, shard])).await?;
        }
        if !released.is_empty() {
            tracing::info!(released = released.len(), "handed outbox shards back");
        }
        Ok(())
    }
}

/// Sets the server's end of the session's keepalives (see [`SessionKeepalive`]) and
/// returns what the server reports in effect.
async fn server_keepalive(
    client: &Client,
    keepalive: SessionKeepalive,
) -> Result<SessionKeepalive, LeaseError> {
    let values = [
        keepalive.idle.as_secs().to_string(),
        keepalive.interval.as_secs().to_string(),
        keepalive.retries.to_string(),
        keepalive.user_timeout.as_millis().to_string(),
    ];
    let row = timed(client.query_one(
        include_str!("sql/lease_keepalive.sql"),
        &[&values[0], &values[1], &values[2], &values[3]],
    ))
    .await?;
    let get = |i: usize| u64::try_from(row.get::<_, i32>(i)).unwrap_or(0);
    let in_effect = SessionKeepalive {
        idle: Duration::from_secs(get(0)),
        interval: Duration::from_secs(get(1)),
        retries: u32::try_from(get(2)).unwrap_or(0),
        user_timeout: Duration::from_millis(get(3)),
    };
    if in_effect != keepalive {
        tracing::warn!(
            wanted = ?keepalive,
            ?in_effect,
            "the server does not apply the lease session's keepalive settings (a Unix-domain socket?); \
             a silent relay may keep its shards until the server's own TCP settings give up"
        );
    }
    Ok(in_effect)
}

/// `name` as a quoted SQL identifier.
fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fair_shares_cover_every_shard() {
        assert_eq!(fair_share(64, 1), 64);
        assert_eq!(fair_share(64, 3), 22);
        assert_eq!(fair_share(64, 0), 64);
        for members in 1..=70 {
            assert!(fair_share(64, members) * members >= 64);
        }
    }

    #[test]
    fn channel_names_are_quoted() {
        assert_eq!(quote_ident("outbox"), "\"outbox\"");
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
    }
}
