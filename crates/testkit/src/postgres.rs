//! A fresh PostgreSQL database per test.

use std::str::FromStr;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::NoTls;

use crate::{START_HINT, run_detached_cleanup, unique_suffix};

/// The administrative connection used to create and drop test databases.
pub fn admin_url() -> String {
    std::env::var("TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:15432/postgres".into())
}

/// A database that exists for one test, dropped (with its connections) when this
/// value is dropped.
#[derive(Debug)]
pub struct TestDatabase {
    name: String,
    url: String,
    pool: Pool,
}

impl TestDatabase {
    /// Creates a database named `test_<unique>`.
    ///
    /// # Panics
    /// When PostgreSQL cannot be reached, with a message naming `make up`.
    pub async fn create() -> Self {
        let admin = admin_url();
        let client = connect(&admin).await;
        let name = format!("test_{}", unique_suffix());
        client
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .unwrap_or_else(|e| panic!("cannot create test database {name}: {e}"));
        let url = with_database(&admin, &name);
        let pool = pool(&url, 8);
        Self { name, url, pool }
    }

    /// The database's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A connection URL for this database.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// A small pool of connections to this database.
    pub fn pool(&self) -> &Pool {
        &self.pool
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        self.pool.close();
        let name = self.name.clone();
        run_detached_cleanup(async move {
            if let Ok((client, conn)) = tokio_postgres::connect(&admin_url(), NoTls).await {
                tokio::spawn(conn);
                let _ = client.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).await;
            }
        });
    }
}

/// Connects to `url`, or panics with how to start PostgreSQL.
pub async fn connect(url: &str) -> tokio_postgres::Client {
    match tokio_postgres::connect(url, NoTls).await {
        Ok((client, connection)) => {
            tokio::spawn(async move {
                if let Err(e) = connection.await {
                    eprintln!("test connection closed: {e}");
                }
            });
            client
        }
        Err(e) => panic!("cannot reach PostgreSQL at {url}: {e}; {START_HINT}"),
    }
}

/// A deadpool pool for `url`.
pub fn pool(url: &str, max_size: usize) -> Pool {
    let config =
        tokio_postgres::Config::from_str(url).unwrap_or_else(|e| panic!("bad database url {url}: {e}"));
    let manager =
        Manager::from_config(config, NoTls, ManagerConfig { recycling_method: RecyclingMethod::Fast });
    Pool::builder(manager).max_size(max_size).build().unwrap_or_else(|e| panic!("cannot build a pool: {e}"))
}

/// `url` with its database replaced by `database`.
fn with_database(url: &str, database: &str) -> String {
    match url.rsplit_once('/') {
        Some((base, _)) if base.contains("://") && !base.ends_with('/') => format!("{base}/{database}"),
        _ => format!("{}/{database}", url.trim_end_matches('/')),
    }
}

#[cfg(test)]
mod tests {
    use super::with_database;

    #[test]
    fn the_database_part_of_the_url_is_replaced() {
        assert_eq!(with_database("postgres://u@h:1/postgres", "t1"), "postgres://u@h:1/t1");
        assert_eq!(with_database("postgres://u@h:1", "t1"), "postgres://u@h:1/t1");
    }
}
