//! State shared by the lease keeper, the workers and whoever asks how the relay is
//! doing (a readiness probe, a test): the shards owned, which are in a batch, which
//! are being handed back, a generation per worker that changes whenever the worker's
//! share of the shards changes (so that a running worker notices shards taken over or
//! lost at once, not when its current shards run dry), and the health of publishing.

use std::{
    collections::BTreeSet,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    time::{Duration, Instant},
};

use tokio::sync::Notify;

use crate::{metric, options::SessionKeepalive};

#[derive(Debug, Default)]
struct State {
    connected: bool,
    members: usize,
    /// Shards whose advisory lock the lease session holds (including retiring ones).
    owned: BTreeSet<i32>,
    /// Owned shards to hand back once no batch uses them; no new batch starts on them.
    retiring: BTreeSet<i32>,
    /// Shards in a batch right now.
    busy: BTreeSet<i32>,
    /// Per worker: since when it waits for the broker's acknowledgements.
    publishing_since: Vec<Option<Instant>>,
    /// Per worker: bumped whenever the set of shards the worker may read changes.
    generations: Vec<u64>,
    /// Since when publications fail (for other reasons than the records themselves),
    /// and the last such failure; cleared by the next success.
    failing: Option<(Instant, String)>,
    /// The lease session's keepalive settings, as its server reports them.
    lease_keepalive: Option<SessionKeepalive>,
}

#[derive(Debug)]
pub(crate) struct Shared {
    state: Mutex<State>,
    wakers: Vec<Notify>,
    /// Woken when a batch on a retiring shard ends, so the keeper can release it.
    pub(crate) released: Notify,
    stall_threshold: Duration,
}

impl State {
    /// The share of the worker of `shard` changed.
    fn changed(&mut self, shard: i32) {
        let workers = self.generations.len().max(1);
        if let Some(generation) =
            usize::try_from(shard).ok().and_then(|s| self.generations.get_mut(s % workers))
        {
            *generation += 1;
        }
    }

    /// Every worker's share changed.
    fn all_changed(&mut self) {
        for generation in &mut self.generations {
            *generation += 1;
        }
    }
}

impl Shared {
    pub(crate) fn new(workers: usize, stall_threshold: Duration) -> Self {
        let state = State {
            publishing_since: vec![None; workers],
            generations: vec![0; workers],
            ..State::default()
        };
        Self {
            state: Mutex::new(state),
            wakers: (0..workers).map(|_| Notify::new()).collect(),
            released: Notify::new(),
            stall_threshold,
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn workers(&self) -> usize {
        self.wakers.len()
    }

    /// Wakes every worker (a notification, new shards, a new session). A worker that is
    /// busy keeps the wake-up for when it is done, so none is missed.
    pub(crate) fn wake_all(&self) {
        for waker in &self.wakers {
            waker.notify_one();
        }
    }

    /// Completes when worker `worker` is woken.
    pub(crate) async fn woken(&self, worker: usize) {
        match self.wakers.get(worker) {
            Some(waker) => waker.notified().await,
            None => std::future::pending().await,
        }
    }

    /// The shards worker `worker` may read now (owned, its own, not retiring, not in
    /// another batch), marked busy until [`Shared::end_batch`], and the worker's
    /// generation they belong to (see [`Shared::unchanged`]).
    pub(crate) fn begin_batch(&self, worker: usize) -> (Vec<i32>, u64) {
        let workers = self.workers();
        let mut state = self.state();
        let shards: Vec<i32> = state
            .owned
            .iter()
            .copied()
            .filter(|s| usize::try_from(*s).is_ok_and(|s| s % workers == worker))
            .filter(|s| !state.retiring.contains(s) && !state.busy.contains(s))
            .collect();
        state.busy.extend(shards.iter().copied());
        let generation = state.generations.get(worker).copied().unwrap_or(0);
        (shards, generation)
    }

    /// Whether worker `worker`'s share of the shards is still the one of `generation`:
    /// no shard of it taken, lost or being handed back since.
    pub(crate) fn unchanged(&self, worker: usize, generation: u64) -> bool {
        self.state().generations.get(worker).is_some_and(|g| *g == generation)
    }

    pub(crate) fn end_batch(&self, shards: &[i32]) {
        let mut state = self.state();
        let mut retiring = false;
        for shard in shards {
            state.busy.remove(shard);
            retiring |= state.retiring.contains(shard);
        }
        drop(state);
        if retiring {
            self.released.notify_one();
        }
    }

    pub(crate) fn session_up(&self) {
        self.state().connected = true;
    }

    /// The lease session is gone, and with it every advisory lock: own nothing.
    /// Batches in flight finish (safe: see the crate docs), but no new one starts.
    pub(crate) fn session_lost(&self) {
        let mut state = self.state();
        state.connected = false;
        state.owned.clear();
        state.retiring.clear();
        state.lease_keepalive = None;
        state.all_changed();
        drop(state);
        metrics::gauge!(metric::SHARDS_OWNED).set(0.0);
    }

    pub(crate) fn set_members(&self, members: usize) {
        self.state().members = members;
        metrics::gauge!(metric::MEMBERS).set(members as f64);
    }

    /// Marks the highest owned shards beyond `target` as retiring (and un-retires all
    /// when at or below it); returns how many shards are owned and not retiring.
    pub(crate) fn plan(&self, target: usize) -> usize {
        let mut state = self.state();
        let extra = state.owned.len().saturating_sub(target);
        let retiring: BTreeSet<i32> = state.owned.iter().rev().take(extra).copied().collect();
        let changed: Vec<i32> = retiring.symmetric_difference(&state.retiring).copied().collect();
        for shard in changed {
            state.changed(shard);
        }
        state.retiring = retiring;
        state.owned.len() - extra
    }

    /// Retiring shards that no batch uses, removed from the owned set: the caller
    /// unlocks them.
    pub(crate) fn take_releasable(&self) -> Vec<i32> {
        let mut state = self.state();
        let free: Vec<i32> = state.retiring.iter().copied().filter(|s| !state.busy.contains(s)).collect();
        for shard in &free {
            state.retiring.remove(shard);
            state.owned.remove(shard);
            state.changed(*shard);
        }
        let owned = state.owned.len();
        drop(state);
        metrics::gauge!(metric::SHARDS_OWNED).set(owned as f64);
        free
    }

    pub(crate) fn owned(&self) -> BTreeSet<i32> {
        self.state().owned.clone()
    }

    pub(crate) fn add_owned(&self, shard: i32) {
        let mut state = self.state();
        if state.owned.insert(shard) {
            state.changed(shard);
        }
        let owned = state.owned.len();
        drop(state);
        metrics::gauge!(metric::SHARDS_OWNED).set(owned as f64);
    }

    pub(crate) fn publishing(&self, worker: usize, active: bool) {
        if let Some(slot) = self.state().publishing_since.get_mut(worker) {
            *slot = active.then(Instant::now);
        }
    }

    /// The outcome of a batch: `None` when it published (or failed only because of a
    /// record, which is quarantined in time and does not make the relay unready),
    /// `Some` with the failure otherwise.
    pub(crate) fn publish_outcome(&self, error: Option<String>) {
        let mut state = self.state();
        state.failing = match (error, state.failing.take()) {
            (None, _) => None,
            (Some(error), Some((since, _))) => Some((since, error)),
            (Some(error), None) => Some((Instant::now(), error)),
        };
    }

    pub(crate) fn set_lease_keepalive(&self, keepalive: SessionKeepalive) {
        self.state().lease_keepalive = Some(keepalive);
    }
}

/// How a relay is doing; cheap to clone. Use [`RelayStatus::check`] as a readiness
/// probe.
#[derive(Debug, Clone)]
pub struct RelayStatus {
    pub(crate) shared: Arc<Shared>,
}

impl RelayStatus {
    /// `Ok` while publishing works: no batch has waited longer than the stall
    /// threshold for the broker's acknowledgements, and publications have not kept
    /// failing for longer than that either. A row that fails because of the record
    /// itself does not count: it is retried, then quarantined, and the relay goes on.
    /// `Err` says why not. Database reachability is not part of it (pair it with a
    /// database probe; [`RelayStatus::is_connected`] tells whether the lease session
    /// is up).
    pub fn check(&self) -> Result<(), String> {
        let state = self.shared.state();
        if let Some(since) = state.publishing_since.iter().flatten().min() {
            let waited = since.elapsed();
            if waited > self.shared.stall_threshold {
                return Err(format!("the broker has not acknowledged a batch for {waited:.1?}"));
            }
        }
        match &state.failing {
            Some((since, error)) if since.elapsed() > self.shared.stall_threshold => {
                Err(format!("publications have failed for {:.1?}; the last: {error}", since.elapsed()))
            }
            _ => Ok(()),
        }
    }

    /// The lease session's TCP keepalive settings as its server reports them (`None`
    /// while the session is down). On a Unix-domain socket the server reports zeros:
    /// keepalives apply to TCP only.
    pub fn lease_keepalive(&self) -> Option<SessionKeepalive> {
        self.shared.state().lease_keepalive
    }

    /// The shards this relay owns now.
    pub fn owned_shards(&self) -> Vec<i32> {
        self.shared.owned().into_iter().collect()
    }

    /// The number of relays (this one included) seen at the last rebalance.
    pub fn members(&self) -> usize {
        self.shared.state().members
    }

    /// Whether the lease session is up.
    pub fn is_connected(&self) -> bool {
        self.shared.state().connected
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn batches_take_own_free_shards_and_retiring_ones_are_released_when_idle() {
        let shared = Shared::new(2, Duration::from_secs(5));
        for shard in 0..6 {
            shared.add_owned(shard);
        }
        assert_eq!(shared.begin_batch(0).0, vec![0, 2, 4]);
        assert_eq!(shared.begin_batch(0).0, Vec::<i32>::new(), "busy shards are not read twice");
        assert_eq!(shared.begin_batch(1).0, vec![1, 3, 5]);
        assert_eq!(shared.plan(4), 4, "two shards over the target");
        assert!(shared.take_releasable().is_empty(), "4 and 5 are busy");
        shared.end_batch(&[0, 2, 4]);
        assert_eq!(shared.take_releasable(), vec![4]);
        shared.end_batch(&[1, 3, 5]);
        assert_eq!(shared.take_releasable(), vec![5]);
        assert_eq!(shared.owned().into_iter().collect::<Vec<_>>(), vec![0, 1, 2, 3]);
        assert_eq!(shared.plan(10), 4);
        assert!(shared.take_releasable().is_empty());
    }

    #[test]
    fn readiness_needs_no_stall_and_no_failure() {
        let shared = Arc::new(Shared::new(1, Duration::from_millis(1)));
        let status = RelayStatus { shared: Arc::clone(&shared) };
        assert!(!status.is_connected());
        shared.session_up();
        assert!(status.is_connected());
        assert_eq!(status.check(), Ok(()));
        shared.publishing(0, true);
        std::thread::sleep(Duration::from_millis(5));
        assert!(status.check().is_err_and(|e| e.contains("not acknowledged")));
        shared.publishing(0, false);
        shared.publish_outcome(Some("broker transport failure".into()));
        std::thread::sleep(Duration::from_millis(5));
        shared.publish_outcome(Some("fatal producer error".into()));
        assert!(status.check().is_err_and(|e| e.contains("fatal producer error")), "{:?}", status.check());
        shared.publish_outcome(None);
        assert_eq!(status.check(), Ok(()));
        shared.session_lost();
        assert!(!status.is_connected());
    }
}
