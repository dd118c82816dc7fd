//! The order saga: what the processor does for each order event, each in one
//! PostgreSQL transaction with the inbox row of the event and the outbox rows of the
//! commands it sends (see the crate docs for why an outbox).
//!
//! - `OrderCreated`: reserve every tracked line, all or none; if a tracked SKU has too
//!   little available, send `CancelOrder` ("out of stock: …"), reserving nothing. An
//!   order without a tracked line is left alone.
//! - `OrderPaid`: for an order with a reservation, create a shipment and send
//!   `ShipOrder`.
//! - `OrderShipped`: the reserved units are shipped (on-hand stock goes down).
//! - `OrderCancelled`: the reservation, if any, is released.
//!
//! Each step is counted in [`OUTCOMES`] once it committed.

use std::{collections::BTreeMap, sync::Arc};

use deadpool_postgres::{Pool, Transaction};
use orders_consumer::{Decoded, Failure, Record, Router};
use orders_domain::{
    CancelOrder, CancelReason, OrderEvent, OrderEventPayload, ShipOrder, ShipmentId, TrackingNumber,
};
use orders_events::{CommandMessage, CommandMetadata, EventMetadata, OrderCommand};
use orders_outbox::OutboxMessage;
use uuid::Uuid;

/// A decoded order event.
pub type Event = (EventMetadata, OrderEvent);

/// `saga_outcomes_total{outcome}`: the saga's steps, counted once their transaction
/// committed: `reserved`, `out_of_stock` (`CancelOrder` sent), `shipment_requested`
/// (`ShipOrder` sent), `shipped`, `released`.
pub const OUTCOMES: &str = "saga_outcomes_total";

/// What one event made the saga do: the commands to send, and the outcome to count
/// (none for an order that is not this warehouse's).
#[derive(Debug)]
struct Step {
    commands: Vec<OrderCommand>,
    outcome: Option<&'static str>,
}

impl Step {
    const NONE: Self = Self { commands: Vec::new(), outcome: None };
}

/// The saga's handlers and what they need.
#[derive(Debug, Clone)]
pub struct Saga {
    pool: Pool,
    /// The consumer's name: the owner of its inbox rows.
    consumer: String,
    /// Where commands go.
    commands_topic: String,
}

impl Saga {
    /// The saga on `pool` (migrated), claiming inbox ids as `consumer`, sending commands
    /// to `commands_topic`.
    pub fn new(pool: Pool, consumer: impl Into<String>, commands_topic: impl Into<String>) -> Self {
        Self { pool, consumer: consumer.into(), commands_topic: commands_topic.into() }
    }

    /// A router decoding order events and calling the saga for the four event types.
    pub fn router(self) -> Router<Event> {
        let saga = Arc::new(self);
        let route = |saga: &Arc<Saga>| {
            let saga = Arc::clone(saga);
            move |_record: &Record, event: Event| {
                let saga = Arc::clone(&saga);
                async move { saga.handle(event).await }
            }
        };
        Router::new(decode)
            .on(OrderEventPayload::ORDER_CREATED, route(&saga))
            .on(OrderEventPayload::ORDER_PAID, route(&saga))
            .on(OrderEventPayload::ORDER_SHIPPED, route(&saga))
            .on(OrderEventPayload::ORDER_CANCELLED, route(&saga))
    }

    /// Handles one event: its effect, its commands and its inbox row in one transaction;
    /// nothing when the inbox says it was handled before.
    #[tracing::instrument(skip_all, fields(order_id = %event.order_id, version = event.version))]
    pub async fn handle(&self, (metadata, event): Event) -> Result<(), Failure> {
        let mut client = self.pool.get().await.map_err(Failure::unavailable)?;
        let tx = client.transaction().await.map_err(db)?;
        let id = metadata.event_id.to_string();
        if !orders_consumer::inbox::claim(&tx, &self.consumer, &id).await.map_err(consumer)? {
            return Ok(()); // handled before: its effect and commands are there
        }
        let order = event.order_id.as_uuid();
        let Step { commands, outcome } = match &event.payload {
            OrderEventPayload::Created { items, .. } => {
                let mut wanted: BTreeMap<&str, i64> = BTreeMap::new();
                for item in items {
                    *wanted.entry(item.sku.as_str()).or_default() += i64::from(item.quantity);
                }
                self.reserve(&tx, order, &wanted).await?
            }
            OrderEventPayload::Paid { .. } => self.ship(&tx, order).await?,
            OrderEventPayload::Shipped { .. } => {
                self.settle(&tx, order, "shipped", include_str!("sql/ship_stock.sql")).await?
            }
            OrderEventPayload::Cancelled { .. } => {
                self.settle(&tx, order, "released", include_str!("sql/release_stock.sql")).await?
            }
        };
        let messages: Vec<OutboxMessage> =
            commands.into_iter().map(|command| self.command(&metadata, &event, command)).collect();
        orders_outbox::write(&tx, &messages.iter().collect::<Vec<_>>()).await.map_err(db)?;
        tx.commit().await.map_err(db)?;
        if let Some(outcome) = outcome {
            metrics::counter!(OUTCOMES, "outcome" => outcome).increment(1);
        }
        Ok(())
    }

    /// Reserves every tracked line of `wanted`, or none and answers `CancelOrder`.
    async fn reserve(
        &self,
        tx: &Transaction<'_>,
        order: Uuid,
        wanted: &BTreeMap<&str, i64>,
    ) -> Result<Step, Failure> {
        let skus: Vec<&str> = wanted.keys().copied().collect();
        let lock = tx.prepare_cached(include_str!("sql/lock_stock.sql")).await.map_err(db)?;
        let tracked: Vec<(String, i64)> =
            tx.query(&lock, &[&skus]).await.map_err(db)?.iter().map(|r| (r.get(0), r.get(1))).collect();
        if tracked.is_empty() {
            return Ok(Step::NONE); // not this warehouse's order
        }
        let short: Vec<String> = tracked
            .iter()
            .filter_map(|(sku, available)| {
                let want = wanted.get(sku.as_str()).copied().unwrap_or(0);
                (want > *available).then(|| format!("{sku} (wanted {want}, available {available})"))
            })
            .collect();
        if !short.is_empty() {
            let reason = format!("out of stock: {}", short.join(", "));
            self.outcome(tx, order, "cancel requested", &reason).await?;
            let reason =
                CancelReason::new(truncate(&reason, CancelReason::MAX_LEN)).map_err(Failure::permanent)?;
            return Ok(Step {
                commands: vec![OrderCommand::Cancel(CancelOrder::new(reason))],
                outcome: Some("out_of_stock"),
            });
        }
        let reserve = tx.prepare_cached(include_str!("sql/reserve.sql")).await.map_err(db)?;
        let insert = tx.prepare_cached(include_str!("sql/insert_reservation.sql")).await.map_err(db)?;
        for (sku, _) in &tracked {
            let quantity = wanted.get(sku.as_str()).copied().unwrap_or(0);
            tx.execute(&reserve, &[sku, &quantity]).await.map_err(db)?;
            tx.execute(&insert, &[&order, sku, &quantity]).await.map_err(db)?;
        }
        let detail = tracked.iter().map(|(sku, _)| sku.as_str()).collect::<Vec<_>>().join(", ");
        self.outcome(tx, order, "reserved", &detail).await?;
        Ok(Step { commands: Vec::new(), outcome: Some("reserved") })
    }

    /// Creates the shipment of a reserved order and answers `ShipOrder`.
    async fn ship(&self, tx: &Transaction<'_>, order: Uuid) -> Result<Step, Failure> {
        let lines = tx.prepare_cached(include_str!("sql/reserved_lines.sql")).await.map_err(db)?;
        if tx.query(&lines, &[&order]).await.map_err(db)?.is_empty() {
            return Ok(Step::NONE); // nothing of this warehouse to ship
        }
        // Random (v4), not time-ordered (v7): a v7 prefix repeats within a millisecond.
        let shipment_id = format!("SHP-{}", Uuid::new_v4().simple());
        let tracking = format!("TRK{}", Uuid::new_v4().simple().to_string()[..20].to_uppercase());
        let insert = tx.prepare_cached(include_str!("sql/insert_shipment.sql")).await.map_err(db)?;
        tx.execute(&insert, &[&order, &shipment_id, &tracking]).await.map_err(db)?;
        self.outcome(tx, order, "shipment requested", &shipment_id).await?;
        let command = ShipOrder::new(
            ShipmentId::new(shipment_id).map_err(Failure::permanent)?,
            TrackingNumber::new(tracking).map_err(Failure::permanent)?,
        );
        Ok(Step { commands: vec![OrderCommand::Ship(command)], outcome: Some("shipment_requested") })
    }

    /// Moves the order's reserved units to `state`, adjusting stock with `stock_sql`.
    async fn settle(
        &self,
        tx: &Transaction<'_>,
        order: Uuid,
        state: &'static str,
        stock_sql: &str,
    ) -> Result<Step, Failure> {
        let lines = tx.prepare_cached(include_str!("sql/reserved_lines.sql")).await.map_err(db)?;
        let settle = tx.prepare_cached(include_str!("sql/settle_reservation.sql")).await.map_err(db)?;
        let stock = tx.prepare_cached(stock_sql).await.map_err(db)?;
        let reserved: Vec<(String, i64)> =
            tx.query(&lines, &[&order]).await.map_err(db)?.iter().map(|r| (r.get(0), r.get(1))).collect();
        for (sku, quantity) in &reserved {
            tx.execute(&settle, &[&order, sku, &state]).await.map_err(db)?;
            tx.execute(&stock, &[sku, quantity]).await.map_err(db)?;
        }
        if reserved.is_empty() {
            return Ok(Step::NONE);
        }
        self.outcome(tx, order, state, "").await?;
        Ok(Step { commands: Vec::new(), outcome: Some(state) })
    }

    async fn outcome(
        &self,
        tx: &Transaction<'_>,
        order: Uuid,
        outcome: &str,
        detail: &str,
    ) -> Result<(), Failure> {
        let record = tx.prepare_cached(include_str!("sql/record_outcome.sql")).await.map_err(db)?;
        tx.execute(&record, &[&order, &outcome, &detail]).await.map_err(db)?;
        Ok(())
    }

    /// The outbox row of `command`, caused by the event.
    fn command(&self, metadata: &EventMetadata, event: &OrderEvent, command: OrderCommand) -> OutboxMessage {
        let message = CommandMessage {
            metadata: CommandMetadata::new(metadata.correlation_id, Some(metadata.event_id)),
            order_id: event.order_id,
            expected_version: None,
            command,
        };
        OutboxMessage {
            topic: self.commands_topic.clone(),
            key: event.order_id.to_string().into_bytes(),
            payload: orders_events::encode_command(&message),
            // The saga step's trace goes on with the command (the handling's span).
            headers: [("command".to_string(), message.command.name().to_string())]
                .into_iter()
                .chain(
                    orders_runtime::telemetry::current_traceparent().map(|t| ("traceparent".to_string(), t)),
                )
                .collect(),
        }
    }
}

fn decode(record: &Record) -> Result<Decoded<Event>, String> {
    let payload = record.payload.as_deref().ok_or("the record has no value")?;
    let (metadata, event) = orders_events::decode_event(payload).map_err(|e| e.to_string())?;
    Ok(Decoded { kind: event.event_type().to_string(), message: (metadata, event) })
}

/// A database error as a failure: transient unless retrying cannot help.
/// PostgreSQL down is waited for (never dead-lettered: an outage is not the event's
/// fault); another transient error is retried up to the attempts allowed.
fn db(error: tokio_postgres::Error) -> Failure {
    match orders_postgres::classify(&error) {
        orders_postgres::Failure::Transient if orders_postgres::server_unavailable(&error) => {
            Failure::unavailable(error)
        }
        orders_postgres::Failure::Transient => Failure::transient(error),
        _ => Failure::permanent(error),
    }
}

fn consumer(error: orders_consumer::Error) -> Failure {
    match error {
        orders_consumer::Error::Postgres(e) => db(e),
        orders_consumer::Error::Pool(e) => Failure::unavailable(e),
        other => Failure::transient(other),
    }
}

fn truncate(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}
