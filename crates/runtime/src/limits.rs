//! Limits on what one request, or one client, may ask of a service.
//!
//! Besides the body size (each service's `BODY_LIMIT`) and the request deadline
//! (`HTTP_REQUEST_TIMEOUT`), the HTTP server itself bounds (see [`crate::Runtime`]):
//!
//! - a request's head: at most 96 headers and 128 KiB in all (actix-http's fixed
//!   limits: `431` past the size, `400` past the count);
//! - a slow client: its request head must arrive within `HTTP_CLIENT_TIMEOUT` (5 s;
//!   else `408` and the connection is closed), an idle kept-alive connection is closed
//!   after `HTTP_KEEP_ALIVE` (5 s).
//!
//! This module adds what a handler applies: [`json_depth_exceeds`] (a JSON body nested
//! deeper than any of the API's, refused before it is parsed) and [`RateLimiter`] (at
//! most so many requests per second per client, then `429` with `Retry-After`).

use std::{num::NonZeroU32, time::Duration};

use actix_web::{HttpResponse, ResponseError, http::StatusCode};
use governor::{DefaultKeyedRateLimiter, Quota, clock::Clock as _};

use crate::problem::Problem;

/// Whether the JSON text `body` nests objects and arrays more than `max` levels deep
/// (brackets inside strings do not count). Cheap: one pass over the bytes, no parsing,
/// so that a hostile body costs nothing before it is refused.
pub fn json_depth_exceeds(body: &[u8], max: usize) -> bool {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for &byte in body {
        if in_string {
            match (escaped, byte) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match byte {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                if depth > max {
                    return true;
                }
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

/// At most `per_second` requests per second per client, with bursts of `burst`
/// (GCRA, the `governor` crate); clients are told apart by a key of the caller's
/// choosing (the token's subject, else the peer's address). Off when `per_second` is 0.
#[derive(Debug)]
pub struct RateLimiter {
    limiter: Option<DefaultKeyedRateLimiter<String>>,
    /// When the clients back at a full burst were last forgotten.
    pruned: std::sync::Mutex<std::time::Instant>,
}

/// How often the limiter forgets the clients back at a full burst (a scan of them all).
const PRUNE_EVERY: Duration = Duration::from_secs(10);

impl RateLimiter {
    /// A limiter of `per_second` requests per second per client (0: none), `burst` at
    /// once (at least 1).
    pub fn per_second(per_second: u32, burst: u32) -> Self {
        let limiter = NonZeroU32::new(per_second).map(|rate| {
            let burst = NonZeroU32::new(burst.max(1)).unwrap_or(NonZeroU32::MIN);
            DefaultKeyedRateLimiter::keyed(Quota::per_second(rate).allow_burst(burst))
        });
        Self { limiter, pruned: std::sync::Mutex::new(std::time::Instant::now()) }
    }

    /// Counts a request of `client`; [`TooManyRequests`] (with the wait) when it is
    /// over its rate.
    pub fn check(&self, client: &str) -> Result<(), TooManyRequests> {
        let Some(limiter) = &self.limiter else { return Ok(()) };
        // Forget the clients that have been quiet long enough to be back at a full
        // burst, at most every PRUNE_EVERY: the state stays bounded by the clients of the
        // last moments, and no request pays for a scan of them all.
        if let Ok(mut pruned) = self.pruned.try_lock()
            && pruned.elapsed() >= PRUNE_EVERY
        {
            *pruned = std::time::Instant::now();
            limiter.retain_recent();
        }
        limiter.check_key(&client.to_string()).map_err(|not_until| {
            let wait = not_until.wait_time_from(governor::clock::DefaultClock::default().now());
            metrics::counter!("http_rate_limited_total").increment(1);
            TooManyRequests(wait)
        })
    }
}

/// A client over its rate: `429` with `Retry-After` (whole seconds, at least 1).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("too many requests from this client; retry after {} ms", .0.as_millis())]
pub struct TooManyRequests(pub Duration);

impl TooManyRequests {
    /// `Retry-After`, in whole seconds (rounded up, at least 1).
    pub fn retry_after(&self) -> u64 {
        (self.0.as_secs() + u64::from(self.0.subsec_nanos() > 0)).max(1)
    }
}

impl ResponseError for TooManyRequests {
    fn status_code(&self) -> StatusCode {
        StatusCode::TOO_MANY_REQUESTS
    }

    fn error_response(&self) -> HttpResponse {
        let retry_after = self.retry_after();
        Problem::new(self.status_code(), "rate-limited", "Too many requests", self.to_string()).response(
            |r| {
                r.insert_header(("Retry-After", retry_after.to_string()));
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn depth_counts_brackets_outside_strings_only() {
        assert!(!json_depth_exceeds(br#"{"items": [{"sku": "[[[[", "q": 1}]}"#, 3));
        assert!(json_depth_exceeds(br#"{"a": [[{"b": 1}]]}"#, 3));
        assert!(!json_depth_exceeds(br#"{"a": "\"[[[[[\\"}"#, 1));
        let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        assert!(json_depth_exceeds(deep.as_bytes(), 32));
    }

    #[test]
    fn a_client_over_its_rate_waits_and_others_do_not() {
        let limiter = RateLimiter::per_second(1, 2);
        assert_eq!(limiter.check("a"), Ok(()));
        assert_eq!(limiter.check("a"), Ok(()));
        let refused = limiter.check("a").expect_err("over the burst");
        assert!(refused.0 <= Duration::from_secs(1) && refused.retry_after() == 1, "{refused:?}");
        assert_eq!(limiter.check("b"), Ok(()), "another client has its own rate");
        let off = RateLimiter::per_second(0, 0);
        assert!((0..1000).all(|_| off.check("a").is_ok()));
    }

    #[test]
    fn the_answer_is_429_with_retry_after() {
        let response = TooManyRequests(Duration::from_millis(1500)).error_response();
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        let header =
            |name: &str| response.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
        assert_eq!(header("Retry-After").as_deref(), Some("2"));
        assert_eq!(header("Content-Type").as_deref(), Some("application/problem+json"));
    }
}
