//! The OpenAPI 3.1 document every HTTP service serves at `GET /openapi.json`.
//!
//! A service describes its own routes with [utoipa]: `#[utoipa::path(...)]` on each
//! handler (its parameters, body and every status it can answer),
//! `#[derive(utoipa::ToSchema)]` on the types it reads and writes, and
//! `#[derive(utoipa::OpenApi)]` to collect them. [`document`] completes that with what
//! every service serves: the operational endpoints (`/healthz`, `/readyz`, `/metrics`,
//! see [`crate::http`]) and `/openapi.json` itself, the shared [`Problem`] schema, and
//! the `503` that any route answers when its request deadline passes. [`routes`] serves
//! the result, serialized once.
//!
//! ```
//! use actix_web::{HttpResponse, web};
//!
//! /// Says hello.
//! #[utoipa::path(get, path = "/hello", responses((status = 200, description = "Hello", body = String)))]
//! async fn hello() -> HttpResponse {
//!     HttpResponse::Ok().body("hello")
//! }
//!
//! #[derive(utoipa::OpenApi)]
//! #[openapi(paths(hello))]
//! struct Api;
//!
//! use utoipa::OpenApi as _;
//! let doc = orders_runtime::openapi::document(Api::openapi(), "greeter", "1.0.0", "Greets.");
//! assert!(doc.paths.paths.contains_key("/hello") && doc.paths.paths.contains_key("/readyz"));
//! let routes = orders_runtime::openapi::routes(&doc);
//! let _app = actix_web::App::new().configure(routes).route("/hello", web::get().to(hello));
//! ```

use actix_web::{HttpResponse, web};
use utoipa::{
    OpenApi as _,
    openapi::{
        self, Content, HttpMethod, InfoBuilder, Ref, ResponseBuilder, header::HeaderBuilder, path::Operation,
    },
};

use crate::problem::Problem;

/// The media type of every error body.
pub const PROBLEM_JSON: &str = "application/problem+json";

#[derive(utoipa::OpenApi)]
#[openapi(
    paths(crate::http::healthz, crate::http::readyz, crate::http::metrics, openapi_json),
    components(schemas(Problem)),
    tags((name = "operations", description = "Liveness, readiness, metrics and this document: for the platform, not for clients"))
)]
struct Operations;

/// This document.
#[utoipa::path(get, path = "/openapi.json", tag = "operations", responses(
    (status = 200, description = "The service's OpenAPI 3.1 document", body = Object, content_type = "application/json"),
))]
async fn openapi_json(doc: web::Data<Served>) -> HttpResponse {
    HttpResponse::Ok().content_type("application/json").body(doc.0.clone())
}

/// The document, serialized once.
#[derive(Debug)]
struct Served(web::Bytes);

/// `api` (a service's own routes) completed into the service's document: its `title`,
/// `version` and `description`, the operational endpoints, the [`Problem`] schema, and
/// a `503` answer (a problem document with `Retry-After`) on every operation that does
/// not declare one, since the request deadline can end any of them.
pub fn document(
    mut api: openapi::OpenApi,
    title: &str,
    version: &str,
    description: &str,
) -> openapi::OpenApi {
    api.info = InfoBuilder::new().title(title).version(version).description(Some(description)).build();
    api.merge(Operations::openapi());
    for item in api.paths.paths.values_mut() {
        for method in [HttpMethod::Get, HttpMethod::Put, HttpMethod::Post, HttpMethod::Delete] {
            if let Some(operation) = operation_mut(item, &method) {
                operation.responses.responses.entry("503".into()).or_insert_with(|| unavailable().into());
            }
        }
    }
    api
}

/// `doc` with Bearer JWT authentication ([`crate::auth`]) on every operation but the
/// operational ones: the `bearer` security scheme, required by each such operation, and
/// its `401` (no valid token, with a `WWW-Authenticate` challenge) and `403` (a valid
/// token that may not do this) answers.
pub fn secured(mut doc: openapi::OpenApi) -> openapi::OpenApi {
    use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};

    let components = doc.components.get_or_insert_with(Default::default);
    components.add_security_scheme(
        "bearer",
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .bearer_format("JWT")
                .description(Some(
                    "A JWT of the identity provider (RS256 or ES256), for this API's audience; its \
                     subject is the user, its scope `orders:admin` (by default) acts for anyone. \
                     Absent when the service runs with AUTH=off.",
                ))
                .build(),
        ),
    );
    let problem = |description: &str| {
        ResponseBuilder::new()
            .description(description)
            .content(PROBLEM_JSON, Content::new(Some(Ref::from_schema_name("Problem"))))
    };
    let unauthorized =
        problem("No valid bearer token: missing, expired, not for this API, or not signed by a trusted key")
            .header(
                "WWW-Authenticate",
                HeaderBuilder::new()
                    .schema(Some(openapi::ObjectBuilder::new().schema_type(openapi::Type::String)))
                    .description(Some("`Bearer`, with `error=\"invalid_token\"` when a token was refused"))
                    .build(),
            )
            .build();
    let forbidden = problem("The token's subject may not act on this user's data").build();
    for item in doc.paths.paths.values_mut() {
        for method in [HttpMethod::Get, HttpMethod::Put, HttpMethod::Post, HttpMethod::Delete] {
            let Some(operation) = operation_mut(item, &method) else { continue };
            if operation.tags.as_ref().is_some_and(|tags| tags.iter().any(|t| t == "operations")) {
                continue;
            }
            operation.security = Some(vec![SecurityRequirement::new("bearer", Vec::<String>::new())]);
            operation.responses.responses.entry("401".into()).or_insert_with(|| unauthorized.clone().into());
            operation.responses.responses.entry("403".into()).or_insert_with(|| forbidden.clone().into());
        }
    }
    doc
}

/// The document of a service with no API of its own: only what [`document`] adds.
pub fn operations_only(title: &str, version: &str, description: &str) -> openapi::OpenApi {
    document(openapi::OpenApi::default(), title, version, description)
}

fn operation_mut<'a>(item: &'a mut openapi::PathItem, method: &HttpMethod) -> Option<&'a mut Operation> {
    match method {
        HttpMethod::Get => item.get.as_mut(),
        HttpMethod::Put => item.put.as_mut(),
        HttpMethod::Post => item.post.as_mut(),
        HttpMethod::Delete => item.delete.as_mut(),
        _ => None,
    }
}

/// The `503` answer: retry after the seconds of `Retry-After`.
pub fn unavailable() -> openapi::Response {
    ResponseBuilder::new()
        .description(
            "Unavailable for now (a dependency is down, the service is overloaded, or the request \
             deadline passed): retry after `Retry-After` seconds",
        )
        .header("Retry-After", retry_after())
        .content(PROBLEM_JSON, Content::new(Some(Ref::from_schema_name("Problem"))))
        .build()
}

/// The `Retry-After` header (seconds).
pub fn retry_after() -> openapi::header::Header {
    HeaderBuilder::new()
        .schema(Some(openapi::ObjectBuilder::new().schema_type(openapi::Type::Integer).minimum(Some(0))))
        .description(Some("Seconds to wait before retrying"))
        .build()
}

/// Serves `doc` at `GET /openapi.json`.
pub fn routes(doc: &openapi::OpenApi) -> impl Fn(&mut web::ServiceConfig) + Clone + Send + 'static {
    // A document of our own types always serializes; an empty body would show the bug.
    let served = web::Data::new(Served(doc.to_json().map(web::Bytes::from).unwrap_or_default()));
    move |cfg| {
        cfg.app_data(served.clone()).route("/openapi.json", web::get().to(openapi_json));
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[derive(utoipa::OpenApi)]
    #[openapi()]
    struct Empty;

    #[test]
    fn the_document_is_openapi_3_1_with_the_operational_endpoints() {
        let doc = document(Empty::openapi(), "svc", "1.2.3", "A service.");
        let json: serde_json::Value = serde_json::from_str(&doc.to_json().unwrap()).unwrap();
        assert_eq!(json["openapi"], "3.1.0");
        assert_eq!(json["info"]["title"], "svc");
        for path in ["/healthz", "/readyz", "/metrics", "/openapi.json"] {
            assert!(json["paths"][path]["get"].is_object(), "{path}");
        }
        assert!(json["components"]["schemas"]["Problem"].is_object());
        // The deadline's 503 is added where an operation does not declare its own.
        assert!(json["paths"]["/healthz"]["get"]["responses"]["503"]["headers"]["Retry-After"].is_object());
    }

    /// Says hello.
    #[utoipa::path(get, path = "/hello", tag = "greetings", responses((status = 200, description = "Hello")))]
    #[allow(dead_code)]
    async fn hello() {}

    #[derive(utoipa::OpenApi)]
    #[openapi(paths(hello))]
    struct Greeter;

    #[test]
    fn a_secured_document_asks_a_bearer_token_of_the_api_only() {
        let doc = secured(document(Greeter::openapi(), "svc", "1.2.3", "A service."));
        let json: serde_json::Value = serde_json::from_str(&doc.to_json().unwrap()).unwrap();
        assert_eq!(json["components"]["securitySchemes"]["bearer"]["scheme"], "bearer");
        let hello = &json["paths"]["/hello"]["get"];
        assert_eq!(hello["security"], serde_json::json!([{ "bearer": [] }]));
        assert!(hello["responses"]["401"]["headers"]["WWW-Authenticate"].is_object());
        assert!(hello["responses"]["403"].is_object());
        let healthz = &json["paths"]["/healthz"]["get"];
        assert!(healthz["security"].is_null() && healthz["responses"]["401"].is_null());
    }
}
