//! Value types: identifiers, bounded texts, currency and money.
//!
//! Each type can only hold a valid value: its constructor parses and returns a
//! [`FieldError`] otherwise ("parse, don't validate"). They serialize as plain
//! strings and check the value again when deserialized.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::FieldError;

/// The identity of one order: a UUID.
///
/// The domain never makes one up (that would need a clock or randomness);
/// callers generate it, preferably as a UUIDv7 (`Uuid::now_v7()`) so ids sort
/// by creation time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct OrderId(Uuid);

impl OrderId {
    /// Wraps a UUID.
    pub const fn from_uuid(uuid: Uuid) -> Self {
        Self(uuid)
    }

    /// The UUID inside.
    pub const fn as_uuid(&self) -> Uuid {
        self.0
    }
}

impl From<Uuid> for OrderId {
    fn from(uuid: Uuid) -> Self {
        Self(uuid)
    }
}

impl From<OrderId> for Uuid {
    fn from(id: OrderId) -> Self {
        id.0
    }
}

impl fmt::Display for OrderId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl FromStr for OrderId {
    type Err = FieldError;

    /// Parses the text form of a UUID (hyphenated, simple, braced or URN).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Uuid::parse_str(s).map(Self).map_err(|_| FieldError::NotUuid)
    }
}

/// Checks the rules every bounded text shares: not blank, at most `max`
/// characters, no control characters.
fn check_text(value: &str, max: usize) -> Result<(), FieldError> {
    if value.trim().is_empty() {
        return Err(FieldError::Empty);
    }
    let len = value.chars().count();
    if len > max {
        return Err(FieldError::TooLong { len, max });
    }
    if value.chars().any(char::is_control) {
        return Err(FieldError::ControlCharacter);
    }
    Ok(())
}

macro_rules! bounded_text {
    ($(#[$doc:meta])* $name:ident, max = $max:expr) => {
        $(#[$doc])*
        ///
        /// Not empty or blank, at most [`Self::MAX_LEN`] characters, no
        /// control characters. Kept exactly as given (not trimmed).
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// The longest accepted value, in characters.
            pub const MAX_LEN: usize = $max;

            /// Parses a value.
            pub fn new(value: impl Into<String>) -> Result<Self, FieldError> {
                let value = value.into();
                check_text(&value, Self::MAX_LEN)?;
                Ok(Self(value))
            }

            /// The text.
            pub fn as_str(&self) -> &str {
                &self.0
            }

            /// The text, by value.
            pub fn into_string(self) -> String {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = FieldError;

            fn try_from(value: String) -> Result<Self, Self::Error> {
                Self::new(value)
            }
        }

        impl TryFrom<&str> for $name {
            type Error = FieldError;

            fn try_from(value: &str) -> Result<Self, Self::Error> {
                Self::new(value)
            }
        }

        impl FromStr for $name {
            type Err = FieldError;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::new(s)
            }
        }

        impl From<$name> for String {
            fn from(value: $name) -> Self {
                value.0
            }
        }
    };
}

bounded_text!(
    /// The customer who owns an order (the key of per-user statistics).
    UserId,
    max = 64
);
bounded_text!(
    /// A stock keeping unit: what a line item is for.
    Sku,
    max = 64
);
bounded_text!(
    /// The payment provider's reference of a payment.
    PaymentId,
    max = 64
);
bounded_text!(
    /// The reference of a shipment.
    ShipmentId,
    max = 64
);
bounded_text!(
    /// The carrier's tracking number of a shipment.
    TrackingNumber,
    max = 64
);
bounded_text!(
    /// Why an order was cancelled, in words (one line).
    CancelReason,
    max = 500
);

/// An ISO 4217 currency code: three uppercase ASCII letters (`EUR`, `USD`).
///
/// Only the form is checked, not membership of the ISO list, so a new
/// currency needs no code change.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Currency([u8; 3]);

impl Currency {
    /// Parses a currency code. Lowercase is refused, not converted.
    pub fn new(code: &str) -> Result<Self, FieldError> {
        match code.as_bytes() {
            &[a, b, c] if [a, b, c].iter().all(u8::is_ascii_uppercase) => Ok(Self([a, b, c])),
            _ => Err(FieldError::NotCurrencyCode),
        }
    }

    /// The code, for example `"EUR"`.
    pub fn as_str(&self) -> &str {
        // Three ASCII letters are always valid UTF-8: the fallback never runs.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

impl fmt::Debug for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Currency({})", self.as_str())
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Currency {
    type Err = FieldError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl TryFrom<String> for Currency {
    type Error = FieldError;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::new(&value)
    }
}

impl TryFrom<&str> for Currency {
    type Error = FieldError;

    fn try_from(value: &str) -> Result<Self, Self::Error> {
        Self::new(value)
    }
}

impl From<Currency> for String {
    fn from(value: Currency) -> Self {
        value.as_str().to_owned()
    }
}

/// An amount of money: integer minor units (cents for EUR) in a currency.
/// Never a float.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Money {
    /// The amount in the currency's minor unit.
    pub amount_minor: i64,
    /// The currency.
    pub currency: Currency,
}

impl Money {
    /// An amount in a currency.
    pub const fn new(amount_minor: i64, currency: Currency) -> Self {
        Self { amount_minor, currency }
    }
}

impl fmt::Display for Money {
    /// `1250 EUR`: minor units, then the code.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.amount_minor, self.currency)
    }
}

/// One line of an order: `quantity` units of `sku` at `unit_price_minor`
/// each, in the order's currency.
///
/// A plain record: the rules on quantity (> 0) and price (>= 0) are the
/// order's and are checked when an order is created from it
/// ([`crate::CreateOrder::new`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct LineItem {
    /// What is ordered.
    pub sku: Sku,
    /// How many units.
    pub quantity: u32,
    /// Price of one unit, in minor units of the order's currency.
    pub unit_price_minor: i64,
}

impl LineItem {
    /// A line item (not yet checked against the order rules).
    pub fn new(sku: Sku, quantity: u32, unit_price_minor: i64) -> Self {
        Self { sku, quantity, unit_price_minor }
    }
}

/// Where an order is in its life.
///
/// ```text
/// Pending --pay--> Paid --ship--> Shipped
///    |               |
///    +----cancel-----+--> Cancelled
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum OrderStatus {
    /// Created, waiting for payment.
    Pending,
    /// Paid, waiting for shipment.
    Paid,
    /// Shipped: final.
    Shipped,
    /// Cancelled: final.
    Cancelled,
}

impl OrderStatus {
    /// The lowercase name (`"pending"`, ...), as in JSON.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Paid => "paid",
            Self::Shipped => "shipped",
            Self::Cancelled => "cancelled",
        }
    }

    /// Whether no command can change the order any more.
    pub const fn is_final(self) -> bool {
        matches!(self, Self::Shipped | Self::Cancelled)
    }
}

impl fmt::Display for OrderStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn text_rules() {
        assert_eq!(UserId::new("alice").unwrap().as_str(), "alice");
        assert_eq!(UserId::new(""), Err(FieldError::Empty));
        assert_eq!(UserId::new(" \t "), Err(FieldError::Empty));
        assert_eq!(UserId::new("a".repeat(65)), Err(FieldError::TooLong { len: 65, max: 64 }));
        assert!(UserId::new("a".repeat(64)).is_ok());
        // Characters, not bytes: 64 two-byte characters fit.
        assert!(UserId::new("é".repeat(64)).is_ok());
        assert_eq!(UserId::new("a\nb"), Err(FieldError::ControlCharacter));
        assert_eq!(Sku::new("a\0"), Err(FieldError::ControlCharacter));
        assert_eq!(PaymentId::new(""), Err(FieldError::Empty));
        assert_eq!(ShipmentId::new(""), Err(FieldError::Empty));
        assert_eq!(TrackingNumber::new(""), Err(FieldError::Empty));
        assert_eq!(CancelReason::new("x".repeat(501)), Err(FieldError::TooLong { len: 501, max: 500 }));
        assert!(CancelReason::new("x".repeat(500)).is_ok());
    }

    #[test]
    fn currency_rules() {
        assert_eq!(Currency::new("EUR").unwrap().as_str(), "EUR");
        for bad in ["", "EU", "EURO", "eur", "E1R", "ÉUR", "E R"] {
            assert_eq!(Currency::new(bad), Err(FieldError::NotCurrencyCode), "{bad:?}");
        }
    }

    #[test]
    fn order_id_parses_uuids_only() {
        let id: OrderId = "0190b7e0-0000-7000-8000-000000000001".parse().unwrap();
        assert_eq!(id.to_string(), "0190b7e0-0000-7000-8000-000000000001");
        assert_eq!("nope".parse::<OrderId>(), Err(FieldError::NotUuid));
    }

    #[test]
    fn serde_checks_values_again() {
        assert_eq!(serde_json::to_string(&Currency::new("EUR").unwrap()).unwrap(), "\"EUR\"");
        assert!(serde_json::from_str::<Currency>("\"eur\"").is_err());
        assert!(serde_json::from_str::<UserId>("\"\"").is_err());
        let user: UserId = serde_json::from_str("\"bob\"").unwrap();
        assert_eq!(user.as_str(), "bob");
        assert_eq!(serde_json::to_string(&OrderStatus::Cancelled).unwrap(), "\"cancelled\"");
    }
}
