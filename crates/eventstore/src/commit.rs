//! Takes a group of appends from their first try to each one's exact outcome.
//!
//! The group is tried in one transaction. Then, by what went wrong:
//!
//! - **A unique violation** (some append lost a race): one look-up tells each append's
//!   fate: its events are already stored (an earlier try committed: `Ok`), its version
//!   is taken ([`Error::Conflict`]), its idempotency key is taken
//!   ([`Error::DuplicateIdempotencyKey`]), or nothing stands in its way. The losers get
//!   their answer and only the others are tried again, together. When the look-up
//!   names no loser, the appends are tried one at a time.
//! - **The commit's answer was lost** (the connection broke after COMMIT was sent): the
//!   same appends are tried again. That try either commits (the first did not) or
//!   meets rows already stored, whose look-up says `Committed` when they are the
//!   appends' own; while the first transaction is still finishing on the server, the
//!   new one waits on its rows. So an append never answers a conflict for its own
//!   effect. When the outcome still cannot be learned, the append gets
//!   [`Error::OutcomeUnknown`].
//! - **A deadlock or a serialization failure** (the server aborted the transaction
//!   for a conflict with a concurrent one): for a group, the appends are tried one at
//!   a time, as for any other failure of a group: they did nothing wrong, and failing
//!   them all with a transient error would answer up to a batch of unrelated commands
//!   "try again". A single append gets the (transient) error. The store's own
//!   transactions take their row locks in one order and do not deadlock with each
//!   other (see the `transaction` module); this is for writers that do not (another
//!   program, a replica of an older version).
//! - **A transient failure** (database down, connection broken before the commit):
//!   every remaining append fails at once with it; nothing is retried here, so an
//!   outage costs one connection attempt per group, not one per append.
//! - **Any other failure** (bad data in one append): the appends are tried one at a
//!   time, so that only the bad one gets the error.
//!
//! Only the appends of the failed group are tried one at a time; the ones deferred
//! behind them (same stream or key) go on in groups.
//! - **A deadline**: each append has its own. A try gives up at the earliest one of
//!   its group; then only the appends whose deadline has passed get their answer and
//!   the others are tried again (once a commit may have been sent, that try settles it
//!   as for a lost answer), so that under load one append that waited long in the
//!   queue does not time out the fresh ones batched with it. An append whose
//!   deadline passes gets [`Error::Timeout`], or
//!   [`Error::OutcomeUnknown`] when their commit may have taken effect.
//!
//! Two appends of one group on the same stream, or with the same idempotency key, are
//! never in one transaction: the second is tried after the first's outcome, as if
//! the two had come one after the other.

use std::{collections::HashSet, time::Duration};

use deadpool_postgres::Pool;
use tokio::time::Instant;

use crate::{
    Error, Result,
    transaction::{OwnedAppend, TryError, Verdict, verdicts, write},
};

/// How many times the appends of a lost commit answer are tried again to learn
/// their outcome (each try waits for the lost transaction to finish, so one is
/// normally enough).
const RESOLVE_TRIES: u32 = 3;

/// Writes `appends` and returns each one's outcome, in order, each by its deadline.
/// `timeout` is the time the caller was given, for error messages.
pub(crate) async fn commit(
    pool: &Pool,
    channel: Option<&str>,
    appends: &[&OwnedAppend],
    deadlines: &[Instant],
    timeout: Duration,
) -> Vec<Result<()>> {
    let mut run =
        Run { outcomes: appends.iter().map(|_| None).collect(), maybe_committed: vec![false; appends.len()] };
    let mut pending: Vec<usize> = (0..appends.len()).collect();
    // Appends to try one at a time: the members of a failed group, always at the
    // front of `pending`.
    let mut singles: HashSet<usize> = HashSet::new();
    let mut resolve_tries = 0;
    loop {
        // The appends whose deadline passed are answered; the others go on.
        let at = Instant::now();
        let (expired, live): (Vec<usize>, Vec<usize>) = pending.iter().partition(|&&i| deadlines[i] <= at);
        run.fail_all(&expired, &TryError::Deadline { commit_sent: false }, timeout);
        pending = live;
        if pending.is_empty() {
            break;
        }
        let (now, later) = if singles.contains(&pending[0]) {
            (pending[..1].to_vec(), pending[1..].to_vec())
        } else {
            split(&pending, appends)
        };
        let group: Vec<&OwnedAppend> = now.iter().map(|&i| appends[i]).collect();
        let deadline = now.iter().map(|&i| deadlines[i]).min().unwrap_or(at);
        metrics::histogram!("eventstore_group_commit_size").record(group.len() as f64);
        match write(pool, channel, &group, deadline).await {
            Ok(()) => {
                for &i in &now {
                    run.decide(i, Ok(()));
                }
                pending = later;
            }
            Err(TryError::Unique(error)) => {
                if group.len() > 1 {
                    metrics::counter!("eventstore_group_commit_fallbacks_total").increment(1);
                }
                let verdicts = match verdicts(pool, &group, deadline).await {
                    Ok(verdicts) => verdicts,
                    // The earliest deadline passed: answer those, try the others again.
                    Err(TryError::Deadline { .. }) => continue,
                    Err(failure) => {
                        run.fail_all(&pending, &failure, timeout);
                        break;
                    }
                };
                let mut rest = Vec::new();
                for (&i, verdict) in now.iter().zip(verdicts) {
                    match verdict {
                        Verdict::Committed => run.decide(i, Ok(())),
                        Verdict::VersionTaken => run.decide(i, Err(appends[i].conflict())),
                        Verdict::KeyTaken => run.decide(i, Err(appends[i].duplicate_key())),
                        Verdict::Free => rest.push(i),
                    }
                }
                if rest.len() == now.len() {
                    // No loser named (the row in the way is not one the look-up knows).
                    if let [only] = now[..] {
                        run.decide(only, Err(error));
                        rest.clear();
                    } else {
                        singles.extend(now.iter().copied());
                    }
                }
                rest.extend(later);
                pending = rest;
            }
            Err(TryError::CommitUnknown(error)) => {
                for &i in &now {
                    run.maybe_committed[i] = true;
                }
                resolve_tries += 1;
                tracing::warn!(error = %error, size = group.len(), "the answer to a commit was lost; learning its outcome");
                if resolve_tries > RESOLVE_TRIES {
                    for &i in &now {
                        run.decide(i, Err(Error::OutcomeUnknown(Box::new(error.clone()))));
                    }
                    pending = later;
                }
            }
            Err(TryError::Permanent(error)) => {
                if let [only] = now[..] {
                    run.decide(only, Err(error));
                    pending = later;
                } else {
                    singles.extend(now.iter().copied());
                    pending = [now, later].concat();
                }
            }
            Err(TryError::Concurrency(error)) => {
                if let [only] = now[..] {
                    run.fail(only, error);
                    pending = later;
                } else {
                    tracing::debug!(error = %error, size = group.len(), "a shared transaction lost to a concurrent one; trying its appends one at a time");
                    metrics::counter!("eventstore_group_commit_fallbacks_total").increment(1);
                    singles.extend(now.iter().copied());
                    pending = [now, later].concat();
                }
            }
            Err(TryError::Deadline { commit_sent }) => {
                // The earliest deadline of the group passed: those appends are answered
                // at the top of the loop, the others are tried again (a commit that may
                // have been sent is then settled like a lost answer).
                if commit_sent {
                    for &i in &now {
                        run.maybe_committed[i] = true;
                    }
                }
            }
            Err(failure @ TryError::Transient(_)) => {
                run.fail_all(&pending, &failure, timeout);
                break;
            }
        }
    }
    run.outcomes.into_iter().map(|o| o.unwrap_or(Err(Error::ShutDown))).collect()
}

/// The outcomes decided so far.
struct Run {
    outcomes: Vec<Option<Result<()>>>,
    /// Whether an earlier try of the append may have committed.
    maybe_committed: Vec<bool>,
}

impl Run {
    fn decide(&mut self, i: usize, outcome: Result<()>) {
        self.outcomes[i] = Some(outcome);
    }

    /// Ends append `i` with `error`: as it is, or as [`Error::OutcomeUnknown`] when an
    /// earlier try of the append may have committed.
    fn fail(&mut self, i: usize, error: Error) {
        let error = if self.maybe_committed[i] { Error::OutcomeUnknown(Box::new(error)) } else { error };
        self.decide(i, Err(error));
    }

    /// Ends every append of `pending` with `failure` (see [`Run::fail`]).
    fn fail_all(&mut self, pending: &[usize], failure: &TryError, timeout: Duration) {
        let error = match failure {
            TryError::Deadline { .. } => Error::Timeout(timeout),
            TryError::Unique(e)
            | TryError::CommitUnknown(e)
            | TryError::Concurrency(e)
            | TryError::Transient(e)
            | TryError::Permanent(e) => e.clone(),
        };
        for &i in pending {
            self.fail(i, error.clone());
        }
    }
}

/// Splits `pending` into the appends that can share a transaction (the first one of
/// each stream and of each idempotency key) and the others, in order.
fn split(pending: &[usize], appends: &[&OwnedAppend]) -> (Vec<usize>, Vec<usize>) {
    let mut streams = HashSet::new();
    let mut keys = HashSet::new();
    let (mut now, mut later) = (Vec::new(), Vec::new());
    for &i in pending {
        let append = appends[i];
        let key = append.idempotency.as_ref().map(|r| r.key.as_str());
        let fresh_key = key.is_none_or(|k| !keys.contains(k));
        if fresh_key && !streams.contains(&append.stream_id) {
            streams.insert(append.stream_id);
            keys.extend(key);
            now.push(i);
        } else {
            later.push(i);
        }
    }
    (now, later)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use uuid::Uuid;

    use super::*;
    use crate::{IdempotencyRecord, NewEvent};

    fn append(stream: u128, key: Option<&str>) -> OwnedAppend {
        OwnedAppend {
            stream_id: Uuid::from_u128(stream),
            expected_version: 0,
            events: vec![NewEvent {
                event_id: Uuid::now_v7(),
                version: 1,
                event_type: "E".into(),
                payload: vec![],
            }],
            outbox: vec![],
            snapshot: None,
            idempotency: key.map(|k| IdempotencyRecord {
                key: k.into(),
                request_hash: vec![],
                status: 200,
                response: serde_json::json!({}),
                ttl: Duration::from_secs(1),
            }),
        }
    }

    #[test]
    fn a_stream_or_a_key_twice_waits_for_the_first() {
        let appends =
            [append(1, Some("a")), append(2, None), append(1, None), append(3, Some("a")), append(4, None)];
        let refs: Vec<&OwnedAppend> = appends.iter().collect();
        let (now, later) = split(&[0, 1, 2, 3, 4], &refs);
        assert_eq!(now, [0, 1, 4]);
        assert_eq!(later, [2, 3]);
        // The deferred ones go together next time.
        assert_eq!(split(&later, &refs), (vec![2, 3], vec![]));
    }
}
