//! Kafka client configuration shared by services.
//!
//! [`KafkaArgs`] carries the bootstrap servers, how to reach them securely (TLS, SASL
//! with SCRAM or PLAIN, credentials read from files as Kubernetes mounts Secrets) and
//! any extra librdkafka properties from the environment; its helpers start producers and
//! consumers from the settings the platform relies on: idempotent producers with
//! `acks=all`, consumers with auto-commit off that read only committed transactional
//! data.
//!
//! A secured client, for example:
//!
//! ```text
//! KAFKA_BOOTSTRAP_SERVERS=kafka:9094
//! KAFKA_SECURITY_PROTOCOL=sasl_ssl
//! KAFKA_SASL_MECHANISM=SCRAM-SHA-512
//! KAFKA_SASL_USERNAME=projector
//! KAFKA_SASL_PASSWORD_FILE=/var/run/secrets/kafka/password
//! KAFKA_SSL_CA_LOCATION=/var/run/secrets/kafka-ca/ca.crt
//! ```

use std::{fmt, path::PathBuf, str::FromStr};

use clap::{Args, ValueEnum};
use rdkafka::ClientConfig;

use crate::config::Secret;

/// Where the brokers are, and how to talk to them.
#[derive(Debug, Clone, Args)]
pub struct KafkaArgs {
    /// Kafka bootstrap servers, comma-separated `host:port`.
    #[arg(
        long = "kafka-bootstrap-servers",
        env = "KAFKA_BOOTSTRAP_SERVERS",
        default_value = "127.0.0.1:9092"
    )]
    pub bootstrap_servers: String,

    /// How to talk to the brokers: `plaintext`, `ssl` (TLS), `sasl_plaintext` or
    /// `sasl_ssl` (SASL over TLS: what production wants).
    #[arg(
        long = "kafka-security-protocol",
        env = "KAFKA_SECURITY_PROTOCOL",
        value_enum,
        ignore_case = true,
        default_value_t = SecurityProtocol::Plaintext
    )]
    pub security_protocol: SecurityProtocol,

    /// The SASL mechanism (with `sasl_*`): `SCRAM-SHA-512`, `SCRAM-SHA-256` or `PLAIN`.
    #[arg(
        long = "kafka-sasl-mechanism",
        env = "KAFKA_SASL_MECHANISM",
        value_enum,
        ignore_case = true,
        default_value_t = SaslMechanism::ScramSha512
    )]
    pub sasl_mechanism: SaslMechanism,

    /// The SASL user name (required with `sasl_*`).
    #[arg(
        long = "kafka-sasl-username",
        env = "KAFKA_SASL_USERNAME",
        required_if_eq_any = [("security_protocol", "sasl_ssl"), ("security_protocol", "sasl_plaintext")]
    )]
    pub sasl_username: Option<String>,

    /// A file holding the SASL password (required with `sasl_*`), as a mounted Secret;
    /// read once at start.
    #[arg(
        long = "kafka-sasl-password-file",
        env = "KAFKA_SASL_PASSWORD_FILE",
        value_parser = Secret::from_file,
        required_if_eq_any = [("security_protocol", "sasl_ssl"), ("security_protocol", "sasl_plaintext")]
    )]
    pub sasl_password: Option<Secret>,

    /// CA certificates (PEM) the brokers' certificates must chain to (with `ssl` and
    /// `sasl_ssl`); unset: the system's. The broker's name is verified against its
    /// certificate.
    #[arg(long = "kafka-ssl-ca-location", env = "KAFKA_SSL_CA_LOCATION")]
    pub ssl_ca_location: Option<PathBuf>,

    /// A client certificate (PEM), for brokers that authenticate clients by TLS.
    #[arg(
        long = "kafka-ssl-certificate-location",
        env = "KAFKA_SSL_CERTIFICATE_LOCATION",
        requires = "ssl_key_location"
    )]
    pub ssl_certificate_location: Option<PathBuf>,

    /// The client certificate's private key (PEM).
    #[arg(
        long = "kafka-ssl-key-location",
        env = "KAFKA_SSL_KEY_LOCATION",
        requires = "ssl_certificate_location"
    )]
    pub ssl_key_location: Option<PathBuf>,

    /// A file holding the private key's password, when the key is encrypted.
    #[arg(long = "kafka-ssl-key-password-file", env = "KAFKA_SSL_KEY_PASSWORD_FILE", value_parser = Secret::from_file)]
    pub ssl_key_password: Option<Secret>,

    /// Extra librdkafka client properties, comma-separated `key=value`, applied last
    /// (for example `ssl.endpoint.identification.algorithm=none` or `client.rack=a`).
    /// Prefer the settings above for credentials: a value here sits in the environment.
    #[arg(long = "kafka-properties", env = "KAFKA_PROPERTIES", default_value = "", hide_env_values = true)]
    pub properties: KafkaProperties,
}

/// librdkafka's `security.protocol`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SecurityProtocol {
    /// No TLS, no authentication.
    #[value(name = "plaintext")]
    Plaintext,
    /// TLS, no SASL (a client certificate may authenticate).
    #[value(name = "ssl")]
    Ssl,
    /// SASL without TLS: credentials in the clear; for tests only.
    #[value(name = "sasl_plaintext")]
    SaslPlaintext,
    /// SASL over TLS.
    #[value(name = "sasl_ssl")]
    SaslSsl,
}

impl SecurityProtocol {
    fn name(self) -> &'static str {
        match self {
            Self::Plaintext => "plaintext",
            Self::Ssl => "ssl",
            Self::SaslPlaintext => "sasl_plaintext",
            Self::SaslSsl => "sasl_ssl",
        }
    }

    fn sasl(self) -> bool {
        matches!(self, Self::SaslPlaintext | Self::SaslSsl)
    }

    fn tls(self) -> bool {
        matches!(self, Self::Ssl | Self::SaslSsl)
    }
}

/// librdkafka's `sasl.mechanism` (those this build supports without Kerberos).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SaslMechanism {
    /// SCRAM with SHA-512: the password never crosses the wire.
    #[value(name = "SCRAM-SHA-512")]
    ScramSha512,
    /// SCRAM with SHA-256.
    #[value(name = "SCRAM-SHA-256")]
    ScramSha256,
    /// The password itself, protected only by TLS.
    #[value(name = "PLAIN")]
    Plain,
}

impl SaslMechanism {
    fn name(self) -> &'static str {
        match self {
            Self::ScramSha512 => "SCRAM-SHA-512",
            Self::ScramSha256 => "SCRAM-SHA-256",
            Self::Plain => "PLAIN",
        }
    }
}

/// librdkafka properties given as `key=value,key=value`. Values of keys that look
/// secret (`password`, `secret`, `key`) are hidden from `Debug`.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct KafkaProperties(pub Vec<(String, String)>);

impl FromStr for KafkaProperties {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(|pair| match pair.split_once('=') {
                Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.trim().to_string())),
                _ => Err(format!("`{pair}` is not a key=value pair")),
            })
            .collect::<Result<_, _>>()
            .map(Self)
    }
}

impl fmt::Debug for KafkaProperties {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secret = |k: &str| ["password", "secret", "key"].iter().any(|w| k.contains(w));
        f.debug_map()
            .entries(self.0.iter().map(|(k, v)| (k, if secret(k) { "***" } else { v.as_str() })))
            .finish()
    }
}

impl KafkaArgs {
    /// Brokers at `bootstrap_servers`, plaintext, nothing else set (for tests and tools).
    pub fn plaintext(bootstrap_servers: impl Into<String>) -> Self {
        Self {
            bootstrap_servers: bootstrap_servers.into(),
            security_protocol: SecurityProtocol::Plaintext,
            sasl_mechanism: SaslMechanism::ScramSha512,
            sasl_username: None,
            sasl_password: None,
            ssl_ca_location: None,
            ssl_certificate_location: None,
            ssl_key_location: None,
            ssl_key_password: None,
            properties: KafkaProperties::default(),
        }
    }

    /// Base client configuration: the bootstrap servers, the security settings, then
    /// the extra properties.
    pub fn client_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", &self.bootstrap_servers);
        config.set("security.protocol", self.security_protocol.name());
        if self.security_protocol.sasl() {
            config.set("sasl.mechanism", self.sasl_mechanism.name());
            if let Some(username) = &self.sasl_username {
                config.set("sasl.username", username);
            }
            if let Some(password) = &self.sasl_password {
                config.set("sasl.password", password.expose());
            }
        }
        if self.security_protocol.tls() {
            let path = |p: &PathBuf| p.to_string_lossy().into_owned();
            if let Some(ca) = &self.ssl_ca_location {
                config.set("ssl.ca.location", path(ca));
            }
            if let Some(certificate) = &self.ssl_certificate_location {
                config.set("ssl.certificate.location", path(certificate));
            }
            if let Some(key) = &self.ssl_key_location {
                config.set("ssl.key.location", path(key));
            }
            if let Some(password) = &self.ssl_key_password {
                config.set("ssl.key.password", password.expose());
            }
        }
        for (k, v) in &self.properties.0 {
            config.set(k, v);
        }
        config
    }

    /// A producer that never duplicates or reorders on retry: `enable.idempotence=true`
    /// and `acks=all`.
    pub fn producer_config(&self) -> ClientConfig {
        let mut config = self.client_config();
        config.set("enable.idempotence", "true").set("acks", "all");
        config
    }

    /// A consumer in `group` that commits offsets only when told to
    /// (`enable.auto.commit=false`), starts from the earliest offset when the group has
    /// none, and sees only committed transactional messages. Its session lasts 10 s
    /// unless `KAFKA_PROPERTIES` says otherwise: the broker's default (45 s) is how long a
    /// crashed member's partitions wait before its restarted self gets them back.
    pub fn consumer_config(&self, group: &str) -> ClientConfig {
        let mut config = self.client_config();
        config
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest")
            .set("isolation.level", "read_committed");
        if config.get("session.timeout.ms").is_none() {
            config.set("session.timeout.ms", "10000");
        }
        config
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn properties_parse_and_hide_secrets() {
        let props: KafkaProperties =
            "security.protocol=SASL_SSL, sasl.password=hunter2".parse().expect("valid");
        assert_eq!(props.0.len(), 2);
        let shown = format!("{props:?}");
        assert!(shown.contains("SASL_SSL") && !shown.contains("hunter2"), "{shown}");
    }

    #[test]
    fn a_property_without_value_separator_is_rejected() {
        let err = "acks".parse::<KafkaProperties>().expect_err("invalid");
        assert_eq!(err, "`acks` is not a key=value pair");
    }

    #[derive(Debug, clap::Parser)]
    struct Cli {
        #[command(flatten)]
        kafka: KafkaArgs,
    }

    fn parse(args: &[&str]) -> Result<KafkaArgs, clap::Error> {
        use clap::Parser as _;
        Cli::try_parse_from(std::iter::once("svc").chain(args.iter().copied())).map(|cli| cli.kafka)
    }

    #[test]
    fn sasl_ssl_sets_the_mechanism_credentials_and_ca() {
        let password = orders_testkit::SecretFile::new("s3cret\n");
        let args = parse(&[
            "--kafka-security-protocol=SASL_SSL",
            "--kafka-sasl-mechanism=scram-sha-256",
            "--kafka-sasl-username=projector",
            &format!("--kafka-sasl-password-file={}", password.path()),
            "--kafka-ssl-ca-location=/etc/ca.pem",
        ])
        .expect("valid");
        let config = args.client_config();
        assert_eq!(config.get("security.protocol"), Some("sasl_ssl"));
        assert_eq!(config.get("sasl.mechanism"), Some("SCRAM-SHA-256"));
        assert_eq!(config.get("sasl.username"), Some("projector"));
        assert_eq!(config.get("sasl.password"), Some("s3cret"));
        assert_eq!(config.get("ssl.ca.location"), Some("/etc/ca.pem"));
        // Neither the arguments nor the client configuration show the password.
        assert!(!format!("{args:?}").contains("s3cret"), "{args:?}");
        assert!(!format!("{config:?}").contains("s3cret"), "{config:?}");
    }

    #[test]
    fn sasl_without_credentials_is_refused_at_start() {
        let err = parse(&["--kafka-security-protocol=sasl_ssl"]).expect_err("credentials missing");
        let text = err.to_string();
        assert!(
            text.contains("--kafka-sasl-username") && text.contains("--kafka-sasl-password-file"),
            "{text}"
        );
        let err = parse(&["--kafka-security-protocol=tls"]).expect_err("unknown protocol");
        assert!(err.to_string().contains("invalid value 'tls'"), "{err}");
    }

    #[test]
    fn plaintext_sets_no_credentials() {
        let config = parse(&[]).expect("defaults").client_config();
        assert_eq!(config.get("security.protocol"), Some("plaintext"));
        assert_eq!(config.get("sasl.mechanism"), None);
        assert_eq!(config.get("ssl.ca.location"), None);
    }

    #[test]
    fn producer_and_consumer_settings() {
        let args = KafkaArgs::plaintext("k:9092");
        let p = args.producer_config();
        assert_eq!(p.get("enable.idempotence"), Some("true"));
        assert_eq!(p.get("acks"), Some("all"));
        let c = args.consumer_config("g");
        assert_eq!(c.get("enable.auto.commit"), Some("false"));
        assert_eq!(c.get("group.id"), Some("g"));
        assert_eq!(c.get("session.timeout.ms"), Some("10000"));
    }
}
