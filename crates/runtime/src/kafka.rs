//! Kafka client configuration shared by services.
//!
//! [`KafkaArgs`] carries the bootstrap servers and any extra librdkafka properties
//! (TLS, SASL...) from the environment; its helpers start producers and consumers from
//! the settings the platform relies on: idempotent producers with `acks=all`, consumers
//! with auto-commit off that read only committed transactional data.

use std::{fmt, str::FromStr};

use clap::Args;
use rdkafka::ClientConfig;

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

    /// Extra librdkafka client properties, comma-separated `key=value`
    /// (for example `security.protocol=SASL_SSL,sasl.mechanism=PLAIN`).
    #[arg(long = "kafka-properties", env = "KAFKA_PROPERTIES", default_value = "")]
    pub properties: KafkaProperties,
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
    /// Base client configuration: the bootstrap servers and the extra properties.
    pub fn client_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", &self.bootstrap_servers);
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

    #[test]
    fn producer_and_consumer_settings() {
        let args = KafkaArgs { bootstrap_servers: "k:9092".into(), properties: KafkaProperties::default() };
        let p = args.producer_config();
        assert_eq!(p.get("enable.idempotence"), Some("true"));
        assert_eq!(p.get("acks"), Some("all"));
        let c = args.consumer_config("g");
        assert_eq!(c.get("enable.auto.commit"), Some("false"));
        assert_eq!(c.get("group.id"), Some("g"));
        assert_eq!(c.get("session.timeout.ms"), Some("10000"));
    }
}
