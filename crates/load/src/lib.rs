//! orders-load: the five services judged as an operator would.
//!
//! - `orders-load run`: a load generator (see [`load`]): the full life of orders at a
//!   fixed rate (open loop, so that a stall shows in the latency rather than hiding in
//!   a lower rate) or as fast as possible; HTTP latency per command, command to read
//!   model, pay to shipped, create to windows, in HDR histograms.
//! - `orders-load reconcile`: everything derived checked against its source (see
//!   [`reconcile`]): the read model, the saga's stock and shipments and the windows
//!   against the event store, the `orders` topic against the event store. It prints
//!   each difference and exits non-zero on any.
//! - `orders-load report`: a run's summary as the benchmark report's tables and charts
//!   (see [`report`]).
//! - `orders-load poison inject|check`: bad records on the consumed topics, then the
//!   check that each was dead-lettered with a reason (see [`poison`]).
//! - `orders-load kafka-write`: one record written with a client's own Kafka settings,
//!   to show what its ACLs allow (see [`access`]).
//! - `orders-load token`: a local stand-in identity provider: bearer tokens signed with
//!   a key of the machine's, and its key set (see [`token`]).

use std::time::Duration;

use anyhow::bail;

pub mod access;
pub mod load;
pub mod poison;
pub mod progress;
pub mod reconcile;
pub mod record;
pub mod report;
pub mod sample;
pub mod token;

/// Where the HTTP APIs are.
#[derive(Debug, Clone, clap::Args)]
pub struct Endpoints {
    /// Base URL of the command API.
    #[arg(long, env = "COMMANDS_URL", default_value = "http://127.0.0.1:8080")]
    commands_url: String,
    /// Base URL of the query API.
    #[arg(long, env = "QUERIES_URL", default_value = "http://127.0.0.1:8081")]
    queries_url: String,
    /// Base URL of the order processor's admin API (inventory).
    #[arg(long, env = "PROCESSOR_URL", default_value = "http://127.0.0.1:8083")]
    processor_url: String,
    /// A file holding the bearer token sent with every request, for APIs that ask for
    /// one (AUTH=jwt): an administrator's, since the driver acts for many users (see
    /// `orders-load token`). Unset: no token.
    #[arg(long, env = "API_TOKEN_FILE")]
    token_file: Option<std::path::PathBuf>,
    /// A file holding the admin token of the order processor's admin API (its
    /// ADMIN_TOKEN_FILE), for setting stock. Unset: none sent.
    #[arg(long, env = "PROCESSOR_TOKEN_FILE")]
    processor_token_file: Option<std::path::PathBuf>,
}

impl Endpoints {
    /// An HTTP client from `builder` that sends the bearer token of `--token-file` with
    /// every request (marked sensitive: it never shows in `Debug` output).
    ///
    /// # Errors
    /// When the token file cannot be read or the client cannot be built.
    pub fn client(&self, builder: reqwest::ClientBuilder) -> anyhow::Result<reqwest::Client> {
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(file) = &self.token_file {
            headers.insert(reqwest::header::AUTHORIZATION, bearer(file)?);
        }
        Ok(builder.default_headers(headers).build()?)
    }

    /// The URL of `path` on the command API.
    pub fn command(&self, path: &str) -> String {
        format!("{}{path}", self.commands_url)
    }

    /// On the query API.
    pub fn query(&self, path: &str) -> String {
        format!("{}{path}", self.queries_url)
    }

    /// On the processor's admin API.
    pub fn processor(&self, path: &str) -> String {
        format!("{}{path}", self.processor_url)
    }

    /// Sets the stock of `sku` on the order processor (`PUT /inventory/{sku}`), which
    /// tracks it from then on.
    ///
    /// # Errors
    /// When the processor does not answer with a 2xx.
    pub async fn set_stock(&self, http: &reqwest::Client, sku: &str, available: i64) -> anyhow::Result<()> {
        let url = self.processor(&format!("/inventory/{sku}"));
        let mut request = http.put(&url).json(&serde_json::json!({ "available": available }));
        if let Some(file) = &self.processor_token_file {
            request = request.header(reqwest::header::AUTHORIZATION, bearer(file)?);
        }
        let response = request.send().await?;
        if !response.status().is_success() {
            bail!("PUT {url} answered {}: {}", response.status(), response.text().await.unwrap_or_default());
        }
        Ok(())
    }

    /// Waits up to `timeout` until each named API (`command`, `query`, `processor`)
    /// answers `/readyz` with a 2xx.
    ///
    /// # Errors
    /// When one does not in time.
    pub async fn wait_ready(
        &self,
        http: &reqwest::Client,
        which: &[&str],
        timeout: Duration,
    ) -> anyhow::Result<()> {
        let deadline = std::time::Instant::now() + timeout;
        for name in which {
            let base = match *name {
                "command" => &self.commands_url,
                "query" => &self.queries_url,
                _ => &self.processor_url,
            };
            loop {
                let answer = http.get(format!("{base}/readyz")).send().await;
                match answer {
                    Ok(r) if r.status().is_success() => break,
                    _ if std::time::Instant::now() < deadline => {
                        tokio::time::sleep(Duration::from_millis(250)).await;
                    }
                    Ok(r) => bail!(
                        "the {name} API at {base} is not ready ({}); start the services with `make run`",
                        r.status()
                    ),
                    Err(e) => bail!(
                        "the {name} API at {base} does not answer ({e}); start the services with `make run`"
                    ),
                }
            }
        }
        Ok(())
    }
}

/// `Bearer <the token in file>`, marked sensitive (it never shows in `Debug` output).
fn bearer(file: &std::path::Path) -> anyhow::Result<reqwest::header::HeaderValue> {
    use anyhow::Context as _;
    let token =
        orders_runtime::config::Secret::from_file(&file.to_string_lossy()).map_err(anyhow::Error::msg)?;
    let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {}", token.expose()))
        .context("the token file holds no valid header value")?;
    value.set_sensitive(true);
    Ok(value)
}

/// A duration such as `90s` or `2m` (humantime).
///
/// # Errors
/// When `value` is not one.
pub fn parse_duration(value: &str) -> Result<Duration, String> {
    humantime::parse_duration(value).map_err(|e| format!("`{value}` is not a duration ({e})"))
}

/// A small deterministic generator (xorshift): an order's script depends on its index
/// only, so a run's mix is reproducible.
#[derive(Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// The next number below `n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}
