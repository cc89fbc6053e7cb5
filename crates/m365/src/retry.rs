//! The one throttling and retry policy every request goes through: `Retry-After` (integer,
//! decimal or HTTP date) and `RateLimit-Reset` honoured, exponential backoff with full jitter when
//! the service gives no delay, a bounded budget, and a shared "not before" gate so that a 429/503
//! pauses every request of the client (<https://learn.microsoft.com/en-us/graph/throttling>,
//! <https://learn.microsoft.com/en-us/onedrive/developer/rest-api/concepts/scan-guidance>).

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use rand::Rng;
use reqwest::header::HeaderMap;

/// Default first backoff step when the service gives no `Retry-After` (exponential backoff, as
/// <https://learn.microsoft.com/en-us/graph/throttling> recommends; 0.5 s doubles to the cap in 6 steps).
pub const DEFAULT_BACKOFF_BASE: Duration = Duration::from_millis(500);
/// Default longest single backoff step.
pub const DEFAULT_BACKOFF_CAP: Duration = Duration::from_secs(30);
/// Default number of attempts of one request (the first try included).
pub const DEFAULT_MAX_ATTEMPTS: u32 = 8;
/// Default total time one request may spend waiting before the error is returned (then the queue
/// redelivers the work later; a Lambda invocation has at most 15 minutes).
pub const DEFAULT_MAX_TOTAL_WAIT: Duration = Duration::from_secs(120);
/// A `Retry-After` longer than this is treated as this long (a misbehaving proxy must not park a
/// worker for a day; the budget then usually hands the work back to the queue).
pub const MAX_HONOURED_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// How hard one request is retried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts including the first; at least 1.
    pub max_attempts: u32,
    /// Sum of all waits (gate pauses included) after which the last error is returned.
    pub max_total_wait: Duration,
    /// First backoff step without `Retry-After`.
    pub backoff_base: Duration,
    /// Longest backoff step.
    pub backoff_cap: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            max_total_wait: DEFAULT_MAX_TOTAL_WAIT,
            backoff_base: DEFAULT_BACKOFF_BASE,
            backoff_cap: DEFAULT_BACKOFF_CAP,
        }
    }
}

impl RetryPolicy {
    /// A policy with tiny waits, for tests against the simulator.
    pub fn fast() -> Self {
        Self {
            max_attempts: 30,
            max_total_wait: Duration::from_secs(60),
            backoff_base: Duration::from_millis(5),
            backoff_cap: Duration::from_millis(50),
        }
    }

    /// The upper bound of the backoff before `attempt` (1-based count of failures so far):
    /// `min(cap, base * 2^(attempt-1))`.
    pub fn backoff_ceiling(&self, attempt: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempt.saturating_sub(1).min(30));
        self.backoff_base.saturating_mul(factor).min(self.backoff_cap)
    }

    /// A "full jitter" backoff: uniform in `[0, backoff_ceiling(attempt)]`.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let ceiling = self.backoff_ceiling(attempt);
        let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
        Duration::from_nanos(rand::rng().random_range(0..=nanos))
    }
}

/// Parses a `Retry-After` value: integer or decimal seconds (Graph sends `2.128`), or an HTTP
/// date (RFC 9110), measured from `now`. A date in the past means "now". Returns `None` for
/// anything else (negative, NaN, garbage).
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<f64>() {
        return (secs.is_finite() && secs >= 0.0)
            .then(|| Duration::from_secs_f64(secs.min(MAX_HONOURED_RETRY_AFTER.as_secs_f64())));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(
        at.duration_since(now)
            .unwrap_or(Duration::ZERO)
            .min(MAX_HONOURED_RETRY_AFTER),
    )
}

/// The delay a response asks for: the greater of `Retry-After` and `RateLimit-Reset` when both
/// are present (SharePoint: "honor the greater of",
/// <https://learn.microsoft.com/sharepoint/dev/general-development/how-to-avoid-getting-throttled-or-blocked-in-sharepoint-online#how-to-handle-throttling>),
/// either one alone, else `None`.
pub fn retry_after_from_headers(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let read = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, now))
    };
    match (read("retry-after"), read("ratelimit-reset")) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

/// A shared "not before" instant: after a 429/503 every request of the client waits until it.
#[derive(Debug, Default)]
pub struct Gate {
    not_before: Mutex<Option<Instant>>,
}

impl Gate {
    /// Moves the gate to `now + wait` unless it is already later.
    pub fn close_for(&self, wait: Duration) {
        let until = Instant::now() + wait;
        if let Ok(mut guard) = self.not_before.lock() {
            if guard.is_none_or(|t| t < until) {
                *guard = Some(until);
            }
        }
    }

    /// How long a request must still wait.
    pub fn remaining(&self) -> Duration {
        let now = Instant::now();
        self.not_before
            .lock()
            .ok()
            .and_then(|g| *g)
            .map(|t| t.saturating_duration_since(now))
            .unwrap_or(Duration::ZERO)
    }

    /// Sleeps until the gate opens (it may be moved while sleeping); returns the time slept.
    pub async fn wait(&self) -> Duration {
        let mut slept = Duration::ZERO;
        loop {
            let remaining = self.remaining();
            if remaining.is_zero() {
                return slept;
            }
            tokio::time::sleep(remaining).await;
            slept += remaining;
        }
    }
}

/// Request counters of one client, for benchmarks ("Graph requests per item") and logs.
#[derive(Debug, Default)]
pub struct Counters {
    requests: AtomicU64,
    retries: AtomicU64,
    throttled: AtomicU64,
    batched: AtomicU64,
}

/// A snapshot of [`Counters`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct RequestStats {
    /// HTTP requests sent (a `$batch` counts once).
    pub requests: u64,
    /// Requests (or batch entries) sent again after a failure.
    pub retries: u64,
    /// Responses (or batch entries) that were 429/503/throttling codes.
    pub throttled: u64,
    /// Requests sent inside `$batch` envelopes (retried entries included).
    pub batched: u64,
}

impl Counters {
    pub(crate) fn request(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
    }
    pub(crate) fn retry(&self, n: u64) {
        self.retries.fetch_add(n, Ordering::Relaxed);
    }
    pub(crate) fn throttle(&self, n: u64) {
        self.throttled.fetch_add(n, Ordering::Relaxed);
    }
    pub(crate) fn batched(&self, n: u64) {
        self.batched.fetch_add(n, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> RequestStats {
        RequestStats {
            requests: self.requests.load(Ordering::Relaxed),
            retries: self.retries.load(Ordering::Relaxed),
            throttled: self.throttled.load(Ordering::Relaxed),
            batched: self.batched.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    fn now() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000)
    }

    #[test]
    fn retry_after_integer_seconds() {
        assert_eq!(parse_retry_after("31", now()), Some(Duration::from_secs(31)));
        assert_eq!(parse_retry_after(" 0 ", now()), Some(Duration::ZERO));
    }

    #[test]
    fn retry_after_decimal_seconds_from_the_graph_sample() {
        assert_eq!(parse_retry_after("2.128", now()), Some(Duration::from_millis(2128)));
    }

    #[test]
    fn retry_after_http_date_is_measured_from_now() {
        let later = httpdate::fmt_http_date(now() + Duration::from_secs(120));
        assert_eq!(parse_retry_after(&later, now()), Some(Duration::from_secs(120)));
        let earlier = httpdate::fmt_http_date(now() - Duration::from_secs(5));
        assert_eq!(parse_retry_after(&earlier, now()), Some(Duration::ZERO));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now()),
            Some(Duration::ZERO)
        );
    }

    #[test]
    fn retry_after_garbage_negative_and_huge_values() {
        for bad in ["", "soon", "-1", "NaN", "inf", "1e400"] {
            assert_eq!(parse_retry_after(bad, now()), None, "{bad}");
        }
        assert_eq!(parse_retry_after("99999999", now()), Some(MAX_HONOURED_RETRY_AFTER));
    }

    #[test]
    fn the_greater_of_retry_after_and_ratelimit_reset_wins() {
        let mut h = HeaderMap::new();
        h.insert("Retry-After", HeaderValue::from_static("9"));
        h.insert("RateLimit-Reset", HeaderValue::from_static("31"));
        assert_eq!(retry_after_from_headers(&h, now()), Some(Duration::from_secs(31)));
        h.insert("Retry-After", HeaderValue::from_static("40.5"));
        assert_eq!(retry_after_from_headers(&h, now()), Some(Duration::from_millis(40_500)));
        h.remove("Retry-After");
        assert_eq!(retry_after_from_headers(&h, now()), Some(Duration::from_secs(31)));
        assert_eq!(retry_after_from_headers(&HeaderMap::new(), now()), None);
    }

    #[test]
    fn backoff_is_full_jitter_under_an_exponential_ceiling_and_the_cap() {
        let p = RetryPolicy {
            backoff_base: Duration::from_millis(500),
            backoff_cap: Duration::from_secs(30),
            ..RetryPolicy::default()
        };
        assert_eq!(p.backoff_ceiling(1), Duration::from_millis(500));
        assert_eq!(p.backoff_ceiling(2), Duration::from_secs(1));
        assert_eq!(p.backoff_ceiling(4), Duration::from_secs(4));
        assert_eq!(p.backoff_ceiling(7), Duration::from_secs(30));
        assert_eq!(p.backoff_ceiling(u32::MAX), Duration::from_secs(30));
        let samples: Vec<_> = (0..500).map(|_| p.backoff(3)).collect();
        assert!(samples.iter().all(|d| *d <= Duration::from_secs(2)));
        assert!(
            samples.iter().any(|d| *d < Duration::from_secs(1)),
            "jitter spreads the waits"
        );
        assert!((0..200).map(|_| p.backoff(100)).all(|d| d <= Duration::from_secs(30)));
    }

    #[test]
    fn gate_only_moves_later() {
        let gate = Gate::default();
        assert_eq!(gate.remaining(), Duration::ZERO);
        gate.close_for(Duration::from_secs(60));
        gate.close_for(Duration::from_secs(1));
        assert!(gate.remaining() > Duration::from_secs(30));
    }
}
