//! The `order-commands` consumer: applies the commands other services send (ship,
//! cancel, pay) through the same path as HTTP.
//!
//! - **Once per command id.** Each command is applied under the idempotency key
//!   `command:<id>`, recorded in the same transaction as its events; a redelivered
//!   command finds its record and is skipped.
//! - **Offsets after the database.** A message's offset is committed only after its
//!   outcome is committed to PostgreSQL (events, or the recorded refusal), so a crash
//!   in between redelivers it, and the key makes that harmless.
//! - **Refusals are recorded, not retried.** A command that breaks a rule (cancel a
//!   shipped order...), names an unknown order or a version it is no longer at, is
//!   recorded with its reason and skipped.
//! - **Transient outcomes are retried, never recorded.** Outages (database down), a
//!   store that is overloaded or whose commit outcome was unknown, and a command that
//!   lost every race with other writers (`Contention`) are retried with exponential
//!   backoff and jitter, holding the partition; recording them would make the
//!   redelivery look like a duplicate and drop a saga step.
//! - **Poison goes to the dead-letter topic.** A message that does not decode, or whose
//!   order's history is unusable, is produced to the dead-letter topic with its
//!   original key and bytes and the reason and origin in headers; the consumer goes on.
//! - **Order per order, orders at once.** The loop takes what is waiting, up to its
//!   concurrency, and applies the commands of different orders concurrently (their
//!   appends share the event store's group commits) and one order's commands one after
//!   the other, in the order sent (`order-commands` is keyed by order id). The offsets
//!   of such a chunk are committed once all of it is done (at shutdown, each
//!   partition's up to its first command not done); a command that waits for a retry
//!   holds its chunk (as it held its partition when the loop took one message at a
//!   time).

use std::{
    collections::{HashMap, HashSet},
    time::Duration,
};

use anyhow::Context as _;
use backon::{ExponentialBuilder, Retryable};
use futures::{FutureExt as _, future::join_all};
use orders_events::{CommandMessage, OrderCommand, decode_command};
use orders_eventstore::IdempotencyRecord;
use orders_runtime::{CancellationToken, kafka::KafkaArgs};
use rdkafka::{
    Message, Offset, TopicPartitionList,
    consumer::{CommitMode, Consumer, StreamConsumer},
    message::{BorrowedMessage, Header, Headers as _, OwnedHeaders},
    producer::{FutureProducer, FutureRecord},
};
use sha2::{Digest, Sha256};
use tracing::Instrument as _;

use crate::app::{CommandError, Commands, Context, IdempotencyKey, Intent};

/// The pause between tries of one message: from 100 ms, doubling, up to 10 s, with
/// jitter, for as long as it takes (the partition waits; shutdown interrupts it).
fn backoff() -> ExponentialBuilder {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(100))
        .with_max_delay(Duration::from_secs(10))
        .without_max_times()
        .with_jitter()
}

/// Topics and group of the consumer.
#[derive(Debug, Clone)]
pub struct Topics {
    /// The commands topic.
    pub commands: String,
    /// Where undecodable commands go.
    pub dead_letter: String,
    /// The consumer group.
    pub group: String,
}

/// Consumes `order-commands`; see the [module docs](self).
pub struct CommandConsumer {
    commands: Commands,
    consumer: StreamConsumer,
    producer: FutureProducer,
    topics: Topics,
    /// Most commands in one chunk.
    concurrency: usize,
}

impl std::fmt::Debug for CommandConsumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CommandConsumer").field("topics", &self.topics).finish_non_exhaustive()
    }
}

/// What became of one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Handled {
    Applied,
    Duplicate,
    Refused,
    DeadLettered,
}

impl Handled {
    fn label(self) -> &'static str {
        match self {
            Handled::Applied => "applied",
            Handled::Duplicate => "duplicate",
            Handled::Refused => "refused",
            Handled::DeadLettered => "dead_lettered",
        }
    }
}

/// The span of one command's handling: it continues the sender's trace (the record's
/// `traceparent`), so that a saga step and the events it causes are one trace.
fn consume_span(message: &BorrowedMessage<'_>) -> tracing::Span {
    let span = tracing::info_span!(
        "consume",
        otel.kind = "consumer",
        messaging.system = "kafka",
        messaging.destination.name = %message.topic(),
        partition = message.partition(),
        offset = message.offset(),
    );
    let headers = message.headers();
    let header = |name: &str| {
        headers
            .and_then(|h| h.iter().find(|h| h.key == name))
            .and_then(|h| h.value)
            .and_then(|v| std::str::from_utf8(v).ok())
    };
    orders_trace_context::set_parent(
        &span,
        header(orders_trace_context::TRACEPARENT),
        header(orders_trace_context::TRACESTATE),
    );
    span
}

impl CommandConsumer {
    /// A consumer in `topics.group`, not yet subscribed, applying up to `concurrency`
    /// commands of different orders at once.
    pub fn new(
        commands: Commands,
        kafka: &KafkaArgs,
        topics: Topics,
        concurrency: usize,
    ) -> anyhow::Result<Self> {
        let consumer: StreamConsumer =
            kafka.consumer_config(&topics.group).create().context("creating the order-commands consumer")?;
        let producer: FutureProducer =
            kafka.producer_config().create().context("creating the dead-letter producer")?;
        Ok(Self { commands, consumer, producer, topics, concurrency: concurrency.max(1) })
    }

    /// Consumes until `token` is cancelled.
    pub async fn run(self, token: CancellationToken) -> anyhow::Result<()> {
        // Every outcome from 0, so that the first of each shows as an increase.
        for handled in [Handled::Applied, Handled::Duplicate, Handled::Refused, Handled::DeadLettered] {
            metrics::counter!("order_commands_total", "outcome" => handled.label()).increment(0);
        }
        self.consumer.subscribe(&[&self.topics.commands]).context("subscribing to order-commands")?;
        loop {
            let first = tokio::select! {
                () = token.cancelled() => break,
                received = self.consumer.recv() => received,
            };
            let mut chunk = match first {
                Ok(message) => vec![message],
                Err(e) => {
                    tracing::warn!(error = %e, "receiving from order-commands failed");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
            };
            // And whatever else is waiting already.
            while chunk.len() < self.concurrency {
                match self.consumer.recv().now_or_never() {
                    Some(Ok(message)) => chunk.push(message),
                    Some(Err(e)) => {
                        tracing::warn!(error = %e, "receiving from order-commands failed");
                        break;
                    }
                    None => break,
                }
            }
            let done = self.handle_chunk(&chunk, &token).await;
            let read = chunk.iter().map(|m| (m.topic(), m.partition(), m.offset()));
            let offsets = next_offsets(read, &done);
            if offsets.count() > 0
                && let Err(e) = self.consumer.commit(&offsets, CommitMode::Async)
            {
                tracing::warn!(error = %e, "committing the offsets failed; the commands may be redelivered");
            }
            if done.len() < chunk.len() {
                break; // shutdown: what was not done is redelivered (and applied once)
            }
        }
        self.consumer.unsubscribe();
        Ok(())
    }

    /// Handles a chunk: each order's messages one after the other, in offset order,
    /// different orders concurrently. The offsets of the messages done (all of them,
    /// unless shutdown interrupted the chunk).
    async fn handle_chunk(
        &self,
        chunk: &[BorrowedMessage<'_>],
        token: &CancellationToken,
    ) -> HashSet<(i32, i64)> {
        let mut by_key: Vec<Vec<&BorrowedMessage<'_>>> = Vec::new();
        let mut index: HashMap<Option<&[u8]>, usize> = HashMap::new();
        for message in chunk {
            let at = *index.entry(message.key()).or_insert_with(|| {
                by_key.push(Vec::new());
                by_key.len() - 1
            });
            by_key[at].push(message);
        }
        let runs = by_key.into_iter().map(|messages| async move {
            let mut done = Vec::new();
            for message in messages {
                let Some(handled) = self.handle(message, token).instrument(consume_span(message)).await
                else {
                    break;
                };
                metrics::counter!("order_commands_total", "outcome" => handled.label()).increment(1);
                done.push((message.partition(), message.offset()));
            }
            done
        });
        join_all(runs).await.into_iter().flatten().collect()
    }

    /// Handles one message; `None` when shutdown interrupted it (not committed).
    async fn handle(&self, message: &BorrowedMessage<'_>, token: &CancellationToken) -> Option<Handled> {
        let bytes = message.payload().unwrap_or_default();
        let command = match decode_command(bytes) {
            Ok(command) => command,
            Err(e) => return self.dead_letter(message, &format!("undecodable command: {e}"), token).await,
        };
        // Everything but a poisoned history is retried, holding the partition: an
        // outage, a lost race (`Contention`), an unknown outcome (the retry settles it
        // under the command's key) and, logged as errors, unexpected failures.
        let applied = (|| self.apply(&command, bytes))
            .retry(backoff())
            .when(|e| !matches!(e, CommandError::Corrupt { .. }))
            .notify(|e, pause| match e {
                CommandError::Contention => {
                    tracing::info!(error = %e, retry_in = ?pause, "command lost its races; retrying");
                }
                CommandError::Store(s) if s.is_transient() => {
                    tracing::warn!(error = %e, retry_in = ?pause, "database unavailable; retrying the command");
                }
                _ => tracing::error!(error = %e, retry_in = ?pause, "applying a command failed; retrying"),
            });
        let outcome = tokio::select! {
            () = token.cancelled() => return None,
            outcome = applied => outcome,
        };
        match outcome {
            Ok(handled) => Some(handled),
            Err(e) => self.dead_letter(message, &e.to_string(), token).await,
        }
    }

    async fn apply(&self, message: &CommandMessage, bytes: &[u8]) -> Result<Handled, CommandError> {
        let key = IdempotencyKey {
            key: format!("command:{}", message.metadata.command_id),
            request_hash: Sha256::digest(bytes).to_vec(),
        };
        let store = self.commands.store();
        if store.find_idempotency(&key.key).await?.is_some() {
            return Ok(Handled::Duplicate);
        }
        let intent = match &message.command {
            OrderCommand::Ship(cmd) => Intent::Ship(cmd.clone()),
            OrderCommand::Cancel(cmd) => Intent::Cancel(cmd.clone()),
            OrderCommand::Pay(cmd) => Intent::Pay(cmd.clone()),
        };
        let ctx = Context {
            correlation_id: message.metadata.correlation_id,
            causation_id: Some(message.metadata.command_id),
            // The consumer's span continues the sender's trace: the events go on with it.
            traceparent: orders_runtime::telemetry::current_traceparent(),
            expected_version: message.expected_version,
            idempotency: Some(key.clone()),
            // The platform's own command: on any order.
            principal: None,
        };
        let order_id = message.order_id.as_uuid();
        match self.commands.execute(order_id, &intent, &ctx, 200).await {
            Ok(_) => Ok(Handled::Applied),
            Err(CommandError::DuplicateKey) => Ok(Handled::Duplicate),
            // Refusals for good only: a lost race (`Contention`) is transient, retried
            // by the caller and never recorded, or the redelivery would be dropped.
            Err(
                e @ (CommandError::Rejected(_)
                | CommandError::NotFound(_)
                | CommandError::VersionMismatch { .. }),
            ) => {
                tracing::warn!(%order_id, command = intent.name(), reason = %e, "command refused; recorded and skipped");
                let record = IdempotencyRecord {
                    key: key.key,
                    request_hash: key.request_hash,
                    status: 409,
                    response: serde_json::json!({ "refused": e.to_string() }),
                    ttl: self.commands.idempotency_ttl(),
                };
                match store.record_answer(&record).await {
                    Ok(()) => Ok(Handled::Refused),
                    // Another delivery of the command recorded its outcome first.
                    Err(orders_eventstore::Error::DuplicateIdempotencyKey(_)) => Ok(Handled::Duplicate),
                    Err(e) => Err(e.into()),
                }
            }
            Err(e) => Err(e),
        }
    }

    async fn dead_letter(
        &self,
        message: &BorrowedMessage<'_>,
        reason: &str,
        token: &CancellationToken,
    ) -> Option<Handled> {
        tracing::warn!(
            topic = message.topic(),
            partition = message.partition(),
            offset = message.offset(),
            reason,
            "dead-lettering a command"
        );
        let partition = message.partition().to_string();
        let offset = message.offset().to_string();
        let send = || async {
            let headers = OwnedHeaders::new()
                .insert(Header { key: "dlq.reason", value: Some(reason) })
                .insert(Header { key: "dlq.origin.topic", value: Some(message.topic()) })
                .insert(Header { key: "dlq.origin.partition", value: Some(&partition) })
                .insert(Header { key: "dlq.origin.offset", value: Some(&offset) });
            let mut record = FutureRecord::to(&self.topics.dead_letter)
                .payload(message.payload().unwrap_or_default())
                .headers(headers);
            if let Some(key) = message.key() {
                record = record.key(key);
            }
            self.producer.send(record, Duration::from_secs(10)).await.map_err(|(e, _)| e)
        };
        let sent = send.retry(backoff()).notify(|e, pause| {
            tracing::warn!(error = %e, retry_in = ?pause, "producing a dead letter failed; retrying");
        });
        tokio::select! {
            () = token.cancelled() => None,
            _ = sent => Some(Handled::DeadLettered),
        }
    }
}

/// The offsets to commit after a chunk of messages `read` (topic, partition, offset):
/// per partition, the one after the last message of the prefix of its messages (in
/// offset order) that is `done`.
fn next_offsets<'a>(
    read: impl Iterator<Item = (&'a str, i32, i64)>,
    done: &HashSet<(i32, i64)>,
) -> TopicPartitionList {
    // Per partition: the offset after the done prefix so far, and whether a message not
    // done has ended the prefix.
    let mut next: HashMap<(&str, i32), (Option<i64>, bool)> = HashMap::new();
    for (topic, partition, offset) in read {
        let (after, ended) = next.entry((topic, partition)).or_insert((None, false));
        if *ended {
            continue;
        }
        if done.contains(&(partition, offset)) {
            *after = Some(offset + 1);
        } else {
            *ended = true;
        }
    }
    let mut list = TopicPartitionList::new();
    for ((topic, partition), (after, _)) in next {
        if let Some(offset) = after {
            // Only fails for an offset rdkafka cannot represent; not one read from a partition.
            let _ = list.add_partition_offset(topic, partition, Offset::Offset(offset));
        }
    }
    list
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_partition_commits_up_to_its_first_message_not_done() {
        let read = [("t", 0, 10), ("t", 1, 5), ("t", 0, 11), ("t", 1, 6), ("t", 0, 12), ("t", 2, 7)];
        let done: HashSet<(i32, i64)> = [(0, 10), (0, 11), (1, 6), (2, 7)].into();
        let offsets = next_offsets(read.into_iter(), &done);
        let mut committed: Vec<(i32, Offset)> =
            offsets.elements().iter().map(|e| (e.partition(), e.offset())).collect();
        committed.sort_by_key(|(partition, _)| *partition);
        // Partition 0: 10 and 11 done, 12 not; partition 1: 5 not done (6 waits for it).
        assert_eq!(committed, [(0, Offset::Offset(12)), (2, Offset::Offset(8))]);
        let all: HashSet<(i32, i64)> = read.iter().map(|(_, p, o)| (*p, *o)).collect();
        assert_eq!(next_offsets(read.into_iter(), &all).count(), 3);
    }
}
