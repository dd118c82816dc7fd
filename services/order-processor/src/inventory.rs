//! Stock of the tracked SKUs: the admin API (`PUT /inventory/{sku}`, `GET
//! /inventory/{sku}`, `GET /inventory`) and the functions behind it and behind the
//! `stock` subcommands.

use actix_web::{HttpResponse, ResponseError, http::StatusCode, web};
use deadpool_postgres::Pool;
use orders_runtime::{openapi::PROBLEM_JSON, problem::Problem};
use serde::{Deserialize, Serialize};

/// One tracked SKU's stock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[schema(example = json!({"sku": "book-1", "available": 7, "reserved": 2, "shipped": 11}))]
pub struct Stock {
    /// The SKU.
    pub sku: String,
    /// Units that can be reserved.
    pub available: i64,
    /// Units held for orders not shipped yet.
    pub reserved: i64,
    /// Units shipped.
    pub shipped: i64,
}

/// The body of `PUT /inventory/{sku}`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetStock {
    /// The available stock to set (0 or more).
    pub available: i64,
}

/// Why an inventory request failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The SKU is not tracked.
    #[error("SKU {0} is not tracked")]
    Untracked(String),
    /// The request is wrong.
    #[error("{0}")]
    Invalid(String),
    /// The database failed.
    #[error("the inventory is unavailable: {0}")]
    Unavailable(String),
}

impl ResponseError for Error {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::Untracked(_) => StatusCode::NOT_FOUND,
            Self::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let (slug, title) = match self {
            Self::Untracked(_) => ("untracked-sku", "SKU not tracked"),
            Self::Invalid(_) => ("invalid-stock", "Invalid stock"),
            Self::Unavailable(_) => ("unavailable", "Inventory unavailable"),
        };
        Problem::new(self.status_code(), slug, title, self.to_string()).response(|_| {})
    }
}

fn unavailable(error: impl std::fmt::Display) -> Error {
    Error::Unavailable(error.to_string())
}

fn stock(row: &tokio_postgres::Row) -> Stock {
    Stock { sku: row.get(0), available: row.get(1), reserved: row.get(2), shipped: row.get(3) }
}

/// Validates a SKU from a path or a command line.
pub fn parse_sku(sku: &str) -> Result<String, Error> {
    orders_domain::Sku::new(sku)
        .map(|s| s.as_str().to_string())
        .map_err(|e| Error::Invalid(format!("SKU: {e}")))
}

/// Sets the available stock of `sku` (tracking it from then on).
pub async fn set(pool: &Pool, sku: &str, available: i64) -> Result<Stock, Error> {
    let sku = parse_sku(sku)?;
    if available < 0 {
        return Err(Error::Invalid(format!("available must be 0 or more, not {available}")));
    }
    let client = pool.get().await.map_err(unavailable)?;
    let statement = client.prepare_cached(include_str!("sql/set_stock.sql")).await.map_err(unavailable)?;
    let row = client.query_one(&statement, &[&sku, &available]).await.map_err(unavailable)?;
    Ok(stock(&row))
}

/// The stock of `sku`.
pub async fn get(pool: &Pool, sku: &str) -> Result<Stock, Error> {
    let sku = parse_sku(sku)?;
    let client = pool.get().await.map_err(unavailable)?;
    let statement = client.prepare_cached(include_str!("sql/get_stock.sql")).await.map_err(unavailable)?;
    let row = client.query_opt(&statement, &[&sku]).await.map_err(unavailable)?;
    row.as_ref().map(stock).ok_or(Error::Untracked(sku))
}

/// Every tracked SKU, by SKU.
pub async fn list(pool: &Pool) -> Result<Vec<Stock>, Error> {
    let client = pool.get().await.map_err(unavailable)?;
    let statement = client.prepare_cached(include_str!("sql/list_stock.sql")).await.map_err(unavailable)?;
    Ok(client.query(&statement, &[]).await.map_err(unavailable)?.iter().map(stock).collect())
}

/// The admin routes.
pub fn routes(pool: Pool) -> impl Fn(&mut web::ServiceConfig) + Send + Clone + 'static {
    move |cfg| {
        cfg.app_data(web::Data::new(pool.clone()))
            .app_data(
                web::JsonConfig::default().error_handler(|error, _| {
                    Error::Invalid(format!("the body is not a stock: {error}")).into()
                }),
            )
            .route("/inventory", web::get().to(list_route))
            .route("/inventory/{sku}", web::get().to(get_route))
            .route("/inventory/{sku}", web::put().to(set_route))
            .configure(orders_runtime::openapi::routes(&openapi()));
    }
}

/// The admin API's OpenAPI document (served at `/openapi.json`).
pub fn openapi() -> utoipa::openapi::OpenApi {
    use utoipa::OpenApi as _;
    orders_runtime::openapi::document(
        InventoryApi::openapi(),
        "order-processor",
        env!("CARGO_PKG_VERSION"),
        "The order processor's admin API: the stock of the SKUs the saga tracks (an order with a \
         tracked line reserves it, all lines or none, else is cancelled as out of stock). Errors \
         are `application/problem+json` (RFC 9457).",
    )
}

#[derive(utoipa::OpenApi)]
#[openapi(
    paths(list_route, get_route, set_route),
    components(schemas(Stock, SetStock)),
    tags((name = "inventory", description = "Stock of the tracked SKUs"))
)]
struct InventoryApi;

/// Every tracked SKU's stock, by SKU.
#[utoipa::path(get, path = "/inventory", tag = "inventory", responses(
    (status = 200, description = "The tracked SKUs", body = Vec<Stock>),
))]
async fn list_route(pool: web::Data<Pool>) -> Result<HttpResponse, Error> {
    Ok(HttpResponse::Ok().json(list(&pool).await?))
}

/// One SKU's stock.
#[utoipa::path(get, path = "/inventory/{sku}", tag = "inventory",
    params(("sku" = String, Path, description = "The SKU", example = "book-1")),
    responses(
        (status = 200, description = "Its stock", body = Stock),
        (status = 404, description = "The SKU is not tracked", body = Problem, content_type = PROBLEM_JSON),
        (status = 422, description = "Not a valid SKU", body = Problem, content_type = PROBLEM_JSON),
    ))]
async fn get_route(pool: web::Data<Pool>, sku: web::Path<String>) -> Result<HttpResponse, Error> {
    Ok(HttpResponse::Ok().json(get(&pool, &sku).await?))
}

/// Sets a SKU's available stock, and tracks it from then on.
#[utoipa::path(put, path = "/inventory/{sku}", tag = "inventory",
    params(("sku" = String, Path, description = "The SKU", example = "book-1")),
    request_body(content = SetStock, example = json!({"available": 10})),
    responses(
        (status = 200, description = "Its stock now", body = Stock),
        (status = 422, description = "Not a valid SKU, or a body that is not `{available}` with 0 or more", body = Problem, content_type = PROBLEM_JSON),
    ))]
async fn set_route(
    pool: web::Data<Pool>,
    sku: web::Path<String>,
    body: web::Json<SetStock>,
) -> Result<HttpResponse, Error> {
    Ok(HttpResponse::Ok().json(set(&pool, &sku, body.available).await?))
}
