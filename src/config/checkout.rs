//! Checkout, payments and abuse limits: how far a delivery may go, the key of payment webhooks,
//! the rate limits on logins and checkouts, and when an unfinished checkout is given up.

use std::time::Duration;

use clap::Args;

use super::secret::Secret;
use super::values::{positive, secret, secs_text, whole, whole_secs};

/// Farthest a dropoff may be from the merchant, by default.
pub const DEFAULT_MAX_DELIVERY_DISTANCE_M: f64 = 10_000.0;
/// Largest accepted delivery distance: a thousand kilometres.
pub const MAX_MAX_DELIVERY_DISTANCE_M: f64 = 1_000_000.0;
/// Shorter webhook keys are refused: they are easier to guess.
pub const WEBHOOK_SECRET_MIN_BYTES: usize = 16;
/// Login attempts per minute for one email address, by default.
pub const DEFAULT_LOGIN_ATTEMPTS_PER_MINUTE: u32 = 10;
/// Failed logins per minute from one client address, by default.
pub const DEFAULT_LOGIN_FAILURES_PER_ADDRESS_PER_MINUTE: u32 = 60;
/// Checkouts per minute for one customer, by default.
pub const DEFAULT_CHECKOUTS_PER_MINUTE: u32 = 20;
/// Above this a per-minute limit limits nothing.
pub const MAX_PER_MINUTE: u32 = 1_000_000;
/// How long an unfinished checkout keeps its payment hold, by default.
pub const DEFAULT_PAYMENT_ABANDON_AFTER: Duration = Duration::from_secs(900);
/// Longest accepted: a week.
pub const MAX_PAYMENT_ABANDON_AFTER: Duration = Duration::from_secs(7 * 24 * 3_600);

#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Checkout")]
pub struct CheckoutArgs {
    /// Secret that signs payment webhooks (Mealkitz-Signature); unset: webhooks are refused.
    #[arg(
        long,
        global = true,
        env = "MEALKITZ_WEBHOOK_SECRET",
        hide_env_values = true,
        value_parser = secret(WEBHOOK_SECRET_MIN_BYTES)
    )]
    pub webhook_secret: Option<Secret>,
    /// Farthest a dropoff may be from the merchant, in metres.
    #[arg(
        long,
        global = true,
        env = "MEALKITZ_MAX_DELIVERY_DISTANCE_M",
        value_parser = positive(MAX_MAX_DELIVERY_DISTANCE_M),
        default_value_t = DEFAULT_MAX_DELIVERY_DISTANCE_M
    )]
    pub max_delivery_distance_m: f64,
    /// Login attempts per minute for one email address.
    #[arg(
        long,
        global = true,
        env = "MEALKITZ_LOGIN_ATTEMPTS_PER_MINUTE",
        value_parser = whole(MAX_PER_MINUTE),
        default_value_t = DEFAULT_LOGIN_ATTEMPTS_PER_MINUTE
    )]
    pub login_attempts_per_minute: u32,
    /// Failed login attempts per minute from one client address.
    #[arg(
        long,
        global = true,
        env = "MEALKITZ_LOGIN_FAILURES_PER_ADDRESS_PER_MINUTE",
        value_parser = whole(MAX_PER_MINUTE),
        default_value_t = DEFAULT_LOGIN_FAILURES_PER_ADDRESS_PER_MINUTE
    )]
    pub login_failures_per_address_per_minute: u32,
    /// Checkouts per minute for one customer.
    #[arg(
        long,
        global = true,
        env = "MEALKITZ_CHECKOUTS_PER_MINUTE",
        value_parser = whole(MAX_PER_MINUTE),
        default_value_t = DEFAULT_CHECKOUTS_PER_MINUTE
    )]
    pub checkouts_per_minute: u32,
    /// Seconds after which a checkout that never finished is given up and its payment hold
    /// released (never while a live request still runs it).
    #[arg(
        long = "payment-abandon-after-secs",
        value_name = "SECS",
        global = true,
        env = "MEALKITZ_PAYMENT_ABANDON_AFTER_SECS",
        value_parser = whole_secs(MAX_PAYMENT_ABANDON_AFTER),
        default_value = secs_text(DEFAULT_PAYMENT_ABANDON_AFTER)
    )]
    pub payment_abandon_after: Duration,
}

/// Checkout, payments and abuse limits.
#[derive(Debug, Clone)]
pub struct CheckoutConfig {
    /// Farthest a dropoff may be from the merchant.
    pub max_delivery_distance_m: f64,
    /// Signs payment webhooks; `None` refuses every webhook.
    pub webhook_secret: Option<Secret>,
    /// Login attempts per minute per email address, against password guessing.
    pub login_attempts_per_minute: u32,
    /// Failed login attempts per minute per client address, against credential stuffing.
    /// Only failures count, so many people behind one address (or a load tool) can log in.
    pub login_failures_per_address_per_minute: u32,
    /// Checkouts per minute per customer, against card testing.
    pub checkouts_per_minute: u32,
    /// A checkout unfinished this long is given up and its payment hold released, so that a
    /// customer whose app died is not left with money held on the card.
    pub payment_abandon_after: Duration,
}

impl Default for CheckoutConfig {
    fn default() -> Self {
        CheckoutConfig {
            max_delivery_distance_m: DEFAULT_MAX_DELIVERY_DISTANCE_M,
            webhook_secret: None,
            login_attempts_per_minute: DEFAULT_LOGIN_ATTEMPTS_PER_MINUTE,
            login_failures_per_address_per_minute: DEFAULT_LOGIN_FAILURES_PER_ADDRESS_PER_MINUTE,
            checkouts_per_minute: DEFAULT_CHECKOUTS_PER_MINUTE,
            payment_abandon_after: DEFAULT_PAYMENT_ABANDON_AFTER,
        }
    }
}

impl CheckoutArgs {
    pub fn to_config(&self) -> CheckoutConfig {
        CheckoutConfig {
            max_delivery_distance_m: self.max_delivery_distance_m,
            webhook_secret: self.webhook_secret.clone(),
            login_attempts_per_minute: self.login_attempts_per_minute,
            login_failures_per_address_per_minute: self.login_failures_per_address_per_minute,
            checkouts_per_minute: self.checkouts_per_minute,
            payment_abandon_after: self.payment_abandon_after,
        }
    }
}
