//! Configuration pieces shared by every service.
//!
//! Each piece is a `clap::Args` struct to `#[command(flatten)]` into a service's own
//! configuration. Every field is a command-line flag with an environment-variable
//! fallback, and its `///` comment is the help text that `--help` prints together with
//! the variable's name and default. A value that does not parse stops the process at
//! start with a message naming the variable (clap exits with status 2).

use std::time::Duration;

use clap::{Args, ValueEnum};

/// Settings every service has: logging, trace export and the shutdown deadline.
#[derive(Debug, Clone, Args)]
pub struct RuntimeArgs {
    /// Log filter, in `tracing-subscriber` EnvFilter syntax (for example `info,rdkafka=warn`).
    #[arg(long = "log-filter", env = "RUST_LOG", default_value = "info")]
    pub log_filter: String,

    /// Log format: `json`, `pretty`, or `auto` (pretty on a terminal, JSON otherwise).
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Auto)]
    pub log_format: LogFormat,

    /// OTLP/gRPC endpoint to export traces to (for example `http://127.0.0.1:4317`).
    /// Trace export is off when unset.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,

    /// How long a graceful shutdown may take (stop HTTP, finish in-flight work, flush)
    /// before the process gives up and exits with status 1. Keep it below the
    /// orchestrator's own grace period (30 s on Kubernetes).
    #[arg(long, env = "SHUTDOWN_TIMEOUT", default_value = "25s", value_parser = parse_duration)]
    pub shutdown_timeout: Duration,

    /// The deadline of every HTTP request: a handler still running then is dropped and
    /// the client gets `503` with `Retry-After`.
    #[arg(long, env = "HTTP_REQUEST_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub http_request_timeout: Duration,

    /// The longest a client may take to send a request's head: a slower one gets `408`
    /// and its connection is closed (slow clients do not hold connections).
    #[arg(long, env = "HTTP_CLIENT_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    pub http_client_timeout: Duration,

    /// How long an idle kept-alive connection stays open.
    #[arg(long, env = "HTTP_KEEP_ALIVE", default_value = "5s", value_parser = parse_duration)]
    pub http_keep_alive: Duration,

    /// A file holding the token the admin endpoints ask for (`Authorization: Bearer
    /// <token>`): `/metrics`, the details of `/readyz`, and an admin port's own API (the
    /// processor's inventory). `/healthz` and `/readyz`'s status stay open to probes.
    /// Unset: no token asked.
    #[arg(long = "admin-token-file", env = "ADMIN_TOKEN_FILE", value_parser = Secret::from_file)]
    pub admin_token: Option<Secret>,
}

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable when standard output is a terminal, JSON otherwise.
    Auto,
    /// One JSON object per line.
    Json,
    /// Human-readable, multi-line.
    Pretty,
}

/// Parses durations such as `250ms`, `5s` or `1m 30s`.
pub fn parse_duration(value: &str) -> Result<Duration, String> {
    humantime::parse_duration(value)
        .map_err(|e| format!("`{value}` is not a duration ({e}); write for example 500ms, 5s or 2m"))
}

/// A secret (a password, a key's passphrase) read from a file, the way Kubernetes mounts
/// a Secret: the setting names the file, never the value, so the value shows neither in
/// the environment nor in `--help`. `Debug` prints `Secret(***)`; there is no `Display`:
/// the value leaves only through [`Secret::expose`], where it is handed to a client.
///
/// The file is read once, at start (a rotated Secret takes a restart, as a rolling
/// update of the pods does); one trailing newline is dropped.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// A secret held in memory (for tests and for values that come from elsewhere).
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// Reads the secret in `path`: a `clap` value parser for `*_FILE` settings. The
    /// error names the file, never its content.
    pub fn from_file(path: &str) -> Result<Self, String> {
        orders_postgres::read_secret_file(path).map(Self)
    }

    /// The value, to hand to the client that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// [`RuntimeArgs`] parsed from `args` (flags after the program name), for tests.
#[cfg(test)]
pub(crate) fn test_args(args: &[&str]) -> RuntimeArgs {
    use clap::Parser as _;

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        runtime: RuntimeArgs,
    }
    Cli::try_parse_from(std::iter::once("svc").chain(args.iter().copied())).expect("valid args").runtime
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        runtime: RuntimeArgs,
    }

    #[test]
    fn defaults_apply_without_flags_or_variables() {
        let cli = Cli::try_parse_from(["svc"]).expect("defaults parse");
        assert_eq!(cli.runtime.log_filter, "info");
        assert_eq!(cli.runtime.log_format, LogFormat::Auto);
        assert_eq!(cli.runtime.shutdown_timeout, Duration::from_secs(25));
    }

    #[test]
    fn a_bad_duration_is_rejected_with_a_clear_message() {
        let err = Cli::try_parse_from(["svc", "--shutdown-timeout", "soon"]).expect_err("must fail");
        let text = err.to_string();
        assert!(text.contains("`soon` is not a duration"), "{text}");
    }

    #[test]
    fn a_secret_comes_from_its_file_and_never_shows() {
        let file = orders_testkit::SecretFile::new("hunter2\n");
        let path = file.path();
        let secret = Secret::from_file(path).expect("read");
        assert_eq!(secret.expose(), "hunter2");
        assert_eq!(format!("{secret:?}"), "Secret(***)");

        file.write("\n");
        assert_eq!(Secret::from_file(path).expect_err("empty"), format!("the secret file `{path}` is empty"));
        let missing = Secret::from_file("/nonexistent/secret").expect_err("missing");
        assert!(missing.starts_with("cannot read the secret file `/nonexistent/secret`"), "{missing}");
    }

    #[test]
    fn durations_accept_human_units() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("1m 30s"), Ok(Duration::from_secs(90)));
    }
}
