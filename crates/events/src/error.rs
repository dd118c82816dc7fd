//! [`DecodeError`]: why bytes from a topic are not a message we can use.

use orders_domain::{FieldError, OrderError};

/// This crate's result type.
pub type Result<T, E = DecodeError> = std::result::Result<T, E>;

/// Why bytes could not be decoded into a message of the contract.
///
/// Every variant is permanent: the same bytes will fail again, so a consumer
/// dead-letters the message (with this error's text as the reason) and goes
/// on. Field paths are relative to the envelope, for example
/// `order_created.items[1].sku`.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DecodeError {
    /// The bytes are not a Protobuf encoding of the message (truncated, wrong
    /// wire type, bad length, ...).
    #[error("not a valid {message} Protobuf message: {source}")]
    Protobuf {
        /// The message that was expected.
        message: &'static str,
        /// What prost found wrong.
        source: prost::DecodeError,
    },
    /// A required field is absent or empty.
    #[error("{field} is missing")]
    MissingField {
        /// Path of the field.
        field: String,
    },
    /// A field that must hold a UUID does not.
    #[error("{field} is not a UUID")]
    InvalidUuid {
        /// Path of the field.
        field: String,
    },
    /// A timestamp outside the range the platform represents, or with
    /// nanoseconds outside `0..1_000_000_000`.
    #[error("{field} is not a valid timestamp")]
    InvalidTimestamp {
        /// Path of the field.
        field: String,
    },
    /// The envelope carries no payload case this reader knows: none at all,
    /// or one added by a newer schema.
    #[error("{message} has no payload that this reader knows (none, or one from a newer schema)")]
    UnknownPayload {
        /// The envelope's message name.
        message: &'static str,
    },
    /// A field holds a value the domain refuses.
    #[error("{field}: {problem}")]
    InvalidValue {
        /// Path of the field.
        field: String,
        /// What is wrong with it.
        problem: FieldError,
    },
    /// A payload breaks a rule of the domain (no line items, total overflow,
    /// ...).
    #[error("{message}: {rule}")]
    Rule {
        /// The payload's message name.
        message: &'static str,
        /// The rule it breaks.
        rule: OrderError,
    },
    /// An `OrderCreated` whose total is not the sum of its items.
    #[error("order_created.total_minor is {found}, the items add up to {expected}")]
    TotalMismatch {
        /// The sum of the items.
        expected: i64,
        /// The total carried.
        found: i64,
    },
    /// A stats window that does not end after it starts.
    #[error("window_end must be after window_start")]
    InvalidWindow,
}
