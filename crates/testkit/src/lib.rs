//! Helpers for integration tests against the real Kafka and PostgreSQL that
//! `make up` starts (see `deploy/local/infra.sh`).
//!
//! Every test gets its own world, so tests run in parallel without seeing each other:
//! - [`postgres::TestDatabase`]: a fresh database with a unique name, dropped afterwards;
//! - [`kafka::TestKafka`]: topics and consumer groups with unique names, created through
//!   the admin API and deleted afterwards;
//! - [`process::ServiceProcess`]: a service binary started as a child process, with
//!   helpers to wait for health, signal it and read its exit status;
//! - [`proxy::TcpProxy`]: a TCP proxy (Kafka-aware when needed) that a test cuts and
//!   restores, to take a server down for one client without stopping the shared one;
//! - [`pg_proxy::PgProxy`]: a PostgreSQL proxy that can lose the answer to a
//!   `COMMIT` the server carried out, to test writers whose commit outcome is unknown;
//! - [`jwt::TestIssuer`]: a stand-in identity provider (a key set file, signed tokens);
//! - [`secured`]: the secured Kafka listener, the local CA and the users' password files;
//! - [`sequence::Sequences`]: checks that each key's versions arrive in order, none
//!   missing, duplicates counted;
//! - [`bench`]: what the benchmarks share (settings, medians, the report).
//!
//! When Kafka or PostgreSQL cannot be reached, the helpers panic with a message that
//! says how to start them (`make up`): an integration test never skips silently.
//!
//! Where the servers are: `TEST_DATABASE_URL` (an administrative connection, default
//! `postgres://postgres@127.0.0.1:15432/postgres`) and `TEST_KAFKA_BOOTSTRAP_SERVERS`
//! (default `127.0.0.1:9092`).

pub mod bench;
pub mod jwt;
pub mod kafka;
pub mod pg_proxy;
pub mod postgres;
pub mod process;
pub mod proxy;
pub mod secured;
pub mod sequence;

/// A file holding a secret (a password, a token), as a mounted Kubernetes Secret looks to
/// a service under test; deleted when dropped.
#[derive(Debug)]
pub struct SecretFile {
    path: std::path::PathBuf,
}

impl SecretFile {
    /// A new file holding `content`.
    pub fn new(content: &str) -> Self {
        let file = Self { path: std::env::temp_dir().join(format!("orders-secret-{}", unique_suffix())) };
        file.write(content);
        file
    }

    /// Replaces its content.
    pub fn write(&self, content: &str) {
        std::fs::write(&self.path, content)
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", self.path.display()));
    }

    /// Its path, as text (a setting's value).
    pub fn path(&self) -> &str {
        self.path.to_str().unwrap_or_else(|| panic!("the temporary directory's path is not UTF-8"))
    }
}

impl Drop for SecretFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// A short unique suffix for names of databases, topics and groups.
pub fn unique_suffix() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..12].to_string()
}

/// The hint every "cannot reach" failure ends with.
pub const START_HINT: &str =
    "start the local infrastructure with `make up` (or run `make test`, which starts it)";

/// Runs `cleanup` to completion on a thread of its own with its own runtime; used by
/// `Drop` implementations, which cannot await.
pub(crate) fn run_detached_cleanup<F>(cleanup: F)
where
    F: std::future::Future<Output = ()> + Send + 'static,
{
    let joined = std::thread::spawn(move || {
        if let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() {
            rt.block_on(cleanup);
        }
    })
    .join();
    if joined.is_err() {
        eprintln!("test cleanup panicked");
    }
}
