//! Opens a pool on the local `orders_write` database (started by `make up`) and prints
//! the limits each session carries.
//!
//! ```sh
//! cargo run -p orders-postgres --example session_limits
//! ```

use orders_postgres::{DatabaseUrl, Session, pool};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url: DatabaseUrl = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:15432/orders_write".into())
        .parse()?;
    let pool = pool(&url, 1, "session-limits-example", &Session::default())?;
    let client = pool.get().await?;
    for setting in ["statement_timeout", "lock_timeout", "idle_in_transaction_session_timeout"] {
        let value: String = client.query_one(&format!("SHOW {setting}"), &[]).await?.get(0);
        println!("{setting} = {value}");
    }
    Ok(())
}
