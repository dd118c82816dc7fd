//! A consumer of a topic that prints each record and dead-letters those whose value is
//! not UTF-8, against the local infrastructure of `make up`:
//!
//! ```text
//! cargo run -p orders-consumer --example consume -- orders
//! ```
//!
//! Settings from the environment: `KAFKA_BOOTSTRAP_SERVERS` (default
//! `127.0.0.1:9092`), `DATABASE_URL` (default the local `order_processor` database).
//! Stop it with Ctrl-C.

use orders_consumer::{Consumer, Failure, Handler, Record, Settings, Store};
use orders_postgres::{DatabaseUrl, Session};
use rdkafka::ClientConfig;
use tokio_util::sync::CancellationToken;

struct Print;

impl Handler for Print {
    async fn handle(&self, record: &Record) -> Result<(), Failure> {
        let value = std::str::from_utf8(record.payload.as_deref().unwrap_or_default())
            .map_err(|e| Failure::permanent(format!("not text: {e}")))?;
        println!("{} key={} {value}", record.origin(), record.key_text());
        Ok(())
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let topic = std::env::args().nth(1).unwrap_or_else(|| "orders".into());
    let brokers = std::env::var("KAFKA_BOOTSTRAP_SERVERS").unwrap_or_else(|_| "127.0.0.1:9092".into());
    let url: DatabaseUrl = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:15432/order_processor".into())
        .parse()?;
    let pool = orders_postgres::pool(&url, 4, "consumer-example", &Session::default())?;
    let store = Store::new(pool, "example-printer");
    store.migrate().await?;
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", brokers);
    let settings = Settings::new("example-printer", &[&topic], config, "dlq.orders");
    let token = CancellationToken::new();
    let stop = token.clone();
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        stop.cancel();
    });
    Consumer::new(settings, store, Print)?.run(token).await?;
    Ok(())
}
