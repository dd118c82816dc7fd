//! Events on the `orders` topic: [`EventMetadata`] and an [`OrderEvent`] in
//! one [`pb::EventEnvelope`].

use orders_domain::{CreateOrder, FieldError, LineItem, OrderEvent, OrderEventPayload, OrderId};
use prost::Message;
use uuid::Uuid;

use crate::convert::{date_time, non_negative, opt_uuid, opt_uuid_text, text, timestamp, uuid, uuid_text};
use crate::error::{DecodeError, Result};
use crate::pb;
use crate::pb::event_envelope::Payload;

/// What the envelope says about an event, beyond the event itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EventMetadata {
    /// Unique id of the event, a UUIDv7: consumers deduplicate on it.
    pub event_id: Uuid,
    /// Shared by everything one original request caused.
    pub correlation_id: Uuid,
    /// The message (command or event) that directly caused this event.
    pub causation_id: Option<Uuid>,
}

impl EventMetadata {
    /// Metadata with a fresh UUIDv7 event id (reads the clock).
    pub fn new(correlation_id: Uuid, causation_id: Option<Uuid>) -> Self {
        Self { event_id: Uuid::now_v7(), correlation_id, causation_id }
    }
}

/// The envelope of an event.
pub fn event_to_proto(metadata: &EventMetadata, event: &OrderEvent) -> pb::EventEnvelope {
    let payload = match &event.payload {
        OrderEventPayload::Created { user_id, currency, items, total_minor } => {
            Payload::OrderCreated(pb::OrderCreated {
                user_id: user_id.to_string(),
                currency: currency.to_string(),
                items: items
                    .iter()
                    .map(|item| pb::LineItem {
                        sku: item.sku.to_string(),
                        quantity: item.quantity,
                        unit_price_minor: item.unit_price_minor,
                    })
                    .collect(),
                total_minor: *total_minor,
            })
        }
        OrderEventPayload::Paid { payment_id, amount_minor, currency } => Payload::OrderPaid(pb::OrderPaid {
            payment_id: payment_id.to_string(),
            amount_minor: *amount_minor,
            currency: currency.to_string(),
        }),
        OrderEventPayload::Shipped { shipment_id, tracking_number } => {
            Payload::OrderShipped(pb::OrderShipped {
                shipment_id: shipment_id.to_string(),
                tracking_number: tracking_number.to_string(),
            })
        }
        OrderEventPayload::Cancelled { reason } => {
            Payload::OrderCancelled(pb::OrderCancelled { reason: reason.to_string() })
        }
    };
    pb::EventEnvelope {
        event_id: uuid_text(metadata.event_id),
        order_id: uuid_text(event.order_id.as_uuid()),
        version: event.version,
        occurred_at: Some(timestamp(event.occurred_at)),
        correlation_id: uuid_text(metadata.correlation_id),
        causation_id: opt_uuid_text(metadata.causation_id),
        payload: Some(payload),
    }
}

/// The metadata and event in an envelope, checked against the domain's
/// value and line item rules.
pub fn event_from_proto(envelope: pb::EventEnvelope) -> Result<(EventMetadata, OrderEvent)> {
    let metadata = EventMetadata {
        event_id: uuid("event_id", &envelope.event_id)?,
        correlation_id: uuid("correlation_id", &envelope.correlation_id)?,
        causation_id: opt_uuid("causation_id", &envelope.causation_id)?,
    };
    let order_id = OrderId::from_uuid(uuid("order_id", &envelope.order_id)?);
    if envelope.version == 0 {
        return Err(DecodeError::InvalidValue {
            field: "version".to_owned(),
            problem: FieldError::NotPositive { value: 0 },
        });
    }
    let occurred_at = date_time("occurred_at", envelope.occurred_at)?;
    let payload = match envelope.payload {
        None => {
            return Err(DecodeError::UnknownPayload { message: "EventEnvelope" });
        }
        Some(Payload::OrderCreated(created)) => created_from_proto(created)?,
        Some(Payload::OrderPaid(paid)) => OrderEventPayload::Paid {
            payment_id: text(|| "order_paid.payment_id".into(), paid.payment_id)?,
            amount_minor: non_negative("order_paid.amount_minor", paid.amount_minor)?,
            currency: text(|| "order_paid.currency".into(), paid.currency)?,
        },
        Some(Payload::OrderShipped(shipped)) => OrderEventPayload::Shipped {
            shipment_id: text(|| "order_shipped.shipment_id".into(), shipped.shipment_id)?,
            tracking_number: text(|| "order_shipped.tracking_number".into(), shipped.tracking_number)?,
        },
        Some(Payload::OrderCancelled(cancelled)) => OrderEventPayload::Cancelled {
            reason: text(|| "order_cancelled.reason".into(), cancelled.reason)?,
        },
    };
    Ok((metadata, OrderEvent { order_id, version: envelope.version, occurred_at, payload }))
}

fn created_from_proto(created: pb::OrderCreated) -> Result<OrderEventPayload> {
    let user_id = text(|| "order_created.user_id".into(), created.user_id)?;
    let currency = text(|| "order_created.currency".into(), created.currency)?;
    let items = created
        .items
        .into_iter()
        .enumerate()
        .map(|(i, item)| {
            let sku = text(|| format!("order_created.items[{i}].sku"), item.sku)?;
            Ok(LineItem::new(sku, item.quantity, item.unit_price_minor))
        })
        .collect::<Result<Vec<_>>>()?;
    // The same rules as a create command: 1 to 100 items, quantities > 0,
    // prices >= 0, a total that fits.
    let checked = CreateOrder::new(user_id, currency, items)
        .map_err(|rule| DecodeError::Rule { message: "OrderCreated", rule })?;
    let expected = checked.total().amount_minor;
    if expected != created.total_minor {
        return Err(DecodeError::TotalMismatch { expected, found: created.total_minor });
    }
    let (user_id, currency, items) = checked.into_parts();
    Ok(OrderEventPayload::Created { user_id, currency, items, total_minor: expected })
}

/// Encodes an event in its envelope (the value of a message on `orders`).
pub fn encode_event(metadata: &EventMetadata, event: &OrderEvent) -> Vec<u8> {
    event_to_proto(metadata, event).encode_to_vec()
}

/// Decodes the value of a message on `orders`. Never panics.
pub fn decode_event(bytes: &[u8]) -> Result<(EventMetadata, OrderEvent)> {
    let envelope = pb::EventEnvelope::decode(bytes)
        .map_err(|source| DecodeError::Protobuf { message: "EventEnvelope", source })?;
    event_from_proto(envelope)
}
