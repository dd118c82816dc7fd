//! Read-your-writes waiters: the queries with `?min_version=N` waiting for their order's
//! view to reach version `N` (see [`crate::http`]).
//!
//! - **Woken per order.** A waiter registers its order id; after every batch this
//!   process commits, [`Waiters::committed`] wakes only the waiters of the orders whose
//!   records were in the batch (the record key is the order id), and each re-reads its
//!   view once. Batches committed by *other* replicas (which own other partitions) wake
//!   nobody here, so a waiter also re-reads on a backoff, [`RECHECK_MIN`] doubling to
//!   [`RECHECK_MAX`]: about five reads over the default 2 s wait, whatever the traffic.
//! - **Capped.** At most `MIN_VERSION_MAX_WAITERS` queries wait at once (each holds a
//!   connection of the query pool only while it reads). A query over the cap does not
//!   wait: it answers at once, exactly as one whose wait ran out (`200` with
//!   `X-View-Stale: true` and `Retry-After: 1`, or `404` `/problems/not-yet-visible`), and
//!   is counted in `projector_min_version_refused_total`. Clients already handle that
//!   answer, and it keeps a burst of waiters from exhausting the pool or memory.
//! - **Unknown ids answer at once when they are not coming.** Order ids are UUIDv7s,
//!   made when the order is created. Each batch stores its partition's latest event time
//!   (`partition_clock`, in the batch's transaction). The outbox relay publishes events
//!   in commit order, so once *every* partition of the topic holds an event that happened
//!   more than [`UNKNOWN_ID_MARGIN`] after the id's time, the order's first event would
//!   have been read already, wherever its partition: the query answers `404`
//!   `/problems/not-found` at once instead of waiting. Until then (an idle partition, an
//!   id that is not a UUIDv7, the partition count not known yet) it waits as any other.
//!
//! Metrics: `projector_min_version_waiters` (gauge), `projector_min_version_reads_total`
//! (views read by waiting queries) and `projector_min_version_refused_total` (over the
//! cap).

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, OnceLock, PoisonError},
    time::Duration,
};

use chrono::{DateTime, Utc};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, futures::Notified};
use uuid::Uuid;

/// The first re-read of a waiter not woken by a local commit.
pub const RECHECK_MIN: Duration = Duration::from_millis(100);
/// The longest interval between re-reads of a waiter not woken by a local commit.
pub const RECHECK_MAX: Duration = Duration::from_secs(1);
/// How far past an unknown id's creation time every partition must be for the query not
/// to wait: room for the creating transaction and for clock skew between command-service
/// instances.
pub const UNKNOWN_ID_MARGIN: Duration = Duration::from_secs(5);

/// The registry of waiting queries.
#[derive(Debug)]
pub struct Waiters {
    orders: Mutex<HashMap<Uuid, Arc<Notify>>>,
    permits: Arc<Semaphore>,
    /// The number of partitions of the topic, once read from Kafka.
    partitions: OnceLock<usize>,
}

/// A registered waiter; unregisters when dropped.
#[derive(Debug)]
pub struct Watch {
    waiters: Arc<Waiters>,
    order_id: Uuid,
    notify: Arc<Notify>,
    _permit: OwnedSemaphorePermit,
}

impl Waiters {
    /// A registry of at most `max` waiters.
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(Self {
            orders: Mutex::new(HashMap::new()),
            permits: Arc::new(Semaphore::new(max)),
            partitions: OnceLock::new(),
        })
    }

    /// Registers a waiter for `order_id`; `None` (counted) when the cap is reached.
    pub fn watch(self: &Arc<Self>, order_id: Uuid) -> Option<Watch> {
        let Ok(permit) = Arc::clone(&self.permits).try_acquire_owned() else {
            metrics::counter!("projector_min_version_refused_total").increment(1);
            return None;
        };
        let notify = Arc::clone(self.lock().entry(order_id).or_default());
        waiting().increment(1.0);
        Some(Watch { waiters: Arc::clone(self), order_id, notify, _permit: permit })
    }

    /// Wakes the waiters of the orders whose keys are in `keys` (a committed batch).
    pub fn committed<'a>(&self, keys: impl IntoIterator<Item = Option<&'a [u8]>>) {
        let orders = self.lock();
        if orders.is_empty() {
            return;
        }
        for key in keys.into_iter().flatten() {
            let Some(order_id) = std::str::from_utf8(key).ok().and_then(|k| Uuid::parse_str(k).ok()) else {
                continue;
            };
            if let Some(notify) = orders.get(&order_id) {
                notify.notify_waiters();
            }
        }
    }

    /// Counts a view read by a waiting query.
    pub fn read(&self) {
        metrics::counter!("projector_min_version_reads_total").increment(1);
    }

    /// Records the topic's partition count (read once, at start).
    pub fn set_partitions(&self, count: usize) {
        let _ = self.partitions.set(count);
    }

    /// The topic's partition count, once known.
    pub fn partitions(&self) -> Option<usize> {
        self.partitions.get().copied()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, Arc<Notify>>> {
        self.orders.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Watch {
    /// Completes at the next commit of a batch holding this order's records. Create it
    /// before reading the view, so that a commit in between is not missed.
    pub fn notified(&self) -> Notified<'_> {
        self.notify.notified()
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let mut orders = self.waiters.lock();
        // The map's reference and this one: the last waiter of the order is leaving.
        if Arc::strong_count(&self.notify) == 2 {
            orders.remove(&self.order_id);
        }
        waiting().decrement(1.0);
    }
}

/// The waiters gauge. Looked up at each use, not kept: the registry may be built before
/// the service installs its metrics recorder.
fn waiting() -> metrics::Gauge {
    metrics::gauge!("projector_min_version_waiters")
}

/// The time after which every partition must be for an unknown `order_id` not to be
/// waited for: its UUIDv7 time plus [`UNKNOWN_ID_MARGIN`]; `None` for other ids.
pub fn not_coming_after(order_id: Uuid) -> Option<DateTime<Utc>> {
    if order_id.get_version_num() != 7 {
        return None;
    }
    let (seconds, nanos) = order_id.get_timestamp()?.to_unix();
    let created = DateTime::from_timestamp(i64::try_from(seconds).ok()?, nanos)?;
    created.checked_add_signed(chrono::Duration::from_std(UNKNOWN_ID_MARGIN).ok()?)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_commit_wakes_only_the_waiters_of_its_orders() {
        let waiters = Waiters::new(10);
        let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
        let watch_a = waiters.watch(a).unwrap();
        let woken_a = watch_a.notified();
        let b_key = b.to_string();
        waiters.committed([Some(b_key.as_bytes()), None, Some(&b"not an id"[..])]);
        let mut woken_a = std::pin::pin!(woken_a);
        assert!(futures::poll!(woken_a.as_mut()).is_pending(), "a commit of B woke A's waiter");
        let a_key = a.to_string();
        waiters.committed([Some(a_key.as_bytes())]);
        assert!(futures::poll!(woken_a.as_mut()).is_ready());
    }

    #[test]
    fn the_cap_refuses_waiters_and_frees_with_them() {
        let waiters = Waiters::new(1);
        let id = Uuid::now_v7();
        let first = waiters.watch(id).unwrap();
        assert!(waiters.watch(id).is_none());
        drop(first);
        assert!(waiters.lock().is_empty(), "the last waiter unregisters its order");
        assert!(waiters.watch(id).is_some());
    }

    #[test]
    fn only_uuid_v7_ids_have_a_creation_time() {
        let id = Uuid::now_v7();
        let after = not_coming_after(id).unwrap();
        let now = Utc::now();
        assert!(after > now && after <= now + chrono::Duration::seconds(6), "{after} vs {now}");
        assert_eq!(not_coming_after(Uuid::new_v4()), None);
    }
}
