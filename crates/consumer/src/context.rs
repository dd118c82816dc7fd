//! The consumer's librdkafka context: the rebalance callbacks (on the poll thread) and
//! the statistics callback (the lag gauges).

use std::sync::Arc;

use rdkafka::{
    ClientContext, Statistics, TopicPartitionList,
    consumer::{BaseConsumer, CommitMode, Consumer as _, ConsumerContext, Rebalance},
};
use tokio::sync::mpsc::UnboundedSender;
use tracing::{debug, info, warn};

use crate::{
    metric,
    shared::{Shared, TopicPartition},
};

/// What the poll thread tells the loop.
#[derive(Debug)]
pub(crate) enum Event {
    /// A record, received under its partition's `epoch`.
    Record { epoch: u64, record: crate::Record },
    /// Partitions assigned.
    Assigned(Vec<TopicPartition>),
    /// Partitions revoked (already forgotten by [`Shared`]).
    Revoked(Vec<TopicPartition>),
}

pub(crate) struct Context {
    pub(crate) shared: Arc<Shared>,
    pub(crate) events: UnboundedSender<Event>,
    pub(crate) revoke_timeout: std::time::Duration,
}

fn partitions(list: &TopicPartitionList) -> Vec<TopicPartition> {
    list.elements().iter().map(|e| (e.topic().to_string(), e.partition())).collect()
}

impl ClientContext for Context {
    fn stats(&self, statistics: Statistics) {
        for (topic, stats) in &statistics.topics {
            for (partition, p) in &stats.partitions {
                // Only partitions being fetched: the statistics list the others (revoked
                // ones too) with stale offsets.
                if *partition >= 0 && p.fetch_state == "active" && p.consumer_lag >= 0 {
                    metrics::gauge!(metric::LAG, "topic" => topic.clone(), "partition" => partition.to_string())
                        .set(p.consumer_lag as f64);
                }
            }
        }
    }
}

impl ConsumerContext for Context {
    /// On revocation, before librdkafka lets the partitions go: stop starting their
    /// records, wait (up to the revoke timeout) for those being handled, and commit
    /// their done prefix synchronously (committing later would be refused: the
    /// partitions would no longer be ours).
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Revoke(list) = rebalance else { return };
        let revoked = partitions(list);
        if revoked.is_empty() {
            return;
        }
        metrics::counter!(metric::REBALANCES, "kind" => "revoked").increment(1);
        // Their lag is the next owner's to report: a stale value here would count twice.
        for (topic, partition) in &revoked {
            metrics::gauge!(metric::LAG, "topic" => topic.clone(), "partition" => partition.to_string())
                .set(0.0);
        }
        let _ = self.events.send(Event::Revoked(revoked.clone()));
        let (positions, abandoned) = self.shared.revoke(&revoked, self.revoke_timeout);
        if abandoned > 0 {
            warn!(
                abandoned,
                "partitions revoked while records were still being handled; the next owner handles them again"
            );
        }
        if positions.count() > 0
            && let Err(error) = consumer.commit(&positions, CommitMode::Sync)
        {
            warn!(%error, "committing the revoked partitions failed; the next owner starts at their last commit");
        }
        info!(partitions = ?revoked, "partitions revoked");
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(list) => {
                let assigned = partitions(list);
                if assigned.is_empty() {
                    return;
                }
                self.shared.assigned(&assigned);
                metrics::counter!(metric::REBALANCES, "kind" => "assigned").increment(1);
                info!(partitions = ?assigned, "partitions assigned");
                let _ = self.events.send(Event::Assigned(assigned));
            }
            Rebalance::Revoke(_) => debug!("revocation done"),
            Rebalance::Error(error) => warn!(%error, "rebalance failed"),
        }
    }
}
