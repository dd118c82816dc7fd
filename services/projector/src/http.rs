//! The query API (actix-web).
//!
//! - `GET /queries/orders/{id}[?min_version=N]` → the order's view.
//! - `GET /queries/users/{user_id}/orders?page=&page_size=` → one page of the user's
//!   orders, newest first (ties broken by order id, so pages are stable); `page` from 1
//!   (default 1), `page_size` 1 to [`MAX_PAGE_SIZE`] (default 20). A page past the end
//!   is empty, not an error.
//! - `GET /queries/users/{user_id}/stats` → order counts by status, and spending by
//!   currency (orders paid and not cancelled: count, total, average).
//! - `GET /queries/users/{user_id}/windows?from=&to=` → the user's windows of
//!   `order-stats` that overlap `[from, to)` (RFC 3339 instants, each optional; `from`
//!   before `to`), newest first, at most [`Queries::MAX_WINDOWS`] with `has_more` when
//!   older ones were left out. A user without windows has an empty list, not a `404`:
//!   the windows come from another service, and none yet is a normal answer. In a query
//!   string an offset's `+` is `%2B` (a bare `+` means a space); `Z` needs no escaping.
//!
//! Unknown order or user: `404`; an order whose first event has not arrived while later
//! ones have (they wait for it, see [`crate::project`]): `404` with problem type
//! `/problems/missing-events`, its `missing_version` and `parked_versions`, and
//! `Retry-After: 1`. A view with a gap answers `200` with `missing_version` (the version
//! it waits for) and `parked_versions`. A malformed id or parameter, or a parameter the
//! route does not take: `400`. Errors are `application/problem+json` ([`crate::problem`]).
//!
//! # Read-your-writes: `?min_version=N`
//!
//! A client that just got version `N` of an order from the command API asks for
//! `?min_version=N`. The query waits (at most `MIN_VERSION_TIMEOUT`, 2 s by default)
//! until the view reaches version `N`, then answers `200`. It re-reads the view when a
//! batch with the order's events commits here, and on a slow backoff for batches other
//! replicas commit; at most `MIN_VERSION_MAX_WAITERS` queries wait at once; an order id
//! that every partition is past answers `404` at once (see [`crate::waiters`]).
//! When time runs out (or the cap is reached) it answers at once, with the staleness
//! visible:
//! - the view exists but is older: `200` with the view as it is (its `version` below
//!   `N`) and the headers `X-View-Stale: true` and `Retry-After: 1`;
//! - the order is not in the read model yet: `404` with problem type
//!   `/problems/not-yet-visible`, `X-View-Stale: true` and `Retry-After: 1`.
//!
//! Every order answer carries `ETag: "<version>"`.

use std::{sync::Arc, time::Duration};

use actix_web::{HttpRequest, HttpResponse, web};
use backon::{BackoffBuilder as _, ExponentialBuilder};
use chrono::{DateTime, Utc};
use orders_domain::UserId;
use uuid::Uuid;

use orders_runtime::{
    auth::{Authenticator, Principal},
    openapi::PROBLEM_JSON,
    problem::Problem,
};

use crate::{
    problem::QueryError,
    query::{OrderView, Queries, UserOrders, UserStats, UserWindows},
    waiters::{self, Waiters},
};

/// The largest `page_size`.
pub const MAX_PAGE_SIZE: u32 = 100;
/// The default `page_size`.
pub const DEFAULT_PAGE_SIZE: u32 = 20;
/// The largest `page` (offset pagination gets slow far down).
pub const MAX_PAGE: u32 = 100_000;
/// The header that marks an answer older than `min_version` asked.
pub const STALE_HEADER: &str = "X-View-Stale";

/// What the handlers share.
#[derive(Debug)]
pub struct QueryState {
    /// The queries.
    pub queries: Queries,
    /// The `min_version` waiters, woken after the batches this process commits.
    pub waiters: Arc<Waiters>,
    /// The longest `min_version` wait.
    pub min_version_timeout: Duration,
}

/// Registers the query API's routes, each authenticated by `authenticator`: a user
/// reads their own orders, statistics and windows, an administrator anyone's.
pub fn routes(
    state: web::Data<QueryState>,
    authenticator: web::Data<Authenticator>,
) -> impl Fn(&mut web::ServiceConfig) + Clone + Send + 'static {
    move |cfg| {
        cfg.app_data(state.clone())
            .app_data(authenticator.clone())
            .route("/queries/orders/{id}", web::get().to(order))
            .route("/queries/users/{user_id}/orders", web::get().to(user_orders))
            .route("/queries/users/{user_id}/stats", web::get().to(user_stats))
            .route("/queries/users/{user_id}/windows", web::get().to(user_windows))
            .configure(orders_runtime::openapi::routes(&openapi(authenticator.required())))
            .default_service(web::to(no_route));
    }
}

/// The query API's OpenAPI document (served at `/openapi.json`).
pub fn openapi(secured: bool) -> utoipa::openapi::OpenApi {
    use utoipa::OpenApi as _;
    let doc = orders_runtime::openapi::document(
        QueryApi::openapi(),
        "projector",
        env!("CARGO_PKG_VERSION"),
        "The read side: orders, a user's orders and statistics, and the per-user windows of \
         `order-stats`, projected from the `orders` topic. Eventually consistent: `min_version` \
         gives read-your-writes. Errors are `application/problem+json` (RFC 9457).",
    );
    // Bearer tokens where the service asks for them (AUTH=jwt); with AUTH=off it does not.
    if secured { orders_runtime::openapi::secured(doc) } else { doc }
}

#[derive(utoipa::OpenApi)]
#[openapi(
    paths(order, user_orders, user_stats, user_windows),
    components(schemas(OrderView, UserOrders, UserStats, UserWindows)),
    tags((name = "queries", description = "The read model"))
)]
struct QueryApi;

async fn no_route(req: HttpRequest) -> Result<HttpResponse, QueryError> {
    Err(QueryError::NotFound(format!("no route for {} {}", req.method(), req.path())))
}

/// An order's view.
///
/// With `min_version=N` (the version the command API answered), waits up to 2 s until
/// the view reaches version `N`; when time runs out, answers at once with the staleness
/// visible: the older view with `X-View-Stale: true`, or `404`
/// `/problems/not-yet-visible`. A view with a gap has `missing_version` and
/// `parked_versions`. Every view carries `ETag: "<version>"`.
#[utoipa::path(get, path = "/queries/orders/{id}", tag = "queries",
    params(
        ("id" = Uuid, Path, description = "The order's id"),
        ("min_version" = Option<u64>, Query, description = "Wait (briefly) until the view has reached this version", example = 2),
    ),
    responses(
        (status = 200, description = "The view (stale when `X-View-Stale` says so)", body = OrderView, headers(
            ("ETag" = String, description = "`\"<version>\"`"),
            ("X-View-Stale" = String, description = "`true` when the answer is older than the `min_version` asked"),
            ("Retry-After" = u32, description = "Seconds, on a stale answer"),
        )),
        (status = 400, description = "The id is not a UUID, or a parameter is invalid or unknown", body = Problem, content_type = PROBLEM_JSON),
        (status = 404, description = "Not in the read model (`/problems/not-found`), not yet with `min_version` (`/problems/not-yet-visible`), or its first event is missing (`/problems/missing-events`, with `missing_version` and `parked_versions`)", body = Problem, content_type = PROBLEM_JSON, headers(
            ("X-View-Stale" = String, description = "`true` when the answer is older than the `min_version` asked"),
            ("Retry-After" = u32, description = "Seconds, when the order may still come"),
        )),
    ))]
async fn order(
    req: HttpRequest,
    principal: Principal,
    path: web::Path<String>,
    state: web::Data<QueryState>,
) -> Result<HttpResponse, QueryError> {
    let order_id = Uuid::parse_str(&path)
        .map_err(|_| QueryError::invalid("id", format!("`{path}` is not an order id (a UUID)")))?;
    let params = Params::parse(&req, &["min_version"])?;
    let min_version = params.number("min_version", 0, i64::MAX as u64)?;
    let Some(min_version) = min_version else {
        return match state.queries.order(order_id).await? {
            Some(view) => answer(&principal, &view, false),
            None => Err(absent(&state, &principal, order_id, None).await),
        };
    };
    let reached = |view: &Option<OrderView>| {
        view.as_ref().is_some_and(|v| u64::try_from(v.version).unwrap_or(0) >= min_version)
    };
    let Some(watch) = state.waiters.watch(order_id) else {
        // Over the cap: answered at once, as a wait that ran out.
        let view = state.queries.order(order_id).await?;
        return settle(&state, &principal, order_id, min_version, reached(&view), view).await;
    };
    let deadline = tokio::time::Instant::now() + state.min_version_timeout;
    let mut recheck = ExponentialBuilder::new()
        .with_min_delay(waiters::RECHECK_MIN)
        .with_max_delay(waiters::RECHECK_MAX)
        .without_max_times()
        .build();
    loop {
        // Registered before reading, so that a commit in between is not missed.
        let committed = watch.notified();
        state.waiters.read();
        let view = state.queries.order(order_id).await?;
        if let Some(view) = &view {
            // Another user's order: refused now, not after waiting for it.
            principal.may_act_for(&view.user_id)?;
        }
        let done = reached(&view);
        if done || tokio::time::Instant::now() >= deadline {
            return settle(&state, &principal, order_id, min_version, done, view).await;
        }
        if view.is_none() && not_coming(&state, order_id).await? {
            // Every partition is past its creation: not found (or its first event missing).
            return Err(absent(&state, &principal, order_id, None).await);
        }
        tokio::select! {
            () = committed => {}
            () = tokio::time::sleep(recheck.next().unwrap_or(waiters::RECHECK_MAX)) => {}
            () = tokio::time::sleep_until(deadline) => {}
        }
    }
}

/// The answer of a `min_version` query that stops waiting: the view (stale unless
/// `reached`) or why there is none.
async fn settle(
    state: &QueryState,
    principal: &Principal,
    order_id: Uuid,
    min_version: u64,
    reached: bool,
    view: Option<OrderView>,
) -> Result<HttpResponse, QueryError> {
    match view {
        Some(view) => answer(principal, &view, !reached),
        None => Err(absent(state, principal, order_id, Some(min_version)).await),
    }
}

/// Whether an order the read model does not have is not coming: every partition is past
/// the time its id was made (see [`crate::waiters`]).
async fn not_coming(state: &QueryState, order_id: Uuid) -> Result<bool, QueryError> {
    let (Some(after), Some(partitions)) = (waiters::not_coming_after(order_id), state.waiters.partitions())
    else {
        return Ok(false);
    };
    state.queries.all_partitions_past(after, partitions).await
}

/// Why an order has no view: its first event is missing while later ones wait (parked),
/// or the read model has never seen it (`min_version`: not yet). Whose order it is is
/// not known yet: only an administrator hears of parked events.
async fn absent(
    state: &QueryState,
    principal: &Principal,
    order_id: Uuid,
    min_version: Option<u64>,
) -> QueryError {
    let parked_versions = if principal.admin {
        match state.queries.parked_versions(order_id).await {
            Ok(parked) => parked,
            Err(e) => return e,
        }
    } else {
        Vec::new()
    };
    if !parked_versions.is_empty() {
        return QueryError::MissingEvents { order_id, missing_version: 1, parked_versions };
    }
    match min_version {
        None => QueryError::NotFound(format!("order {order_id} is not in the read model")),
        Some(min_version) => QueryError::NotYetVisible(format!(
            "order {order_id} is not in the read model yet (waited {:?} for version {min_version}); retry",
            state.min_version_timeout
        )),
    }
}

/// The view, for its user or an administrator only.
fn answer(principal: &Principal, view: &OrderView, stale: bool) -> Result<HttpResponse, QueryError> {
    principal.may_act_for(&view.user_id)?;
    let mut response = HttpResponse::Ok();
    response.insert_header(("ETag", format!("\"{}\"", view.version)));
    if stale {
        response.insert_header((STALE_HEADER, "true")).insert_header(("Retry-After", "1"));
    }
    Ok(response.json(view))
}

/// A user's orders, newest first, one page at a time.
///
/// Ties are broken by order id, so pages are stable; a page past the end is empty.
#[utoipa::path(get, path = "/queries/users/{user_id}/orders", tag = "queries",
    params(
        ("user_id" = String, Path, description = "The user (1 to 64 characters, no control characters)", example = "alice"),
        ("page" = Option<u32>, Query, description = "From 1", minimum = 1, maximum = 100_000),
        ("page_size" = Option<u32>, Query, description = "1 to 100 (default 20)", minimum = 1, maximum = 100),
    ),
    responses(
        (status = 200, description = "The page", body = UserOrders),
        (status = 400, description = "An invalid user id or parameter", body = Problem, content_type = PROBLEM_JSON),
        (status = 404, description = "The user has no orders in the read model", body = Problem, content_type = PROBLEM_JSON),
    ))]
async fn user_orders(
    req: HttpRequest,
    principal: Principal,
    path: web::Path<String>,
    state: web::Data<QueryState>,
) -> Result<HttpResponse, QueryError> {
    let user_id = parse_user_id(&path)?;
    principal.may_act_for(&user_id)?;
    let params = Params::parse(&req, &["page", "page_size"])?;
    let page = params.number("page", 1, u64::from(MAX_PAGE))?.unwrap_or(1);
    let page_size =
        params.number("page_size", 1, u64::from(MAX_PAGE_SIZE))?.unwrap_or(DEFAULT_PAGE_SIZE.into());
    let (page, page_size) = (u32::try_from(page).unwrap_or(1), u32::try_from(page_size).unwrap_or(1));
    match state.queries.user_orders(&user_id, page, page_size).await? {
        Some(orders) => Ok(HttpResponse::Ok().json(orders)),
        None => Err(QueryError::NotFound(format!("user {user_id} has no orders in the read model"))),
    }
}

/// A user's order counts by status, and spending by currency.
#[utoipa::path(get, path = "/queries/users/{user_id}/stats", tag = "queries",
    params(("user_id" = String, Path, description = "The user", example = "alice")),
    responses(
        (status = 200, description = "The statistics", body = UserStats),
        (status = 400, description = "An invalid user id, or a parameter (this route takes none)", body = Problem, content_type = PROBLEM_JSON),
        (status = 404, description = "The user has no orders in the read model", body = Problem, content_type = PROBLEM_JSON),
    ))]
async fn user_stats(
    req: HttpRequest,
    principal: Principal,
    path: web::Path<String>,
    state: web::Data<QueryState>,
) -> Result<HttpResponse, QueryError> {
    let user_id = parse_user_id(&path)?;
    principal.may_act_for(&user_id)?;
    Params::parse(&req, &[])?;
    match state.queries.user_stats(&user_id).await? {
        Some(stats) => Ok(HttpResponse::Ok().json(stats)),
        None => Err(QueryError::NotFound(format!("user {user_id} has no orders in the read model"))),
    }
}

/// A user's windows of `order-stats` that overlap `[from, to)`, newest first.
///
/// At most 1000, with `has_more` when older ones were left out. A user without windows
/// has an empty list. In a query string an offset's `+` is `%2B`.
#[utoipa::path(get, path = "/queries/users/{user_id}/windows", tag = "queries",
    params(
        ("user_id" = String, Path, description = "The user", example = "alice"),
        ("from" = Option<DateTime<Utc>>, Query, description = "RFC 3339 instant; windows ending after it", example = "2026-01-31T12:00:00Z"),
        ("to" = Option<DateTime<Utc>>, Query, description = "RFC 3339 instant, after `from`; windows starting before it"),
    ),
    responses(
        (status = 200, description = "The windows", body = UserWindows),
        (status = 400, description = "An invalid user id or instant, or `from` not before `to`", body = Problem, content_type = PROBLEM_JSON),
    ))]
async fn user_windows(
    req: HttpRequest,
    principal: Principal,
    path: web::Path<String>,
    state: web::Data<QueryState>,
) -> Result<HttpResponse, QueryError> {
    let user_id = parse_user_id(&path)?;
    principal.may_act_for(&user_id)?;
    let params = Params::parse(&req, &["from", "to"])?;
    let (from, to) = (params.instant("from")?, params.instant("to")?);
    if let (Some(from), Some(to)) = (from, to)
        && from >= to
    {
        return Err(QueryError::invalid(
            "from",
            format!("`from` ({}) must be before `to` ({})", from.to_rfc3339(), to.to_rfc3339()),
        ));
    }
    Ok(HttpResponse::Ok().json(state.queries.user_windows(&user_id, from, to).await?))
}

/// A user id by the domain's rules (not blank, at most 64 characters, no control
/// characters).
fn parse_user_id(raw: &str) -> Result<String, QueryError> {
    UserId::new(raw)
        .map(UserId::into_string)
        .map_err(|e| QueryError::invalid("user_id", format!("`{raw}` is not a user id: {e}")))
}

/// A route's query parameters: only those it takes, each at most once.
#[derive(Debug)]
struct Params(Vec<(String, String)>);

impl Params {
    fn parse(req: &HttpRequest, allowed: &[&str]) -> Result<Self, QueryError> {
        let pairs = web::Query::<Vec<(String, String)>>::from_query(req.query_string())
            .map_err(|e| QueryError::invalid("query", format!("the query string is malformed: {e}")))?
            .into_inner();
        for (i, (name, _)) in pairs.iter().enumerate() {
            if !allowed.contains(&name.as_str()) {
                let known = if allowed.is_empty() { "none".to_string() } else { allowed.join(", ") };
                return Err(QueryError::invalid(
                    name,
                    format!("unknown parameter `{name}` (this route takes: {known})"),
                ));
            }
            if pairs[..i].iter().any(|(n, _)| n == name) {
                return Err(QueryError::invalid(name, format!("`{name}` is given more than once")));
            }
        }
        Ok(Self(pairs))
    }

    /// The parameter as an RFC 3339 instant, if given.
    fn instant(&self, name: &str) -> Result<Option<DateTime<Utc>>, QueryError> {
        let Some((_, raw)) = self.0.iter().find(|(n, _)| n == name) else { return Ok(None) };
        match DateTime::parse_from_rfc3339(raw) {
            Ok(at) => Ok(Some(at.with_timezone(&Utc))),
            Err(e) => {
                let hint = if raw.contains(' ') {
                    " (a `+` in a query string means a space: send an offset's `+` as `%2B`)"
                } else {
                    ""
                };
                Err(QueryError::invalid(
                    name,
                    format!(
                        "`{name}` must be an RFC 3339 instant such as 2026-01-31T12:00:00Z, not `{raw}`: {e}{hint}"
                    ),
                ))
            }
        }
    }

    /// The parameter as a whole number within `min..=max`, if given.
    fn number(&self, name: &str, min: u64, max: u64) -> Result<Option<u64>, QueryError> {
        let Some((_, raw)) = self.0.iter().find(|(n, _)| n == name) else { return Ok(None) };
        match raw.parse::<u64>() {
            Ok(n) if (min..=max).contains(&n) => Ok(Some(n)),
            _ => Err(QueryError::invalid(
                name,
                format!("`{name}` must be a whole number from {min} to {max}, not `{raw}`"),
            )),
        }
    }
}
