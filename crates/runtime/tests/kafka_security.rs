//! [`KafkaArgs`]' security settings against the local broker's secured listener
//! (SASL_SSL with ACLs, started by `make up`): each SASL mechanism authenticates over
//! TLS verified with the local CA; the ACLs let the tests' user write the topics meant
//! for it and refuse it any other; a wrong password and a CA that did not sign the
//! broker's certificate are refused.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use orders_runtime::{
    config::Secret,
    kafka::{KafkaArgs, SaslMechanism, SecurityProtocol},
};
use orders_testkit::{kafka::TestKafka, secured};
use rdkafka::{
    ClientContext,
    error::{KafkaError, RDKafkaErrorCode},
    producer::{FutureProducer, FutureRecord},
};

/// The tests' Kafka user: deploy/kafka-acls.txt lets it write `secured-test-writable-*`.
const USER: &str = "orders-test";
const WAIT: Duration = Duration::from_secs(60);

/// Records the errors librdkafka reports outside any request (authentication, TLS).
#[derive(Clone, Default)]
struct Errors(Arc<Mutex<Vec<String>>>);

impl ClientContext for Errors {
    fn error(&self, error: KafkaError, reason: &str) {
        self.0.lock().expect("not poisoned").push(format!("{error}: {reason}"));
    }
}

impl Errors {
    /// Waits until an error containing `text` is reported; fails with what was.
    async fn wait_for(&self, text: &str) {
        let deadline = Instant::now() + WAIT;
        loop {
            let seen = self.0.lock().expect("not poisoned").clone();
            if seen.iter().any(|e| e.contains(text)) {
                return;
            }
            assert!(Instant::now() < deadline, "no error with {text:?} within {WAIT:?}; reported: {seen:#?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

fn args(mechanism: SaslMechanism, password: Secret, ca: std::path::PathBuf) -> KafkaArgs {
    let mut args = KafkaArgs::plaintext(secured::kafka_bootstrap_servers());
    args.security_protocol = SecurityProtocol::SaslSsl;
    args.sasl_mechanism = mechanism;
    args.sasl_username = Some(USER.to_string());
    args.sasl_password = Some(password);
    args.ssl_ca_location = Some(ca);
    args
}

fn password() -> Secret {
    let file = secured::kafka_password_file(USER);
    Secret::from_file(file.to_str().expect("utf-8 path")).expect("the password file reads")
}

fn producer(args: &KafkaArgs) -> (FutureProducer<Errors>, Errors) {
    let errors = Errors::default();
    let producer = args
        .producer_config()
        .set("message.timeout.ms", "60000")
        .create_with_context(errors.clone())
        .expect("a producer");
    (producer, errors)
}

async fn produce(producer: &FutureProducer<Errors>, topic: &str) -> Result<(), KafkaError> {
    let record = FutureRecord::to(topic).key("key").payload("value");
    producer.send(record, WAIT).await.map(|_| ()).map_err(|(e, _)| e)
}

#[tokio::test]
async fn each_mechanism_writes_what_the_acls_allow_and_nothing_else() {
    let mut kafka = TestKafka::new().await;
    let suffix = kafka.name("t");
    let writable = kafka.topic_named(&format!("secured-test-writable-{suffix}"), 1).await;
    let forbidden = kafka.topic_named(&format!("secured-test-forbidden-{suffix}"), 1).await;
    for mechanism in [SaslMechanism::ScramSha512, SaslMechanism::ScramSha256, SaslMechanism::Plain] {
        let (producer, errors) = producer(&args(mechanism, password(), secured::ca_file()));
        if let Err(e) = produce(&producer, &writable).await {
            panic!(
                "{mechanism:?}: writing {writable} failed: {e}; errors: {:?}",
                errors.0.lock().expect("lock")
            );
        }
        match produce(&producer, &forbidden).await {
            Err(KafkaError::MessageProduction(RDKafkaErrorCode::TopicAuthorizationFailed)) => {}
            other => {
                panic!("{mechanism:?}: writing {forbidden} gave {other:?}, not an authorization failure")
            }
        }
    }
}

#[tokio::test]
async fn a_wrong_password_is_refused() {
    let mut kafka = TestKafka::new().await;
    let writable = kafka.topic_named(&format!("secured-test-writable-{}", kafka.name("p")), 1).await;
    let (producer, errors) =
        producer(&args(SaslMechanism::ScramSha512, Secret::new("not the password"), secured::ca_file()));
    let sent = tokio::spawn(async move { produce(&producer, &writable).await });
    errors.wait_for("Authentication failed").await;
    sent.abort();
}

#[tokio::test]
async fn a_broker_certificate_from_another_ca_is_refused() {
    let mut kafka = TestKafka::new().await;
    let writable = kafka.topic_named(&format!("secured-test-writable-{}", kafka.name("c")), 1).await;
    let (producer, errors) =
        producer(&args(SaslMechanism::ScramSha512, password(), secured::other_ca_file()));
    let sent = tokio::spawn(async move { produce(&producer, &writable).await });
    errors.wait_for("certificate verify failed").await;
    sent.abort();
}
