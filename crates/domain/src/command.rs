//! Commands: what a client asks of an order.
//!
//! Each command exists twice:
//! - an `*Input` struct of plain strings and numbers, as a client sends it
//!   (JSON bodies deserialize into it with serde);
//! - the command proper, built from its input with `TryFrom`, which checks
//!   every field and returns an [`OrderError`] naming the first field at fault
//!   (in the order of the fields, items in order).
//!
//! A command value is always well formed; whether it is allowed is decided by
//! the [`Order`](crate::Order) against its current state.

use serde::{Deserialize, Serialize};

use crate::error::{Field, FieldError, OrderError};
use crate::values::{
    CancelReason, Currency, LineItem, Money, PaymentId, ShipmentId, Sku, TrackingNumber, UserId,
};

/// The most line items an order may have.
pub const MAX_ITEMS: usize = 100;

/// Checks the line item rules (at least one, at most [`MAX_ITEMS`],
/// quantities > 0, prices >= 0) and returns the order total in minor units,
/// or [`OrderError::TotalOverflow`] if it does not fit in an `i64`.
pub fn order_total(items: &[LineItem]) -> Result<i64, OrderError> {
    if items.is_empty() {
        return Err(OrderError::NoItems);
    }
    if items.len() > MAX_ITEMS {
        return Err(OrderError::TooManyItems { count: items.len(), max: MAX_ITEMS });
    }
    let mut total: i64 = 0;
    for (i, item) in items.iter().enumerate() {
        if item.quantity == 0 {
            return Err(OrderError::invalid(Field::ItemQuantity(i), FieldError::NotPositive { value: 0 }));
        }
        if item.unit_price_minor < 0 {
            return Err(OrderError::invalid(
                Field::ItemUnitPrice(i),
                FieldError::Negative { value: item.unit_price_minor },
            ));
        }
    }
    for item in items {
        total = i64::from(item.quantity)
            .checked_mul(item.unit_price_minor)
            .and_then(|line| total.checked_add(line))
            .ok_or(OrderError::TotalOverflow)?;
    }
    Ok(total)
}

fn field<T>(field: Field, parsed: Result<T, FieldError>) -> Result<T, OrderError> {
    parsed.map_err(|problem| OrderError::invalid(field, problem))
}

/// The body of a create request, as sent by a client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CreateOrderInput {
    /// Who orders. When the caller is authenticated, its token's subject; a body may
    /// then leave it out, and only an administrator may name another user.
    #[cfg_attr(feature = "openapi", schema(min_length = 1, max_length = 64))]
    #[serde(default)]
    pub user_id: String,
    /// ISO 4217 code of the order's currency.
    #[cfg_attr(feature = "openapi", schema(pattern = "^[A-Z]{3}$", example = "EUR"))]
    pub currency: String,
    /// The lines of the order.
    #[cfg_attr(feature = "openapi", schema(min_items = 1, max_items = 100))]
    pub items: Vec<LineItemInput>,
}

/// One line of a [`CreateOrderInput`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LineItemInput {
    /// What is ordered.
    #[cfg_attr(feature = "openapi", schema(min_length = 1, max_length = 64))]
    pub sku: String,
    /// How many units (must be > 0).
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 4294967295_i64))]
    pub quantity: i64,
    /// Price of one unit in minor units (must be >= 0).
    #[cfg_attr(feature = "openapi", schema(minimum = 0))]
    pub unit_price_minor: i64,
}

/// Create an order. The total is computed from the items; clients never send
/// it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateOrder {
    user_id: UserId,
    currency: Currency,
    items: Vec<LineItem>,
    total_minor: i64,
}

impl CreateOrder {
    /// Checks the line item rules (see [`order_total`]) and computes the total.
    pub fn new(user_id: UserId, currency: Currency, items: Vec<LineItem>) -> Result<Self, OrderError> {
        let total_minor = order_total(&items)?;
        Ok(Self { user_id, currency, items, total_minor })
    }

    /// Who orders.
    pub fn user_id(&self) -> &UserId {
        &self.user_id
    }

    /// The order's currency.
    pub fn currency(&self) -> Currency {
        self.currency
    }

    /// The lines, at least one.
    pub fn items(&self) -> &[LineItem] {
        &self.items
    }

    /// The total of the lines.
    pub fn total(&self) -> Money {
        Money::new(self.total_minor, self.currency)
    }

    /// The parts: user, currency, items.
    pub fn into_parts(self) -> (UserId, Currency, Vec<LineItem>) {
        (self.user_id, self.currency, self.items)
    }
}

impl TryFrom<CreateOrderInput> for CreateOrder {
    type Error = OrderError;

    fn try_from(input: CreateOrderInput) -> Result<Self, Self::Error> {
        let user_id = field(Field::UserId, UserId::new(input.user_id))?;
        let currency = field(Field::Currency, Currency::new(&input.currency))?;
        if input.items.is_empty() {
            return Err(OrderError::NoItems);
        }
        if input.items.len() > MAX_ITEMS {
            return Err(OrderError::TooManyItems { count: input.items.len(), max: MAX_ITEMS });
        }
        let items = input
            .items
            .into_iter()
            .enumerate()
            .map(|(i, item)| {
                let sku = field(Field::ItemSku(i), Sku::new(item.sku))?;
                let quantity = field(Field::ItemQuantity(i), parse_quantity(item.quantity))?;
                if item.unit_price_minor < 0 {
                    return Err(OrderError::invalid(
                        Field::ItemUnitPrice(i),
                        FieldError::Negative { value: item.unit_price_minor },
                    ));
                }
                Ok(LineItem::new(sku, quantity, item.unit_price_minor))
            })
            .collect::<Result<Vec<_>, OrderError>>()?;
        Self::new(user_id, currency, items)
    }
}

fn parse_quantity(quantity: i64) -> Result<u32, FieldError> {
    if quantity <= 0 {
        return Err(FieldError::NotPositive { value: quantity });
    }
    u32::try_from(quantity).map_err(|_| FieldError::TooLarge { value: quantity, max: i64::from(u32::MAX) })
}

/// The body of a pay request, as sent by a client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PayOrderInput {
    /// The payment provider's reference.
    #[cfg_attr(feature = "openapi", schema(min_length = 1, max_length = 64))]
    pub payment_id: String,
    /// The amount paid, in minor units: must be the order's total.
    pub amount_minor: i64,
    /// The payment's currency; when given it must be the order's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(pattern = "^[A-Z]{3}$"))]
    pub currency: Option<String>,
}

/// Pay an order: exactly its total, in its currency.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PayOrder {
    payment_id: PaymentId,
    amount_minor: i64,
    currency: Option<Currency>,
}

impl PayOrder {
    /// A payment of `amount_minor` (>= 0). `currency`, when given, must be the
    /// order's currency; `None` means "the order's currency".
    pub fn new(
        payment_id: PaymentId,
        amount_minor: i64,
        currency: Option<Currency>,
    ) -> Result<Self, OrderError> {
        if amount_minor < 0 {
            return Err(OrderError::invalid(
                Field::AmountMinor,
                FieldError::Negative { value: amount_minor },
            ));
        }
        Ok(Self { payment_id, amount_minor, currency })
    }

    /// The payment provider's reference.
    pub fn payment_id(&self) -> &PaymentId {
        &self.payment_id
    }

    /// The amount paid, in minor units.
    pub fn amount_minor(&self) -> i64 {
        self.amount_minor
    }

    /// The payment's currency, if the payer named one.
    pub fn currency(&self) -> Option<Currency> {
        self.currency
    }
}

impl TryFrom<PayOrderInput> for PayOrder {
    type Error = OrderError;

    fn try_from(input: PayOrderInput) -> Result<Self, Self::Error> {
        let payment_id = field(Field::PaymentId, PaymentId::new(input.payment_id))?;
        let currency = input.currency.map(|code| field(Field::Currency, Currency::new(&code))).transpose()?;
        Self::new(payment_id, input.amount_minor, currency)
    }
}

/// The body of a ship request, as sent by a client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ShipOrderInput {
    /// The shipment's reference.
    #[cfg_attr(feature = "openapi", schema(min_length = 1, max_length = 64))]
    pub shipment_id: String,
    /// The carrier's tracking number.
    #[cfg_attr(feature = "openapi", schema(min_length = 1, max_length = 64))]
    pub tracking_number: String,
}

/// Ship a paid order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShipOrder {
    /// The shipment's reference.
    pub shipment_id: ShipmentId,
    /// The carrier's tracking number.
    pub tracking_number: TrackingNumber,
}

impl ShipOrder {
    /// A shipment.
    pub fn new(shipment_id: ShipmentId, tracking_number: TrackingNumber) -> Self {
        Self { shipment_id, tracking_number }
    }
}

impl TryFrom<ShipOrderInput> for ShipOrder {
    type Error = OrderError;

    fn try_from(input: ShipOrderInput) -> Result<Self, Self::Error> {
        Ok(Self::new(
            field(Field::ShipmentId, ShipmentId::new(input.shipment_id))?,
            field(Field::TrackingNumber, TrackingNumber::new(input.tracking_number))?,
        ))
    }
}

/// The body of a cancel request, as sent by a client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CancelOrderInput {
    /// Why the order is cancelled.
    #[cfg_attr(feature = "openapi", schema(min_length = 1, max_length = 500))]
    pub reason: String,
}

/// Cancel an order that is neither shipped nor already cancelled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CancelOrder {
    /// Why the order is cancelled.
    pub reason: CancelReason,
}

impl CancelOrder {
    /// A cancellation.
    pub fn new(reason: CancelReason) -> Self {
        Self { reason }
    }
}

impl TryFrom<CancelOrderInput> for CancelOrder {
    type Error = OrderError;

    fn try_from(input: CancelOrderInput) -> Result<Self, Self::Error> {
        Ok(Self::new(field(Field::Reason, CancelReason::new(input.reason))?))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn item(sku: &str, quantity: i64, unit_price_minor: i64) -> LineItemInput {
        LineItemInput { sku: sku.into(), quantity, unit_price_minor }
    }

    fn create(user_id: &str, currency: &str, items: Vec<LineItemInput>) -> CreateOrderInput {
        CreateOrderInput { user_id: user_id.into(), currency: currency.into(), items }
    }

    fn parse(input: CreateOrderInput) -> Result<CreateOrder, OrderError> {
        CreateOrder::try_from(input)
    }

    #[test]
    fn create_computes_the_total() {
        let cmd = parse(create("u1", "EUR", vec![item("a", 2, 150), item("b", 1, 0)])).unwrap();
        assert_eq!(cmd.total(), Money::new(300, Currency::new("EUR").unwrap()));
        assert_eq!(cmd.items().len(), 2);
        assert_eq!(cmd.user_id().as_str(), "u1");
    }

    #[test]
    fn create_names_the_bad_field() {
        let ok = || vec![item("a", 1, 1)];
        let cases = [
            (create("", "EUR", ok()), OrderError::invalid(Field::UserId, FieldError::Empty)),
            (
                create(&"u".repeat(65), "EUR", ok()),
                OrderError::invalid(Field::UserId, FieldError::TooLong { len: 65, max: 64 }),
            ),
            (create("u", "eur", ok()), OrderError::invalid(Field::Currency, FieldError::NotCurrencyCode)),
            (create("u", "EUR", vec![]), OrderError::NoItems),
            (
                create("u", "EUR", vec![item("a", 1, 1); 101]),
                OrderError::TooManyItems { count: 101, max: 100 },
            ),
            (
                create("u", "EUR", vec![item("a", 1, 1), item(" ", 1, 1)]),
                OrderError::invalid(Field::ItemSku(1), FieldError::Empty),
            ),
            (
                create("u", "EUR", vec![item("a", 1, 1), item("b", 0, 1)]),
                OrderError::invalid(Field::ItemQuantity(1), FieldError::NotPositive { value: 0 }),
            ),
            (
                create("u", "EUR", vec![item("a", -3, 1)]),
                OrderError::invalid(Field::ItemQuantity(0), FieldError::NotPositive { value: -3 }),
            ),
            (
                create("u", "EUR", vec![item("a", 1 << 32, 1)]),
                OrderError::invalid(
                    Field::ItemQuantity(0),
                    FieldError::TooLarge { value: 1 << 32, max: u32::MAX.into() },
                ),
            ),
            (
                create("u", "EUR", vec![item("a", 1, 1), item("b", 1, 1), item("c", 1, -1)]),
                OrderError::invalid(Field::ItemUnitPrice(2), FieldError::Negative { value: -1 }),
            ),
            (
                create("u", "EUR", vec![item("a", 1, -1), item("b", 0, 1)]),
                OrderError::invalid(Field::ItemUnitPrice(0), FieldError::Negative { value: -1 }),
            ),
            (create("u", "EUR", vec![item("a", 2, i64::MAX / 2 + 1)]), OrderError::TotalOverflow),
            (create("u", "EUR", vec![item("a", 1, i64::MAX), item("b", 1, 1)]), OrderError::TotalOverflow),
        ];
        for (input, expected) in cases {
            assert_eq!(parse(input.clone()), Err(expected), "{input:?}");
        }
        // The largest total that fits is accepted.
        assert!(parse(create("u", "EUR", vec![item("a", 1, i64::MAX)])).is_ok());
    }

    #[test]
    fn create_checks_rules_on_typed_items_too() {
        let user = UserId::new("u").unwrap();
        let eur = Currency::new("EUR").unwrap();
        let sku = Sku::new("a").unwrap();
        assert_eq!(CreateOrder::new(user.clone(), eur, vec![]), Err(OrderError::NoItems));
        assert_eq!(
            CreateOrder::new(user, eur, vec![LineItem::new(sku, 0, 1)]),
            Err(OrderError::invalid(Field::ItemQuantity(0), FieldError::NotPositive { value: 0 }))
        );
    }

    #[test]
    fn pay_names_the_bad_field() {
        let pay = |payment_id: &str, amount_minor, currency: Option<&str>| {
            PayOrder::try_from(PayOrderInput {
                payment_id: payment_id.into(),
                amount_minor,
                currency: currency.map(Into::into),
            })
        };
        assert!(pay("p1", 0, None).is_ok());
        assert_eq!(pay("p1", 10, Some("USD")).unwrap().currency().unwrap().as_str(), "USD");
        assert_eq!(pay("", 10, None), Err(OrderError::invalid(Field::PaymentId, FieldError::Empty)));
        assert_eq!(
            pay("p1", -1, None),
            Err(OrderError::invalid(Field::AmountMinor, FieldError::Negative { value: -1 }))
        );
        assert_eq!(
            pay("p1", 1, Some("usd")),
            Err(OrderError::invalid(Field::Currency, FieldError::NotCurrencyCode))
        );
    }

    #[test]
    fn ship_and_cancel_name_the_bad_field() {
        let ship = |shipment_id: &str, tracking_number: &str| {
            ShipOrder::try_from(ShipOrderInput {
                shipment_id: shipment_id.into(),
                tracking_number: tracking_number.into(),
            })
        };
        assert!(ship("s1", "t1").is_ok());
        assert_eq!(ship("", "t1"), Err(OrderError::invalid(Field::ShipmentId, FieldError::Empty)));
        assert_eq!(
            ship("s1", "t\t1"),
            Err(OrderError::invalid(Field::TrackingNumber, FieldError::ControlCharacter))
        );
        assert_eq!(
            CancelOrder::try_from(CancelOrderInput { reason: "".into() }),
            Err(OrderError::invalid(Field::Reason, FieldError::Empty))
        );
        assert_eq!(
            CancelOrder::try_from(CancelOrderInput { reason: "r".repeat(501) }),
            Err(OrderError::invalid(Field::Reason, FieldError::TooLong { len: 501, max: 500 }))
        );
    }

    #[test]
    fn inputs_deserialize_from_the_http_json() {
        let input: CreateOrderInput = serde_json::from_str(
            r#"{"user_id":"u1","currency":"EUR","items":[{"sku":"a","quantity":2,"unit_price_minor":150}]}"#,
        )
        .unwrap();
        assert_eq!(parse(input).unwrap().total().amount_minor, 300);
        let pay: PayOrderInput = serde_json::from_str(r#"{"payment_id":"p1","amount_minor":300}"#).unwrap();
        assert_eq!(pay.currency, None);
    }

    #[test]
    fn error_messages_name_the_field() {
        let err = OrderError::invalid(Field::ItemQuantity(2), FieldError::NotPositive { value: 0 });
        assert_eq!(err.to_string(), "items[2].quantity: must be greater than zero, got 0");
        assert_eq!(err.field(), Some(Field::ItemQuantity(2)));
    }
}
