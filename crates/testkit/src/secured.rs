//! The secured side of the local servers that `make up` starts (see
//! `deploy/local/security.sh`): Kafka's SASL_SSL listener, the local CA, and the users'
//! password files.
//!
//! Where they are: `TEST_KAFKA_SECURE_BOOTSTRAP_SERVERS` (default `localhost:9094`) and
//! the project's state directory, `ORDERS_LOCAL_DIR` (default the repository's
//! `.local`), which holds `tls/` and `secrets/`.

use std::path::PathBuf;

use crate::START_HINT;

/// The secured listener's address.
pub fn kafka_bootstrap_servers() -> String {
    std::env::var("TEST_KAFKA_SECURE_BOOTSTRAP_SERVERS").unwrap_or_else(|_| "localhost:9094".into())
}

/// The project's state directory (`.local`).
pub fn local_dir() -> PathBuf {
    std::env::var_os("ORDERS_LOCAL_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../.local")))
}

fn existing(path: PathBuf, what: &str) -> PathBuf {
    assert!(path.is_file(), "{what} {} is missing; {START_HINT}", path.display());
    path
}

/// The file holding Kafka user `user`'s password.
pub fn kafka_password_file(user: &str) -> PathBuf {
    existing(local_dir().join("secrets/kafka").join(user), "the Kafka password file")
}

/// The local CA's certificate, which the servers' certificates chain to.
pub fn ca_file() -> PathBuf {
    existing(local_dir().join("tls/ca.pem"), "the local CA certificate")
}

/// A CA that signed none of the local servers' certificates.
pub fn other_ca_file() -> PathBuf {
    existing(local_dir().join("tls/other-ca.pem"), "the unrelated CA certificate")
}
