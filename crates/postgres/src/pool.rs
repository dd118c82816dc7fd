//! Pools and dedicated connections whose sessions carry server-side limits.

use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::Client;

use crate::{DatabaseUrl, Error, Result};

/// Session parameters every connection sets at start-up (through the startup packet's
/// `options`, so they hold from the first statement and survive `DISCARD ALL`-free
/// recycling).
///
/// A limit of `None` leaves the server's own setting; `Some(Duration::ZERO)` turns the
/// limit off explicitly. The defaults suit request-serving work: no statement runs
/// longer than 30 s, no lock wait lasts more than 10 s, and a transaction left idle for
/// 60 s (its client stuck or gone) is ended by the server, releasing its locks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// `statement_timeout`: the longest a statement may run.
    pub statement_timeout: Option<Duration>,
    /// `lock_timeout`: the longest a statement may wait for a lock.
    pub lock_timeout: Option<Duration>,
    /// `idle_in_transaction_session_timeout`: the longest a transaction may sit idle
    /// between statements before the server ends the session.
    pub idle_in_transaction_session_timeout: Option<Duration>,
    /// Further parameters, for example `("search_path", "read_model")` or
    /// `("synchronous_commit", "off")`.
    pub parameters: Vec<(String, String)>,
}

impl Default for Session {
    fn default() -> Self {
        Self {
            statement_timeout: Some(Duration::from_secs(30)),
            lock_timeout: Some(Duration::from_secs(10)),
            idle_in_transaction_session_timeout: Some(Duration::from_secs(60)),
            parameters: Vec::new(),
        }
    }
}

impl Session {
    /// Adds the parameter `name = value`.
    pub fn with(mut self, name: &str, value: &str) -> Self {
        self.parameters.push((name.to_string(), value.to_string()));
        self
    }

    /// The startup `options` string: `-c name=value` per parameter, with spaces and
    /// backslashes escaped as PostgreSQL's option parser expects.
    fn options(&self) -> String {
        let limits = [
            ("statement_timeout", self.statement_timeout),
            ("lock_timeout", self.lock_timeout),
            ("idle_in_transaction_session_timeout", self.idle_in_transaction_session_timeout),
        ];
        let limits = limits
            .into_iter()
            .filter_map(|(name, limit)| Some((name.to_string(), format!("{}ms", limit?.as_millis()))));
        limits
            .chain(self.parameters.iter().cloned())
            .map(|(name, value)| format!("-c {}={}", escape(&name), escape(&value)))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// `config` with these parameters appended to any `options` it already has (those
    /// come first, so the ones set here win).
    fn apply(&self, config: &mut tokio_postgres::Config, application_name: &str) {
        config.application_name(application_name);
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(5));
        }
        let options = match config.get_options() {
            Some(existing) if !existing.is_empty() => format!("{existing} {}", self.options()),
            _ => self.options(),
        };
        config.options(options);
    }
}

fn escape(value: &str) -> String {
    value.replace('\\', "\\\\").replace(' ', "\\ ")
}

/// A pool of at most `max_size` connections to `url` (over TLS as its `sslmode` says),
/// named `application_name` in `pg_stat_activity`, each with `session`'s parameters. No connection is opened until
/// one is needed: a service starts even while its database is down (and reports not
/// ready). Creating a connection gives up after 5 s, waiting for a free one after 10 s.
pub fn pool(url: &DatabaseUrl, max_size: usize, application_name: &str, session: &Session) -> Result<Pool> {
    let mut config = url.config.clone();
    session.apply(&mut config, application_name);
    let tls = url.tls().connector()?;
    let manager =
        Manager::from_config(config, tls, ManagerConfig { recycling_method: RecyclingMethod::Fast });
    Ok(Pool::builder(manager)
        .max_size(max_size.max(1))
        .runtime(Runtime::Tokio1)
        .create_timeout(Some(Duration::from_secs(5)))
        .wait_timeout(Some(Duration::from_secs(10)))
        .recycle_timeout(Some(Duration::from_secs(5)))
        .build()?)
}

/// One dedicated connection (for migrations, advisory locks held for a session, admin
/// work), set up like [`pool`]'s; its connection task runs on the current runtime.
pub async fn connect(url: &DatabaseUrl, application_name: &str, session: &Session) -> Result<Client> {
    let mut config = url.config.clone();
    session.apply(&mut config, application_name);
    let tls = url.tls().connector()?;
    let (client, connection) =
        config.connect(tls).await.map_err(|source| Error::Connect { url: url.to_string(), source })?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %crate::describe(&e), "dedicated PostgreSQL connection closed");
        }
    });
    Ok(client)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_carry_the_limits_and_escape_values() {
        let session = Session { lock_timeout: None, ..Session::default() }.with("search_path", "a b");
        assert_eq!(
            session.options(),
            "-c statement_timeout=30000ms -c idle_in_transaction_session_timeout=60000ms -c search_path=a\\ b"
        );
    }

    #[test]
    fn options_already_in_the_url_come_first() {
        let url: DatabaseUrl = "postgres://u@h/db?options=-c%20work_mem%3D8MB".parse().expect("valid url");
        let mut config = url.config.clone();
        Session::default().apply(&mut config, "app");
        let options = config.get_options().expect("options set");
        assert!(options.starts_with("-c work_mem=8MB -c statement_timeout=30000ms"), "{options}");
        assert_eq!(config.get_application_name(), Some("app"));
    }
}
