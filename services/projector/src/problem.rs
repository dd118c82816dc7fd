//! Query API errors as RFC 9457 `application/problem+json`, mapped to status codes in
//! one place.
//!
//! Body: `type` (a stable URI per kind of problem, relative to the service), `title`
//! (fixed per type), `status`, `detail` and, where one input is at fault, `field` (a
//! path or query parameter name).

use actix_web::{HttpResponse, ResponseError, http::StatusCode};
use orders_runtime::{auth::AuthError, problem::Problem};
use tokio_postgres::error::SqlState;

/// Everything a query can end with besides an answer.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// A path or query parameter is invalid (or unknown).
    #[error("{detail}")]
    InvalidParameter {
        /// The parameter.
        field: String,
        /// What is wrong.
        detail: String,
    },
    /// The read model does not know the order or user (or the route does not exist).
    #[error("{0}")]
    NotFound(String),
    /// `min_version` was asked of an order the read model does not show yet.
    #[error("{0}")]
    NotYetVisible(String),
    /// The order has no view because its first event is missing, while later ones
    /// arrived and wait for it (parked). The body also carries `missing_version` and
    /// `parked_versions`.
    #[error(
        "order {order_id} is not in the read model: its version {missing_version} has not arrived, \
         versions {parked_versions:?} arrived and wait for it"
    )]
    MissingEvents {
        /// The order.
        order_id: uuid::Uuid,
        /// The version it waits for.
        missing_version: i64,
        /// The versions waiting.
        parked_versions: Vec<i64>,
    },
    /// The database cannot be reached (or its schema is not in place yet); retry later.
    #[error("the read model is unavailable; retry later")]
    Unavailable,
    /// The caller is not authenticated (401) or may not read this (403).
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// A bug; logged where it happened.
    #[error("internal error")]
    Internal,
}

impl QueryError {
    /// An invalid parameter.
    pub fn invalid(field: &str, detail: impl Into<String>) -> Self {
        Self::InvalidParameter { field: field.to_string(), detail: detail.into() }
    }

    fn slug_and_title(&self) -> (&'static str, &'static str) {
        match self {
            Self::InvalidParameter { .. } => ("invalid-parameter", "A request parameter is invalid"),
            Self::NotFound(_) => ("not-found", "Not found"),
            Self::NotYetVisible(_) => ("not-yet-visible", "Not in the read model yet"),
            Self::MissingEvents { .. } => ("missing-events", "Events of this order are missing"),
            Self::Unavailable => ("unavailable", "Temporarily unavailable"),
            Self::Auth(AuthError::Forbidden(_)) => ("forbidden", "The caller may not do this"),
            Self::Auth(_) => ("unauthenticated", "The request is not authenticated"),
            Self::Internal => ("internal", "Internal error"),
        }
    }
}

impl ResponseError for QueryError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::InvalidParameter { .. } => StatusCode::BAD_REQUEST,
            Self::NotFound(_) | Self::NotYetVisible(_) | Self::MissingEvents { .. } => StatusCode::NOT_FOUND,
            Self::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Self::Auth(e) => e.status_code(),
            Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        if let Self::Auth(e) = self {
            // Its own response: the same document, with the WWW-Authenticate challenge.
            return e.error_response();
        }
        let (slug, title) = self.slug_and_title();
        let field = match self {
            Self::InvalidParameter { field, .. } => Some(field.as_str()),
            _ => None,
        };
        let problem = Problem::new(self.status_code(), slug, title, self.to_string()).with_field(field);
        let stale = matches!(self, Self::NotYetVisible(_) | Self::MissingEvents { .. });
        let headers = |response: &mut actix_web::HttpResponseBuilder| {
            if stale {
                response
                    .insert_header(("Retry-After", "1"))
                    .insert_header((crate::http::STALE_HEADER, "true"));
            }
        };
        match self {
            Self::MissingEvents { missing_version, parked_versions, .. } => {
                // The problem document with two members of this type's own (RFC 9457 §3.2).
                let mut body = problem.to_json();
                if let Some(members) = body.as_object_mut() {
                    members.insert("missing_version".into(), (*missing_version).into());
                    members.insert("parked_versions".into(), parked_versions.clone().into());
                }
                let mut response = HttpResponse::build(self.status_code());
                headers(&mut response);
                response.content_type("application/problem+json").json(body)
            }
            _ => problem.response(headers),
        }
    }
}

impl From<deadpool_postgres::PoolError> for QueryError {
    fn from(error: deadpool_postgres::PoolError) -> Self {
        tracing::warn!(error = %error, "no database connection for a query");
        Self::Unavailable
    }
}

impl From<tokio_postgres::Error> for QueryError {
    fn from(error: tokio_postgres::Error) -> Self {
        match error.as_db_error() {
            // The schema is not migrated yet.
            Some(db) if db.code() == &SqlState::UNDEFINED_TABLE => {
                tracing::warn!(error = %db.message(), "the read model is not in place yet");
                Self::Unavailable
            }
            Some(db) => {
                tracing::error!(error = %db.message(), code = db.code().code(), "query failed");
                Self::Internal
            }
            None => {
                tracing::warn!(error = %error, "the database connection failed during a query");
                Self::Unavailable
            }
        }
    }
}
