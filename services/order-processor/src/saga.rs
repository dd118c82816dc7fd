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
//! applies them together in one transaction: it reads and locks what they decide on in
//! one round trip (their inbox claims, the stock rows they may change in SKU order, so
//! two groups never deadlock, and their orders' reservations), decides each step in
//! memory in the group's order (`saga::plan`), and writes the group's rows with one
//! set-based statement per table and one commit (one WAL flush) for all. Nothing waits
//! on purpose: a lone event is applied at once. Two events of one order never share a
//! group (the later waits for the next).
//!
//! Each step keeps its own outcome. When a step of a group fails, nothing of the group
//! is kept and that step is applied alone; when the group's statements fail for good
//! (a constraint, a trigger, a panic), the group is split in halves tried again, down
//! to single steps, so only a step's own failure for good is ever returned for it
//! (and dead-lettered by the consumer). A failure that is no step's fault (the
//! database unavailable, a lock or statement timeout, a deadlock) is answered to every
//! step of the group, each then retried by the consumer with backoff, as it would be
//! alone. An event is acknowledged only after its group committed.
//!
//! Each step is counted in [`OUTCOMES`] once it committed.

mod plan;

use std::{
    collections::{BTreeSet, HashSet, VecDeque},
    panic::AssertUnwindSafe,
    sync::Arc,
};

use deadpool_postgres::{Pool, Transaction};
use futures::{FutureExt as _, TryFutureExt as _};
use orders_consumer::{Decoded, Failure, Record, Router};
use orders_domain::{OrderEvent, OrderEventPayload, OrderId};
use orders_events::{CommandMessage, CommandMetadata, EventMetadata, OrderCommand};
use orders_outbox::OutboxMessage;
use orders_postgres::group_commit::next_batch;
use plan::{State, Step, Writes};
use tokio::sync::{Mutex, mpsc, oneshot};
use tokio_postgres::types::ToSql;
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
    /// to `commands_topic`, its steps grouped as `batching` says. Starts the committers
    /// (on the current Tokio runtime); they stop once the saga and its router are
    /// dropped.
    pub fn new(
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
                while let Some((batch, _)) = next_batch(&receiver, max_batch).await {
                    // `try_transaction` turns a panic in a transaction into the group's
                    // failure; one anywhere else drops the batch's requests (their
                    // handlers see a transient failure and are retried), not the committer.
                    if AssertUnwindSafe(steps.apply(batch)).catch_unwind().await.is_err() {
                        tracing::error!(
                            "a saga committer panicked applying a group; its events will be retried"
                        );
                    }
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
    /// before. A request a committer took is applied even when this future is dropped
    /// meanwhile (the consumer's drain deadline); the inbox keeps that to one effect.
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

impl Steps {
    /// Applies `batch` in groups without two events of one order, and answers each
    /// request (see the [module docs](self) for what happens on a failure).
    async fn apply(&self, batch: Vec<Request>) {
        let mut groups: VecDeque<Vec<Request>> = by_order(batch).into();
        while let Some(mut group) = groups.pop_front() {
            let requests: Vec<&Request> = group.iter().collect();
            match self.try_transaction(&requests).await {
                Ok(outcomes) => {
                    metrics::histogram!(BATCH_STEPS).record(group.len() as f64);
                    for (request, outcome) in group.into_iter().zip(outcomes) {
                        answer(request, Ok(outcome));
                    }
                }
                Err((_, failure)) if group.len() == 1 => {
                    let request = group.remove(0);
                    answer(request, Err(failure));
                }
                // Not a step's fault (the database down, a lock or statement timeout, a
                // deadlock): every step is answered so and retried by the consumer with
                // backoff, as a step alone would be. Halving would repeat the wait.
                Err((_, failure)) if failure.is_transient() => {
                    let reason = failure.to_string();
                    for request in group {
                        let again = if failure.is_unavailable() {
                            Failure::unavailable(reason.clone())
                        } else {
                            Failure::transient(reason.clone())
                        };
                        answer(request, Err(again));
                    }
                }
                Err((Some(failed), failure)) => {
                    tracing::debug!(steps = group.len(), %failure, "a saga step failed in a group; applying it alone");
                    let request = group.remove(failed);
                    groups.push_front(group);
                    groups.push_front(vec![request]);
                }
                Err((None, failure)) => {
                    tracing::debug!(steps = group.len(), %failure, "a group of saga steps failed; halving it");
                    let second = group.split_off(group.len() / 2);
                    groups.push_front(second);
                    groups.push_front(group);
                }
            }
        }
    }

    /// [`Self::transaction`], a panic in it a permanent failure of the group (halved
    /// until the step that panics is alone, then dead-lettered).
    async fn try_transaction(
        &self,
        requests: &[&Request],
    ) -> Result<Vec<Option<&'static str>>, (Option<usize>, Failure)> {
        AssertUnwindSafe(self.transaction(requests))
            .catch_unwind()
            .await
            .unwrap_or_else(|_| Err((None, Failure::permanent("the saga panicked applying the event"))))
    }

    /// One transaction applying the steps of `requests` in their order. The outcome to
    /// count of each step, once committed; or the failure, with the index of the step
    /// that failed (none when the group's reads or writes failed).
    async fn transaction(
        &self,
        requests: &[&Request],
    ) -> Result<Vec<Option<&'static str>>, (Option<usize>, Failure)> {
        let mut client = self.pool.get().await.map_err(|e| (None, Failure::unavailable(e)))?;
        let tx = client.transaction().await.map_err(|e| (None, db(e)))?;
        let ids: Vec<String> = requests.iter().map(|r| r.event.0.event_id.to_string()).collect();
        let mut state = self.read(&tx, requests, &ids).await.map_err(|failure| (None, failure))?;
        let mut writes = Writes::default();
        let mut messages = Vec::new();
        let mut outcomes = Vec::with_capacity(requests.len());
        for (index, (request, id)) in requests.iter().zip(&ids).enumerate() {
            let (metadata, event) = &request.event;
            let Step { commands, outcome } =
                state.step(id, event, &mut writes).map_err(|failure| (Some(index), failure))?;
            // The commands carry the trace of their event's handling on.
            request.span.in_scope(|| {
                messages.extend(commands.into_iter().map(|command| self.command(metadata, event, command)));
            });
            outcomes.push(outcome);
        }
        write(&tx, &writes, &messages).await.map_err(|e| (None, db(e)))?;
        tx.commit().await.map_err(|e| (None, db(e)))?;
        Ok(outcomes)
    }

    /// What the steps of `requests` decide on, read in one round trip: their events'
    /// inbox claims (`ids`, the events' ids), the stock rows they may change (locked in SKU order), and the
    /// lines their orders hold reserved (locked).
    async fn read(
        &self,
        tx: &Transaction<'_>,
        requests: &[&Request],
        ids: &[String],
    ) -> Result<State, Failure> {
        let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
        let mut skus: BTreeSet<&str> = BTreeSet::new();
        let (mut orders, mut settled): (Vec<Uuid>, Vec<Uuid>) = (Vec::new(), Vec::new());
        for Request { event: (_, event), .. } in requests {
            let order = event.order_id.as_uuid();
            match &event.payload {
                OrderEventPayload::Created { items, .. } => skus.extend(items.iter().map(|i| i.sku.as_str())),
                OrderEventPayload::Paid { .. } => orders.push(order),
                OrderEventPayload::Shipped { .. } | OrderEventPayload::Cancelled { .. } => {
                    orders.push(order);
                    settled.push(order);
                }
            }
        }
        let skus: Vec<&str> = skus.into_iter().collect();
        let lock = tx.prepare_cached(include_str!("sql/lock_stock.sql")).await.map_err(db)?;
        let lines = tx.prepare_cached(include_str!("sql/reserved_lines.sql")).await.map_err(db)?;
        let (lock_params, lines_params): ([&(dyn ToSql + Sync); 2], [&(dyn ToSql + Sync); 1]) =
            ([&skus, &settled], [&orders]);
        // Sent together: one round trip.
        let (claimed, stock, reserved) = tokio::try_join!(
            orders_consumer::inbox::claim_all(tx, &self.consumer, &ids).map_err(consumer),
            tx.query(&lock, &lock_params).map_err(db),
            tx.query(&lines, &lines_params).map_err(db),
        )?;
        let mut state = State {
            claimed,
            available: stock.iter().map(|row| (row.get(0), row.get(1))).collect(),
            ..State::default()
        };
        for row in &reserved {
            state.reserved.entry(row.get(0)).or_default().push((row.get(1), row.get(2)));
        }
        Ok(state)
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

/// Writes a group's rows: one set-based statement per table that changes (sent
/// together, without waiting for each answer) and the outbox rows of its commands.
async fn write(
    tx: &Transaction<'_>,
    writes: &Writes,
    messages: &[OutboxMessage],
) -> Result<(), tokio_postgres::Error> {
    let Writes { stock, reservations, settled, shipments, outcomes } = writes;
    let stock_skus: Vec<&str> = stock.keys().map(String::as_str).collect();
    let available: Vec<i64> = stock.values().map(|c| c.available).collect();
    let reserved: Vec<i64> = stock.values().map(|c| c.reserved).collect();
    let shipped: Vec<i64> = stock.values().map(|c| c.shipped).collect();
    let (reservation_orders, reservation_skus, quantities) =
        unzip3(reservations.iter().map(|(o, s, q)| (*o, s.as_str(), *q)));
    let (settled_orders, settled_skus, states) =
        unzip3(settled.iter().map(|(o, s, state)| (*o, s.as_str(), *state)));
    let (shipment_orders, shipment_ids, tracking) =
        unzip3(shipments.iter().map(|(o, id, t)| (*o, id.as_str(), t.as_str())));
    let (outcome_orders, outcome_names, details) =
        unzip3(outcomes.iter().map(|(o, name, detail)| (*o, *name, detail.as_str())));
    let statements = [
        include_str!("sql/change_stock.sql"),
        include_str!("sql/insert_reservations.sql"),
        include_str!("sql/settle_reservations.sql"),
        include_str!("sql/insert_shipments.sql"),
        include_str!("sql/record_outcomes.sql"),
    ];
    let mut prepared = Vec::with_capacity(statements.len());
    for sql in statements {
        prepared.push(tx.prepare_cached(sql).await?);
    }
    let params: [(bool, Vec<&(dyn ToSql + Sync)>); 5] = [
        (stock.is_empty(), vec![&stock_skus, &available, &reserved, &shipped]),
        (reservations.is_empty(), vec![&reservation_orders, &reservation_skus, &quantities]),
        (settled.is_empty(), vec![&settled_orders, &settled_skus, &states]),
        (shipments.is_empty(), vec![&shipment_orders, &shipment_ids, &tracking]),
        (outcomes.is_empty(), vec![&outcome_orders, &outcome_names, &details]),
    ];
    let rows = futures::future::try_join_all(
        prepared
            .iter()
            .zip(&params)
            .filter(|(_, (empty, _))| !empty)
            .map(|(statement, (_, params))| tx.execute(statement, params)),
    );
    let messages: Vec<&OutboxMessage> = messages.iter().collect();
    tokio::try_join!(rows, orders_outbox::write(tx, &messages))?;
    Ok(())
}

fn unzip3<A, B, C>(items: impl Iterator<Item = (A, B, C)>) -> (Vec<A>, Vec<B>, Vec<C>) {
    let (mut a, mut b, mut c) = (Vec::new(), Vec::new(), Vec::new());
    for (x, y, z) in items {
        a.push(x);
        b.push(y);
        c.push(z);
    }
    (a, b, c)
}

/// Splits `batch` into groups in which no order has two events, keeping each order's
/// events in their order (a later one goes to a later group). The consumer never hands
/// over two events of one order at once, so this only guards the groups' reads (each
/// step decides on what was read before its group).
fn by_order(batch: Vec<Request>) -> Vec<Vec<Request>> {
    let mut groups: Vec<(HashSet<OrderId>, Vec<Request>)> = Vec::new();
    for request in batch {
        let order = request.event.1.order_id;
        let after = groups.iter().rposition(|(orders, _)| orders.contains(&order)).map_or(0, |last| last + 1);
        if after == groups.len() {
            groups.push((HashSet::new(), Vec::new()));
        }
        groups[after].0.insert(order);
        groups[after].1.push(request);
    }
    groups.into_iter().map(|(_, group)| group).collect()
}

/// Answers a request: its outcome counted once committed.
fn answer(request: Request, outcome: Result<Option<&'static str>, Failure>) {
    let outcome = outcome.map(|outcome| {
        if let Some(outcome) = outcome {
            metrics::counter!(OUTCOMES, "outcome" => outcome).increment(1);
        }
    });
    let _ = request.reply.send(outcome);
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
