//! The Protobuf contract (`proto/orders/v1`) and its mapping to and from the
//! domain.
//!
//! # Layout
//!
//! - [`pb`]: the types generated from `proto/orders/v1/*.proto` by
//!   `build.rs` (prost). Use them only to reach the wire; the rest of the
//!   platform works with domain types.
//! - events (topic `orders`): [`EventMetadata`] plus an
//!   [`OrderEvent`](orders_domain::OrderEvent) travel in one
//!   [`pb::EventEnvelope`]: [`encode_event`] and [`decode_event`].
//! - commands (topic `order-commands`): [`CommandMessage`] travels as a
//!   [`pb::CommandEnvelope`]: [`encode_command`] and [`decode_command`].
//! - stats (topic `order-stats`): [`UserWindowStats`] travels as a
//!   [`pb::UserWindowStats`]: [`encode_stats`] and [`decode_stats`].
//!
//! Decoding never panics: any input gives a value or a [`DecodeError`] that
//! says what was wrong. A decoded message holds only values the domain
//! accepts (ids, texts, currencies, line item rules, totals). Encoding cannot
//! fail.
//!
//! The wire format is pinned by golden-bytes tests (`tests/wire/golden.rs`);
//! the decoders are fuzzed by the cargo-fuzz crate `crates/fuzz` (`make fuzz`:
//! `decode_event_envelope`, `decode_command_envelope`).
//!
//! ```
//! # use orders_domain::*;
//! # use orders_events::*;
//! # use chrono::{TimeZone, Utc};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let cmd = CreateOrder::try_from(CreateOrderInput {
//!     user_id: "alice".into(),
//!     currency: "EUR".into(),
//!     items: vec![LineItemInput { sku: "book".into(), quantity: 1, unit_price_minor: 999 }],
//! })?;
//! let id = OrderId::from_uuid(uuid::Uuid::now_v7());
//! let now = Utc.with_ymd_and_hms(2025, 1, 1, 0, 0, 0).unwrap();
//! let event = Order::default().create(id, cmd, now)?.remove(0);
//! let metadata = EventMetadata::new(uuid::Uuid::now_v7(), None);
//!
//! let bytes = encode_event(&metadata, &event);
//! assert_eq!(decode_event(&bytes)?, (metadata, event));
//! assert!(decode_event(&bytes[..bytes.len() - 1]).is_err());
//! # Ok(())
//! # }
//! ```

mod command;
mod convert;
mod error;
mod event;
mod stats;

/// The generated Protobuf types of package `orders.v1`.
#[allow(
    missing_docs,
    unreachable_pub,
    clippy::all,
    clippy::pedantic,
    rustdoc::invalid_html_tags,
    rustdoc::bare_urls
)]
pub mod pb {
    include!(concat!(env!("OUT_DIR"), "/orders.v1.rs"));
}

pub use command::{
    CommandMessage, CommandMetadata, OrderCommand, command_from_proto, command_to_proto, decode_command,
    encode_command,
};
pub use error::{DecodeError, Result};
pub use event::{EventMetadata, decode_event, encode_event, event_from_proto, event_to_proto};
pub use stats::{UserWindowStats, decode_stats, encode_stats, stats_from_proto, stats_to_proto};
