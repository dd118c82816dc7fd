//! Per-user window aggregates on the `order-stats` topic:
//! [`UserWindowStats`] as a [`pb::UserWindowStats`].

use chrono::{DateTime, Utc};
use orders_domain::{Currency, Money, UserId};
use prost::Message;

use crate::convert::{date_time, non_negative, text, timestamp};
use crate::error::{DecodeError, Result};
use crate::pb;

/// What one user did in one time window, in one currency.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct UserWindowStats {
    /// The user (the Kafka key).
    pub user_id: UserId,
    /// Start of the window, inclusive.
    pub window_start: DateTime<Utc>,
    /// End of the window, exclusive; after `window_start`.
    pub window_end: DateTime<Utc>,
    /// Orders created in the window.
    pub order_count: u64,
    /// Orders paid in the window.
    pub paid_count: u64,
    /// Sum of the payments in the window, in minor units of `currency`;
    /// zero or more.
    pub revenue_minor: i64,
    /// The currency of `revenue_minor`.
    pub currency: Currency,
    /// Whether the window is closed and this is its last message.
    pub is_final: bool,
    /// Orders cancelled in the window.
    pub cancelled_count: u64,
    /// Sum of the payments of the orders cancelled in the window after they were
    /// paid, in minor units of `currency`; zero or more.
    pub refunded_minor: i64,
}

impl UserWindowStats {
    /// The revenue as money.
    pub fn revenue(&self) -> Money {
        Money::new(self.revenue_minor, self.currency)
    }
}

/// The Protobuf form of the stats.
pub fn stats_to_proto(stats: &UserWindowStats) -> pb::UserWindowStats {
    pb::UserWindowStats {
        user_id: stats.user_id.to_string(),
        window_start: Some(timestamp(stats.window_start)),
        window_end: Some(timestamp(stats.window_end)),
        order_count: stats.order_count,
        paid_count: stats.paid_count,
        revenue_minor: stats.revenue_minor,
        currency: stats.currency.to_string(),
        is_final: stats.is_final,
        cancelled_count: stats.cancelled_count,
        refunded_minor: stats.refunded_minor,
    }
}

/// The stats in a Protobuf message, checked (valid user and currency, a
/// window that ends after it starts, revenue and refunds >= 0).
pub fn stats_from_proto(message: pb::UserWindowStats) -> Result<UserWindowStats> {
    let stats = UserWindowStats {
        user_id: text(|| "user_id".into(), message.user_id)?,
        window_start: date_time("window_start", message.window_start)?,
        window_end: date_time("window_end", message.window_end)?,
        order_count: message.order_count,
        paid_count: message.paid_count,
        revenue_minor: non_negative("revenue_minor", message.revenue_minor)?,
        currency: text(|| "currency".into(), message.currency)?,
        is_final: message.is_final,
        cancelled_count: message.cancelled_count,
        refunded_minor: non_negative("refunded_minor", message.refunded_minor)?,
    };
    if stats.window_end <= stats.window_start {
        return Err(DecodeError::InvalidWindow);
    }
    Ok(stats)
}

/// Encodes stats (the value of a message on `order-stats`).
pub fn encode_stats(stats: &UserWindowStats) -> Vec<u8> {
    stats_to_proto(stats).encode_to_vec()
}

/// Decodes the value of a message on `order-stats`. Never panics.
pub fn decode_stats(bytes: &[u8]) -> Result<UserWindowStats> {
    let message = pb::UserWindowStats::decode(bytes)
        .map_err(|source| DecodeError::Protobuf { message: "UserWindowStats", source })?;
    stats_from_proto(message)
}
