//! HTTP errors as RFC 9457 `application/problem+json`, mapped to status codes in one
//! place.
//!
//! Body: `type` (a stable URI per kind of problem, relative to the service), `title`
//! (short, fixed per type), `status`, `detail` (what was wrong with this request) and,
//! where one input is at fault, `field` (a JSON path such as `items[0].quantity`).

use actix_web::{HttpResponse, ResponseError, http::StatusCode};
use orders_runtime::{auth::AuthError, limits::TooManyRequests, problem::Problem};

use crate::app::CommandError;

/// Everything an HTTP request can end with besides success.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The body is not JSON of the expected shape.
    #[error("{detail}")]
    MalformedBody {
        /// What is wrong.
        detail: String,
        /// Where, when known.
        field: Option<String>,
    },
    /// A value is invalid whatever the order's state.
    #[error("{detail}")]
    InvalidInput {
        /// What is wrong.
        detail: String,
        /// Where, when known.
        field: Option<String>,
    },
    /// A header has a value that cannot be used.
    #[error("header {header}: {detail}")]
    InvalidHeader {
        /// The header.
        header: &'static str,
        /// What is wrong.
        detail: String,
    },
    /// The path names no order.
    #[error("{0}")]
    NotFound(String),
    /// A rule of the order refuses the command in its current state.
    #[error("{detail}")]
    RuleBroken {
        /// The rule's message.
        detail: String,
        /// The field at fault, if one is.
        field: Option<String>,
    },
    /// The order is not at the version the client pinned.
    #[error("{0}")]
    Conflict(String),
    /// The order kept changing concurrently: every re-run lost its race. Nothing was
    /// written; retry later (503 with `Retry-After`), this is not a refusal.
    #[error("{0}")]
    Busy(String),
    /// The idempotency key was used with another request.
    #[error("the Idempotency-Key was already used with a different request")]
    IdempotencyKeyReused,
    /// The body is larger than allowed.
    #[error("the request body is larger than {limit} bytes")]
    PayloadTooLarge {
        /// The limit.
        limit: usize,
    },
    /// The database cannot be reached, or the store is overloaded or shutting down,
    /// or the outcome of the write could not be learned; retry later.
    #[error("the service cannot complete the command now; retry later")]
    Unavailable,
    /// The caller is not authenticated (401) or may not do this (403).
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// The client sends more commands than its rate (429 with `Retry-After`).
    #[error(transparent)]
    RateLimited(#[from] TooManyRequests),
    /// A bug or corruption; logged where it happened.
    #[error("internal error")]
    Internal,
}

impl ApiError {
    fn slug_and_title(&self) -> (&'static str, &'static str) {
        match self {
            ApiError::MalformedBody { .. } => ("malformed-body", "The request body is malformed"),
            ApiError::InvalidInput { .. } => ("invalid-input", "A value in the request is invalid"),
            ApiError::InvalidHeader { .. } => ("invalid-header", "A request header is invalid"),
            ApiError::NotFound(_) => ("not-found", "No such order"),
            ApiError::RuleBroken { .. } => ("rule-broken", "The order's rules refuse this command"),
            ApiError::Conflict(_) => ("concurrency-conflict", "The order changed concurrently"),
            ApiError::Busy(_) => ("contention", "The order is busy"),
            ApiError::IdempotencyKeyReused => ("idempotency-key-reused", "Idempotency key reused"),
            ApiError::PayloadTooLarge { .. } => ("payload-too-large", "The request body is too large"),
            ApiError::Unavailable => ("unavailable", "Temporarily unavailable"),
            ApiError::RateLimited(_) => ("rate-limited", "Too many requests"),
            ApiError::Auth(AuthError::Forbidden(_)) => ("forbidden", "The caller may not do this"),
            ApiError::Auth(_) => ("unauthenticated", "The request is not authenticated"),
            ApiError::Internal => ("internal", "Internal error"),
        }
    }

    fn field(&self) -> Option<&str> {
        match self {
            ApiError::MalformedBody { field, .. }
            | ApiError::InvalidInput { field, .. }
            | ApiError::RuleBroken { field, .. } => field.as_deref(),
            ApiError::InvalidHeader { header, .. } => Some(header),
            _ => None,
        }
    }

    /// The problem document.
    pub fn problem(&self) -> Problem {
        let (slug, title) = self.slug_and_title();
        Problem::new(self.status_code(), slug, title, self.to_string()).with_field(self.field())
    }

    /// The problem document as JSON, as stored for idempotent replays too.
    pub fn body(&self) -> serde_json::Value {
        self.problem().to_json()
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::MalformedBody { .. }
            | ApiError::InvalidInput { .. }
            | ApiError::InvalidHeader { .. } => StatusCode::BAD_REQUEST,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::RuleBroken { .. } | ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::IdempotencyKeyReused => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Busy(_) | ApiError::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Auth(e) => e.status_code(),
            ApiError::RateLimited(e) => e.status_code(),
            ApiError::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        match self {
            // Their own responses: the same document, with WWW-Authenticate or Retry-After.
            ApiError::Auth(e) => e.error_response(),
            ApiError::RateLimited(e) => e.error_response(),
            _ => self.problem().response(|_| {}),
        }
    }
}

impl From<orders_domain::OrderError> for ApiError {
    fn from(error: orders_domain::OrderError) -> Self {
        use orders_domain::ErrorKind;
        let field = error.field().map(|f| f.to_string());
        match error.kind() {
            ErrorKind::InvalidInput => ApiError::InvalidInput { detail: error.to_string(), field },
            ErrorKind::NotFound => ApiError::NotFound(error.to_string()),
            ErrorKind::Conflict => ApiError::RuleBroken { detail: error.to_string(), field },
        }
    }
}

impl From<CommandError> for ApiError {
    fn from(error: CommandError) -> Self {
        match error {
            CommandError::Rejected(e) => e.into(),
            CommandError::NotFound(id) => ApiError::NotFound(format!("order {id} does not exist")),
            CommandError::Forbidden(e) => ApiError::Auth(e),
            e @ CommandError::VersionMismatch { .. } => ApiError::Conflict(e.to_string()),
            e @ CommandError::Contention => ApiError::Busy(e.to_string()),
            CommandError::DuplicateKey => ApiError::Conflict(error.to_string()),
            CommandError::Store(e) if e.is_transient() => {
                tracing::warn!(error = %e, "command not completed; answered retry-later");
                ApiError::Unavailable
            }
            e => {
                tracing::error!(error = %e, "command failed");
                ApiError::Internal
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status_and_retry_after(error: CommandError) -> (u16, Option<String>) {
        let response = ApiError::from(error).error_response();
        let retry_after =
            response.headers().get("Retry-After").and_then(|v| v.to_str().ok()).map(str::to_string);
        (response.status().as_u16(), retry_after)
    }

    #[test]
    fn contention_is_retry_later_not_a_conflict() {
        assert_eq!(status_and_retry_after(CommandError::Contention), (503, Some("1".into())));
    }

    #[test]
    fn an_unknown_outcome_or_an_overload_is_retry_later() {
        use orders_eventstore::Error;
        let unknown = Error::OutcomeUnknown(Box::new(Error::ShutDown));
        assert_eq!(status_and_retry_after(CommandError::Store(unknown)), (503, Some("1".into())));
        let overloaded = Error::Overloaded { queued: 3 };
        assert_eq!(status_and_retry_after(CommandError::Store(overloaded)), (503, Some("1".into())));
    }

    #[test]
    fn a_pinned_version_that_moved_is_still_a_conflict() {
        let mismatch = CommandError::VersionMismatch { expected: 1, actual: 2 };
        assert_eq!(status_and_retry_after(mismatch), (409, None));
    }
}
