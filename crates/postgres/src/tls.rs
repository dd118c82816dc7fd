//! TLS to the server, as libpq's `sslmode` describes it, through OpenSSL.
//!
//! tokio-postgres knows only `disable`, `prefer` and `require`, and leaves certificate
//! checks to the TLS connector. [`Tls`] carries the mode and files read from the URL
//! (`sslmode`, `sslrootcert`, `sslcert`, `sslkey`) and builds the connector that does
//! what the mode promises:
//!
//! | `sslmode` | encrypted | server certificate checked | server name checked |
//! |---|---|---|---|
//! | `disable` (the default here) | no | no | no |
//! | `prefer` | when the server offers it | no | no |
//! | `require` | yes | only when `sslrootcert` is given (as libpq) | no |
//! | `verify-ca` | yes | yes | only without `sslrootcert` |
//! | `verify-full` | yes | yes | yes |
//!
//! With `sslrootcert`, the server's certificate must chain to those CAs alone (as
//! libpq: the system's store is not consulted). Without it, to the system's CA store;
//! since that trusts every public CA, any of which signs certificates for anyone, the
//! server's name is then checked even under `verify-ca` (as libpq 16 does for
//! `sslrootcert=system`). `sslcert` and `sslkey` give a client certificate. Unlike libpq
//! (whose default is `prefer`: encrypted, never checked), the default is `disable`: say
//! what you mean, and in production mean `verify-full`.

use std::{fmt, path::PathBuf};

use openssl::{
    ssl::{SslConnector, SslFiletype, SslMethod, SslVerifyMode},
    x509::{X509, store::X509StoreBuilder},
};
use postgres_openssl::MakeTlsConnector;

/// libpq's `sslmode`, all five that apply to a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SslMode {
    /// No TLS.
    #[default]
    Disable,
    /// TLS when the server offers it, unchecked.
    Prefer,
    /// TLS, the certificate checked only when a root certificate is given.
    Require,
    /// TLS, the certificate chained to a trusted CA.
    VerifyCa,
    /// TLS, the certificate chained to a trusted CA and naming the host connected to.
    VerifyFull,
}

impl SslMode {
    /// Parses a `sslmode` value.
    pub fn parse(value: &str) -> Result<Self, String> {
        Ok(match value {
            "disable" => Self::Disable,
            "prefer" => Self::Prefer,
            "require" => Self::Require,
            "verify-ca" => Self::VerifyCa,
            "verify-full" => Self::VerifyFull,
            other => {
                return Err(format!(
                    "sslmode `{other}` is not one of disable, prefer, require, verify-ca, verify-full"
                ));
            }
        })
    }

    /// The mode tokio-postgres negotiates with (the checks are the connector's).
    pub(crate) fn negotiation(self) -> tokio_postgres::config::SslMode {
        use tokio_postgres::config::SslMode as Pg;
        match self {
            Self::Disable => Pg::Disable,
            Self::Prefer => Pg::Prefer,
            Self::Require | Self::VerifyCa | Self::VerifyFull => Pg::Require,
        }
    }
}

impl fmt::Display for SslMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Disable => "disable",
            Self::Prefer => "prefer",
            Self::Require => "require",
            Self::VerifyCa => "verify-ca",
            Self::VerifyFull => "verify-full",
        })
    }
}

/// The TLS settings of a connection URL.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Tls {
    /// `sslmode`.
    pub mode: SslMode,
    /// `sslrootcert`: the CA certificates (PEM) the server's must chain to.
    pub root_cert: Option<PathBuf>,
    /// `sslcert`: a client certificate (PEM).
    pub cert: Option<PathBuf>,
    /// `sslkey`: the client certificate's private key (PEM).
    pub key: Option<PathBuf>,
}

/// Why [`Tls::connector`] could not build a connector.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A certificate file cannot be read.
    #[error("cannot read {}: {source}", .path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// OpenSSL refused a certificate or key.
    #[error("{0}")]
    OpenSsl(#[from] openssl::error::ErrorStack),
}

/// The connector [`Tls::connector`] builds: OpenSSL, for every mode (with `disable` it
/// is never used), so that pools and connections have one type whatever the settings.
pub type Connector = MakeTlsConnector;

impl Tls {
    /// Takes the TLS parameters out of a URL's query (`name=value` pairs joined by `&`,
    /// values percent-encoded); returns them and the other pairs, untouched, for
    /// tokio-postgres.
    pub(crate) fn take_from(query: &str) -> Result<(Self, Vec<&str>), String> {
        let mut tls = Self::default();
        let mut rest = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (name, raw) = pair.split_once('=').unwrap_or((pair, ""));
            let value = || percent_decode(raw);
            match name {
                "sslmode" => tls.mode = SslMode::parse(&value()?)?,
                "sslrootcert" => tls.root_cert = Some(value()?.into()),
                "sslcert" => tls.cert = Some(value()?.into()),
                "sslkey" => tls.key = Some(value()?.into()),
                _ => rest.push(pair),
            }
        }
        if tls.cert.is_some() != tls.key.is_some() {
            return Err("sslcert and sslkey go together: give both or neither".into());
        }
        Ok((tls, rest))
    }

    /// The connector for these settings; fails when a certificate or key file cannot be
    /// read or used.
    pub fn connector(&self) -> Result<Connector, TlsError> {
        let mut builder = SslConnector::builder(SslMethod::tls_client())?;
        let check_chain = match self.mode {
            SslMode::Disable | SslMode::Prefer => false,
            SslMode::Require => self.root_cert.is_some(),
            SslMode::VerifyCa | SslMode::VerifyFull => true,
        };
        if let Some(root) = &self.root_cert {
            // These CAs alone: the builder starts from the system's store, replaced here.
            let pem = std::fs::read(root).map_err(|source| TlsError::Read { path: root.clone(), source })?;
            let mut store = X509StoreBuilder::new()?;
            for certificate in X509::stack_from_pem(&pem)? {
                store.add_cert(certificate)?;
            }
            builder.set_cert_store(store.build());
        }
        builder.set_verify(if check_chain { SslVerifyMode::PEER } else { SslVerifyMode::NONE });
        if let (Some(cert), Some(key)) = (&self.cert, &self.key) {
            builder.set_certificate_chain_file(cert)?;
            builder.set_private_key_file(key, SslFiletype::PEM)?;
            builder.check_private_key()?;
        }
        let mut connector = MakeTlsConnector::new(builder.build());
        // A chain checked against the system's store must name the host too.
        let check_name = self.mode == SslMode::VerifyFull || (check_chain && self.root_cert.is_none());
        connector.set_callback(move |config, _| {
            config.set_verify_hostname(check_name);
            Ok(())
        });
        Ok(connector)
    }
}

/// `%XX` sequences decoded (a path in a URL may carry them).
pub(crate) fn percent_decode(raw: &str) -> Result<String, String> {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = raw.get(i + 1..i + 3).and_then(|h| u8::from_str_radix(h, 16).ok());
            out.push(hex.ok_or_else(|| format!("`{raw}` has a bad percent-encoding"))?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| format!("`{raw}` does not decode to UTF-8"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tls_parameters_are_taken_and_the_others_left() {
        let (tls, rest) =
            Tls::take_from("sslmode=verify-full&application_name=x&sslrootcert=%2Fetc%2Fca%20a.pem")
                .expect("valid");
        assert_eq!(tls.mode, SslMode::VerifyFull);
        assert_eq!(tls.root_cert, Some(PathBuf::from("/etc/ca a.pem")));
        assert_eq!(rest, ["application_name=x"]);
    }

    #[test]
    fn bad_tls_parameters_are_refused_clearly() {
        let err = Tls::take_from("sslmode=allow-all").expect_err("unknown mode");
        assert_eq!(err, "sslmode `allow-all` is not one of disable, prefer, require, verify-ca, verify-full");
        let err = Tls::take_from("sslcert=/c.pem").expect_err("a certificate without key");
        assert!(err.contains("sslcert and sslkey go together"), "{err}");
        let err = Tls::take_from("sslrootcert=%zz").expect_err("bad encoding");
        assert!(err.contains("bad percent-encoding"), "{err}");
    }

    #[test]
    fn a_missing_root_certificate_fails_the_connector() {
        let tls = Tls {
            mode: SslMode::VerifyFull,
            root_cert: Some("/nonexistent/ca.pem".into()),
            ..Tls::default()
        };
        assert!(tls.connector().is_err());
    }
}
