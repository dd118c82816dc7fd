//! Fresh Kafka topics and consumer groups per test.

use std::time::Duration;

use rdkafka::{
    ClientConfig,
    admin::{AdminClient, AdminOptions, NewTopic, TopicReplication},
    client::DefaultClientContext,
    consumer::StreamConsumer,
};

use crate::{START_HINT, run_detached_cleanup, unique_suffix};

/// The brokers the tests use.
pub fn bootstrap_servers() -> String {
    std::env::var("TEST_KAFKA_BOOTSTRAP_SERVERS").unwrap_or_else(|_| "127.0.0.1:9092".into())
}

/// A test's own namespace of topics and groups; deletes its topics when dropped.
#[derive(Debug)]
pub struct TestKafka {
    suffix: String,
    admin: AdminClient<DefaultClientContext>,
    topics: Vec<String>,
}

impl TestKafka {
    /// Connects to the brokers.
    ///
    /// # Panics
    /// When no broker answers, with a message naming `make up`.
    pub async fn new() -> Self {
        let admin: AdminClient<DefaultClientContext> = Self::base_config()
            .create()
            .unwrap_or_else(|e| panic!("cannot create a Kafka admin client: {e}"));
        let servers = bootstrap_servers();
        let reachable = {
            let metadata = admin.inner().fetch_metadata(None, Duration::from_secs(10));
            metadata.map(|m| !m.brokers().is_empty())
        };
        match reachable {
            Ok(true) => {}
            Ok(false) => panic!("Kafka at {servers} reports no brokers; {START_HINT}"),
            Err(e) => panic!("cannot reach Kafka at {servers}: {e}; {START_HINT}"),
        }
        Self { suffix: unique_suffix(), admin, topics: Vec::new() }
    }

    fn base_config() -> ClientConfig {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", bootstrap_servers());
        config
    }

    /// Client configuration pointing at the test brokers.
    pub fn client_config(&self) -> ClientConfig {
        Self::base_config()
    }

    /// A unique name derived from `base` (for groups, transactional ids...).
    pub fn name(&self, base: &str) -> String {
        format!("{base}-{}", self.suffix)
    }

    /// Creates a topic named after `base` with `partitions` partitions; returns its name.
    pub async fn topic(&mut self, base: &str, partitions: i32) -> String {
        self.topic_with(base, partitions, &[]).await
    }

    /// Creates a topic with topic-level settings such as `("cleanup.policy", "compact")`.
    pub async fn topic_with(&mut self, base: &str, partitions: i32, configs: &[(&str, &str)]) -> String {
        let name = self.name(base);
        self.create(name, partitions, configs).await
    }

    /// Creates a topic of exactly this name (make it unique, for example from
    /// [`name`](Self::name)); deleted with the others.
    pub async fn topic_named(&mut self, name: &str, partitions: i32) -> String {
        self.create(name.to_string(), partitions, &[]).await
    }

    async fn create(&mut self, name: String, partitions: i32, configs: &[(&str, &str)]) -> String {
        let mut topic = NewTopic::new(&name, partitions, TopicReplication::Fixed(1));
        for (k, v) in configs {
            topic = topic.set(k, v);
        }
        let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
        let results = self
            .admin
            .create_topics([&topic], &options)
            .await
            .unwrap_or_else(|e| panic!("cannot create topic {name}: {e}; {START_HINT}"));
        for result in results {
            if let Err((topic, code)) = result {
                panic!("cannot create topic {topic}: {code}");
            }
        }
        self.topics.push(name.clone());
        self.wait_until_served(&name, partitions).await;
        name
    }

    /// Waits until the broker's metadata lists `name` with a leader for each of its
    /// `partitions`: the controller answers a creation before the broker serves the
    /// topic, and a test (or a service's readiness probe) that looks too early finds
    /// it missing. Panics, naming the broker's log, when that takes minutes: the
    /// broker is then stuck, and every test after this one would fail less clearly.
    async fn wait_until_served(&self, name: &str, partitions: i32) {
        let deadline = std::time::Instant::now() + Duration::from_secs(120);
        loop {
            let last = match self.admin.inner().fetch_metadata(Some(name), Duration::from_secs(5)) {
                Ok(metadata) => match metadata.topics().iter().find(|t| t.name() == name) {
                    Some(topic) if topic.error().is_some() => format!("topic error {:?}", topic.error()),
                    Some(topic) => {
                        let led = topic
                            .partitions()
                            .iter()
                            .filter(|p| p.leader() >= 0 && p.error().is_none())
                            .count();
                        if led == usize::try_from(partitions).unwrap_or(0) {
                            return;
                        }
                        format!("{led} of {partitions} partitions have a leader")
                    }
                    None => "not in the metadata".to_string(),
                },
                Err(e) => format!("metadata request failed: {e}"),
            };
            assert!(
                std::time::Instant::now() < deadline,
                "topic {name} was created but the broker does not serve it after 120 s ({last}); \
                 the broker's log is .local/kafka/kafka.log"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for TestKafka {
    fn drop(&mut self) {
        if self.topics.is_empty() {
            return;
        }
        let topics = std::mem::take(&mut self.topics);
        run_detached_cleanup(async move {
            if let Ok(admin) = Self::base_config().create::<AdminClient<DefaultClientContext>>() {
                let names: Vec<&str> = topics.iter().map(String::as_str).collect();
                let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(5)));
                let _ = admin.delete_topics(&names, &options).await;
            }
        });
    }
}

impl TestKafka {
    /// A consumer reading every partition of `topic` from the beginning, without a
    /// group (assigned, not subscribed, so no rebalance delays).
    pub fn consumer_from_start(&self, topic: &str, partitions: i32) -> StreamConsumer {
        use rdkafka::{Offset, TopicPartitionList, consumer::Consumer};
        let consumer: StreamConsumer = Self::base_config()
            .set("group.id", self.name("reader"))
            .set("enable.auto.commit", "false")
            .create()
            .unwrap_or_else(|e| panic!("cannot create a consumer: {e}"));
        let mut assignment = TopicPartitionList::new();
        for partition in 0..partitions {
            assignment
                .add_partition_offset(topic, partition, Offset::Beginning)
                .unwrap_or_else(|e| panic!("bad assignment: {e}"));
        }
        consumer.assign(&assignment).unwrap_or_else(|e| panic!("cannot assign {topic}: {e}"));
        drop(assignment);
        consumer
    }
}
