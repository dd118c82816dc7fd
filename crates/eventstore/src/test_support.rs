//! Test support (feature `test-support`): one test event with its outbox row, the way
//! a service appends it, for the tests and benchmarks of the crates that read the
//! outbox (relays, consumers).

use std::collections::BTreeMap;

use uuid::Uuid;

use crate::{Append, EventStore, NewEvent, OutboxMessage, Result};

/// Version `version` of stream `order`: one event of type `event_type` and one outbox
/// row for `topic`, keyed by the order id, with a `traceparent` header naming the order
/// and the version and an `event-type` header. The payload is the version in decimal
/// unless [`TestEvent::payload`] replaces it.
#[derive(Debug, Clone)]
pub struct TestEvent {
    /// The stream (and the outbox key, as text).
    pub order: Uuid,
    /// The event's version; the append expects `version - 1`.
    pub version: u64,
    /// The outbox row's topic.
    pub topic: String,
    /// The event type, also in the `event-type` header.
    pub event_type: String,
    /// The event's and the outbox row's payload.
    pub payload: Vec<u8>,
}

impl TestEvent {
    /// Version `version` of `order`, for `topic`, of type `OrderTouched`, with the
    /// version as its payload.
    pub fn new(topic: &str, order: Uuid, version: u64) -> Self {
        Self {
            order,
            version,
            topic: topic.to_string(),
            event_type: "OrderTouched".into(),
            payload: version.to_string().into_bytes(),
        }
    }

    /// The same with another payload.
    pub fn payload(self, payload: Vec<u8>) -> Self {
        Self { payload, ..self }
    }

    /// The same with another event type.
    pub fn event_type(self, event_type: &str) -> Self {
        Self { event_type: event_type.to_string(), ..self }
    }

    /// The outbox message this event writes.
    pub fn outbox_message(&self) -> OutboxMessage {
        OutboxMessage {
            topic: self.topic.clone(),
            key: self.order.to_string().into_bytes(),
            payload: self.payload.clone(),
            headers: BTreeMap::from([
                ("traceparent".into(), format!("00-{}-{:016x}-01", self.order.simple(), self.version)),
                ("event-type".into(), self.event_type.clone()),
            ]),
        }
    }

    /// Appends it to `store`: the event and its outbox row in one transaction (with the
    /// store's `NOTIFY`).
    ///
    /// # Errors
    /// As [`EventStore::append`].
    pub async fn append(&self, store: &EventStore) -> Result<()> {
        let event = NewEvent {
            event_id: Uuid::now_v7(),
            version: self.version,
            event_type: self.event_type.clone(),
            payload: self.payload.clone(),
        };
        let message = self.outbox_message();
        store
            .append(Append {
                stream_id: self.order,
                expected_version: self.version.saturating_sub(1),
                events: &[event],
                outbox: &[message],
                snapshot: None,
                idempotency: None,
            })
            .await
    }
}
