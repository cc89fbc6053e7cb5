//! Fault decisions. Each Graph request draws from a stream keyed by `(seed, request counter)`, so a
//! run is reproducible for a given request order, and a retried request (a new counter value)
//! usually succeeds: faults are not tied to URLs.

use std::time::Duration;

use crate::config::FaultConfig;
use crate::prng::{Rng, hash3, tag};

const K_FAULT: u64 = tag(b"fault");
const K_FAULT_INNER: u64 = tag(b"fault-inner");

/// Share of throttled responses that are 429 rather than 503. SharePoint/OneDrive answer "429 or
/// 503 … both with Retry-After"
/// (<https://learn.microsoft.com/sharepoint/dev/general-development/how-to-avoid-getting-throttled-or-blocked-in-sharepoint-online>);
/// 429 is the common one.
pub(crate) const SHARE_429: f64 = 0.8;

/// An injected failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Fault {
    /// Close the connection without writing a response.
    Drop,
    /// 429 Too Many Requests with this `Retry-After` value.
    TooManyRequests { retry_after: String },
    /// 503 Service Unavailable with this `Retry-After` value.
    Unavailable { retry_after: String },
    /// 500, 502 or 504.
    ServerError(u16),
}

/// What to do to one top-level Graph request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Decision {
    pub(crate) fault: Option<Fault>,
    pub(crate) delay: Option<Duration>,
}

/// Decides the fate of top-level Graph request number `n`.
pub(crate) fn decide(cfg: &FaultConfig, seed: u64, n: u64) -> Decision {
    let mut r = Rng::new(hash3(seed, K_FAULT, n));
    let u = r.unit();
    let kind = r.unit();
    let slow = r.unit();
    let fault = if u < cfg.drop_rate {
        Some(Fault::Drop)
    } else if u < cfg.drop_rate + cfg.throttle_rate {
        let retry_after = retry_after(&mut r, cfg.retry_after_secs);
        Some(if kind < SHARE_429 {
            Fault::TooManyRequests { retry_after }
        } else {
            Fault::Unavailable { retry_after }
        })
    } else if u < cfg.drop_rate + cfg.throttle_rate + cfg.error_5xx_rate {
        Some(Fault::ServerError(server_status(kind)))
    } else {
        None
    };
    let delay = (slow < cfg.slow_rate).then(|| Duration::from_millis(cfg.slow_ms));
    Decision { fault, delay }
}

/// Decides the fate of the `n`-th request carried inside a `$batch`: an inner 429 (with
/// `Retry-After` in the inner headers) or an inner 5xx; never a drop or a delay.
pub(crate) fn decide_inner(cfg: &FaultConfig, seed: u64, n: u64) -> Option<Fault> {
    let mut r = Rng::new(hash3(seed, K_FAULT_INNER, n));
    let u = r.unit();
    let kind = r.unit();
    if u < cfg.batch_inner_throttle_rate {
        Some(Fault::TooManyRequests {
            retry_after: retry_after(&mut r, cfg.retry_after_secs),
        })
    } else if u < cfg.batch_inner_throttle_rate + cfg.error_5xx_rate {
        Some(Fault::ServerError(server_status(kind)))
    } else {
        None
    }
}

fn server_status(u: f64) -> u16 {
    if u < 0.6 {
        500
    } else if u < 0.8 {
        502
    } else {
        504
    }
}

/// A `Retry-After` value within `[lo, hi]` seconds: an integer (`2`) when the range holds one and
/// a coin says so, else a decimal with millisecond precision (`0.128`) — Graph's own sample sends
/// `2.128` (the 2021 text of <https://learn.microsoft.com/en-us/graph/throttling>; see
/// `crates/m365/tests/fixtures/SOURCES.md`), so clients must parse both.
pub(crate) fn retry_after(r: &mut Rng, (lo, hi): (f64, f64)) -> String {
    let (int_lo, int_hi) = (lo.ceil(), hi.floor());
    let integral = r.unit() < 0.5;
    let v = r.unit();
    if integral && int_lo <= int_hi {
        let k = int_lo + ((int_hi - int_lo + 1.0) * v).floor().min(int_hi - int_lo);
        format!("{}", k as u64)
    } else {
        let secs = ((lo + (hi - lo) * v) * 1000.0).ceil() / 1000.0;
        format!("{:.3}", secs.clamp(lo, hi.max(lo)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_faults_by_default() {
        let cfg = FaultConfig::default();
        assert!((0..1000).all(|n| decide(&cfg, 1, n)
            == Decision {
                fault: None,
                delay: None
            }));
        assert!((0..1000).all(|n| decide_inner(&cfg, 1, n).is_none()));
    }

    #[test]
    fn throttle_rate_is_respected_and_retry_after_stays_in_range() {
        let cfg = FaultConfig {
            throttle_rate: 0.3,
            retry_after_secs: (0.05, 2.5),
            ..FaultConfig::default()
        };
        let mut throttled = 0;
        let mut saw_integer = false;
        let mut saw_decimal = false;
        for n in 0..10_000 {
            match decide(&cfg, 9, n).fault {
                Some(Fault::TooManyRequests { retry_after } | Fault::Unavailable { retry_after }) => {
                    throttled += 1;
                    let v: f64 = retry_after.parse().expect("numeric Retry-After");
                    assert!((0.05..=2.5).contains(&v), "{retry_after}");
                    if retry_after.contains('.') {
                        saw_decimal = true;
                    } else {
                        saw_integer = true;
                    }
                }
                None => {}
                other => panic!("unexpected {other:?}"),
            }
        }
        assert!((2700..3300).contains(&throttled), "{throttled}");
        assert!(saw_integer && saw_decimal);
    }
}
