//! The aggregator as an [`orders_streams::Topology`]: the tasks of `orders` run stage 1
//! (per order), the tasks of the repartition topic stage 2 (per user); see
//! [`crate::topology`]. How each store's changelog records look:
//!
//! - order state: key the order id, value an [`OrderState`] (Protobuf);
//! - windows: key a [`WindowKey`] (Protobuf) or [`STREAM_TIME_KEY`], value a
//!   [`WindowStats`] (Protobuf) or the stream time (8 bytes, big-endian).

use std::time::Duration;

use orders_streams::{
    Change, ChangelogRecord, Input, Output, TableChange, TableStore, Topology, Window, WindowStore, Windows,
};
use prost::Message as _;
use tracing::warn;

use crate::topology::{
    OrderOutcome, OrderState, UserActivity, UserCurrency, WindowStats, apply_order_event,
    apply_user_activity, to_user_window_stats,
};

/// The key of the stream time's record in a windows changelog.
pub const STREAM_TIME_KEY: &[u8] = b"\0stream-time";

/// The key of a window's record in a windows changelog.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct WindowKey {
    /// The user.
    #[prost(string, tag = "1")]
    pub user_id: String,
    /// The currency.
    #[prost(string, tag = "2")]
    pub currency: String,
    /// The window's start, ms since the epoch.
    #[prost(int64, tag = "3")]
    pub start_ms: i64,
    /// Its end.
    #[prost(int64, tag = "4")]
    pub end_ms: i64,
}

/// Metric names.
pub mod metric {
    /// Order events skipped as duplicates (at or below their order's last version).
    pub const DUPLICATES: &str = "stats_duplicate_events_total";
    /// Events of orders whose creation was never seen.
    pub const UNKNOWN_ORDERS: &str = "stats_unknown_order_events_total";
    /// Activities too late for every window they fall in, sent to the late-events topic.
    pub const LATE: &str = "stats_late_events_total";
    /// Records dead-lettered.
    pub const DEAD_LETTERS: &str = "stats_dead_letters_total";
    /// Window updates and finals emitted to `order-stats`.
    pub const EMITTED: &str = "stats_windows_emitted_total";
}

/// The topics of the topology.
#[derive(Debug, Clone)]
pub struct Topics {
    /// The order events (stage 1's input).
    pub orders: String,
    /// The activities keyed by user (stage 1's output, stage 2's input).
    pub repartition: String,
    /// The window aggregates.
    pub stats: String,
    /// Activities too late for their window.
    pub late: String,
    /// Records that cannot be read.
    pub dead_letters: String,
}

/// The aggregator's topology.
#[derive(Debug, Clone)]
pub struct Aggregator {
    /// Its topics.
    pub topics: Topics,
    /// The windows of stage 2.
    pub windows: Windows,
    /// At most one update per window and interval.
    pub emit_interval: Duration,
    /// Whether windows close by wall-clock time too (see `WindowStore::punctuate`).
    pub wall_clock_close: bool,
    /// The name in the `dlq.consumer` header of its dead letters.
    pub consumer: String,
}

/// A task's state.
#[derive(Debug)]
pub enum Task {
    /// A partition of `orders`: stage 1.
    Orders(TableStore<String, OrderState>),
    /// A partition of the repartition topic: stage 2.
    Users(WindowStore<UserCurrency, WindowStats>),
}

impl Aggregator {
    fn dead_letter(&self, record: &Input<'_>, reason: &str) -> Output {
        warn!(
            topic = record.topic,
            partition = record.partition,
            offset = record.offset,
            reason,
            "dead-lettering a record"
        );
        metrics::counter!(metric::DEAD_LETTERS).increment(1);
        let reasons = [
            ("dlq.reason", reason.to_string()),
            ("dlq.origin.topic", record.topic.to_string()),
            ("dlq.origin.partition", record.partition.to_string()),
            ("dlq.origin.offset", record.offset.to_string()),
            ("dlq.consumer", self.consumer.clone()),
        ];
        // The original headers, but not the reasons of an earlier dead-lettering (a record
        // replayed from a dead-letter topic): one `dlq.reason`, this one.
        let mut headers = record.owned_headers();
        headers.retain(|(key, _)| !key.starts_with("dlq."));
        headers.extend(reasons.into_iter().map(|(k, v)| (k.to_string(), v.into_bytes())));
        Output {
            topic: self.topics.dead_letters.clone(),
            key: record.key.unwrap_or_default().to_vec(),
            value: record.value.map(<[u8]>::to_vec),
            headers,
        }
    }

    fn emit(&self, emitted: &orders_streams::Emitted<UserCurrency, WindowStats>, out: &mut Vec<Output>) {
        match to_user_window_stats(emitted) {
            Ok(stats) => {
                metrics::counter!(metric::EMITTED, "final" => if emitted.is_final { "true" } else { "false" })
                    .increment(1);
                out.push(Output {
                    topic: self.topics.stats.clone(),
                    key: emitted.key.0.clone().into_bytes(),
                    value: Some(orders_events::encode_stats(&stats)),
                    headers: Vec::new(),
                });
            }
            Err(error) => warn!(%error, user = %emitted.key.0, "a window that cannot be written; skipped"),
        }
    }
}

impl Topology for Aggregator {
    type Task = Task;

    fn new_task(&self, topic: &str, _partition: i32) -> Task {
        if topic == self.topics.orders {
            Task::Orders(TableStore::new())
        } else {
            Task::Users(WindowStore::new(self.windows, self.emit_interval))
        }
    }

    fn restore(&self, task: &mut Task, key: &[u8], value: Option<&[u8]>) -> Result<(), String> {
        match task {
            Task::Orders(orders) => {
                let key = String::from_utf8(key.to_vec()).map_err(|e| format!("order id: {e}"))?;
                let value =
                    value.map(OrderState::decode).transpose().map_err(|e| format!("order state: {e}"))?;
                orders.restore(TableChange { key, value });
            }
            Task::Users(windows) if key == STREAM_TIME_KEY => {
                let bytes: [u8; 8] =
                    value.unwrap_or_default().try_into().map_err(|_| "stream time: not 8 bytes")?;
                windows.restore(Change::StreamTime(i64::from_be_bytes(bytes)));
            }
            Task::Users(windows) => {
                let key = WindowKey::decode(key).map_err(|e| format!("window key: {e}"))?;
                let value = value.map(WindowStats::decode).transpose().map_err(|e| format!("window: {e}"))?;
                let window = Window { start_ms: key.start_ms, end_ms: key.end_ms };
                windows.restore(Change::Window { key: (key.user_id, key.currency), window, value });
            }
        }
        Ok(())
    }

    fn process(&self, task: &mut Task, record: Input<'_>, out: &mut Vec<Output>) {
        match task {
            Task::Orders(orders) => {
                let Some(payload) = record.value else {
                    out.push(self.dead_letter(&record, "the record has no value"));
                    return;
                };
                let event = match orders_events::decode_event(payload) {
                    Ok((_, event)) => event,
                    Err(error) => {
                        out.push(self.dead_letter(&record, &format!("undecodable event: {error}")));
                        return;
                    }
                };
                match apply_order_event(orders, &event) {
                    // With the event's headers (its trace context, say): a late activity
                    // or a dead letter of stage 2 carries them on.
                    OrderOutcome::Activity(activity) => out.push(Output {
                        topic: self.topics.repartition.clone(),
                        key: activity.user_id.clone().into_bytes(),
                        value: Some(activity.encode_to_vec()),
                        headers: record.owned_headers(),
                    }),
                    OrderOutcome::Duplicate => metrics::counter!(metric::DUPLICATES).increment(1),
                    OrderOutcome::UnknownOrder => metrics::counter!(metric::UNKNOWN_ORDERS).increment(1),
                    OrderOutcome::Applied => {}
                }
            }
            Task::Users(windows) => {
                let activity = match record.value.map(UserActivity::decode) {
                    Some(Ok(activity)) => activity,
                    Some(Err(error)) => {
                        out.push(self.dead_letter(&record, &format!("undecodable activity: {error}")));
                        return;
                    }
                    None => {
                        out.push(self.dead_letter(&record, "the record has no value"));
                        return;
                    }
                };
                if apply_user_activity(windows, &activity).is_late() {
                    metrics::counter!(metric::LATE).increment(1);
                    out.push(Output {
                        topic: self.topics.late.clone(),
                        key: record.key.unwrap_or_default().to_vec(),
                        value: record.value.map(<[u8]>::to_vec),
                        headers: record.owned_headers(),
                    });
                }
            }
        }
    }

    fn punctuate(&self, task: &mut Task, now_ms: i64, out: &mut Vec<Output>) {
        let Task::Users(windows) = task else { return };
        for emitted in windows.updates_due(now_ms) {
            self.emit(&emitted, out);
        }
        let closed = if self.wall_clock_close { windows.punctuate(now_ms) } else { windows.close() };
        for emitted in closed {
            self.emit(&emitted, out);
        }
    }

    fn changelog(&self, task: &mut Task) -> Vec<ChangelogRecord> {
        match task {
            Task::Orders(orders) => orders
                .take_changes()
                .into_iter()
                .map(|change| (change.key.into_bytes(), change.value.map(|v| v.encode_to_vec())))
                .collect(),
            Task::Users(windows) => windows
                .take_changes()
                .into_iter()
                .map(|change| match change {
                    Change::StreamTime(ts) => (STREAM_TIME_KEY.to_vec(), Some(ts.to_be_bytes().to_vec())),
                    Change::Window { key: (user_id, currency), window, value } => {
                        let key =
                            WindowKey { user_id, currency, start_ms: window.start_ms, end_ms: window.end_ms };
                        (key.encode_to_vec(), value.map(|v| v.encode_to_vec()))
                    }
                })
                .collect(),
        }
    }
}
