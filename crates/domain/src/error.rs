//! Errors of the domain: what is wrong with a value ([`FieldError`]), which
//! rule a command broke ([`OrderError`]), why a history does not replay
//! ([`ReplayError`]) and why a snapshot does not restore ([`SnapshotError`]).
//!
//! [`OrderError::kind`] tells the caller what to answer: bad input (HTTP 400 or
//! 422), no such order (404), or a rule broken by the order's current state
//! (409).

use std::fmt;

use crate::{Currency, OrderId, OrderStatus};

/// What is wrong with one value, whatever field it came in.
///
/// Value types (`UserId`, `Currency`, ...) return it from their constructors;
/// [`OrderError::InvalidField`] pairs it with the [`Field`] it was found in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FieldError {
    /// The text is empty or only whitespace.
    #[error("must not be empty or blank")]
    Empty,
    /// The text has more characters (Unicode scalar values) than allowed.
    #[error("must be at most {max} characters long, got {len}")]
    TooLong {
        /// Length of the value, in characters.
        len: usize,
        /// The longest accepted length, in characters.
        max: usize,
    },
    /// The text holds a control character (line break, tab, NUL, ...).
    #[error("must not contain control characters")]
    ControlCharacter,
    /// The text is not three uppercase ASCII letters (ISO 4217 form).
    #[error("must be an ISO 4217 currency code: three uppercase ASCII letters")]
    NotCurrencyCode,
    /// The text is not a UUID.
    #[error("must be a UUID")]
    NotUuid,
    /// The number must be greater than zero.
    #[error("must be greater than zero, got {value}")]
    NotPositive {
        /// The number received.
        value: i64,
    },
    /// The number must be zero or more.
    #[error("must not be negative, got {value}")]
    Negative {
        /// The number received.
        value: i64,
    },
    /// The number is above the largest accepted value.
    #[error("must be at most {max}, got {value}")]
    TooLarge {
        /// The number received.
        value: i64,
        /// The largest accepted value.
        max: i64,
    },
}

/// The input field a [`FieldError`] was found in, displayed as its path in
/// the JSON request body (`user_id`, `items[2].quantity`, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Field {
    /// The order id (a path parameter in HTTP).
    OrderId,
    /// `user_id` of a create command.
    UserId,
    /// `currency` of a create or pay command.
    Currency,
    /// `items[i].sku`.
    ItemSku(usize),
    /// `items[i].quantity`.
    ItemQuantity(usize),
    /// `items[i].unit_price_minor`.
    ItemUnitPrice(usize),
    /// `payment_id` of a pay command.
    PaymentId,
    /// `amount_minor` of a pay command.
    AmountMinor,
    /// `shipment_id` of a ship command.
    ShipmentId,
    /// `tracking_number` of a ship command.
    TrackingNumber,
    /// `reason` of a cancel command.
    Reason,
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::OrderId => f.write_str("order_id"),
            Self::UserId => f.write_str("user_id"),
            Self::Currency => f.write_str("currency"),
            Self::ItemSku(i) => write!(f, "items[{i}].sku"),
            Self::ItemQuantity(i) => write!(f, "items[{i}].quantity"),
            Self::ItemUnitPrice(i) => write!(f, "items[{i}].unit_price_minor"),
            Self::PaymentId => f.write_str("payment_id"),
            Self::AmountMinor => f.write_str("amount_minor"),
            Self::ShipmentId => f.write_str("shipment_id"),
            Self::TrackingNumber => f.write_str("tracking_number"),
            Self::Reason => f.write_str("reason"),
        }
    }
}

/// How a caller should treat an [`OrderError`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The command itself is malformed, whatever the order's state: fix the
    /// input, do not retry as is. HTTP 400 or 422.
    InvalidInput,
    /// The order does not exist (yet). HTTP 404.
    NotFound,
    /// A rule forbids the command in the order's current state (wrong status,
    /// created twice, payment that does not match the total). HTTP 409.
    Conflict,
}

/// A command was refused: one variant per rule, each naming what was wrong.
///
/// A refused command changes nothing: the aggregate's command methods take
/// `&self` and return events only on success.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OrderError {
    /// A field holds a value that can never be valid.
    #[error("{field}: {problem}")]
    InvalidField {
        /// Where the value was found.
        field: Field,
        /// What is wrong with it.
        problem: FieldError,
    },
    /// A create command without line items.
    #[error("items: an order needs at least one line item")]
    NoItems,
    /// A create command with more line items than allowed.
    #[error("items: an order has at most {max} line items, got {count}")]
    TooManyItems {
        /// Number of items received.
        count: usize,
        /// The most items an order may have ([`crate::MAX_ITEMS`]).
        max: usize,
    },
    /// The sum of `quantity * unit_price_minor` does not fit in an `i64`.
    #[error("items: the order total overflows 64-bit minor units")]
    TotalOverflow,
    /// The order was already created: an order is created only once.
    #[error("order {id} already exists")]
    AlreadyCreated {
        /// The existing order.
        id: OrderId,
    },
    /// The command needs an existing order and there is none.
    #[error("the order does not exist")]
    NotCreated,
    /// Only a pending order can be paid.
    #[error("only a pending order can be paid; this one is {status}")]
    NotPayable {
        /// The order's current status.
        status: OrderStatus,
    },
    /// The payment is not in the order's currency.
    #[error("currency: the order is in {expected}, the payment in {got}")]
    CurrencyMismatch {
        /// The order's currency.
        expected: Currency,
        /// The payment's currency.
        got: Currency,
    },
    /// The payment is not exactly the order's total.
    #[error("amount_minor: the order total is {expected} minor units, the payment is {got}")]
    AmountMismatch {
        /// The order's total, in minor units.
        expected: i64,
        /// The amount paid, in minor units.
        got: i64,
    },
    /// Only a paid order can be shipped.
    #[error("only a paid order can be shipped; this one is {status}")]
    NotShippable {
        /// The order's current status.
        status: OrderStatus,
    },
    /// A shipped or already cancelled order cannot be cancelled.
    #[error("a {status} order cannot be cancelled")]
    NotCancellable {
        /// The order's current status.
        status: OrderStatus,
    },
}

impl OrderError {
    /// Builds [`OrderError::InvalidField`].
    pub fn invalid(field: Field, problem: FieldError) -> Self {
        Self::InvalidField { field, problem }
    }

    /// How the caller should treat this error (and which HTTP status fits).
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::InvalidField { .. } | Self::NoItems | Self::TooManyItems { .. } | Self::TotalOverflow => {
                ErrorKind::InvalidInput
            }
            Self::NotCreated => ErrorKind::NotFound,
            Self::AlreadyCreated { .. }
            | Self::NotPayable { .. }
            | Self::CurrencyMismatch { .. }
            | Self::AmountMismatch { .. }
            | Self::NotShippable { .. }
            | Self::NotCancellable { .. } => ErrorKind::Conflict,
        }
    }

    /// The input field at fault, when one field is (for `problem+json`
    /// answers that point at a field).
    pub fn field(&self) -> Option<Field> {
        match self {
            Self::InvalidField { field, .. } => Some(*field),
            Self::CurrencyMismatch { .. } => Some(Field::Currency),
            Self::AmountMismatch { .. } => Some(Field::AmountMinor),
            _ => None,
        }
    }
}

/// A history of events that does not make an order.
///
/// Events come from our own store, so this means corruption or a bug: stop and
/// let a person look, do not retry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplayError {
    /// Versions must follow each other without gaps, starting at 1.
    #[error("expected the event with version {expected}, got version {found}")]
    VersionGap {
        /// The version that should come next.
        expected: u64,
        /// The version found.
        found: u64,
    },
    /// The event belongs to another order.
    #[error("event version {version} belongs to order {found}, not to order {expected}")]
    OrderIdMismatch {
        /// The event's version.
        version: u64,
        /// The order being rebuilt.
        expected: OrderId,
        /// The order named by the event.
        found: OrderId,
    },
    /// The event breaks a rule of the aggregate in the state it is applied to.
    #[error("event version {version} ({event_type}) does not apply: {rule}")]
    Rejected {
        /// The event's version.
        version: u64,
        /// The event's type (`OrderCreated`, ...).
        event_type: &'static str,
        /// The rule it breaks.
        rule: OrderError,
    },
    /// An `OrderCreated` whose total is not the sum of its items.
    #[error("event version {version}: total_minor is {found}, the items add up to {expected}")]
    TotalMismatch {
        /// The event's version.
        version: u64,
        /// The sum of the items.
        expected: i64,
        /// The total the event carries.
        found: i64,
    },
}

/// A snapshot that cannot be restored. The store should ignore it and replay
/// the whole history instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotError {
    /// The snapshot was written with a schema this code does not read.
    #[error("snapshot schema version {found} is not supported (this code reads {supported})")]
    UnsupportedSchema {
        /// The snapshot's schema version.
        found: u32,
        /// The schema version this code reads and writes.
        supported: u32,
    },
    /// The snapshot's line items break a rule.
    #[error("snapshot items are invalid: {0}")]
    InvalidItems(OrderError),
    /// The snapshot's fields contradict each other.
    #[error("snapshot is inconsistent: {0}")]
    Inconsistent(&'static str),
}
