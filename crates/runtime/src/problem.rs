//! RFC 9457 problem details (`application/problem+json`), the one error body of every
//! service's HTTP API.
//!
//! Services keep their own error enums (what can go wrong, which status it maps to)
//! and render them through [`Problem`]: `type` (a stable URI per kind of problem,
//! `/problems/<slug>`), `title` (fixed per type), `status`, `detail` (what was wrong
//! with this request) and, where one input is at fault, `field` (a JSON path, a header
//! or a parameter name).

use actix_web::{HttpResponse, HttpResponseBuilder, http::StatusCode};
use serde::Serialize;

/// One problem document (RFC 9457).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[schema(example = json!({
    "type": "/problems/invalid-input",
    "title": "A value in the request is invalid",
    "status": 400,
    "detail": "quantity must be greater than 0",
    "field": "items[0].quantity"
}))]
pub struct Problem {
    /// `/problems/<slug>`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Short, fixed per type.
    pub title: String,
    /// The HTTP status.
    pub status: u16,
    /// What was wrong with this request.
    pub detail: String,
    /// The input at fault, when one is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

impl Problem {
    /// A problem of type `/problems/{slug}`.
    pub fn new(status: StatusCode, slug: &str, title: &str, detail: impl Into<String>) -> Self {
        Self {
            kind: format!("/problems/{slug}"),
            title: title.to_string(),
            status: status.as_u16(),
            detail: detail.into(),
            field: None,
        }
    }

    /// Names the input at fault.
    pub fn with_field(mut self, field: Option<impl Into<String>>) -> Self {
        self.field = field.map(Into::into);
        self
    }

    /// The document as JSON (for example to store it for idempotent replays).
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or_default()
    }

    /// The response: the status, `application/problem+json`, the document, and
    /// `Retry-After: 1` on 503. `extra` adds headers of the service's own.
    pub fn response(&self, extra: impl FnOnce(&mut HttpResponseBuilder)) -> HttpResponse {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut response = HttpResponse::build(status);
        if status == StatusCode::SERVICE_UNAVAILABLE {
            response.insert_header(("Retry-After", "1"));
        }
        extra(&mut response);
        response.content_type("application/problem+json").json(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_has_the_rfc_9457_members() {
        let problem =
            Problem::new(StatusCode::BAD_REQUEST, "invalid-input", "Invalid", "quantity: must be > 0")
                .with_field(Some("items[0].quantity"));
        assert_eq!(
            problem.to_json(),
            serde_json::json!({
                "type": "/problems/invalid-input",
                "title": "Invalid",
                "status": 400,
                "detail": "quantity: must be > 0",
                "field": "items[0].quantity"
            })
        );
        let response = problem.response(|_| {});
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        assert_eq!(
            response.headers().get("content-type").and_then(|v| v.to_str().ok()),
            Some("application/problem+json")
        );
    }

    #[test]
    fn unavailable_says_when_to_retry() {
        let response = Problem::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "Unavailable", "down")
            .response(|_| {});
        assert_eq!(response.headers().get("Retry-After").and_then(|v| v.to_str().ok()), Some("1"));
    }
}
