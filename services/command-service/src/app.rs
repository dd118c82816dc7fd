//! The application service: runs one command against one order, whether it came
//! over HTTP or from the `order-commands` topic.
//!
//! For a command on an existing order: load (snapshot plus later events), check the
//! rules (`orders_domain`), append the new events with the order's version as the
//! expected one, together with their outbox rows, a snapshot every N events and the
//! idempotency record, in one transaction. When another writer appended first, the
//! command is re-run against the new state a bounded number of times (with a short
//! jittered pause), unless the caller pinned a version (`If-Match`), in which case it
//! gets a conflict, or the winner was the same request under the same idempotency
//! key, whose recorded answer is then the answer ([`CommandError::DuplicateKey`]).
//! Losing every re-run is [`CommandError::Contention`], a transient outcome.

use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use chrono::Utc;
use orders_domain::{
    CancelOrder, CreateOrder, Order, OrderError, OrderEvent, OrderId, OrderSnapshot, OrderStatus, PayOrder,
    ShipOrder,
};
use orders_events::{EventMetadata, decode_event, encode_event};
use orders_eventstore::{Append, EventStore, IdempotencyRecord, NewEvent, OutboxMessage, Snapshot};
use orders_runtime::auth::{AuthError, Principal};
use serde::Serialize;
use uuid::Uuid;

/// How one run of a command on an existing order ended, short of success.
#[derive(Debug)]
enum Attempt {
    /// Another writer appended first: re-run on the new state.
    LostRace,
    /// Done: this is the answer.
    Failed(CommandError),
}

impl From<CommandError> for Attempt {
    fn from(error: CommandError) -> Self {
        Attempt::Failed(error)
    }
}

/// A command on an existing order.
#[derive(Debug, Clone)]
pub enum Intent {
    /// Pay it.
    Pay(PayOrder),
    /// Ship it.
    Ship(ShipOrder),
    /// Cancel it.
    Cancel(CancelOrder),
}

impl Intent {
    /// The command's name, for logs and metrics.
    pub fn name(&self) -> &'static str {
        match self {
            Intent::Pay(_) => "pay",
            Intent::Ship(_) => "ship",
            Intent::Cancel(_) => "cancel",
        }
    }

    fn run(&self, order: &Order) -> Result<Vec<OrderEvent>, OrderError> {
        let now = Utc::now();
        match self {
            Intent::Pay(cmd) => order.pay(cmd.clone(), now),
            Intent::Ship(cmd) => order.ship(cmd.clone(), now),
            Intent::Cancel(cmd) => order.cancel(cmd.clone(), now),
        }
    }
}

/// Where a command comes from and what it asks of the store.
#[derive(Debug, Clone, Default)]
pub struct Context {
    /// Shared by everything the original request caused.
    pub correlation_id: Uuid,
    /// The message that caused this command (a Kafka command's id).
    pub causation_id: Option<Uuid>,
    /// W3C trace context to carry onto the events' Kafka records.
    pub traceparent: Option<String>,
    /// Apply only at this version (`If-Match`).
    pub expected_version: Option<u64>,
    /// Record the answer under this key, in the same transaction as the effect.
    pub idempotency: Option<IdempotencyKey>,
    /// Who asked, over HTTP: a command on an order runs only for its user or an
    /// administrator. `None` for the services' own commands (the `order-commands`
    /// consumer), which act on any order.
    pub principal: Option<Principal>,
}

/// An idempotency key and the hash of the request it came with.
#[derive(Debug, Clone)]
pub struct IdempotencyKey {
    /// The scoped key.
    pub key: String,
    /// Hash of the request.
    pub request_hash: Vec<u8>,
}

/// A command accepted and committed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[schema(example = json!({"order_id": "0199a3e2-7c4f-7b9e-9d1a-2f4c6b8e0a11", "version": 1, "status": "pending"}))]
pub struct Accepted {
    /// The order.
    pub order_id: Uuid,
    /// Its version after the command.
    pub version: u64,
    /// Its status after the command.
    pub status: OrderStatus,
}

/// Why a command was not applied.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// A rule refused it (or its input); nothing was written.
    #[error(transparent)]
    Rejected(#[from] OrderError),
    /// No such order.
    #[error("order {0} does not exist")]
    NotFound(Uuid),
    /// The caller may not act on this order.
    #[error(transparent)]
    Forbidden(#[from] AuthError),
    /// The order is not at the version the caller pinned.
    #[error("the order is at version {actual}, not {expected}")]
    VersionMismatch {
        /// The version asked for.
        expected: u64,
        /// The order's version.
        actual: u64,
    },
    /// Other writers kept winning; nothing was written. A transient outcome: retry
    /// later (never record it as a refusal).
    #[error("the order kept changing concurrently; retry")]
    Contention,
    /// A concurrent request with the same idempotency key committed first.
    #[error("a request with the same idempotency key committed first")]
    DuplicateKey,
    /// The stored history does not replay: corruption or a bug.
    #[error("the stored history of order {order_id} is unusable: {reason}")]
    Corrupt {
        /// The order.
        order_id: Uuid,
        /// What is wrong.
        reason: String,
    },
    /// The database failed.
    #[error(transparent)]
    Store(#[from] orders_eventstore::Error),
}

/// Settings of [`Commands`].
#[derive(Debug, Clone)]
pub struct Settings {
    /// Topic the outbox rows are addressed to.
    pub orders_topic: String,
    /// Write a snapshot every this many events (0: never).
    pub snapshot_every: u64,
    /// How many times a command is re-run after losing a race.
    pub max_retries: u32,
    /// How long idempotency records live.
    pub idempotency_ttl: Duration,
}

/// Runs commands against the event store.
#[derive(Debug, Clone)]
pub struct Commands {
    store: EventStore,
    settings: Settings,
}

impl Commands {
    /// Commands over `store`.
    pub fn new(store: EventStore, settings: Settings) -> Self {
        Self { store, settings }
    }

    /// The store.
    pub fn store(&self) -> &EventStore {
        &self.store
    }

    /// How long idempotency records live.
    pub fn idempotency_ttl(&self) -> Duration {
        self.settings.idempotency_ttl
    }

    /// Creates a new order (its id is a fresh UUIDv7).
    #[tracing::instrument(skip_all)]
    pub async fn create(
        &self,
        cmd: CreateOrder,
        ctx: &Context,
        status: u16,
    ) -> Result<Accepted, CommandError> {
        let order = Order::default();
        let order_id = OrderId::from_uuid(Uuid::now_v7());
        let events = order.create(order_id, cmd, Utc::now())?;
        self.commit(&order, order_id, &events, ctx, status).await
    }

    /// Runs `intent` against order `order_id`. A run that loses its race with another
    /// writer is re-run on the new state, after a short jittered pause, up to
    /// [`Settings::max_retries`] times; then it is [`CommandError::Contention`].
    #[tracing::instrument(skip_all, fields(order_id = %order_id, command = intent.name()))]
    pub async fn execute(
        &self,
        order_id: Uuid,
        intent: &Intent,
        ctx: &Context,
        status: u16,
    ) -> Result<Accepted, CommandError> {
        let backoff = ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(2))
            .with_max_delay(Duration::from_millis(100))
            .with_max_times(usize::try_from(self.settings.max_retries).unwrap_or(usize::MAX))
            .with_jitter();
        let outcome = (|| self.execute_once(order_id, intent, ctx, status))
            .retry(backoff)
            .when(|attempt| matches!(attempt, Attempt::LostRace))
            .notify(|_, pause| {
                tracing::debug!(retry_in = ?pause, "lost a race; re-running the command on the new state");
            })
            .await;
        match outcome {
            Ok(accepted) => Ok(accepted),
            Err(Attempt::LostRace) => Err(CommandError::Contention),
            Err(Attempt::Failed(error)) => Err(error),
        }
    }

    async fn execute_once(
        &self,
        order_id: Uuid,
        intent: &Intent,
        ctx: &Context,
        status: u16,
    ) -> Result<Accepted, Attempt> {
        let order = self.load(order_id).await?;
        if !order.is_created() {
            return Err(CommandError::NotFound(order_id).into());
        }
        if let (Some(principal), Some(user)) = (&ctx.principal, order.user_id()) {
            principal.may_act_for(user.as_str()).map_err(CommandError::from)?;
        }
        if let Some(expected) = ctx.expected_version
            && expected != order.version()
        {
            return Err(CommandError::VersionMismatch { expected, actual: order.version() }.into());
        }
        let events = intent.run(&order).map_err(CommandError::from)?;
        match self.commit(&order, OrderId::from_uuid(order_id), &events, ctx, status).await {
            Err(CommandError::Store(orders_eventstore::Error::Conflict { .. })) => {
                if ctx.expected_version.is_some() {
                    let actual = self.load(order_id).await?.version();
                    return Err(CommandError::VersionMismatch { expected: order.version(), actual }.into());
                }
                // The writer that won may be this very request's original (same key):
                // then its recorded answer is the answer, not a re-run on its effect.
                if let Some(key) = &ctx.idempotency
                    && self.store.find_idempotency(&key.key).await.map_err(CommandError::from)?.is_some()
                {
                    return Err(CommandError::DuplicateKey.into());
                }
                metrics::counter!("command_conflicts_total", "command" => intent.name()).increment(1);
                Err(Attempt::LostRace)
            }
            other => other.map_err(Attempt::Failed),
        }
    }

    /// Loads an order from its snapshot and later events.
    pub async fn load(&self, order_id: Uuid) -> Result<Order, CommandError> {
        let corrupt = |reason: String| CommandError::Corrupt { order_id, reason };
        let loaded = self.store.load(order_id).await?;
        let mut order = match &loaded.snapshot {
            Some(snapshot) => {
                let snapshot: OrderSnapshot =
                    serde_json::from_slice(&snapshot.state).map_err(|e| corrupt(format!("snapshot: {e}")))?;
                Order::from_snapshot(snapshot).map_err(|e| corrupt(format!("snapshot: {e}")))?
            }
            None => Order::default(),
        };
        for recorded in &loaded.events {
            let (_, event) = decode_event(&recorded.payload)
                .map_err(|e| corrupt(format!("event {}: {e}", recorded.version)))?;
            order.apply(&event).map_err(|e| corrupt(format!("event {}: {e}", recorded.version)))?;
        }
        Ok(order)
    }

    async fn commit(
        &self,
        before: &Order,
        order_id: OrderId,
        events: &[OrderEvent],
        ctx: &Context,
        status: u16,
    ) -> Result<Accepted, CommandError> {
        let corrupt = |reason: String| CommandError::Corrupt { order_id: order_id.as_uuid(), reason };
        let mut after = before.clone();
        for event in events {
            after.apply(event).map_err(|e| corrupt(format!("new event does not apply: {e}")))?;
        }
        let key = order_id.to_string().into_bytes();
        let mut new_events = Vec::with_capacity(events.len());
        let mut outbox = Vec::with_capacity(events.len());
        for event in events {
            let metadata = EventMetadata::new(ctx.correlation_id, ctx.causation_id);
            let payload = encode_event(&metadata, event);
            let mut headers = std::collections::BTreeMap::new();
            headers.insert("event_type".to_string(), event.event_type().to_string());
            headers.insert("event_id".to_string(), metadata.event_id.to_string());
            headers.insert("correlation_id".to_string(), ctx.correlation_id.to_string());
            if let Some(traceparent) = &ctx.traceparent {
                headers.insert("traceparent".to_string(), traceparent.clone());
            }
            outbox.push(OutboxMessage {
                topic: self.settings.orders_topic.clone(),
                key: key.clone(),
                payload: payload.clone(),
                headers,
            });
            new_events.push(NewEvent {
                event_id: metadata.event_id,
                version: event.version,
                event_type: event.event_type().to_string(),
                payload,
            });
        }
        let accepted = Accepted {
            order_id: order_id.as_uuid(),
            version: after.version(),
            status: after.status().unwrap_or(OrderStatus::Pending),
        };
        let every = self.settings.snapshot_every;
        let snapshot = if every > 0 && after.version() / every > before.version() / every {
            let state =
                serde_json::to_vec(&after.snapshot()).map_err(|e| corrupt(format!("snapshot: {e}")))?;
            Some(Snapshot { version: after.version(), state })
        } else {
            None
        };
        let idempotency = ctx.idempotency.as_ref().map(|key| IdempotencyRecord {
            key: key.key.clone(),
            request_hash: key.request_hash.clone(),
            status,
            response: serde_json::to_value(&accepted).unwrap_or_default(),
            ttl: self.settings.idempotency_ttl,
        });
        let append = Append {
            stream_id: order_id.as_uuid(),
            expected_version: before.version(),
            events: &new_events,
            outbox: &outbox,
            snapshot: snapshot.as_ref(),
            idempotency: idempotency.as_ref(),
        };
        match self.store.append(append).await {
            Ok(()) => Ok(accepted),
            Err(orders_eventstore::Error::DuplicateIdempotencyKey(_)) => Err(CommandError::DuplicateKey),
            Err(e) => Err(e.into()),
        }
    }
}
