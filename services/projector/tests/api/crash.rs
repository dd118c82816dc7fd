//! The projector binary killed with SIGKILL in the middle of its work, then started
//! again, ends with exactly the read model of an uninterrupted projection.

use std::time::Duration;

use nix::sys::signal::Signal;
use orders_testkit::process::ServiceProcess;

use crate::helpers::{Api, Expected, World, interleave, reference_dump, workload};

const EXE: &str = env!("CARGO_BIN_EXE_projector");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_mid_batch_and_restarted_it_converges_to_the_same_views() {
    let mut world = World::new().await;
    let orders = workload(1500, 40);
    world.produce(&interleave(&orders)).await;
    let env: Vec<(String, String)> = [
        ("DATABASE_URL", world.db.url().to_string()),
        ("ORDERS_TOPIC", world.topic.clone()),
        ("DEAD_LETTER_TOPIC", world.dead_letters.clone()),
        ("CONSUMER_GROUP", world.kafka.name("crash")),
        ("KAFKA_BOOTSTRAP_SERVERS", orders_testkit::kafka::bootstrap_servers()),
        // Small batches, one at a time: many transactions, so the kill lands inside one.
        ("BATCH_SIZE", "60".to_string()),
        ("APPLY_CONNECTIONS", "1".to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();

    let mut first = ServiceProcess::start(EXE, "HTTP_ADDR", &env);
    first.wait_for("/healthz", 200, Duration::from_secs(20)).await;
    while world.applied().await == 0 {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    first.signal(Signal::SIGKILL);
    first.wait_exit(Duration::from_secs(10)).await;
    let at_kill = world.applied().await;
    assert!(at_kill < world.produced(), "the projector finished before it was killed; nothing was tested");

    let mut second = ServiceProcess::start(EXE, "HTTP_ADDR", &env);
    second.wait_for("/readyz", 200, Duration::from_secs(30)).await;
    world.wait_caught_up().await;

    let api = Api { base: format!("http://{}", second.addr()), http: reqwest::Client::new() };
    Expected::new(&orders).check(&api).await;
    assert_eq!(world.dump().await, reference_dump(&world).await);
}
