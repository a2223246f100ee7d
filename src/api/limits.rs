//! Abuse limits: fixed one-minute windows counted per key (an email, a client address, a
//! customer). In one process; with several replicas each counts its own share.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::error::{ApiError, ErrorCode};
use crate::config::CheckoutConfig;

/// Length of a counting window.
const WINDOW_SECS: u64 = 60;
/// Keys tracked before expired windows are swept out.
const SWEEP_AT_KEYS: usize = 10_000;

/// Counts requests per key in one-minute windows.
pub struct RateLimiter {
    per_minute: u32,
    windows: Mutex<HashMap<String, (Instant, u32)>>,
}

impl RateLimiter {
    pub fn new(per_minute: u32) -> Self {
        RateLimiter {
            per_minute,
            windows: Mutex::new(HashMap::new()),
        }
    }

    /// Refuses with `429` when `key` is at its limit, without counting this request.
    pub fn ensure_below(&self, key: &str) -> Result<(), ApiError> {
        self.count(key, false)
    }

    /// Counts one event for `key` (e.g. a failed login), whatever the limit.
    pub fn record(&self, key: &str) {
        let _ = self.count(key, true);
    }

    /// Counts one request for `key`; over the limit, `429 rate_limited` with `Retry-After`.
    pub fn check(&self, key: &str) -> Result<(), ApiError> {
        self.count(key, true)
    }

    fn count(&self, key: &str, increment: bool) -> Result<(), ApiError> {
        let now = Instant::now();
        let window = Duration::from_secs(WINDOW_SECS);
        let mut windows = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        if windows.len() >= SWEEP_AT_KEYS {
            windows.retain(|_, (started, _)| now.duration_since(*started) < window);
        }
        let (started, count) = windows.entry(key.to_owned()).or_insert((now, 0));
        if now.duration_since(*started) >= window {
            *started = now;
            *count = 0;
        }
        if *count >= self.per_minute {
            let retry_after = window
                .saturating_sub(now.duration_since(*started))
                .as_secs()
                .max(1);
            metrics::counter!("rate_limited_total").increment(1);
            return Err(ApiError::new(ErrorCode::RateLimited).retry_after(retry_after));
        }
        if increment {
            *count += 1;
        }
        Ok(())
    }
}

/// Every limit the API applies.
pub struct Limits {
    pub login_per_email: RateLimiter,
    pub login_failures_per_address: RateLimiter,
    pub checkout_per_customer: RateLimiter,
}

impl Limits {
    pub fn new(config: &CheckoutConfig) -> Self {
        Limits {
            login_per_email: RateLimiter::new(config.login_attempts_per_minute),
            login_failures_per_address: RateLimiter::new(
                config.login_failures_per_address_per_minute,
            ),
            checkout_per_customer: RateLimiter::new(config.checkouts_per_minute),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allows_the_limit_then_refuses_with_a_retry_after() {
        let limiter = RateLimiter::new(3);
        for _ in 0..3 {
            assert!(limiter.check("a").is_ok());
        }
        let refused = limiter.check("a").unwrap_err();
        assert_eq!(refused.code(), ErrorCode::RateLimited);
        assert!(limiter.check("b").is_ok(), "keys are counted apart");
    }

    #[test]
    fn ensure_below_does_not_count_and_record_does() {
        let limiter = RateLimiter::new(2);
        for _ in 0..5 {
            assert!(limiter.ensure_below("a").is_ok());
        }
        limiter.record("a");
        limiter.record("a");
        assert!(limiter.ensure_below("a").is_err());
    }
}
