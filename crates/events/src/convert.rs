//! Small conversions shared by the message mappings: UUIDs as text,
//! timestamps, validated texts.

use chrono::{DateTime, Utc};
use orders_domain::FieldError;
use uuid::Uuid;

use crate::error::{DecodeError, Result};

/// Encodes a UUID in its canonical text form.
pub(crate) fn uuid_text(uuid: Uuid) -> String {
    uuid.hyphenated().to_string()
}

/// Encodes an optional UUID; `None` is the empty string.
pub(crate) fn opt_uuid_text(uuid: Option<Uuid>) -> String {
    uuid.map(uuid_text).unwrap_or_default()
}

/// Decodes a required UUID.
pub(crate) fn uuid(field: &str, text: &str) -> Result<Uuid> {
    opt_uuid(field, text)?.ok_or_else(|| DecodeError::MissingField { field: field.to_owned() })
}

/// Decodes an optional UUID; the empty string is `None`.
pub(crate) fn opt_uuid(field: &str, text: &str) -> Result<Option<Uuid>> {
    if text.is_empty() {
        return Ok(None);
    }
    Uuid::parse_str(text).map(Some).map_err(|_| DecodeError::InvalidUuid { field: field.to_owned() })
}

/// Encodes a timestamp. A leap second (nanoseconds >= 10^9 in chrono) is
/// written as the last nanosecond of its second.
pub(crate) fn timestamp(at: DateTime<Utc>) -> prost_types::Timestamp {
    let nanos = at.timestamp_subsec_nanos().min(999_999_999);
    prost_types::Timestamp {
        seconds: at.timestamp(),
        // Below 10^9, so it fits.
        nanos: i32::try_from(nanos).unwrap_or(999_999_999),
    }
}

/// Decodes a required timestamp.
pub(crate) fn date_time(field: &str, timestamp: Option<prost_types::Timestamp>) -> Result<DateTime<Utc>> {
    let timestamp = timestamp.ok_or_else(|| DecodeError::MissingField { field: field.to_owned() })?;
    u32::try_from(timestamp.nanos)
        .ok()
        .filter(|nanos| *nanos < 1_000_000_000)
        .and_then(|nanos| DateTime::from_timestamp(timestamp.seconds, nanos))
        .ok_or_else(|| DecodeError::InvalidTimestamp { field: field.to_owned() })
}

/// Decodes a text into a validated domain value.
pub(crate) fn text<T>(field: impl FnOnce() -> String, value: String) -> Result<T>
where
    T: TryFrom<String, Error = FieldError>,
{
    T::try_from(value).map_err(|problem| DecodeError::InvalidValue { field: field(), problem })
}

/// Checks that an amount is zero or more.
pub(crate) fn non_negative(field: &str, value: i64) -> Result<i64> {
    if value < 0 {
        return Err(DecodeError::InvalidValue {
            field: field.to_owned(),
            problem: FieldError::Negative { value },
        });
    }
    Ok(value)
}
