//! PostgreSQL for services: the pool and URL types of [`orders_postgres`], and the
//! session limits as configuration.
//!
//! Every pool a service builds through [`pool`] carries the server-side limits of
//! [`SessionArgs`] (`DATABASE_STATEMENT_TIMEOUT`, `DATABASE_LOCK_TIMEOUT`,
//! `DATABASE_IDLE_IN_TRANSACTION_TIMEOUT`), so that no statement, lock wait or abandoned
//! transaction outlives the request that started it by more than those bounds.

use std::time::Duration;

use clap::Args;
pub use orders_postgres::{DatabaseUrl, Failure, Session, classify, connect, describe};

use crate::config::parse_duration;

/// The value parser of a `DatabaseUrl` setting: `value_parser = DatabaseUrlParser`,
/// with `hide_env_values = true` so that `--help` does not print the URL either. A URL
/// that does not parse stops the start with what is wrong with it, never the URL itself
/// (clap's own message would repeat it, password and all).
#[derive(Debug, Clone, Copy)]
pub struct DatabaseUrlParser;

impl clap::builder::TypedValueParser for DatabaseUrlParser {
    type Value = DatabaseUrl;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &std::ffi::OsStr,
    ) -> Result<DatabaseUrl, clap::Error> {
        let name = arg.map_or_else(|| "the database URL".to_string(), |a| a.get_id().to_string());
        let invalid = |why: String| {
            clap::Error::raw(
                clap::error::ErrorKind::ValueValidation,
                format!("invalid {name} (its value is not shown: it may hold a password): {why}\n"),
            )
            .with_cmd(cmd)
        };
        let text = value.to_str().ok_or_else(|| invalid("not UTF-8".into()))?;
        text.parse::<DatabaseUrl>().map_err(invalid)
    }
}

/// The server-side limits of every PostgreSQL session of a service. `0s` turns a limit off.
#[derive(Debug, Clone, Args)]
pub struct SessionArgs {
    /// The longest a statement may run before PostgreSQL cancels it.
    #[arg(long, env = "DATABASE_STATEMENT_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub database_statement_timeout: Duration,

    /// The longest a statement may wait for a lock before PostgreSQL gives up.
    #[arg(long, env = "DATABASE_LOCK_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub database_lock_timeout: Duration,

    /// The longest a transaction may sit idle between statements (its client stuck or
    /// gone) before PostgreSQL ends the session and releases its locks.
    #[arg(long, env = "DATABASE_IDLE_IN_TRANSACTION_TIMEOUT", default_value = "60s", value_parser = parse_duration)]
    pub database_idle_in_transaction_timeout: Duration,
}

impl SessionArgs {
    /// The session these settings describe.
    pub fn session(&self) -> Session {
        Session {
            statement_timeout: Some(self.database_statement_timeout),
            lock_timeout: Some(self.database_lock_timeout),
            idle_in_transaction_session_timeout: Some(self.database_idle_in_transaction_timeout),
            parameters: Vec::new(),
        }
    }

    /// A pool of at most `max_size` connections to `url`, named `application_name`,
    /// each session with these limits.
    pub fn pool(
        &self,
        url: &DatabaseUrl,
        max_size: usize,
        application_name: &str,
    ) -> crate::Result<deadpool_postgres::Pool> {
        pool(url, max_size, application_name, &self.session())
    }
}

/// A pool of at most `max_size` connections to `url`, named `application_name`, each
/// session with `session`'s limits (see [`orders_postgres::pool`]).
pub fn pool(
    url: &DatabaseUrl,
    max_size: usize,
    application_name: &str,
    session: &Session,
) -> crate::Result<deadpool_postgres::Pool> {
    Ok(orders_postgres::pool(url, max_size, application_name, session)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        session: SessionArgs,
    }

    #[derive(Debug, Parser)]
    struct WithUrl {
        #[arg(long, env = "TEST_SECRET_DATABASE_URL", value_parser = DatabaseUrlParser, hide_env_values = true)]
        database_url: DatabaseUrl,
    }

    #[test]
    fn a_bad_database_url_is_refused_without_repeating_it() {
        let err = WithUrl::try_parse_from([
            "svc",
            "--database-url",
            "postgres://app:s3cret@db/x?sslmode=sometimes",
        ])
        .expect_err("a bad sslmode");
        let text = err.to_string();
        assert!(text.contains("sslmode `sometimes` is not one of"), "{text}");
        assert!(!text.contains("s3cret"), "{text}");
        let ok =
            WithUrl::try_parse_from(["svc", "--database-url", "postgres://app:s3cret@db/x"]).expect("valid");
        assert_eq!(ok.database_url.to_string(), "postgres://app:***@db:5432/x");
    }

    #[test]
    fn the_limits_default_to_bounded_values_and_parse_human_units() {
        let session = Cli::try_parse_from(["svc"]).expect("defaults").session.session();
        assert_eq!(session.statement_timeout, Some(Duration::from_secs(30)));
        assert_eq!(session.lock_timeout, Some(Duration::from_secs(10)));
        assert_eq!(session.idle_in_transaction_session_timeout, Some(Duration::from_secs(60)));
        let cli = Cli::try_parse_from(["svc", "--database-statement-timeout", "1500ms"]).expect("parses");
        assert_eq!(cli.session.session().statement_timeout, Some(Duration::from_millis(1500)));
    }

    #[test]
    fn the_password_never_shows() {
        let url: DatabaseUrl = "postgres://app:s3cret@db.example:5433/orders".parse().expect("valid url");
        assert_eq!(url.to_string(), "postgres://app:***@db.example:5433/orders");
        assert!(!format!("{url:?}").contains("s3cret"));
    }
}
