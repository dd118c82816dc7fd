//! The consumer's librdkafka context: the rebalance callback queues assignment changes
//! for the loop, and the statistics callback keeps the partitions' end offsets (for the
//! lag gauges).

use std::{
    collections::HashMap,
    sync::{Mutex, PoisonError},
};

use rdkafka::{
    ClientContext, Statistics, TopicPartitionList,
    consumer::{BaseConsumer, ConsumerContext, Rebalance},
    error::KafkaError,
    types::RDKafkaErrorCode,
};
use tracing::{debug, error, warn};

/// Assignment changes queued by the rebalance callback for the loop.
#[derive(Debug)]
pub(crate) enum Change {
    /// Partitions newly assigned.
    Assigned(Vec<i32>),
    /// Partitions taken away.
    Revoked(Vec<i32>),
}

/// The consumer's context: queues assignment changes and keeps the partitions' end
/// offsets from librdkafka's statistics.
pub(crate) struct Context {
    pub(crate) topic: String,
    pub(crate) changes: Mutex<Vec<Change>>,
    pub(crate) ends: Mutex<HashMap<i32, i64>>,
}

impl ClientContext for Context {
    /// As librdkafka's default, except that reaching the end of a partition (reported
    /// when [`Projection::assign_all`] asks for it) is not an error.
    fn error(&self, error: KafkaError, reason: &str) {
        match error {
            KafkaError::PartitionEOF(_) | KafkaError::Global(RDKafkaErrorCode::PartitionEOF) => {
                debug!(reason, "end of partition reached");
            }
            error => error!("librdkafka: {error}: {reason}"),
        }
    }

    fn stats(&self, statistics: Statistics) {
        let Some(topic) = statistics.topics.get(&self.topic) else { return };
        let mut ends = self.ends.lock().unwrap_or_else(PoisonError::into_inner);
        for (partition, stats) in &topic.partitions {
            // read_committed reads up to the last stable offset.
            let end = if stats.ls_offset >= 0 { stats.ls_offset } else { stats.hi_offset };
            if *partition >= 0 && end >= 0 {
                ends.insert(*partition, end);
            }
        }
    }
}

impl ConsumerContext for Context {
    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let partitions = |tpl: &TopicPartitionList| -> Vec<i32> {
            tpl.elements().iter().filter(|e| e.topic() == self.topic).map(|e| e.partition()).collect()
        };
        let change = match rebalance {
            Rebalance::Assign(tpl) => Change::Assigned(partitions(tpl)),
            Rebalance::Revoke(tpl) => Change::Revoked(partitions(tpl)),
            Rebalance::Error(e) => {
                warn!(error = %e, "rebalance failed");
                return;
            }
        };
        let kind = match &change {
            Change::Assigned(partitions) if !partitions.is_empty() => Some("assigned"),
            Change::Revoked(partitions) if !partitions.is_empty() => Some("revoked"),
            _ => None,
        };
        if let Some(kind) = kind {
            metrics::counter!("consumer_rebalances_total", "kind" => kind).increment(1);
        }
        debug!(?change, "assignment changed");
        self.changes.lock().unwrap_or_else(PoisonError::into_inner).push(change);
    }
}
