//! The order saga: what the processor does for each order event, in a PostgreSQL
//! transaction with the inbox row of the event and the outbox rows of the commands it
//! sends (see the crate docs for why an outbox).
//!
//! - `OrderCreated`: reserve every tracked line, all or none; if a tracked SKU has too
//!   little available, send `CancelOrder` ("out of stock: …"), reserving nothing. An
//!   order without a tracked line is left alone.
//! - `OrderPaid`: for an order with a reservation, create a shipment and send
//!   `ShipOrder`.
//! - `OrderShipped`: the reserved units are shipped (on-hand stock goes down).
//! - `OrderCancelled`: the reservation, if any, is released.
//!
//! **Steps share transactions** ([`Batching`]). The consumer hands the saga up to its
//! concurrency of events of different orders at once; they queue for a few committers,
//! and a free committer takes every step waiting (up to [`Batching::max_batch`]) and
//! applies them one after the other in one transaction: one commit (one WAL flush)
//! for all, and the hot stock rows locked once per group instead of once per event.
//! Nothing waits on purpose: a lone event is applied at once. A group first locks
//! every stock row its steps may change, in SKU order, so two groups never deadlock.
//! Each step keeps its own outcome: when a step of a group fails, nothing of the group
//! is kept, that step is applied again alone and the others again as a group (when the
//! commit fails, each alone), so only a step's own failure is ever returned for it
//! (and retried or dead-lettered by the consumer). An event is acknowledged only after
//! its group committed.
//!
//! Each step is counted in [`OUTCOMES`] once it committed.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
};

use deadpool_postgres::{Pool, Transaction};
use orders_consumer::{Decoded, Failure, Record, Router};
use orders_domain::{
    CancelOrder, CancelReason, OrderEvent, OrderEventPayload, ShipOrder, ShipmentId, TrackingNumber,
};
use orders_events::{CommandMessage, CommandMetadata, EventMetadata, OrderCommand};
use orders_outbox::OutboxMessage;
use tokio::sync::{Mutex, mpsc, oneshot};
use tracing::Instrument as _;
use uuid::Uuid;

/// A decoded order event.
pub type Event = (EventMetadata, OrderEvent);

/// `saga_outcomes_total{outcome}`: the saga's steps, counted once their transaction
/// committed: `reserved`, `out_of_stock` (`CancelOrder` sent), `shipment_requested`
/// (`ShipOrder` sent), `shipped`, `released`.
pub const OUTCOMES: &str = "saga_outcomes_total";

/// `saga_batch_steps`: the steps applied in each transaction (1 when there is no
/// queue).
pub const BATCH_STEPS: &str = "saga_batch_steps";

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

/// How the saga groups steps into transactions; see the [module docs](self).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Batching {
    /// Transactions in flight at once, each on a connection of the pool.
    pub committers: usize,
    /// Most steps in one transaction (1: a transaction per event).
    pub max_batch: usize,
}

impl Default for Batching {
    fn default() -> Self {
        Self { committers: 2, max_batch: 64 }
    }
}

/// An event waiting for a committer, with the span it is handled in (its commands
/// carry that span's trace on) and where its outcome goes.
struct Request {
    event: Event,
    span: tracing::Span,
    reply: oneshot::Sender<Result<(), Failure>>,
}

/// The saga: hands each event to its committers and waits for the outcome.
#[derive(Debug, Clone)]
pub struct Saga {
    queue: mpsc::Sender<Request>,
}

/// What the committers need to apply steps.
#[derive(Debug)]
struct Steps {
    pool: Pool,
    /// The consumer's name: the owner of its inbox rows.
    consumer: String,
    /// Where commands go.
    commands_topic: String,
}

impl Saga {
    /// The saga on `pool` (migrated), claiming inbox ids as `consumer`, sending commands
    /// to `commands_topic`, with the default [`Batching`].
    pub fn new(pool: Pool, consumer: impl Into<String>, commands_topic: impl Into<String>) -> Self {
        Self::with_batching(pool, consumer, commands_topic, Batching::default())
    }

    /// The saga with its steps grouped as `batching` says. Starts the committers (on
    /// the current Tokio runtime); they stop once the saga and its router are dropped.
    pub fn with_batching(
        pool: Pool,
        consumer: impl Into<String>,
        commands_topic: impl Into<String>,
        batching: Batching,
    ) -> Self {
        let steps =
            Arc::new(Steps { pool, consumer: consumer.into(), commands_topic: commands_topic.into() });
        let max_batch = batching.max_batch.max(1);
        let committers = batching.committers.max(1);
        // The consumer bounds what is in flight; the queue only needs room for it.
        let (queue, receiver) = mpsc::channel(max_batch * committers * 4);
        let receiver = Arc::new(Mutex::new(receiver));
        for _ in 0..committers {
            let (steps, receiver) = (Arc::clone(&steps), Arc::clone(&receiver));
            tokio::spawn(async move {
                while let Some(batch) = next_batch(&receiver, max_batch).await {
                    steps.apply(batch).await;
                }
            });
        }
        Self { queue }
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

    /// Handles one event: its effect, its commands and its inbox row committed (with
    /// other events' steps, or alone); nothing when the inbox says it was handled
    /// before.
    #[tracing::instrument(skip_all, fields(order_id = %event.1.order_id, version = event.1.version))]
    pub async fn handle(&self, event: Event) -> Result<(), Failure> {
        let (reply, outcome) = oneshot::channel();
        let request = Request { event, span: tracing::Span::current(), reply };
        if self.queue.send(request).await.is_err() {
            return Err(Failure::unavailable("the saga's committers have stopped"));
        }
        // A committer answers every request it takes, even when its step fails.
        outcome.await.unwrap_or_else(|_| Err(Failure::transient("the saga's committer went away")))
    }
}

/// Waits for one request, then takes those already queued behind it, up to `max`.
async fn next_batch(receiver: &Mutex<mpsc::Receiver<Request>>, max: usize) -> Option<Vec<Request>> {
    let mut receiver = receiver.lock().await;
    let first = receiver.recv().await?;
    let mut batch = vec![first];
    while batch.len() < max {
        match receiver.try_recv() {
            Ok(request) => batch.push(request),
            Err(_) => break,
        }
    }
    Some(batch)
}

impl Steps {
    /// Applies `batch` in one transaction and answers each request. When a step fails,
    /// nothing of the group is kept: that step is applied alone (and answered with its
    /// own outcome) and the others are tried again as a group. When the group fails
    /// outside its steps (the connection, the commit), each step is applied alone.
    async fn apply(&self, mut batch: Vec<Request>) {
        while batch.len() > 1 {
            let requests: Vec<&Request> = batch.iter().collect();
            match self.transaction(&requests).await {
                Ok(outcomes) => {
                    metrics::histogram!(BATCH_STEPS).record(batch.len() as f64);
                    for (request, outcome) in batch.into_iter().zip(outcomes) {
                        count(outcome);
                        let _ = request.reply.send(Ok(()));
                    }
                    return;
                }
                Err((Some(failed), failure)) => {
                    tracing::debug!(steps = batch.len(), %failure, "a saga step failed in a group; applying it alone");
                    let request = batch.remove(failed);
                    self.apply_alone(request).await;
                }
                Err((None, failure)) => {
                    tracing::debug!(steps = batch.len(), %failure, "a group of saga steps failed; applying each alone");
                    break;
                }
            }
        }
        for request in batch {
            self.apply_alone(request).await;
        }
    }

    /// Applies one step in a transaction of its own and answers with its outcome.
    async fn apply_alone(&self, request: Request) {
        let outcome = self.transaction(&[&request]).await;
        metrics::histogram!(BATCH_STEPS).record(1.0);
        let _ = request.reply.send(match outcome {
            Ok(outcomes) => {
                outcomes.into_iter().for_each(count);
                Ok(())
            }
            Err((_, failure)) => Err(failure),
        });
    }

    /// One transaction applying the steps of `requests` in their order: the stock rows
    /// they may change locked first, then each step with its inbox claim and outbox rows.
    /// The outcome to count of each step, once committed; or the failure, with the index
    /// of the step that failed (none when the group failed outside its steps).
    async fn transaction(
        &self,
        requests: &[&Request],
    ) -> Result<Vec<Option<&'static str>>, (Option<usize>, Failure)> {
        let mut client = self.pool.get().await.map_err(|e| (None, Failure::unavailable(e)))?;
        let tx = client.transaction().await.map_err(|e| (None, db(e)))?;
        lock_stock(&tx, requests).await.map_err(|failure| (None, failure))?;
        let mut outcomes = Vec::with_capacity(requests.len());
        for (index, request) in requests.iter().enumerate() {
            let step = self.step(&tx, &request.event).instrument(request.span.clone()).await;
            outcomes.push(step.map_err(|failure| (Some(index), failure))?);
        }
        tx.commit().await.map_err(|e| (None, db(e)))?;
        Ok(outcomes)
    }

    /// One event's step inside `tx`: its inbox row, its effect and its commands' outbox
    /// rows; nothing when the inbox says it was handled before.
    async fn step(
        &self,
        tx: &Transaction<'_>,
        (metadata, event): &Event,
    ) -> Result<Option<&'static str>, Failure> {
        let id = metadata.event_id.to_string();
        if !orders_consumer::inbox::claim(tx, &self.consumer, &id).await.map_err(consumer)? {
            return Ok(None); // handled before: its effect and commands are there
        }
        let order = event.order_id.as_uuid();
        let Step { commands, outcome } = match &event.payload {
            OrderEventPayload::Created { items, .. } => {
                let mut wanted: BTreeMap<&str, i64> = BTreeMap::new();
                for item in items {
                    *wanted.entry(item.sku.as_str()).or_default() += i64::from(item.quantity);
                }
                self.reserve(tx, order, &wanted).await?
            }
            OrderEventPayload::Paid { .. } => self.ship(tx, order).await?,
            OrderEventPayload::Shipped { .. } => {
                self.settle(tx, order, "shipped", include_str!("sql/ship_stock.sql")).await?
            }
            OrderEventPayload::Cancelled { .. } => {
                self.settle(tx, order, "released", include_str!("sql/release_stock.sql")).await?
            }
        };
        let messages: Vec<OutboxMessage> =
            commands.into_iter().map(|command| self.command(metadata, event, command)).collect();
        orders_outbox::write(tx, &messages.iter().collect::<Vec<_>>()).await.map_err(db)?;
        Ok(outcome)
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

/// Counts a committed step's outcome.
fn count(outcome: Option<&'static str>) {
    if let Some(outcome) = outcome {
        metrics::counter!(OUTCOMES, "outcome" => outcome).increment(1);
    }
}

/// Locks, in SKU order, every tracked stock row the steps of `requests` may change:
/// the lines of the created orders, the reservations of those shipped or cancelled.
async fn lock_stock(tx: &Transaction<'_>, requests: &[&Request]) -> Result<(), Failure> {
    let mut skus: BTreeSet<&str> = BTreeSet::new();
    let mut settled: Vec<Uuid> = Vec::new();
    for Request { event: (_, event), .. } in requests {
        match &event.payload {
            OrderEventPayload::Created { items, .. } => skus.extend(items.iter().map(|i| i.sku.as_str())),
            OrderEventPayload::Shipped { .. } | OrderEventPayload::Cancelled { .. } => {
                settled.push(event.order_id.as_uuid());
            }
            OrderEventPayload::Paid { .. } => {}
        }
    }
    if skus.is_empty() && settled.is_empty() {
        return Ok(());
    }
    let skus: Vec<&str> = skus.into_iter().collect();
    let lock = tx.prepare_cached(include_str!("sql/lock_batch_stock.sql")).await.map_err(db)?;
    tx.query(&lock, &[&skus, &settled]).await.map_err(db)?;
    Ok(())
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
