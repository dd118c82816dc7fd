//! [`DatabaseUrl`]: a connection URL validated at start, its password kept out of logs.

use std::{fmt, str::FromStr};

use tokio_postgres::config::Host;

/// A validated PostgreSQL connection URL whose password stays out of logs.
#[derive(Clone)]
pub struct DatabaseUrl {
    pub(crate) config: tokio_postgres::Config,
}

impl DatabaseUrl {
    /// The parsed connection settings.
    pub fn config(&self) -> &tokio_postgres::Config {
        &self.config
    }

    /// The database name, when the URL names one.
    pub fn database(&self) -> Option<&str> {
        self.config.get_dbname()
    }
}

impl FromStr for DatabaseUrl {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let config = tokio_postgres::Config::from_str(s).map_err(|e| {
            format!("not a PostgreSQL connection URL ({e}); expected postgres://user@host:port/database")
        })?;
        if config.get_hosts().is_empty() {
            return Err("the PostgreSQL URL names no host".into());
        }
        Ok(Self { config })
    }
}

/// Shows the URL with its password replaced by `***`.
impl fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.config;
        write!(f, "postgres://")?;
        if let Some(user) = c.get_user() {
            write!(f, "{user}")?;
            if c.get_password().is_some() {
                write!(f, ":***")?;
            }
            write!(f, "@")?;
        }
        for (i, host) in c.get_hosts().iter().enumerate() {
            if i > 0 {
                write!(f, ",")?;
            }
            match host {
                Host::Tcp(name) => write!(f, "{name}")?,
                Host::Unix(path) => write!(f, "{}", path.display())?,
            }
            if let Some(port) = c.get_ports().get(i).or(c.get_ports().first()) {
                write!(f, ":{port}")?;
            }
        }
        if let Some(db) = c.get_dbname() {
            write!(f, "/{db}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DatabaseUrl({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_password_never_shows() {
        let url: DatabaseUrl = "postgres://app:s3cret@db.example:5433/orders".parse().expect("valid url");
        assert_eq!(url.to_string(), "postgres://app:***@db.example:5433/orders");
        assert!(!format!("{url:?}").contains("s3cret"));
        assert_eq!(url.database(), Some("orders"));
    }

    #[test]
    fn a_bad_url_is_rejected_with_the_expected_shape() {
        let err = "postgres://host:notaport/db".parse::<DatabaseUrl>().expect_err("invalid port");
        assert!(err.contains("expected postgres://user@host:port/database"), "{err}");
    }
}
