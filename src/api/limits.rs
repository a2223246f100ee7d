//! Abuse limits: fixed one-minute windows counted per key (an email, a client address, a
//! customer). With Redis configured the windows are counted there, so a limit holds across
//! replicas; without it, or while Redis fails, each process counts its own share.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use super::error::{ApiError, ErrorCode};
use crate::bus::Bus;
use crate::config::CheckoutConfig;

/// Length of a counting window.
const WINDOW_SECS: u64 = 60;
/// Keys tracked before expired windows are swept out.
const SWEEP_AT_KEYS: usize = 10_000;
/// Longest a request waits on Redis for its count before counting locally instead.
const REDIS_COUNT_DEADLINE_MS: u64 = 250;

/// Counts requests per key in one-minute windows.
pub struct RateLimiter {
    /// Names the limit in shared keys.
    name: &'static str,
    per_minute: u32,
    bus: Option<Arc<Bus>>,
    windows: Mutex<HashMap<String, (Instant, u32)>>,
}

impl RateLimiter {
    /// A limit counted in this process only.
    pub fn new(per_minute: u32) -> Self {
        Self::shared("local", per_minute, None)
    }

    /// A limit counted in Redis under `name` when `bus` is set.
    pub fn shared(name: &'static str, per_minute: u32, bus: Option<Arc<Bus>>) -> Self {
        RateLimiter {
            name,
            per_minute,
            bus,
            windows: Mutex::new(HashMap::new()),
        }
    }

    /// Refuses with `429` when `key` is at its limit, without counting this request.
    pub async fn ensure_below(&self, key: &str) -> Result<(), ApiError> {
        self.count(key, false).await
    }

    /// Counts one event for `key` (e.g. a failed login), whatever the limit.
    pub async fn record(&self, key: &str) {
        let _ = self.count(key, true).await;
    }

    /// Counts one request for `key`; over the limit, `429 rate_limited` with `Retry-After`.
    pub async fn check(&self, key: &str) -> Result<(), ApiError> {
        self.count(key, true).await
    }

    async fn count(&self, key: &str, increment: bool) -> Result<(), ApiError> {
        if let Some(bus) = self.bus.as_ref().filter(|bus| !bus.recently_failed()) {
            // Keys are hashed: emails and addresses do not belong in Redis in the clear.
            let hashed = format!("{}:{:x}", self.name, Sha256::digest(key.as_bytes()));
            match bus
                .count_in_window(&hashed, WINDOW_SECS, increment, REDIS_COUNT_DEADLINE_MS)
                .await
            {
                Ok((count, ends_in_secs)) => {
                    // Counted: this request is already in `count`; not counted: it is not.
                    let seen = if increment {
                        count.saturating_sub(1)
                    } else {
                        count
                    };
                    return self.verdict(seen, ends_in_secs);
                }
                Err(error) => {
                    metrics::counter!("rate_limit_fallbacks_total").increment(1);
                    tracing::warn!(error = %error, "rate limit counted in this process: Redis failed");
                }
            }
        }
        self.count_locally(key, increment)
    }

    /// 429 when `seen` earlier events already reach the limit.
    fn verdict(&self, seen: u64, ends_in_secs: u64) -> Result<(), ApiError> {
        if seen >= u64::from(self.per_minute) {
            metrics::counter!("rate_limited_total").increment(1);
            return Err(ApiError::new(ErrorCode::RateLimited).retry_after(ends_in_secs.max(1)));
        }
        Ok(())
    }

    fn count_locally(&self, key: &str, increment: bool) -> Result<(), ApiError> {
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

/// Inbound WhatsApp messages read per phone number and minute; more are kept as ignored
/// (a person types far fewer; a script or a loop does not get the bot's attention).
pub const WHATSAPP_MESSAGES_PER_PHONE_PER_MINUTE: u32 = 20;

/// Failed OAuth client authentications (`POST /oauth/token`) per client id and minute: a
/// client that mistyped its secret retries a few times, a guesser is stopped.
pub const OAUTH_FAILURES_PER_CLIENT_PER_MINUTE: u32 = 10;
/// Failed OAuth client authentications per address and minute (several clients may share one
/// egress address, so more than per client).
pub const OAUTH_FAILURES_PER_ADDRESS_PER_MINUTE: u32 = 60;

/// Every limit the API applies.
pub struct Limits {
    pub login_per_email: RateLimiter,
    pub login_failures_per_address: RateLimiter,
    pub checkout_per_customer: RateLimiter,
    pub whatsapp_per_phone: RateLimiter,
    pub oauth_failures_per_client: RateLimiter,
    pub oauth_failures_per_address: RateLimiter,
    /// Requests per API key (`MEALKITZ_API_KEY_REQUESTS_PER_MINUTE`).
    pub per_api_key: RateLimiter,
}

impl Limits {
    /// The limits in `config` and `api_key_per_minute`, counted in Redis when `bus` is set.
    pub fn new(config: &CheckoutConfig, api_key_per_minute: u32, bus: Option<Arc<Bus>>) -> Self {
        Limits {
            login_per_email: RateLimiter::shared(
                "login-email",
                config.login_attempts_per_minute,
                bus.clone(),
            ),
            login_failures_per_address: RateLimiter::shared(
                "login-failures-address",
                config.login_failures_per_address_per_minute,
                bus.clone(),
            ),
            checkout_per_customer: RateLimiter::shared(
                "checkout-customer",
                config.checkouts_per_minute,
                bus.clone(),
            ),
            whatsapp_per_phone: RateLimiter::shared(
                "whatsapp-phone",
                WHATSAPP_MESSAGES_PER_PHONE_PER_MINUTE,
                bus.clone(),
            ),
            oauth_failures_per_client: RateLimiter::shared(
                "oauth-failures-client",
                OAUTH_FAILURES_PER_CLIENT_PER_MINUTE,
                bus.clone(),
            ),
            oauth_failures_per_address: RateLimiter::shared(
                "oauth-failures-address",
                OAUTH_FAILURES_PER_ADDRESS_PER_MINUTE,
                bus.clone(),
            ),
            per_api_key: RateLimiter::shared("api-key", api_key_per_minute, bus),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[actix_web::test]
    async fn allows_the_limit_then_refuses_with_a_retry_after() {
        let limiter = RateLimiter::new(3);
        for _ in 0..3 {
            assert!(limiter.check("a").await.is_ok());
        }
        let refused = limiter.check("a").await.unwrap_err();
        assert_eq!(refused.code(), ErrorCode::RateLimited);
        assert!(limiter.check("b").await.is_ok(), "keys are counted apart");
    }

    #[actix_web::test]
    async fn ensure_below_does_not_count_and_record_does() {
        let limiter = RateLimiter::new(2);
        for _ in 0..5 {
            assert!(limiter.ensure_below("a").await.is_ok());
        }
        limiter.record("a").await;
        limiter.record("a").await;
        assert!(limiter.ensure_below("a").await.is_err());
    }
}
