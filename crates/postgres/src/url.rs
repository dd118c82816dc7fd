//! [`DatabaseUrl`]: a connection URL validated at start, its password kept out of logs.

use std::{fmt, str::FromStr};

use postgres_openssl::TlsStream;
use tokio_postgres::{Connection, Socket, config::Host};

use crate::tls::{Connector, Tls};

/// A validated PostgreSQL connection URL whose password stays out of logs.
///
/// Besides what tokio-postgres reads, the URL's query may carry libpq's TLS
/// parameters, `sslmode` (all five modes), `sslrootcert`, `sslcert` and `sslkey` (see
/// [`Tls`]), and `password_file`: a file holding the password, read once when the URL
/// is parsed, the way Kubernetes mounts a Secret (this crate's own parameter; libpq's
/// `passfile`, in `.pgpass` format, is another thing), so that the password appears
/// neither in the URL nor in the environment.
#[derive(Clone)]
pub struct DatabaseUrl {
    pub(crate) config: tokio_postgres::Config,
    tls: Tls,
}

impl DatabaseUrl {
    /// The parsed connection settings (its `ssl_mode` the one negotiated; the checks
    /// are [`DatabaseUrl::tls`]'s).
    pub fn config(&self) -> &tokio_postgres::Config {
        &self.config
    }

    /// The TLS settings.
    pub fn tls(&self) -> &Tls {
        &self.tls
    }

    /// The connection settings with their TLS connector, to open dedicated connections
    /// with (see [`Target`]).
    ///
    /// # Errors
    /// When a certificate or key file of the TLS settings cannot be read or used.
    pub fn target(&self) -> crate::Result<Target> {
        Ok(Target { config: self.config.clone(), tls: self.tls.connector()? })
    }

    /// The database name, when the URL names one.
    pub fn database(&self) -> Option<&str> {
        self.config.get_dbname()
    }
}

impl FromStr for DatabaseUrl {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (tls, password_file, rest) = match s.split_once('?') {
            Some((base, query)) => {
                let (tls, rest) = Tls::take_from(query)?;
                let (password_file, rest): (Vec<&str>, Vec<&str>) =
                    rest.into_iter().partition(|pair| pair.starts_with("password_file="));
                let password_file = match password_file.last() {
                    Some(pair) => Some(crate::tls::percent_decode(&pair["password_file=".len()..])?),
                    None => None,
                };
                let rest =
                    if rest.is_empty() { base.to_string() } else { format!("{base}?{}", rest.join("&")) };
                (tls, password_file, rest)
            }
            None => (Tls::default(), None, s.to_string()),
        };
        let mut config = tokio_postgres::Config::from_str(&rest).map_err(|e| {
            format!("not a PostgreSQL connection URL ({e}); expected postgres://user@host:port/database")
        })?;
        if config.get_hosts().is_empty() {
            return Err("the PostgreSQL URL names no host".into());
        }
        config.ssl_mode(tls.mode.negotiation());
        if let Some(path) = password_file {
            config.password(read_secret_file(&path)?);
        }
        Ok(Self { config, tls })
    }
}

/// The secret (a password, a token) in the file at `path`, the way Kubernetes mounts a
/// Secret: one trailing newline dropped, empty refused; the error names the file, never
/// its content.
pub fn read_secret_file(path: &str) -> Result<String, String> {
    let text =
        std::fs::read_to_string(path).map_err(|e| format!("cannot read the secret file `{path}`: {e}"))?;
    let secret = text.strip_suffix('\n').map(|t| t.strip_suffix('\r').unwrap_or(t)).unwrap_or(&text);
    if secret.is_empty() {
        return Err(format!("the secret file `{path}` is empty"));
    }
    Ok(secret.to_string())
}

/// Where and how to open a dedicated connection: the settings (change them freely, for
/// example the keepalives) and the TLS connector of the URL they came from.
#[derive(Clone)]
pub struct Target {
    /// The connection settings.
    pub config: tokio_postgres::Config,
    tls: Connector,
}

impl Target {
    /// Opens a connection; the caller drives the returned connection (spawn it, or
    /// poll it for notifications).
    pub async fn connect(
        &self,
    ) -> Result<(tokio_postgres::Client, Connection<Socket, TlsStream<Socket>>), tokio_postgres::Error> {
        self.config.connect(self.tls.clone()).await
    }
}

impl fmt::Debug for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Target").field("config", &"(hidden: it holds the password)").finish()
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
        if self.tls.mode != crate::tls::SslMode::Disable {
            write!(f, "?sslmode={}", self.tls.mode)?;
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
    fn the_tls_parameters_are_read_and_the_rest_left_to_tokio_postgres() {
        let url: DatabaseUrl =
            "postgres://app:pw@db:5432/orders?sslmode=verify-full&sslrootcert=/ca.pem&application_name=x"
                .parse()
                .expect("valid url");
        assert_eq!(url.tls().mode, crate::SslMode::VerifyFull);
        assert_eq!(url.config().get_ssl_mode(), tokio_postgres::config::SslMode::Require);
        assert_eq!(url.config().get_application_name(), Some("x"));
        assert_eq!(url.to_string(), "postgres://app:***@db:5432/orders?sslmode=verify-full");
        let plain: DatabaseUrl = "postgres://app@db/orders".parse().expect("valid url");
        assert_eq!(plain.config().get_ssl_mode(), tokio_postgres::config::SslMode::Disable);
    }

    #[test]
    fn the_password_comes_from_its_file() {
        let file = orders_testkit::SecretFile::new("from-file\n");
        let url: DatabaseUrl =
            format!("postgres://app@db:5432/orders?password_file={}&sslmode=require", file.path())
                .parse()
                .expect("valid url");
        assert_eq!(url.config().get_password(), Some(&b"from-file"[..]));
        assert_eq!(url.to_string(), "postgres://app:***@db:5432/orders?sslmode=require");
        assert!(!format!("{url:?}").contains("from-file"));
        let err = "postgres://app@db/orders?password_file=/nonexistent"
            .parse::<DatabaseUrl>()
            .expect_err("missing");
        assert!(err.starts_with("cannot read the secret file `/nonexistent`"), "{err}");
    }

    #[test]
    fn a_bad_url_is_rejected_with_the_expected_shape() {
        let err = "postgres://host:notaport/db".parse::<DatabaseUrl>().expect_err("invalid port");
        assert!(err.contains("expected postgres://user@host:port/database"), "{err}");
    }
}
