//! Service binaries as child processes, and the checks every binary must pass.
//!
//! A service's `tests/lifecycle.rs` is a [`BinarySpec`] (which variables of its own its
//! `--help` must list, what it depends on) and one [`lifecycle_tests!`](crate::lifecycle_tests)
//! line that turns it into the checks every binary must pass; the `assert_*` functions
//! behind them are public for checks of a service's own. Each check gives the process
//! its own PostgreSQL database and Kafka topics.

use std::{
    net::{SocketAddr, TcpListener},
    path::PathBuf,
    process::{ExitStatus, Stdio},
    time::{Duration, Instant},
};

use nix::{sys::signal::Signal, unistd::Pid};
use tokio::process::{Child, Command};

use crate::{kafka::TestKafka, postgres::TestDatabase, unique_suffix};

/// What the lifecycle checks need to know about a service binary.
#[derive(Debug, Clone, Copy)]
pub struct BinarySpec {
    /// Path of the binary, `env!("CARGO_BIN_EXE_<name>")`.
    pub exe: &'static str,
    /// The variable holding its HTTP address (`HTTP_ADDR` or `ADMIN_ADDR`).
    pub addr_var: &'static str,
    /// Variables of its own `--help` must list (besides [`COMMON_VARIABLES`], the
    /// address, the topic variables and, with PostgreSQL, [`POSTGRES_VARIABLES`]).
    pub variables: &'static [&'static str],
    /// The readiness probes that fail while its PostgreSQL is unreachable; empty when
    /// it takes no `DATABASE_URL`.
    pub postgres_probes: &'static [&'static str],
    /// The readiness probes that fail while Kafka is unreachable, in `/readyz` order:
    /// `kafka`, and any that wait for the brokers (the stats aggregator's `restore`,
    /// which waits for its first assignment).
    pub kafka_probes: &'static [&'static str],
    /// Variables naming the Kafka topics it uses; each gets a fresh topic.
    pub topic_vars: &'static [&'static str],
    /// Internal topics named after a prefix variable (the stats aggregator's
    /// `APPLICATION_ID`): the variable and the topics' suffixes. The variable gets a
    /// fresh name and each `<prefix>-<suffix>` topic is created.
    pub prefixed_topics: Option<(&'static str, &'static [&'static str])>,
}

/// Variables every service binary takes (logging, tracing, shutdown, HTTP, Kafka).
pub const COMMON_VARIABLES: &[&str] = &[
    "RUST_LOG",
    "LOG_FORMAT",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "SHUTDOWN_TIMEOUT",
    "HTTP_REQUEST_TIMEOUT",
    "HTTP_CLIENT_TIMEOUT",
    "HTTP_KEEP_ALIVE",
    "ADMIN_TOKEN_FILE",
    "KAFKA_BOOTSTRAP_SERVERS",
    "KAFKA_SECURITY_PROTOCOL",
    "KAFKA_SASL_MECHANISM",
    "KAFKA_SASL_USERNAME",
    "KAFKA_SASL_PASSWORD_FILE",
    "KAFKA_SSL_CA_LOCATION",
    "KAFKA_SSL_CERTIFICATE_LOCATION",
    "KAFKA_SSL_KEY_LOCATION",
    "KAFKA_SSL_KEY_PASSWORD_FILE",
    "KAFKA_PROPERTIES",
];

/// Variables every binary with a PostgreSQL database takes.
pub const POSTGRES_VARIABLES: &[&str] = &[
    "DATABASE_URL",
    "DATABASE_POOL_SIZE",
    "DATABASE_STATEMENT_TIMEOUT",
    "DATABASE_LOCK_TIMEOUT",
    "DATABASE_IDLE_IN_TRANSACTION_TIMEOUT",
];

impl BinarySpec {
    /// Whether it takes a `DATABASE_URL`.
    pub fn uses_postgres(&self) -> bool {
        !self.postgres_probes.is_empty()
    }
}

/// The checks every service binary must pass, as `#[tokio::test]`s named after what
/// they check: `--help` lists every variable; it becomes ready and SIGTERM stops it
/// with 0; it is live but not ready while Kafka is unreachable, while its first topic
/// does not exist and (with PostgreSQL) while its database is unreachable; a
/// malformed address stops it with status 2.
///
/// ```text
/// const SPEC: BinarySpec = BinarySpec { exe: env!("CARGO_BIN_EXE_my-service"), .. };
/// orders_testkit::lifecycle_tests!(SPEC);
/// ```
#[macro_export]
macro_rules! lifecycle_tests {
    ($spec:expr) => {
        #[::tokio::test]
        async fn help_lists_every_variable() {
            $crate::process::assert_help_lists_variables(&$spec).await;
        }

        #[::tokio::test]
        async fn becomes_ready_and_stops_cleanly_on_sigterm() {
            $crate::process::assert_ready_then_clean_exit(&$spec).await;
        }

        #[::tokio::test]
        async fn is_not_ready_while_kafka_is_unreachable() {
            $crate::process::assert_not_ready_when(
                &$spec,
                "KAFKA_BOOTSTRAP_SERVERS",
                "127.0.0.1:1",
                $spec.kafka_probes,
            )
            .await;
        }

        #[::tokio::test]
        async fn is_not_ready_when_a_topic_does_not_exist() {
            let var = $spec.topic_vars.first().expect("the spec names at least one topic variable");
            $crate::process::assert_not_ready_when(&$spec, var, "no-such-topic", &["kafka"]).await;
        }

        #[::tokio::test]
        async fn is_not_ready_while_postgres_is_unreachable() {
            if $spec.uses_postgres() {
                $crate::process::assert_not_ready_when(
                    &$spec,
                    "DATABASE_URL",
                    "postgres://postgres@127.0.0.1:1/nowhere",
                    $spec.postgres_probes,
                )
                .await;
            } else {
                $crate::process::assert_help_omits(&$spec, "DATABASE_URL").await;
            }
        }

        #[::tokio::test]
        async fn rejects_a_malformed_address() {
            $crate::process::assert_rejects_bad_value(&$spec, $spec.addr_var, "not-an-address").await;
        }
    };
}

/// A running service binary; killed when dropped.
#[derive(Debug)]
pub struct ServiceProcess {
    child: Child,
    addr: SocketAddr,
    log: PathBuf,
    http: reqwest::Client,
}

/// A free port on the loopback interface (free when this returns), never one this
/// process handed out before: the kernel may give the same free port to two binds in a
/// row, and two services of one test started together then raced for it (the loser
/// exited, and its test talked to the winner: seen in a fresh-clone CI run, where the
/// order processor's crash test found no outbox table in its database).
pub fn free_addr() -> SocketAddr {
    static HANDED_OUT: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    loop {
        let listener =
            TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("cannot bind a free port: {e}"));
        let addr = listener.local_addr().unwrap_or_else(|e| panic!("no local address: {e}"));
        let mut handed_out = HANDED_OUT.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if !handed_out.contains(&addr.port()) {
            handed_out.push(addr.port());
            return addr;
        }
    }
}

impl ServiceProcess {
    /// Starts `exe` with `envs`, its HTTP server on a free port given through `addr_var`,
    /// logs (JSON) in a temporary file shown when a check fails. Its public API asks for
    /// no token (`AUTH=off`) unless `envs` say otherwise.
    pub fn start(exe: &str, addr_var: &str, envs: &[(String, String)]) -> Self {
        let addr = free_addr();
        let name = std::path::Path::new(exe).file_name().map(|n| n.to_string_lossy().into_owned());
        let log = std::env::temp_dir().join(format!("{}-{}.log", name.unwrap_or_default(), unique_suffix()));
        let out =
            std::fs::File::create(&log).unwrap_or_else(|e| panic!("cannot create {}: {e}", log.display()));
        let err = out.try_clone().unwrap_or_else(|e| panic!("cannot clone a file handle: {e}"));
        let child = Command::new(exe)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("LOG_FORMAT", "json")
            .env("RUST_LOG", "info")
            .env("AUTH", "off")
            .env(addr_var, addr.to_string())
            .envs(envs.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {exe}: {e}"));
        Self { child, addr, log, http: reqwest::Client::new() }
    }

    /// The address of its HTTP server.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// What it has logged so far.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `GET path`: the status and body, or `None` when nothing answers.
    pub async fn get(&self, path: &str) -> Option<(u16, String)> {
        let response = self
            .http
            .get(format!("http://{}{path}", self.addr))
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .ok()?;
        let status = response.status().as_u16();
        Some((status, response.text().await.unwrap_or_default()))
    }

    /// Polls `GET path` until it answers `status`; returns the body.
    ///
    /// # Panics
    /// After `within`, with the last answer and the process's logs.
    pub async fn wait_for(&mut self, path: &str, status: u16, within: Duration) -> String {
        let start = Instant::now();
        let mut last = None;
        while start.elapsed() < within {
            if let Ok(Some(exit)) = self.child.try_wait() {
                panic!("the service exited with {exit} while waiting for {path}; logs:\n{}", self.logs());
            }
            last = self.get(path).await;
            if let Some((code, body)) = &last
                && *code == status
            {
                return body.clone();
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!(
            "GET {path} did not answer {status} within {within:?}; last answer {last:?}; logs:\n{}",
            self.logs()
        )
    }

    /// Sends `signal` to the process.
    pub fn signal(&self, signal: Signal) {
        let pid = self.child.id().unwrap_or_else(|| panic!("the service has already exited"));
        let pid = i32::try_from(pid).unwrap_or_else(|_| panic!("pid {pid} out of range"));
        nix::sys::signal::kill(Pid::from_raw(pid), signal).unwrap_or_else(|e| panic!("cannot signal: {e}"));
    }

    /// Waits for the process to exit.
    ///
    /// # Panics
    /// When it is still running after `within`.
    pub async fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        match tokio::time::timeout(within, self.child.wait()).await {
            Ok(Ok(status)) => status,
            Ok(Err(e)) => panic!("cannot wait for the service: {e}"),
            Err(_) => panic!("the service did not exit within {within:?}; logs:\n{}", self.logs()),
        }
    }
}

impl Drop for ServiceProcess {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        let _ = std::fs::remove_file(&self.log);
    }
}

/// Polls `GET http://{addr}/readyz` every 50 ms until it answers 200.
///
/// # Panics
/// After `within`, naming `what` did not become ready.
pub async fn wait_until_ready(addr: SocketAddr, within: Duration, what: &str) {
    let http = reqwest::Client::new();
    let deadline = Instant::now() + within;
    let mut last = None;
    while Instant::now() < deadline {
        if let Ok(response) = http.get(format!("http://{addr}/readyz")).send().await {
            if response.status() == 200 {
                return;
            }
            last = response.text().await.ok();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{what} did not become ready within {within:?}; last /readyz: {last:?}");
}

/// A test world for one run of a binary: its own database and topics, and the
/// environment pointing at them.
#[derive(Debug)]
pub struct World {
    /// The variables to start the binary with.
    pub env: Vec<(String, String)>,
    _database: Option<TestDatabase>,
    _kafka: TestKafka,
}

impl World {
    /// Creates the database and topics `spec` needs.
    pub async fn for_binary(spec: &BinarySpec) -> Self {
        let mut env = vec![("KAFKA_BOOTSTRAP_SERVERS".to_string(), crate::kafka::bootstrap_servers())];
        let database = if spec.uses_postgres() {
            let db = TestDatabase::create().await;
            env.push(("DATABASE_URL".into(), db.url().to_string()));
            Some(db)
        } else {
            None
        };
        let mut kafka = TestKafka::new().await;
        for var in spec.topic_vars {
            let topic = kafka.topic(&var.to_lowercase().replace('_', "-"), 2).await;
            env.push(((*var).to_string(), topic));
        }
        if let Some((var, suffixes)) = spec.prefixed_topics {
            let prefix = kafka.name("app");
            for suffix in suffixes {
                kafka.topic_named(&format!("{prefix}-{suffix}"), 2).await;
            }
            env.push((var.to_string(), prefix));
        }
        Self { env, _database: database, _kafka: kafka }
    }

    /// The environment with `var` set to `value`.
    pub fn env_with(&self, var: &str, value: &str) -> Vec<(String, String)> {
        let mut env: Vec<_> = self.env.iter().filter(|(k, _)| k != var).cloned().collect();
        env.push((var.to_string(), value.to_string()));
        env
    }
}

/// The binary's `--help` text (it must exit 0).
async fn help(spec: &BinarySpec) -> String {
    let output = Command::new(spec.exe)
        .arg("--help")
        .output()
        .await
        .unwrap_or_else(|e| panic!("cannot run {} --help: {e}", spec.exe));
    assert!(output.status.success(), "--help failed: {output:?}");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// `--help` exits 0 and names every variable of the spec.
pub async fn assert_help_lists_variables(spec: &BinarySpec) {
    let help = help(spec).await;
    let postgres = if spec.uses_postgres() { POSTGRES_VARIABLES } else { &[] };
    let vars = COMMON_VARIABLES.iter().chain(postgres).chain(spec.variables).chain(spec.topic_vars);
    for var in vars.chain([&spec.addr_var]) {
        // `[env: VAR=<value>]`, or `[env: VAR]` for a setting whose value may be secret.
        let listed = help.contains(&format!("[env: {var}=")) || help.contains(&format!("[env: {var}]"));
        assert!(listed, "--help does not list {var}:\n{help}");
    }
}

/// `--help` does not mention `var` (a dependency the binary does not have).
pub async fn assert_help_omits(spec: &BinarySpec, var: &str) {
    let help = help(spec).await;
    assert!(!help.contains(var), "--help mentions {var}, which the spec says it does not take:\n{help}");
}

/// With its dependencies up, the binary becomes live and ready, then SIGTERM ends it
/// with status 0.
pub async fn assert_ready_then_clean_exit(spec: &BinarySpec) {
    let world = World::for_binary(spec).await;
    let mut service = ServiceProcess::start(spec.exe, spec.addr_var, &world.env);
    service.wait_for("/healthz", 200, Duration::from_secs(20)).await;
    let ready = service.wait_for("/readyz", 200, Duration::from_secs(120)).await;
    assert!(ready.contains("\"ready\""), "{ready}");
    let (status, metrics) =
        service.get("/metrics").await.unwrap_or_else(|| panic!("/metrics does not answer"));
    assert_eq!(status, 200, "{metrics}");
    assert!(
        metrics.contains("http_requests_total{method=\"GET\",route=\"/readyz\",status=\"200\"}"),
        "/metrics must count the requests served: {metrics}"
    );
    service.signal(Signal::SIGTERM);
    let exit = service.wait_exit(Duration::from_secs(15)).await;
    assert_eq!(exit.code(), Some(0), "SIGTERM must end the service cleanly; logs:\n{}", service.logs());
}

/// With `var` set to `value` (an unreachable or wrong dependency), the binary is live
/// but answers 503 on `/readyz`, naming exactly the failing probes; SIGTERM still ends
/// it with 0.
pub async fn assert_not_ready_when(spec: &BinarySpec, var: &str, value: &str, failing_probes: &[&str]) {
    let world = World::for_binary(spec).await;
    let mut service = ServiceProcess::start(spec.exe, spec.addr_var, &world.env_with(var, value));
    service.wait_for("/healthz", 200, Duration::from_secs(20)).await;
    // Other probes may fail for a moment while the service starts (migrations): wait
    // until exactly the expected ones fail.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = None;
    while Instant::now() < deadline {
        if let Some((503, body)) = service.get("/readyz").await {
            let report: serde_json::Value = serde_json::from_str(&body)
                .unwrap_or_else(|e| panic!("/readyz body is not JSON ({e}): {body}"));
            let failing: Vec<String> = report["checks"]
                .as_array()
                .map(|checks| {
                    checks
                        .iter()
                        .filter(|c| c["ok"] == false)
                        .filter_map(|c| c["name"].as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default();
            if failing == failing_probes {
                service.signal(Signal::SIGTERM);
                let exit = service.wait_exit(Duration::from_secs(15)).await;
                assert_eq!(exit.code(), Some(0), "logs:\n{}", service.logs());
                return;
            }
            last = Some(body);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "/readyz never failed exactly {failing_probes:?}; last 503 body: {last:?}; logs:\n{}",
        service.logs()
    );
}

/// A malformed value stops the binary at start with status 2 and a message naming the
/// variable.
pub async fn assert_rejects_bad_value(spec: &BinarySpec, var: &str, value: &str) {
    let output = Command::new(spec.exe)
        .env(var, value)
        .output()
        .await
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", spec.exe));
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains(var) && stderr.contains(value), "the error must name {var}: {stderr}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_addresses_are_never_handed_out_twice() {
        let ports: Vec<u16> = (0..500).map(|_| free_addr().port()).collect();
        let mut distinct = ports.clone();
        distinct.sort_unstable();
        distinct.dedup();
        assert_eq!(distinct.len(), ports.len(), "a port was handed out twice");
    }
}
