//! The verification keys: a JSON Web Key Set read from a file or fetched from a URL,
//! kept in memory and read again to follow a key rotation.

use std::{
    collections::HashMap,
    sync::RwLock,
    time::{Duration, Instant},
};

use jsonwebtoken::{DecodingKey, jwk::JwkSet};
use tokio::sync::Mutex;

/// Where the key set is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Source {
    /// A file (a mounted ConfigMap or Secret).
    File(std::path::PathBuf),
    /// An `http(s)` URL (the identity provider's `jwks_uri`).
    Url(String),
}

impl Source {
    pub(crate) fn parse(value: &str) -> Self {
        if value.starts_with("http://") || value.starts_with("https://") {
            Self::Url(value.to_string())
        } else {
            Self::File(value.into())
        }
    }

    async fn read(&self) -> Result<String, String> {
        match self {
            Self::File(path) => tokio::fs::read_to_string(path)
                .await
                .map_err(|e| format!("cannot read the key set {}: {e}", path.display())),
            Self::Url(url) => {
                let client = reqwest::Client::builder()
                    .timeout(Duration::from_secs(10))
                    .build()
                    .map_err(|e| format!("cannot build an HTTP client: {e}"))?;
                let response = client
                    .get(url)
                    .send()
                    .await
                    .and_then(reqwest::Response::error_for_status)
                    .map_err(|e| format!("cannot fetch the key set {url}: {e}"))?;
                response.text().await.map_err(|e| format!("cannot read the key set {url}: {e}"))
            }
        }
    }
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::File(path) => write!(f, "{}", path.display()),
            Self::Url(url) => f.write_str(url),
        }
    }
}

/// One usable key: its algorithm (from the JWK's `alg`, required) and the key.
#[derive(Clone)]
pub(crate) struct Key {
    pub(crate) algorithm: jsonwebtoken::Algorithm,
    pub(crate) key: DecodingKey,
}

/// The keys by id, re-read on demand at most once per `min_interval`.
pub(crate) struct Keys {
    source: Source,
    current: RwLock<HashMap<String, Key>>,
    /// When the keys were last read (or tried), guarding the reads.
    last_read: Mutex<Option<Instant>>,
    min_interval: Duration,
}

impl Keys {
    pub(crate) fn new(source: Source, min_interval: Duration) -> Self {
        Self { source, current: RwLock::new(HashMap::new()), last_read: Mutex::new(None), min_interval }
    }

    /// The key named `kid`, if the set has it.
    pub(crate) fn get(&self, kid: &str) -> Option<Key> {
        self.current.read().ok()?.get(kid).cloned()
    }

    /// How many keys are known.
    pub(crate) fn len(&self) -> usize {
        self.current.read().map(|keys| keys.len()).unwrap_or(0)
    }

    /// Reads the set again (unless it was read less than `min_interval` ago and `force`
    /// is false): the new set replaces the old one whole, so a key removed at the
    /// provider stops being accepted. A set that cannot be read or holds no usable key
    /// leaves the old one in place.
    pub(crate) async fn refresh(&self, force: bool) -> Result<usize, String> {
        let mut last = self.last_read.lock().await;
        if !force && last.is_some_and(|at| at.elapsed() < self.min_interval) {
            return Ok(self.len());
        }
        *last = Some(Instant::now());
        let text = self.source.read().await?;
        let keys = parse(&text).map_err(|e| format!("the key set {} is unusable: {e}", self.source))?;
        let count = keys.len();
        if let Ok(mut current) = self.current.write() {
            *current = keys;
        }
        Ok(count)
    }
}

/// The usable keys of a JWKS document: those with a `kid` and an `alg` of RS256 or
/// ES256 (the algorithms accepted; a token must name the same one as its key).
pub(crate) fn parse(text: &str) -> Result<HashMap<String, Key>, String> {
    let set: JwkSet = serde_json::from_str(text).map_err(|e| format!("not a JSON Web Key Set: {e}"))?;
    let mut keys = HashMap::new();
    for jwk in &set.keys {
        let (Some(kid), Some(algorithm)) = (
            jwk.common.key_id.clone(),
            jwk.common.key_algorithm.and_then(|a| jsonwebtoken::Algorithm::try_from(a).ok()),
        ) else {
            continue;
        };
        if !super::ACCEPTED.contains(&algorithm) {
            continue;
        }
        let key = DecodingKey::from_jwk(jwk).map_err(|e| format!("key {kid}: {e}"))?;
        keys.insert(kid, Key { algorithm, key });
    }
    if keys.is_empty() {
        return Err("no key with a kid and an alg of RS256 or ES256".into());
    }
    Ok(keys)
}
