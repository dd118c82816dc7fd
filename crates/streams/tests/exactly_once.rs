//! The runner against the real Kafka of `make up`: a windowed count per key, halted
//! mid-stream as a crash would (its open transaction never committed), then run again
//! by a new instance with the same transactional id, restoring from the changelog:
//! read with `read_committed`, every window's final count is there once and exact.
//! And the same topology at least once (no transactions): exact when nothing fails, and
//! a delivery that fails ends the run before the offsets are committed.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use orders_streams::{
    Change, ChangelogRecord, Guarantee, Input, Output, RunError, Settings, Stop, Topology, WindowStore,
    Windows, run,
};
use orders_testkit::kafka::TestKafka;
use rdkafka::{
    Message as _,
    consumer::{BaseConsumer, Consumer as _},
    producer::{FutureProducer, FutureRecord, Producer as _},
};

const PARTITIONS: i32 = 2;
const RECORDS: usize = 6_000;
const KEYS: usize = 40;

/// Counts records per key in windows of 1 s (grace 500 ms); emits final counts only,
/// to `output`, keyed `key@window-start`.
struct Count {
    output: String,
}

impl Count {
    fn windows() -> Windows {
        Windows::tumbling(Duration::from_secs(1)).unwrap().with_grace(Duration::from_millis(500))
    }
}

const STREAM_TIME: &[u8] = b"\0stream-time";

impl Topology for Count {
    type Task = WindowStore<String, u64>;

    fn new_task(&self, _topic: &str, _partition: i32) -> Self::Task {
        WindowStore::new(Self::windows(), Duration::ZERO)
    }

    fn restore(&self, task: &mut Self::Task, key: &[u8], value: Option<&[u8]>) -> Result<(), String> {
        let text = |bytes: &[u8]| String::from_utf8(bytes.to_vec()).map_err(|e| e.to_string());
        let number = |bytes: &[u8]| text(bytes)?.parse::<i64>().map_err(|e| e.to_string());
        if key == STREAM_TIME {
            task.restore(Change::StreamTime(number(value.ok_or("no stream time")?)?));
            return Ok(());
        }
        let key = text(key)?;
        let (name, start) = key.rsplit_once('@').ok_or("no window in the key")?;
        let start: i64 = start.parse().map_err(|e: std::num::ParseIntError| e.to_string())?;
        let window = orders_streams::Window { start_ms: start, end_ms: start + 1000 };
        let value = value.map(number).transpose()?.map(|v| v.unsigned_abs());
        task.restore(Change::Window { key: name.to_string(), window, value });
        Ok(())
    }

    fn process(&self, task: &mut Self::Task, record: Input<'_>, _out: &mut Vec<Output>) {
        let key = String::from_utf8_lossy(record.key.unwrap_or_default()).into_owned();
        let Some(ts) = record.value.and_then(|v| std::str::from_utf8(v).ok()?.parse::<i64>().ok()) else {
            return;
        };
        task.add(&key, ts, |count| *count += 1);
    }

    fn punctuate(&self, task: &mut Self::Task, _now_ms: i64, out: &mut Vec<Output>) {
        for closed in task.close() {
            out.push(Output {
                topic: self.output.clone(),
                key: format!("{}@{}", closed.key, closed.window.start_ms).into_bytes(),
                value: Some(closed.value.to_string().into_bytes()),
                headers: Vec::new(),
            });
        }
    }

    fn changelog(&self, task: &mut Self::Task) -> Vec<ChangelogRecord> {
        task.take_changes()
            .into_iter()
            .map(|change| match change {
                Change::StreamTime(ts) => (STREAM_TIME.to_vec(), Some(ts.to_string().into_bytes())),
                Change::Window { key, window, value } => (
                    format!("{key}@{}", window.start_ms).into_bytes(),
                    value.map(|v| v.to_string().into_bytes()),
                ),
            })
            .collect()
    }
}

/// Starts a run on a thread of its own.
fn start(
    settings: &Settings,
    output: &str,
) -> (Stop, std::thread::JoinHandle<Result<(), orders_streams::RunError>>) {
    let stop = Stop::new();
    let (settings, output, handle) = (settings.clone(), output.to_string(), stop.clone());
    let thread = std::thread::spawn(move || run(Count { output }, &settings, &handle));
    (stop, thread)
}

/// The topics of one test: an input, its compacted changelog and an output.
struct Topics {
    input: String,
    changelog: String,
    output: String,
}

impl Topics {
    /// `<base>-in`, `<base>-changelog` and `<base>-out` (with `output_config`), of
    /// `partitions` partitions each.
    async fn new(kafka: &mut TestKafka, base: &str, partitions: i32, output_config: &[(&str, &str)]) -> Self {
        let input = kafka.topic(&format!("{base}-in"), partitions).await;
        let changelog = kafka
            .topic_with(&format!("{base}-changelog"), partitions, &[("cleanup.policy", "compact")])
            .await;
        let output = kafka.topic_with(&format!("{base}-out"), partitions, output_config).await;
        Self { input, changelog, output }
    }

    /// The settings of application `app` on them, instance `<app>-0`.
    fn settings(&self, kafka: &TestKafka, app: &str) -> Settings {
        Settings::new(
            kafka.name(app),
            kafka.name(&format!("{app}-0")),
            &[(self.input.as_str(), self.changelog.as_str())],
            kafka.client_config(),
        )
    }
}

/// The count of each window (`key@start`) that `records` (key, timestamp) make.
fn counts_of(records: &[(String, i64)]) -> BTreeMap<String, u64> {
    let mut counts = BTreeMap::new();
    for (key, ts) in records {
        *counts.entry(format!("{key}@{}", ts.div_euclid(1000) * 1000)).or_default() += 1;
    }
    counts
}

/// Receives final counts until every window of `expected` has one; fails after
/// `deadline`, or as soon as `running` (when given) ends.
async fn receive_all(
    reader: &rdkafka::consumer::StreamConsumer,
    seen: &mut BTreeMap<String, Vec<u64>>,
    expected: &BTreeMap<String, u64>,
    deadline: Instant,
    running: Option<&std::thread::JoinHandle<Result<(), RunError>>>,
) {
    while expected.keys().any(|key| !seen.contains_key(key)) {
        assert!(!running.is_some_and(|run| run.is_finished()), "the run ended before every window was final");
        assert!(Instant::now() < deadline, "{} of {} windows final", seen.len(), expected.len());
        receive(reader, seen, Duration::from_secs(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_mid_stream_neither_loses_nor_doubles_a_count() {
    if let Ok(filter) = std::env::var("TEST_LOG") {
        let _ = tracing_subscriber::fmt().with_env_filter(filter).with_test_writer().try_init();
    }
    let mut kafka = TestKafka::new().await;
    let topics = Topics::new(&mut kafka, "counts", PARTITIONS, &[]).await;
    let (input, output) = (&topics.input, &topics.output);

    // Timestamps rise by 2 ms per record with a jitter of up to 300 ms back (under
    // the grace), then a record per partition far ahead closes every window.
    let records: Vec<(String, i64)> = (0..RECORDS)
        .map(|i| (format!("key-{}", i % KEYS), i as i64 * 2 - ((i * 7919) % 150) as i64 * 2))
        .collect();
    let expected = counts_of(&records);
    // Two thirds before the first instance, the rest after its crash.
    let (before, after) = records.split_at(RECORDS * 2 / 3);
    produce(&kafka, input, before).await;
    let mut settings = topics.settings(&kafka, "counts");
    settings.max_records_per_transaction = 500;

    // The first instance: halted once some outputs are committed.
    let reader = kafka.consumer_from_start(output, PARTITIONS);
    let (stop, first) = start(&settings, output);
    let mut seen: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    while seen.len() < 20 {
        assert!(Instant::now() < deadline, "no output from the first instance");
        receive(&reader, &mut seen, Duration::from_secs(5)).await;
    }
    stop.halt();
    first.join().unwrap().unwrap();

    // The rest, and far-ahead records that close every window; then the second
    // instance, with the same transactional id.
    produce(&kafka, input, after).await;
    let producer: FutureProducer = kafka.client_config().set("enable.idempotence", "true").create().unwrap();
    for partition in 0..PARTITIONS {
        let flush = FutureRecord::to(input).key("flush").payload("1000000000").partition(partition);
        producer.send(flush, Duration::from_secs(30)).await.map_err(|(e, _)| e).unwrap();
    }
    let (stop, second) = start(&settings, output);
    receive_all(&reader, &mut seen, &expected, deadline + Duration::from_secs(60), None).await;
    stop.stop();
    second.join().unwrap().unwrap();
    drop(tokio::task::spawn_blocking(move || drop(reader)));

    assert_finals_once(seen, &expected);
}

/// Every window emitted final exactly once, with the expected count.
fn assert_finals_once(seen: BTreeMap<String, Vec<u64>>, expected: &BTreeMap<String, u64>) {
    let doubled: Vec<_> = seen.iter().filter(|(_, counts)| counts.len() > 1).collect();
    assert!(doubled.is_empty(), "windows emitted final more than once: {doubled:?}");
    let finals: BTreeMap<String, u64> = seen.into_iter().map(|(key, counts)| (key, counts[0])).collect();
    assert_eq!(&finals, expected);
}

async fn receive(
    reader: &rdkafka::consumer::StreamConsumer,
    seen: &mut BTreeMap<String, Vec<u64>>,
    within: Duration,
) {
    let Ok(message) = tokio::time::timeout(within, reader.recv()).await else { return };
    let message = message.unwrap();
    let key = String::from_utf8_lossy(message.key().unwrap_or_default()).into_owned();
    let count = std::str::from_utf8(message.payload().unwrap_or_default()).unwrap().parse().unwrap();
    seen.entry(key).or_default().push(count);
}

/// Produces `(key, timestamp)` records to `topic`, each acknowledged.
async fn produce(kafka: &TestKafka, topic: &str, records: &[(String, i64)]) {
    let producer: FutureProducer = kafka.client_config().set("enable.idempotence", "true").create().unwrap();
    let values: Vec<String> = records.iter().map(|(_, ts)| ts.to_string()).collect();
    let sends = records.iter().zip(&values).map(|((key, _), value)| {
        producer.send(FutureRecord::to(topic).key(key).payload(value), Duration::from_secs(30))
    });
    for sent in futures::future::join_all(sends).await {
        sent.map_err(|(e, _)| e).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_least_once_counts_exactly_when_nothing_fails() {
    let mut kafka = TestKafka::new().await;
    let topics = Topics::new(&mut kafka, "alo", PARTITIONS, &[]).await;
    let mut records: Vec<(String, i64)> =
        (0..2_000_i64).map(|i| (format!("key-{}", i % 10), i * 3)).collect();
    let expected = counts_of(&records);
    // Far ahead, one per key (so one per partition at least): every window closes.
    records.extend((0..10).map(|k| (format!("key-{k}"), 1_000_000_000)));
    produce(&kafka, &topics.input, &records).await;
    let settings = Settings { guarantee: Guarantee::AtLeastOnce, ..topics.settings(&kafka, "alo") };
    let reader = kafka.consumer_from_start(&topics.output, PARTITIONS);
    let (stop, running) = start(&settings, &topics.output);
    let mut seen: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    receive_all(&reader, &mut seen, &expected, deadline, Some(&running)).await;
    stop.stop();
    running.join().unwrap().unwrap();
    drop(tokio::task::spawn_blocking(move || drop(reader)));
    assert_finals_once(seen, &expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_least_once_ends_the_run_before_committing_offsets_when_a_delivery_fails() {
    let mut kafka = TestKafka::new().await;
    // The broker refuses the output: its key alone is over the topic's limit.
    let topics = Topics::new(&mut kafka, "lost", 1, &[("max.message.bytes", "1000")]).await;
    let key = "k".repeat(2_000);
    produce(&kafka, &topics.input, &[(key.clone(), 0), (key, 1_000_000_000)]).await;
    let settings = Settings { guarantee: Guarantee::AtLeastOnce, ..topics.settings(&kafka, "lost") };
    let (group, input) = (settings.application_id.clone(), topics.input.clone());
    let (_stop, running) = start(&settings, &topics.output);
    let deadline = Instant::now() + Duration::from_secs(120);
    while !running.is_finished() {
        assert!(Instant::now() < deadline, "the run went on after a failed delivery");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let error = running.join().unwrap().expect_err("a failed delivery ends the run");
    assert!(matches!(error, RunError::Kafka(_)), "{error}");
    assert!(error.to_string().to_lowercase().contains("too large"), "{error}");
    let committed = tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = kafka.client_config().set("group.id", &group).create().unwrap();
        let mut partitions = rdkafka::TopicPartitionList::new();
        partitions.add_partition(&input, 0);
        consumer.committed_offsets(partitions, Duration::from_secs(30)).unwrap()
    })
    .await
    .unwrap();
    // The output is lost when the second record (offset 1) closes the window: the first
    // may have been committed on its own, the second must not be.
    let offset = committed.elements()[0].offset();
    assert!(
        matches!(offset, rdkafka::Offset::Invalid | rdkafka::Offset::Offset(1)),
        "no offset committed past the record whose output was lost: {offset:?}"
    );
}

/// [`Count`] whose restore waits at its first changelog record until the test opens the
/// gate: a restore held in progress.
struct Gated {
    count: Count,
    gate: std::sync::Arc<(std::sync::Mutex<bool>, std::sync::Condvar)>,
}

impl Topology for Gated {
    type Task = <Count as Topology>::Task;

    fn new_task(&self, topic: &str, partition: i32) -> Self::Task {
        self.count.new_task(topic, partition)
    }

    fn restore(&self, task: &mut Self::Task, key: &[u8], value: Option<&[u8]>) -> Result<(), String> {
        let (open, opened) = &*self.gate;
        let guard = open.lock().unwrap();
        drop(opened.wait_while(guard, |open| !*open).unwrap());
        self.count.restore(task, key, value)
    }

    fn process(&self, task: &mut Self::Task, record: Input<'_>, out: &mut Vec<Output>) {
        self.count.process(task, record, out);
    }

    fn punctuate(&self, task: &mut Self::Task, now_ms: i64, out: &mut Vec<Output>) {
        self.count.punctuate(task, now_ms, out);
    }

    fn changelog(&self, task: &mut Self::Task) -> Vec<ChangelogRecord> {
        self.count.changelog(task)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_counts_as_restoring_until_its_changelog_is_read() {
    let mut kafka = TestKafka::new().await;
    let topics = Topics::new(&mut kafka, "gated", 1, &[]).await;
    produce(&kafka, &topics.changelog, &[("key-0@0".to_string(), 3)]).await;
    let settings = topics.settings(&kafka, "gated");
    let output = topics.output.clone();
    let gate = std::sync::Arc::new((std::sync::Mutex::new(false), std::sync::Condvar::new()));
    let stop = Stop::new();
    let running = std::thread::spawn({
        let (stop, gate) = (stop.clone(), std::sync::Arc::clone(&gate));
        move || run(Gated { count: Count { output }, gate }, &settings, &stop)
    });
    let wait_for = async |restoring: usize| {
        let deadline = Instant::now() + Duration::from_secs(60);
        while stop.tasks_restoring() != restoring {
            assert!(Instant::now() < deadline, "{} tasks restoring, not {restoring}", stop.tasks_restoring());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    // The run's "no assignment yet" and its one task, held at the gate.
    wait_for(2).await;
    *gate.0.lock().unwrap() = true;
    gate.1.notify_all();
    wait_for(0).await;
    stop.stop();
    tokio::task::spawn_blocking(move || running.join()).await.unwrap().unwrap().unwrap();
}

/// Fenced mid-stream (a producer with the runner's transactional id initialised, as a
/// second instance with the same id would): the runner recreates its producer and
/// consumer, resumes from the committed offsets, and every window's final count is
/// there once and exact; the run goes on until stopped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fenced_producer_is_recreated_and_nothing_is_lost_or_doubled() {
    if let Ok(filter) = std::env::var("TEST_LOG") {
        let _ = tracing_subscriber::fmt().with_env_filter(filter).with_test_writer().try_init();
    }
    let mut kafka = TestKafka::new().await;
    let topics = Topics::new(&mut kafka, "fenced", PARTITIONS, &[]).await;
    let (input, output) = (&topics.input, &topics.output);
    let records: Vec<(String, i64)> = (0..3_000_i64).map(|i| (format!("key-{}", i % 20), i * 2)).collect();
    let expected = counts_of(&records);
    let (before, after) = records.split_at(2_000);
    produce(&kafka, input, before).await;
    let mut settings = topics.settings(&kafka, "fenced");
    settings.max_records_per_transaction = 200;
    let reader = kafka.consumer_from_start(output, PARTITIONS);
    let (stop, running) = start(&settings, output);
    let mut seen: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    while seen.len() < 5 {
        assert!(Instant::now() < deadline, "no output before the fence");
        receive(&reader, &mut seen, Duration::from_secs(5)).await;
    }

    let fencer: FutureProducer =
        kafka.client_config().set("transactional.id", &settings.transactional_id).create().unwrap();
    let fencer = tokio::task::spawn_blocking(move || {
        fencer.init_transactions(Duration::from_secs(30)).unwrap();
        fencer
    })
    .await
    .unwrap();
    let mut rest = after.to_vec();
    rest.extend((0..20).map(|k| (format!("key-{k}"), 1_000_000_000)));
    produce(&kafka, input, &rest).await;
    receive_all(&reader, &mut seen, &expected, deadline + Duration::from_secs(60), Some(&running)).await;
    stop.stop();
    tokio::task::spawn_blocking(move || running.join()).await.unwrap().unwrap().unwrap();
    drop(tokio::task::spawn_blocking(move || drop((reader, fencer))));

    assert_finals_once(seen, &expected);
}

/// Readiness: a run counts as restoring until its first assignment is known and
/// restored, and a member given no partition (more members than partitions) still
/// becomes ready.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_without_partitions_is_not_restoring_once_assigned() {
    let mut kafka = TestKafka::new().await;
    let topics = Topics::new(&mut kafka, "idle", 1, &[]).await;
    let settings = |instance: &str| Settings {
        transactional_id: kafka.name(instance),
        ..topics.settings(&kafka, "idle")
    };
    let output = &topics.output;
    let wait_for_zero = async |stop: &Stop, who: &str| {
        let deadline = Instant::now() + Duration::from_secs(90);
        while stop.tasks_restoring() != 0 {
            assert!(Instant::now() < deadline, "{who}: {} tasks restoring", stop.tasks_restoring());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    let (first, first_run) = start(&settings("idle-1"), output);
    wait_for_zero(&first, "the first member").await;
    let (second, second_run) = start(&settings("idle-2"), output);
    wait_for_zero(&second, "the member without partitions").await;
    for (stop, run) in [(first, first_run), (second, second_run)] {
        stop.stop();
        tokio::task::spawn_blocking(move || run.join()).await.unwrap().unwrap().unwrap();
    }
}

/// The brokers away for longer than a commit waits (30 s) mid-stream: the commit in
/// flight times out (a retriable error), and the run rejoins once they are back instead
/// of ending, with nothing lost or doubled. (40 s is less than the transaction's own
/// timeout, 60 s: the broker does not abort it; the new producer's
/// `init_transactions` does.) (`make chaos` found the aggregator
/// ending there when it SIGKILLed the broker.) The run reaches the broker through a
/// proxy that the test cuts for 40 s; the test's own clients go straight to it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_outage_past_the_commit_timeout_is_ridden_out() {
    if let Ok(filter) = std::env::var("TEST_LOG") {
        let _ = tracing_subscriber::fmt().with_env_filter(filter).with_test_writer().try_init();
    }
    let mut kafka = TestKafka::new().await;
    let topics = Topics::new(&mut kafka, "outage", PARTITIONS, &[]).await;
    let (input, output) = (&topics.input, &topics.output);
    let records: Vec<(String, i64)> = (0..6_000_i64).map(|i| (format!("key-{}", i % 20), i * 2)).collect();
    let expected = counts_of(&records);
    produce(&kafka, input, &records).await;
    let broker = orders_testkit::kafka::bootstrap_servers().parse().unwrap();
    let proxy = orders_testkit::proxy::TcpProxy::kafka(broker).await;
    let mut settings = topics.settings(&kafka, "outage");
    settings.config.set("bootstrap.servers", proxy.addr().to_string());
    // Many small transactions: the cut finds one open.
    settings.max_records_per_transaction = 50;
    let reader = kafka.consumer_from_start(output, PARTITIONS);
    let (stop, running) = start(&settings, output);
    let mut seen: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    while seen.is_empty() {
        assert!(Instant::now() < deadline, "no output before the outage");
        receive(&reader, &mut seen, Duration::from_secs(5)).await;
    }

    proxy.cut();
    let outage = Instant::now() + Duration::from_secs(40);
    while Instant::now() < outage {
        assert!(!running.is_finished(), "the run ended during the outage");
        receive(&reader, &mut seen, Duration::from_millis(500)).await;
    }
    proxy.restore().await;
    // Records after the outage close the last windows.
    let late: Vec<(String, i64)> = (0..20).map(|k| (format!("key-{k}"), 1_000_000_000)).collect();
    produce(&kafka, input, &late).await;
    receive_all(&reader, &mut seen, &expected, Instant::now() + Duration::from_secs(180), Some(&running))
        .await;
    stop.stop();
    tokio::task::spawn_blocking(move || running.join()).await.unwrap().unwrap().unwrap();
    drop(tokio::task::spawn_blocking(move || drop(reader)));

    seen.retain(|key, _| !key.ends_with("@1000000000"));
    assert_finals_once(seen, &expected);
}
