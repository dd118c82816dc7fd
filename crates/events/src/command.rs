//! Commands on the `order-commands` topic: a [`CommandMessage`] in one
//! [`pb::CommandEnvelope`].
//!
//! Orders are created over HTTP only; the topic carries ship, cancel and pay.

use chrono::{DateTime, Utc};
use orders_domain::{CancelOrder, Currency, Order, OrderError, OrderEvent, OrderId, PayOrder, ShipOrder};
use prost::Message;
use uuid::Uuid;

use crate::convert::{opt_uuid, opt_uuid_text, text, uuid, uuid_text};
use crate::error::{DecodeError, Result};
use crate::pb;
use crate::pb::command_envelope::Command;

/// What the envelope says about a command, beyond the command itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CommandMetadata {
    /// Unique id of the command. The command-service applies an id once.
    /// A command sent in reaction to an event should get an id derived from
    /// that event, so that a redelivered event yields the same command id.
    pub command_id: Uuid,
    /// Shared by everything one original request caused.
    pub correlation_id: Uuid,
    /// The message (usually an event) that caused this command.
    pub causation_id: Option<Uuid>,
}

impl CommandMetadata {
    /// Metadata with a fresh UUIDv7 command id (reads the clock).
    pub fn new(correlation_id: Uuid, causation_id: Option<Uuid>) -> Self {
        Self { command_id: Uuid::now_v7(), correlation_id, causation_id }
    }
}

/// A command that can travel on `order-commands`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OrderCommand {
    /// Ship a paid order.
    Ship(ShipOrder),
    /// Cancel an order.
    Cancel(CancelOrder),
    /// Pay an order.
    Pay(PayOrder),
}

impl OrderCommand {
    /// The command's name: `"ShipOrder"`, `"CancelOrder"` or `"PayOrder"`.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Ship(_) => "ShipOrder",
            Self::Cancel(_) => "CancelOrder",
            Self::Pay(_) => "PayOrder",
        }
    }

    /// Runs the command against an order (see [`Order::ship`],
    /// [`Order::cancel`], [`Order::pay`]).
    pub fn execute(
        self,
        order: &Order,
        now: DateTime<Utc>,
    ) -> std::result::Result<Vec<OrderEvent>, OrderError> {
        match self {
            Self::Ship(cmd) => order.ship(cmd, now),
            Self::Cancel(cmd) => order.cancel(cmd, now),
            Self::Pay(cmd) => order.pay(cmd, now),
        }
    }
}

/// One message on `order-commands`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandMessage {
    /// Ids for idempotency and tracing.
    pub metadata: CommandMetadata,
    /// The order to act on (also the Kafka key).
    pub order_id: OrderId,
    /// When set, the command applies only at exactly this version.
    pub expected_version: Option<u64>,
    /// What to do.
    pub command: OrderCommand,
}

/// The envelope of a command.
pub fn command_to_proto(message: &CommandMessage) -> pb::CommandEnvelope {
    let command = match &message.command {
        OrderCommand::Ship(cmd) => Command::Ship(pb::ShipOrder {
            shipment_id: cmd.shipment_id.to_string(),
            tracking_number: cmd.tracking_number.to_string(),
        }),
        OrderCommand::Cancel(cmd) => Command::Cancel(pb::CancelOrder { reason: cmd.reason.to_string() }),
        OrderCommand::Pay(cmd) => Command::Pay(pb::PayOrder {
            payment_id: cmd.payment_id().to_string(),
            amount_minor: cmd.amount_minor(),
            currency: cmd.currency().map(|c| c.to_string()),
        }),
    };
    pb::CommandEnvelope {
        command_id: uuid_text(message.metadata.command_id),
        order_id: uuid_text(message.order_id.as_uuid()),
        expected_version: message.expected_version,
        correlation_id: uuid_text(message.metadata.correlation_id),
        causation_id: opt_uuid_text(message.metadata.causation_id),
        command: Some(command),
    }
}

/// The command in an envelope, checked against the domain's value rules.
pub fn command_from_proto(envelope: pb::CommandEnvelope) -> Result<CommandMessage> {
    let metadata = CommandMetadata {
        command_id: uuid("command_id", &envelope.command_id)?,
        correlation_id: uuid("correlation_id", &envelope.correlation_id)?,
        causation_id: opt_uuid("causation_id", &envelope.causation_id)?,
    };
    let order_id = OrderId::from_uuid(uuid("order_id", &envelope.order_id)?);
    let command = match envelope.command {
        None => {
            return Err(DecodeError::UnknownPayload { message: "CommandEnvelope" });
        }
        Some(Command::Ship(ship)) => OrderCommand::Ship(ShipOrder::new(
            text(|| "ship.shipment_id".into(), ship.shipment_id)?,
            text(|| "ship.tracking_number".into(), ship.tracking_number)?,
        )),
        Some(Command::Cancel(cancel)) => {
            OrderCommand::Cancel(CancelOrder::new(text(|| "cancel.reason".into(), cancel.reason)?))
        }
        Some(Command::Pay(pay)) => {
            let payment_id = text(|| "pay.payment_id".into(), pay.payment_id)?;
            let currency =
                pay.currency.map(|code| text::<Currency>(|| "pay.currency".into(), code)).transpose()?;
            let cmd = PayOrder::new(payment_id, pay.amount_minor, currency)
                .map_err(|rule| DecodeError::Rule { message: "PayOrder", rule })?;
            OrderCommand::Pay(cmd)
        }
    };
    Ok(CommandMessage { metadata, order_id, expected_version: envelope.expected_version, command })
}

/// Encodes a command in its envelope (the value of a message on
/// `order-commands`).
pub fn encode_command(message: &CommandMessage) -> Vec<u8> {
    command_to_proto(message).encode_to_vec()
}

/// Decodes the value of a message on `order-commands`. Never panics.
pub fn decode_command(bytes: &[u8]) -> Result<CommandMessage> {
    let envelope = pb::CommandEnvelope::decode(bytes)
        .map_err(|source| DecodeError::Protobuf { message: "CommandEnvelope", source })?;
    command_from_proto(envelope)
}
