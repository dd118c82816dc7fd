//! The HTTP command API (actix-web).
//!
//! - `POST /commands/orders` → `201 {order_id, version, status}`
//! - `POST /commands/orders/{id}/pay | ship | cancel` → `200 {order_id, version, status}`
//! - `GET /orders/{id}/events` → the order's events, oldest first
//!
//! Headers: `Idempotency-Key` (the same key and body replay the first answer, marked
//! `Idempotency-Replayed: true`; the same key with another body is `422`), `If-Match:
//! <version>` (apply only at that version, else `409`), `traceparent` (carried onto the
//! events' Kafka records), `X-Correlation-Id` (a UUID shared by everything the request
//! causes; one is made when absent). Errors are `application/problem+json`
//! ([`crate::problem`]).
//!
//! Retry-later answers are `503` with `Retry-After`: the database is down, the store
//! is overloaded or could not learn the outcome of a commit in time, or the order kept
//! changing and the command lost every re-run (`/problems/contention`). None of them
//! is recorded under the idempotency key, so a retry with the key runs again, or
//! replays the first answer if that one committed after all. A refusal for good (a
//! rule, an unknown order, bad input) is recorded and replayed. Before answering any
//! error, the key is read again: a request that raced its own original replays the
//! original's answer instead of refusing a command that took effect.

use std::future::Future;

use actix_web::{
    HttpRequest, HttpResponse,
    http::{StatusCode, header::CONTENT_LENGTH},
    web,
};
use futures::StreamExt;
use orders_domain::{
    CancelOrder, CancelOrderInput, CreateOrder, CreateOrderInput, PayOrder, PayOrderInput, ShipOrder,
    ShipOrderInput,
};
use orders_events::decode_event;
use orders_eventstore::StoredAnswer;
use orders_runtime::{
    auth::{Authenticator, Principal},
    limits::RateLimiter,
    openapi::PROBLEM_JSON,
    problem::Problem,
};
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::{
    app::{Accepted, CommandError, Commands, Context, IdempotencyKey, Intent},
    problem::ApiError,
};

/// What the handlers share.
#[derive(Debug)]
pub struct HttpState {
    /// The application service.
    pub commands: Commands,
    /// Largest accepted request body, in bytes.
    pub body_limit: usize,
    /// Commands per client.
    pub limiter: RateLimiter,
}

/// The most a JSON body nests (the API's own bodies nest three levels).
pub const MAX_JSON_DEPTH: usize = 16;

/// Registers the command API's routes, each authenticated by `authenticator`.
pub fn routes(
    state: web::Data<HttpState>,
    authenticator: web::Data<Authenticator>,
) -> impl Fn(&mut web::ServiceConfig) + Clone + Send + 'static {
    move |cfg| {
        cfg.app_data(state.clone())
            .app_data(authenticator.clone())
            .route("/commands/orders", web::post().to(create))
            .route("/commands/orders/{id}/pay", web::post().to(pay))
            .route("/commands/orders/{id}/ship", web::post().to(ship))
            .route("/commands/orders/{id}/cancel", web::post().to(cancel))
            .route("/orders/{id}/events", web::get().to(history))
            .configure(orders_runtime::openapi::routes(&openapi(authenticator.required())))
            .default_service(web::to(not_found));
    }
}

/// The command API's OpenAPI document (served at `/openapi.json`).
pub fn openapi(secured: bool) -> utoipa::openapi::OpenApi {
    use utoipa::OpenApi as _;
    let doc = orders_runtime::openapi::document(
        CommandApi::openapi(),
        "command-service",
        env!("CARGO_PKG_VERSION"),
        "Commands on orders: each is validated against the order's rules, appended to its event \
         stream with optimistic concurrency, and published through the transactional outbox. Errors \
         are `application/problem+json` (RFC 9457).",
    );
    // Bearer tokens where the service asks for them (AUTH=jwt); with AUTH=off it does not.
    if secured { orders_runtime::openapi::secured(doc) } else { doc }
}

#[derive(utoipa::OpenApi)]
#[openapi(
    paths(create, pay, ship, cancel, history),
    components(schemas(CreateOrderInput, PayOrderInput, ShipOrderInput, CancelOrderInput, Accepted, EventHistory)),
    tags((name = "commands", description = "Create, pay, ship and cancel orders"))
)]
struct CommandApi;

async fn not_found(req: HttpRequest) -> Result<HttpResponse, ApiError> {
    Err(ApiError::NotFound(format!("no route for {} {}", req.method(), req.path())))
}

/// Creates an order.
///
/// The total is computed from the items. With an `Idempotency-Key`, the same key and
/// body replay the first answer (marked `Idempotency-Replayed: true`); the same key with
/// another body is `422`.
#[utoipa::path(post, path = "/commands/orders", tag = "commands",
    params(IdempotencyKeyHeader, CorrelationHeader, TraceparentHeader),
    request_body(content = CreateOrderInput, example = json!({
        "user_id": "alice", "currency": "EUR",
        "items": [{"sku": "book-1", "quantity": 2, "unit_price_minor": 1250}]
    })),
    responses(
        (status = 201, description = "Created (or the replay of the first answer to this key)", body = Accepted,
            headers(("Idempotency-Replayed" = String, description = "`true` on a replay")),
            links(
                ("pay" = (operation_id = "pay", parameters(("id" = "$response.body#/order_id")), description = "Pay it")),
                ("cancel" = (operation_id = "cancel", parameters(("id" = "$response.body#/order_id")), description = "Cancel it")),
                ("history" = (operation_id = "history", parameters(("id" = "$response.body#/order_id")), description = "Its events")),
            )),
        (status = 400, description = "Malformed body or invalid value (`field` names it)", body = Problem, content_type = PROBLEM_JSON),
        (status = 409, description = "A concurrent request with this key is still running", body = Problem, content_type = PROBLEM_JSON),
        (status = 413, description = "Body larger than the limit", body = Problem, content_type = PROBLEM_JSON),
        (status = 422, description = "The `Idempotency-Key` was used with another request", body = Problem, content_type = PROBLEM_JSON),
        (status = 429, description = "More commands from this client than its rate (`COMMAND_RATE_LIMIT`)", body = Problem, content_type = PROBLEM_JSON,
            headers(("Retry-After" = u32, description = "Seconds to wait"))),
    ))]
async fn create(
    req: HttpRequest,
    principal: Principal,
    payload: web::Payload,
    state: web::Data<HttpState>,
) -> Result<HttpResponse, ApiError> {
    state.limiter.check(&client(&req, &principal))?;
    let body = read_body(&req, payload, state.body_limit).await?;
    let mut input: CreateOrderInput = parse_json(&body)?;
    // The user is the token's subject; only an administrator orders for someone else
    // (without authentication everyone is one, and the body must name the user).
    if input.user_id.is_empty() && !principal.admin {
        input.user_id = principal.subject.clone();
    }
    principal.may_act_for(&input.user_id)?;
    let cmd = CreateOrder::try_from(input)?;
    let ctx = context(&req, &body, principal)?;
    let commands = &state.commands;
    answer(&state, ctx, StatusCode::CREATED, "create", |ctx| async move {
        commands.create(cmd, &ctx, StatusCode::CREATED.as_u16()).await
    })
    .await
}

/// The body of a command on an existing order, and the [`Intent`] it parses into.
trait OrderCommandInput: DeserializeOwned {
    fn into_intent(self) -> Result<Intent, orders_domain::OrderError>;
}

impl OrderCommandInput for PayOrderInput {
    fn into_intent(self) -> Result<Intent, orders_domain::OrderError> {
        Ok(Intent::Pay(PayOrder::try_from(self)?))
    }
}

impl OrderCommandInput for ShipOrderInput {
    fn into_intent(self) -> Result<Intent, orders_domain::OrderError> {
        Ok(Intent::Ship(ShipOrder::try_from(self)?))
    }
}

impl OrderCommandInput for CancelOrderInput {
    fn into_intent(self) -> Result<Intent, orders_domain::OrderError> {
        Ok(Intent::Cancel(CancelOrder::try_from(self)?))
    }
}

/// A handler of a command on an existing order, with its description (`utoipa::path`):
/// the same answers for each.
macro_rules! order_command {
    ($name:ident, $path:literal, $body:ty, $summary:literal, $example:expr) => {
        #[doc = $summary]
        ///
        /// `If-Match: <version>` applies it only at that version (else `409`); an
        /// `Idempotency-Key` replays the first answer to the same key and body.
        #[utoipa::path(post, path = $path, tag = "commands",
            params(OrderIdPath, IfMatchHeader, IdempotencyKeyHeader, CorrelationHeader, TraceparentHeader),
            request_body(content = $body, example = $example),
            responses(
                (status = 200, description = "Applied (or the replay of the first answer to this key)", body = Accepted,
                    headers(("Idempotency-Replayed" = String, description = "`true` on a replay")),
                    links(
                        ("ship" = (operation_id = "ship", parameters(("id" = "$response.body#/order_id")), description = "Ship it (once paid)")),
                        ("history" = (operation_id = "history", parameters(("id" = "$response.body#/order_id")), description = "Its events")),
                    )),
                (status = 400, description = "Malformed body, invalid value or header, or an id that is not a UUID", body = Problem, content_type = PROBLEM_JSON),
                (status = 404, description = "No such order", body = Problem, content_type = PROBLEM_JSON),
                (status = 409, description = "The order's rules refuse it in its state (`/problems/rule-broken`), or it is not at the `If-Match` version (`/problems/concurrency-conflict`)", body = Problem, content_type = PROBLEM_JSON),
                (status = 413, description = "Body larger than the limit", body = Problem, content_type = PROBLEM_JSON),
                (status = 422, description = "The `Idempotency-Key` was used with another request", body = Problem, content_type = PROBLEM_JSON),
                (status = 429, description = "More commands from this client than its rate (`COMMAND_RATE_LIMIT`)", body = Problem, content_type = PROBLEM_JSON,
                    headers(("Retry-After" = u32, description = "Seconds to wait"))),
            ))]
        async fn $name(
            req: HttpRequest,
            principal: Principal,
            path: web::Path<String>,
            payload: web::Payload,
            state: web::Data<HttpState>,
        ) -> Result<HttpResponse, ApiError> {
            on_order::<$body>(req, principal, path, payload, state).await
        }
    };
}

order_command!(
    pay,
    "/commands/orders/{id}/pay",
    PayOrderInput,
    "Pays an order: exactly its total, in its currency.",
    json!({"payment_id": "pay-42", "amount_minor": 2500})
);
order_command!(
    ship,
    "/commands/orders/{id}/ship",
    ShipOrderInput,
    "Ships a paid order.",
    json!({"shipment_id": "ship-7", "tracking_number": "TRK123"})
);
order_command!(
    cancel,
    "/commands/orders/{id}/cancel",
    CancelOrderInput,
    "Cancels an order that is neither shipped nor cancelled.",
    json!({"reason": "changed my mind"})
);

/// `id`: the order.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)]
struct OrderIdPath {
    /// The order's id (a UUID).
    id: Uuid,
}

/// `If-Match`.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code)]
struct IfMatchHeader {
    /// Apply only if the order is at this version: `3`, `"3"` or `W/"3"`; else `409`.
    #[param(rename = "If-Match", example = "3")]
    if_match: Option<String>,
}

/// `Idempotency-Key`.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code)]
struct IdempotencyKeyHeader {
    /// 1 to 255 visible ASCII characters: a retry with the same key and body replays the first answer.
    #[param(rename = "Idempotency-Key", example = "3f1c9a6e-create-1")]
    idempotency_key: Option<String>,
}

/// `X-Correlation-Id`.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code)]
struct CorrelationHeader {
    /// A UUID shared by everything the request causes (one is made when absent or not a UUID).
    #[param(rename = "X-Correlation-Id")]
    x_correlation_id: Option<String>,
}

/// `traceparent`.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code)]
struct TraceparentHeader {
    /// W3C trace context: the request's spans continue the caller's trace.
    #[param(rename = "traceparent", example = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")]
    traceparent: Option<String>,
}

/// An order's events, oldest first.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
struct EventHistory {
    /// The order.
    order_id: Uuid,
    /// Each event as JSON: its `type`, its data, `event_id`, `correlation_id`,
    /// `causation_id` (when caused by another message) and `recorded_at`.
    events: Vec<serde_json::Value>,
}

/// `POST /commands/orders/{id}/<command>` for the command whose body is `I`.
async fn on_order<I: OrderCommandInput>(
    req: HttpRequest,
    principal: Principal,
    path: web::Path<String>,
    payload: web::Payload,
    state: web::Data<HttpState>,
) -> Result<HttpResponse, ApiError> {
    state.limiter.check(&client(&req, &principal))?;
    let body = read_body(&req, payload, state.body_limit).await?;
    let intent = parse_json::<I>(&body)?.into_intent()?;
    let order_id = parse_order_id(&path)?;
    let mut ctx = context(&req, &body, principal)?;
    ctx.expected_version = if_match(&req)?;
    let name = intent.name();
    let commands = &state.commands;
    answer(&state, ctx, StatusCode::OK, name, |ctx| async move {
        commands.execute(order_id, &intent, &ctx, StatusCode::OK.as_u16()).await
    })
    .await
}

/// An order's event history, oldest first, as stored (the source of truth).
#[utoipa::path(get, path = "/orders/{id}/events", tag = "commands", params(OrderIdPath), responses(
    (status = 200, description = "The events", body = EventHistory),
    (status = 400, description = "The id is not a UUID", body = Problem, content_type = PROBLEM_JSON),
    (status = 404, description = "No such order", body = Problem, content_type = PROBLEM_JSON),
))]
async fn history(
    principal: Principal,
    path: web::Path<String>,
    state: web::Data<HttpState>,
) -> Result<HttpResponse, ApiError> {
    let order_id = parse_order_id(&path)?;
    let recorded = state.commands.store().history(order_id).await.map_err(CommandError::from)?;
    if recorded.is_empty() {
        return Err(ApiError::NotFound(format!("order {order_id} does not exist")));
    }
    let mut events = Vec::with_capacity(recorded.len());
    for record in recorded {
        let (metadata, event) = decode_event(&record.payload).map_err(|e| {
            tracing::error!(%order_id, version = record.version, error = %e, "stored event does not decode");
            ApiError::Internal
        })?;
        // The first event names the order's user: only they (or an administrator) may read on.
        if let orders_domain::OrderEventPayload::Created { user_id, .. } = &event.payload {
            principal.may_act_for(user_id.as_str())?;
        }
        let mut json = serde_json::to_value(&event).map_err(|_| ApiError::Internal)?;
        if let Some(object) = json.as_object_mut() {
            object.insert("event_id".into(), metadata.event_id.to_string().into());
            object.insert("correlation_id".into(), metadata.correlation_id.to_string().into());
            if let Some(causation) = metadata.causation_id {
                object.insert("causation_id".into(), causation.to_string().into());
            }
            object.insert("recorded_at".into(), record.recorded_at.to_rfc3339().into());
        }
        events.push(json);
    }
    Ok(HttpResponse::Ok().json(EventHistory { order_id, events }))
}

/// Runs a command with idempotency-key handling, and turns its outcome into a response.
async fn answer<F, Fut>(
    state: &HttpState,
    ctx: Context,
    status: StatusCode,
    command: &'static str,
    run: F,
) -> Result<HttpResponse, ApiError>
where
    F: FnOnce(Context) -> Fut,
    Fut: Future<Output = Result<Accepted, CommandError>>,
{
    let started = std::time::Instant::now();
    let store = state.commands.store();
    if let Some(key) = &ctx.idempotency
        && let Some(stored) = store.find_idempotency(&key.key).await.map_err(CommandError::from)?
    {
        return replay(stored, key);
    }
    let key = ctx.idempotency.clone();
    let outcome = run(ctx).await;
    let outcome_label = match &outcome {
        Ok(_) => "accepted",
        Err(CommandError::Rejected(_) | CommandError::NotFound(_)) => "rejected",
        Err(_) => "failed",
    };
    metrics::counter!("commands_total", "command" => command, "outcome" => outcome_label).increment(1);
    metrics::histogram!("command_duration_seconds", "command" => command).record(started.elapsed());
    match outcome {
        Ok(accepted) => Ok(HttpResponse::build(status).json(accepted)),
        Err(CommandError::DuplicateKey) => {
            let key = key.ok_or(ApiError::Internal)?;
            match store.find_idempotency(&key.key).await.map_err(CommandError::from)? {
                Some(stored) => replay(stored, &key),
                None => Err(CommandError::DuplicateKey.into()),
            }
        }
        Err(error) => {
            let Some(key) = key else { return Err(error.into()) };
            // A request with the same key may have committed while this one ran (its
            // original, racing it): that recorded answer is the answer.
            if let Some(stored) = store.find_idempotency(&key.key).await.map_err(CommandError::from)? {
                return replay(stored, &key);
            }
            let error = ApiError::from(error);
            // A refusal for good is part of the answer to replay; an outage or a lost
            // race (503) is not.
            if !matches!(
                error,
                ApiError::RuleBroken { .. } | ApiError::NotFound(_) | ApiError::InvalidInput { .. }
            ) {
                return Err(error);
            }
            let record = orders_eventstore::IdempotencyRecord {
                key: key.key.clone(),
                request_hash: key.request_hash.clone(),
                status: actix_web::ResponseError::status_code(&error).as_u16(),
                response: error.body(),
                ttl: state.commands.idempotency_ttl(),
            };
            match store.record_answer(&record).await {
                Ok(()) => Err(error),
                // Another request with this key recorded its answer first: replay it.
                Err(orders_eventstore::Error::DuplicateIdempotencyKey(_)) => {
                    match store.find_idempotency(&key.key).await.map_err(CommandError::from)? {
                        Some(stored) => replay(stored, &key),
                        None => Err(error),
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "could not record the refusal under its idempotency key");
                    Err(error)
                }
            }
        }
    }
}

fn replay(stored: StoredAnswer, key: &IdempotencyKey) -> Result<HttpResponse, ApiError> {
    if stored.request_hash != key.request_hash {
        return Err(ApiError::IdempotencyKeyReused);
    }
    let status = StatusCode::from_u16(stored.status).map_err(|_| ApiError::Internal)?;
    let content_type = if status.is_success() { "application/json" } else { "application/problem+json" };
    Ok(HttpResponse::build(status)
        .insert_header(("Idempotency-Replayed", "true"))
        .content_type(content_type)
        .body(stored.response.to_string()))
}

/// Reads the body, refusing more than `limit` bytes.
async fn read_body(
    req: &HttpRequest,
    mut payload: web::Payload,
    limit: usize,
) -> Result<web::Bytes, ApiError> {
    let declared =
        req.headers().get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|len| len > limit) {
        return Err(ApiError::PayloadTooLarge { limit });
    }
    let mut body = web::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| ApiError::MalformedBody {
            detail: format!("cannot read the body: {e}"),
            field: None,
        })?;
        if body.len() + chunk.len() > limit {
            return Err(ApiError::PayloadTooLarge { limit });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

/// Who a request comes from, for the rate limit: the token's subject, or without
/// authentication the peer's address (behind a proxy, the proxy's: give it the limit).
fn client(req: &HttpRequest, principal: &Principal) -> String {
    if principal == &Principal::anonymous() {
        req.peer_addr().map_or_else(|| "unknown".to_string(), |a| format!("address {}", a.ip()))
    } else {
        format!("subject {}", principal.subject)
    }
}

/// Parses JSON, naming the field at fault; a body nested deeper than
/// [`MAX_JSON_DEPTH`] is refused unparsed.
fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    if orders_runtime::limits::json_depth_exceeds(body, MAX_JSON_DEPTH) {
        return Err(ApiError::MalformedBody {
            detail: format!("the JSON body nests deeper than {MAX_JSON_DEPTH} levels"),
            field: None,
        });
    }
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    let value: T = serde_path_to_error::deserialize(&mut deserializer).map_err(|e| {
        let path = e.path().to_string();
        let detail = e.inner().to_string();
        let field = if path == "." {
            // Serde reports a missing field at its parent: name the field itself.
            detail.split('`').nth(1).filter(|_| detail.starts_with("missing field")).map(str::to_string)
        } else {
            Some(path)
        };
        ApiError::MalformedBody { detail: format!("invalid JSON body: {detail}"), field }
    })?;
    deserializer
        .end()
        .map_err(|e| ApiError::MalformedBody { detail: format!("invalid JSON body: {e}"), field: None })?;
    Ok(value)
}

fn parse_order_id(raw: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(raw).map_err(|_| ApiError::InvalidInput {
        detail: format!("`{raw}` is not an order id (a UUID)"),
        field: Some("id".into()),
    })
}

/// `If-Match: 3`, `"3"` or `W/"3"`.
fn if_match(req: &HttpRequest) -> Result<Option<u64>, ApiError> {
    let Some(value) = req.headers().get("If-Match") else { return Ok(None) };
    let text = value.to_str().unwrap_or_default().trim();
    let text = text.strip_prefix("W/").unwrap_or(text).trim_matches('"');
    text.parse::<u64>().map(Some).map_err(|_| ApiError::InvalidHeader {
        header: "If-Match",
        detail: format!("`{text}` is not a version number"),
    })
}

/// The command's context. An idempotency key is the caller's own: scoped by the
/// principal's subject, so two callers using the same key never see each other's
/// answers.
fn context(req: &HttpRequest, body: &[u8], principal: Principal) -> Result<Context, ApiError> {
    let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok());
    let correlation_id =
        header("X-Correlation-Id").and_then(|v| Uuid::parse_str(v).ok()).unwrap_or_else(Uuid::now_v7);
    // The request's own span (a child of the caller's trace, see orders_runtime::http);
    // without telemetry installed, the caller's header as it came.
    let traceparent = orders_runtime::telemetry::current_traceparent()
        .or_else(|| header("traceparent").filter(|v| v.len() == 55 && v.is_ascii()).map(str::to_string));
    let idempotency = match req.headers().get("Idempotency-Key") {
        None => None,
        Some(raw) => {
            let key = raw.to_str().ok().filter(|k| !k.trim().is_empty() && k.len() <= 255).ok_or(
                ApiError::InvalidHeader {
                    header: "Idempotency-Key",
                    detail: "must be 1 to 255 visible ASCII characters".into(),
                },
            )?;
            let mut hash = Sha256::new();
            hash.update(req.method().as_str());
            hash.update(b" ");
            hash.update(req.path());
            hash.update(b"\n");
            hash.update(body);
            let subject = &principal.subject;
            let scoped = format!("http:{}:{subject}:{key}", subject.len());
            Some(IdempotencyKey { key: scoped, request_hash: hash.finalize().to_vec() })
        }
    };
    let principal = Some(principal);
    Ok(Context {
        correlation_id,
        causation_id: None,
        traceparent,
        expected_version: None,
        idempotency,
        principal,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Body {
        a: i64,
        items: Vec<Item>,
    }

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Item {
        q: i64,
    }

    fn field_of(body: &str) -> Option<String> {
        match parse_json::<Body>(body.as_bytes()) {
            Err(ApiError::MalformedBody { field, .. }) => field,
            other => panic!("expected a malformed body, got {other:?}"),
        }
    }

    #[test]
    fn a_wrong_type_names_its_path() {
        assert_eq!(field_of(r#"{"a": 1, "items": [{"q": 1}, {"q": "x"}]}"#).as_deref(), Some("items[1].q"));
    }

    #[test]
    fn a_missing_field_names_the_field() {
        assert_eq!(field_of(r#"{"items": []}"#).as_deref(), Some("a"));
    }

    #[test]
    fn trailing_garbage_is_malformed() {
        assert_eq!(field_of(r#"{"a": 1, "items": []} x"#), None);
    }
}
