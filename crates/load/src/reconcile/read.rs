//! Reading what a reconciliation compares: the event store, the read model, the
//! windows, the saga's tables and the outbox from PostgreSQL; the `orders` topic from
//! Kafka, from its start to its end, read committed.

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use orders_postgres::DatabaseUrl;
use rdkafka::{
    ClientConfig, Message as _, Offset, TopicPartitionList,
    consumer::{BaseConsumer, Consumer as _},
    error::KafkaError,
    message::BorrowedMessage,
    types::RDKafkaErrorCode,
};
use tokio_postgres::Client;
use uuid::Uuid;

use super::compare::{
    Difference, Histories, Saga, Stored, TopicRecord, UserStats, View, WindowCounts, WindowKey,
};

/// Connects to `url` (over TLS when its `sslmode` says; the connection driven in the
/// background), with no statement time limit: the reads are whole tables.
pub(super) async fn connect(url: &DatabaseUrl) -> anyhow::Result<Client> {
    let session = orders_postgres::Session { statement_timeout: None, ..orders_postgres::Session::default() };
    orders_postgres::connect(url, "orders-load reconcile", &session)
        .await
        .with_context(|| format!("connecting to {url}"))
}

/// Every order's history; the events that do not decode are differences.
pub(super) async fn histories(db: &Client) -> anyhow::Result<(Histories, Vec<Difference>)> {
    let rows = db
        .query("SELECT stream_id, version, payload FROM events ORDER BY stream_id, version", &[])
        .await
        .context("reading the event store")?;
    let mut histories = Histories::new();
    let mut differences = Vec::new();
    for row in rows {
        let (stream, version, payload): (Uuid, i64, Vec<u8>) = (row.get(0), row.get(1), row.get(2));
        match orders_events::decode_event(&payload) {
            Ok((metadata, event))
                if Uuid::from(event.order_id) == stream && event.version as i64 == version =>
            {
                histories.entry(stream).or_default().push(Stored { event_id: metadata.event_id, event });
            }
            Ok((_, event)) => differences.push(Difference {
                area: "event store",
                what: format!(
                    "row {stream} v{version} holds the event of order {} v{}",
                    event.order_id, event.version
                ),
            }),
            Err(e) => differences.push(Difference {
                area: "event store",
                what: format!("row {stream} v{version} does not decode: {e}"),
            }),
        }
    }
    Ok((histories, differences))
}

/// The orders' views.
pub(super) async fn views(db: &Client) -> anyhow::Result<Vec<View>> {
    let rows = db
        .query(
            "SELECT order_id, user_id, status, currency, total_minor, version, missing_version, shipment_id
             FROM read_model.order_views",
            &[],
        )
        .await
        .context("reading read_model.order_views")?;
    Ok(rows
        .iter()
        .map(|r| View {
            order_id: r.get(0),
            user_id: r.get(1),
            status: r.get(2),
            currency: r.get(3),
            total_minor: r.get(4),
            version: r.get(5),
            missing_version: r.get(6),
            shipment_id: r.get(7),
        })
        .collect())
}

/// The users' statistics, summed over their partition shards.
pub(super) async fn user_stats(db: &Client) -> anyhow::Result<BTreeMap<(String, String), UserStats>> {
    let rows = db
        .query(
            "SELECT user_id, currency, sum(order_count)::bigint, sum(pending_count)::bigint,
                    sum(paid_count)::bigint, sum(shipped_count)::bigint, sum(cancelled_count)::bigint,
                    sum(spent_minor)::bigint
             FROM read_model.user_stats GROUP BY user_id, currency",
            &[],
        )
        .await
        .context("reading read_model.user_stats")?;
    Ok(rows
        .iter()
        .map(|r| {
            let stats = UserStats {
                order_count: r.get(2),
                pending: r.get(3),
                paid: r.get(4),
                shipped: r.get(5),
                cancelled: r.get(6),
                spent_minor: r.get(7),
            };
            ((r.get(0), r.get(1)), stats)
        })
        .filter(|(_, s)| *s != UserStats::default())
        .collect())
}

/// The windows of the query API.
pub(super) async fn windows(db: &Client) -> anyhow::Result<BTreeMap<WindowKey, WindowCounts>> {
    let rows = db
        .query(
            "SELECT user_id, currency, (extract(epoch FROM window_start) * 1000)::bigint,
                    (extract(epoch FROM window_end) * 1000)::bigint, order_count, paid_count,
                    cancelled_count, revenue_minor, refunded_minor
             FROM window_stats.user_windows",
            &[],
        )
        .await
        .context("reading window_stats.user_windows")?;
    Ok(rows
        .iter()
        .map(|r| {
            let counts = WindowCounts {
                order_count: r.get(4),
                paid_count: r.get(5),
                cancelled_count: r.get(6),
                revenue_minor: r.get(7),
                refunded_minor: r.get(8),
            };
            ((r.get(0), r.get(1), r.get(2), r.get(3)), counts)
        })
        .collect())
}

/// The order processor's stock, reservations and shipments.
pub(super) async fn saga(db: &Client) -> anyhow::Result<Saga> {
    let mut saga = Saga::default();
    for r in
        db.query("SELECT sku, reserved, shipped FROM inventory", &[]).await.context("reading inventory")?
    {
        saga.stock.insert(r.get(0), (r.get(1), r.get(2)));
    }
    let rows = db
        .query("SELECT order_id, sku, quantity, state FROM reservations", &[])
        .await
        .context("reading reservations")?;
    for r in rows {
        saga.reservations.insert((r.get(0), r.get(1)), (r.get(2), r.get(3)));
    }
    for r in
        db.query("SELECT order_id, shipment_id FROM shipments", &[]).await.context("reading shipments")?
    {
        saga.shipments.insert(r.get(0), r.get(1));
    }
    for r in db.query("SELECT order_id FROM saga_outcomes", &[]).await.context("reading saga_outcomes")? {
        saga.outcomes.insert(r.get(0));
    }
    Ok(saga)
}

/// The outbox's rows not yet published, and those quarantined.
pub(super) async fn outbox(db: &Client) -> anyhow::Result<(i64, i64)> {
    let pending = db.query_one("SELECT count(*) FROM outbox", &[]).await.context("reading the outbox")?;
    let quarantined = db
        .query_one("SELECT count(*) FROM outbox_quarantine", &[])
        .await
        .context("reading outbox_quarantine")?;
    Ok((pending.get(0), quarantined.get(0)))
}

/// Every record of `topic`, from its start to the end it has now, in offset order per
/// partition (read committed), each as `map` makes it.
///
/// # Errors
/// When Kafka cannot be read, the topic does not exist, or its end is not reached in
/// `timeout`.
pub fn read_topic<T>(
    bootstrap: &str,
    topic: &str,
    timeout: Duration,
    mut map: impl FnMut(&BorrowedMessage<'_>) -> T,
) -> anyhow::Result<Vec<T>> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", format!("orders-load-reader-{}", Uuid::new_v4()))
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .set("isolation.level", "read_committed")
        .set("fetch.max.bytes", "52428800")
        .create()
        .context("creating a Kafka consumer")?;
    let metadata = consumer
        .fetch_metadata(Some(topic), timeout)
        .with_context(|| format!("reading the metadata of {topic} from {bootstrap}"))?;
    let partitions: Vec<i32> =
        metadata.topics().iter().flat_map(|t| t.partitions().iter().map(|p| p.id())).collect();
    if partitions.is_empty() {
        bail!("topic {topic} has no partitions on {bootstrap}");
    }
    let mut assignment = TopicPartitionList::new();
    for p in &partitions {
        assignment.add_partition_offset(topic, *p, Offset::Beginning)?;
    }
    consumer.assign(&assignment)?;
    let mut records = Vec::new();
    let mut at_end = std::collections::BTreeSet::new();
    let deadline = Instant::now() + timeout;
    while at_end.len() < partitions.len() {
        if Instant::now() > deadline {
            bail!(
                "{topic}: not at the end of every partition after {timeout:?} ({} of {})",
                at_end.len(),
                partitions.len()
            );
        }
        match consumer.poll(Duration::from_millis(500)) {
            None => {}
            Some(Ok(m)) => {
                at_end.remove(&m.partition());
                records.push(map(&m));
            }
            Some(Err(KafkaError::PartitionEOF(p))) => {
                at_end.insert(p);
            }
            Some(Err(e)) if e.rdkafka_error_code() == Some(RDKafkaErrorCode::UnknownTopicOrPartition) => {
                bail!("{topic} does not exist on {bootstrap}: {e}");
            }
            Some(Err(e)) => eprintln!("[orders-load] reading {topic}: {e} (retrying)"),
        }
    }
    Ok(records)
}

/// The records of the events topic, each with its event when it holds one.
pub(super) fn topic(bootstrap: &str, topic: &str, timeout: Duration) -> anyhow::Result<Vec<TopicRecord>> {
    read_topic(bootstrap, topic, timeout, |m| {
        let event = m
            .payload()
            .and_then(|bytes| orders_events::decode_event(bytes).ok())
            .map(|(meta, e)| (Uuid::from(e.order_id), e.version, meta.event_id));
        TopicRecord { partition: m.partition(), offset: m.offset(), event }
    })
}
