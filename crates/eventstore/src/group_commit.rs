//! Group commit: concurrent appends share one transaction.
//!
//! With many writers, the cost of an append is mostly its transaction: the round trips
//! of BEGIN and COMMIT and the WAL flush at commit (and, with a notification channel,
//! the global lock `NOTIFY` takes at commit). Appends sent to the store while a
//! committer is busy wait in a queue; the next free committer takes all that are
//! waiting (up to a bound) and writes them in one transaction: one multi-row insert per
//! table, one `NOTIFY`, one commit. Nothing waits on purpose: a lone append is written
//! at once, so batching only happens when there is a queue.
//!
//! Each append keeps its own outcome, exactly as without batching: the crate's
//! `commit` module tells the losers of a race from the winners, retries only the
//! winners together, and settles a lost commit answer.
//!
//! Load is bounded: the queue holds at most [`GroupCommit::max_queued`] appends, and
//! an append that finds it full fails at once with [`Error::Overloaded`] (shed load,
//! retry later) instead of waiting behind an unbounded backlog. Every append has a
//! deadline ([`Options::append_timeout`](crate::Options::append_timeout)): one still
//! queued when it passes is dropped unwritten with [`Error::Timeout`]; a batch's
//! transaction gives up at the earliest deadline among its appends, and then only
//! those appends are answered: the others are tried again.

use std::{sync::Arc, time::Duration};

use deadpool_postgres::Pool;
use tokio::{
    sync::{
        Mutex,
        mpsc::{self, error::TrySendError},
        oneshot,
    },
    time::{Instant, timeout_at},
};

use crate::{Error, Result, commit::commit, transaction::OwnedAppend};

/// How appends are grouped; see the [module docs](self).
#[derive(Debug, Clone, Copy)]
pub struct GroupCommit {
    /// Transactions in flight at once, each on its own connection.
    pub committers: usize,
    /// Most appends in one transaction.
    pub max_batch: usize,
    /// Most appends waiting for a committer; one more fails with [`Error::Overloaded`].
    pub max_queued: usize,
}

impl Default for GroupCommit {
    fn default() -> Self {
        Self { committers: 4, max_batch: 64, max_queued: 1024 }
    }
}

/// How long a caller waits past its append's deadline for the committer's answer
/// before giving up on it (the committer answers by the deadline; this only guards
/// against a committer that died).
const ANSWER_GRACE: Duration = Duration::from_secs(5);

#[derive(Debug)]
struct Request {
    append: OwnedAppend,
    deadline: Instant,
    reply: oneshot::Sender<Result<()>>,
}

/// The queue in front of the committers.
#[derive(Debug, Clone)]
pub(crate) struct Committer {
    queue: mpsc::Sender<Request>,
    timeout: Duration,
}

impl Committer {
    /// Starts the committer tasks; they end when the last handle is dropped.
    pub(crate) fn start(
        pool: Pool,
        notify_channel: Option<String>,
        settings: GroupCommit,
        timeout: Duration,
    ) -> Self {
        let (queue, receiver) = mpsc::channel(settings.max_queued.max(1));
        let receiver = Arc::new(Mutex::new(receiver));
        for _ in 0..settings.committers.max(1) {
            let receiver = Arc::clone(&receiver);
            let pool = pool.clone();
            let channel = notify_channel.clone();
            tokio::spawn(async move {
                while let Some(batch) = next_batch(&receiver, settings.max_batch.max(1)).await {
                    write_batch(&pool, channel.as_deref(), batch, timeout).await;
                }
            });
        }
        Self { queue, timeout }
    }

    /// Appends waiting for a committer.
    pub(crate) fn queued(&self) -> usize {
        self.queue.max_capacity() - self.queue.capacity()
    }

    /// Queues an append and waits for its outcome.
    pub(crate) async fn append(&self, append: OwnedAppend) -> Result<()> {
        let deadline = Instant::now() + self.timeout;
        let (reply, outcome) = oneshot::channel();
        match self.queue.try_send(Request { append, deadline, reply }) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                metrics::counter!("eventstore_group_commit_overloaded_total").increment(1);
                return Err(Error::Overloaded { queued: self.queued() });
            }
            Err(TrySendError::Closed(_)) => return Err(Error::ShutDown),
        }
        match timeout_at(deadline + ANSWER_GRACE, outcome).await {
            Ok(Ok(outcome)) => outcome,
            // The committer went away with the append: it may have been written.
            Ok(Err(_)) => Err(Error::OutcomeUnknown(Box::new(Error::ShutDown))),
            Err(_) => Err(Error::OutcomeUnknown(Box::new(Error::Timeout(self.timeout)))),
        }
    }
}

/// The next batch of requests, with the queue's length after it in a gauge.
async fn next_batch(receiver: &Mutex<mpsc::Receiver<Request>>, max: usize) -> Option<Vec<Request>> {
    let (batch, queued) = orders_postgres::group_commit::next_batch(receiver, max).await?;
    metrics::gauge!("eventstore_group_commit_queued").set(queued as f64);
    Some(batch)
}

async fn write_batch(pool: &Pool, channel: Option<&str>, batch: Vec<Request>, timeout: Duration) {
    let now = Instant::now();
    let (live, expired): (Vec<Request>, Vec<Request>) = batch.into_iter().partition(|r| r.deadline > now);
    for request in expired {
        metrics::counter!("eventstore_append_timeouts_total").increment(1);
        let _ = request.reply.send(Err(Error::Timeout(timeout)));
    }
    if live.is_empty() {
        return;
    }
    let appends: Vec<&OwnedAppend> = live.iter().map(|r| &r.append).collect();
    let deadlines: Vec<Instant> = live.iter().map(|r| r.deadline).collect();
    let outcomes = commit(pool, channel, &appends, &deadlines, timeout).await;
    for (request, outcome) in live.into_iter().zip(outcomes) {
        let _ = request.reply.send(outcome);
    }
}
