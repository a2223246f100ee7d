//! Merchants' webhook endpoints as a channel: one signed `POST` per attempt (Standard Webhooks
//! headers), a 15 s deadline, redirects followed only to public addresses, and what the answer
//! means — delivered, try again on the schedule (or later, when `Retry-After` asks), or the
//! endpoint gone (410) or failing for five days: disabled.

use std::time::Duration;

use rand::Rng;

use super::address::{PublicResolver, check_parsed};
use super::signing::signature_header;
use super::{Outcome, Sent, describe};
use crate::domain::notification::{
    WEBHOOK_DISABLE_AFTER_FAILING_SECS, message_id, webhook_retry_delay,
};
use crate::store::{Notification, Store, StoreError, WebhookEndpoint};

/// Deadline of one delivery attempt.
pub const WEBHOOK_TIMEOUT: Duration = Duration::from_secs(15);
/// Redirects followed at most (each to a public address).
const WEBHOOK_MAX_REDIRECTS: usize = 3;
/// Bytes of an endpoint's answer kept in the attempt's record.
const ANSWER_KEPT_BYTES: usize = 200;

/// The HTTP client deliveries go through.
pub struct Webhooks {
    client: reqwest::Client,
}

impl Webhooks {
    pub fn new(allow_private: bool) -> Webhooks {
        let redirects = reqwest::redirect::Policy::custom(move |attempt| {
            if attempt.previous().len() >= WEBHOOK_MAX_REDIRECTS {
                attempt.error("too many redirects")
            } else if let Err(refusal) = check_parsed(attempt.url(), allow_private) {
                attempt.error(format!("redirected to a URL that {refusal}"))
            } else {
                attempt.follow()
            }
        });
        let client = reqwest::Client::builder()
            .timeout(WEBHOOK_TIMEOUT)
            .redirect(redirects)
            .dns_resolver(std::sync::Arc::new(PublicResolver { allow_private }))
            .user_agent(concat!("MealKitz-Webhooks/", env!("CARGO_PKG_VERSION")))
            .build()
            .unwrap_or_default();
        Webhooks { client }
    }

    /// One attempt to deliver `notification` to its endpoint.
    pub async fn send(&self, store: &Store, notification: &Notification) -> Outcome {
        let endpoint = match notification.endpoint_id {
            Some(id) => match store.webhook_endpoint(id).await {
                Ok(endpoint) => endpoint,
                Err(error) => return retry_store(notification, error),
            },
            None => None,
        };
        let Some(endpoint) = endpoint else {
            return Outcome::Cancelled {
                status: None,
                reason: "the endpoint was removed".to_owned(),
            };
        };
        if let Some(reason) = &endpoint.disabled_reason {
            return Outcome::Cancelled {
                status: None,
                reason: format!("the endpoint is disabled: {reason}"),
            };
        }
        let outcome = self.post(&endpoint, notification).await;
        match &outcome {
            Outcome::Sent(_) => {
                if endpoint.failing_since.is_some()
                    && let Err(error) = store.webhook_endpoint_succeeded(endpoint.id).await
                {
                    tracing::warn!(error = %error, "cannot note a webhook endpoint's recovery");
                }
            }
            Outcome::Retry { .. } | Outcome::Failed { .. } => {
                return self.after_failure(store, &endpoint, outcome).await;
            }
            Outcome::Cancelled { .. } => {
                disable(store, &endpoint, "the endpoint answered 410 Gone").await;
            }
            Outcome::Paused { .. } => {}
        }
        outcome
    }

    async fn post(&self, endpoint: &WebhookEndpoint, notification: &Notification) -> Outcome {
        let id = message_id(notification.outbox_id);
        let body = serde_json::to_vec(&notification.payload).unwrap_or_default();
        let now = chrono::Utc::now();
        let timestamp = now.timestamp();
        let signature = signature_header(&endpoint.signing_secrets(now), &id, timestamp, &body);
        let attempts = notification.attempts + 1;
        let answered = self
            .client
            .post(&endpoint.url)
            .header("content-type", "application/json")
            .header("webhook-id", &id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(body)
            .send()
            .await;
        let response = match answered {
            Ok(response) => response,
            Err(error) => {
                let (outcome, error) = if error.is_timeout() {
                    ("timeout", "no answer within 15 s".to_owned())
                } else if error.is_redirect() {
                    ("refused", describe(error))
                } else {
                    ("unreachable", describe(error))
                };
                return schedule(attempts, outcome, None, error, None);
            }
        };
        let status = response.status().as_u16();
        let retry_after = retry_after(response.headers());
        if response.status().is_success() {
            return Outcome::Sent(Sent {
                sent_as: "webhook",
                provider_id: None,
                status: Some(status),
                note: None,
            });
        }
        let answer = response.text().await.unwrap_or_default();
        let answer: String = answer.chars().take(ANSWER_KEPT_BYTES).collect();
        if status == 410 {
            return Outcome::Cancelled {
                status: Some(status),
                reason: "the endpoint answered 410 Gone: disabled".to_owned(),
            };
        }
        schedule(
            attempts,
            "http_error",
            Some(status),
            format!("HTTP {status}: {answer}"),
            retry_after,
        )
    }

    /// Notes the endpoint's failing streak and disables it after five days without a success.
    async fn after_failure(
        &self,
        store: &Store,
        endpoint: &WebhookEndpoint,
        outcome: Outcome,
    ) -> Outcome {
        let now = chrono::Utc::now();
        let since = match store.webhook_endpoint_failed(endpoint.id, now).await {
            Ok(since) => since,
            Err(error) => {
                tracing::warn!(error = %error, "cannot note a webhook endpoint's failure");
                None
            }
        };
        if since
            .is_some_and(|since| (now - since).num_seconds() >= WEBHOOK_DISABLE_AFTER_FAILING_SECS)
        {
            disable(store, endpoint, "failing for 5 days").await;
            return Outcome::Cancelled {
                status: match outcome {
                    Outcome::Retry { status, .. } | Outcome::Failed { status, .. } => status,
                    _ => None,
                },
                reason: "the endpoint failed for 5 days: disabled".to_owned(),
            };
        }
        outcome
    }
}

/// Disables an endpoint, telling the merchant through its `disabled_reason` (shown on the board
/// and in the webhook list).
async fn disable(store: &Store, endpoint: &WebhookEndpoint, reason: &str) {
    match store.disable_webhook_endpoint(endpoint.id, reason).await {
        Ok(true) => {
            metrics::counter!("webhook_endpoints_disabled_total").increment(1);
            tracing::warn!(
                endpoint_id = %endpoint.id,
                merchant_id = %endpoint.merchant_id,
                reason,
                "webhook endpoint disabled"
            );
        }
        Ok(false) => {}
        Err(error) => tracing::warn!(error = %error, "cannot disable a webhook endpoint"),
    }
}

/// The next step on the schedule after the `attempts`-th failed attempt.
fn schedule(
    attempts: i32,
    outcome: &'static str,
    status: Option<u16>,
    error: String,
    retry_after: Option<Duration>,
) -> Outcome {
    let random = rand::rng().random::<f64>();
    match webhook_retry_delay(attempts.max(0) as u32, random, retry_after) {
        Some(after) => Outcome::Retry {
            after,
            attempts,
            outcome,
            status,
            error,
        },
        None => Outcome::Failed {
            attempts,
            outcome,
            status,
            error,
        },
    }
}

fn retry_store(notification: &Notification, error: StoreError) -> Outcome {
    Outcome::Retry {
        after: Duration::from_secs(5),
        attempts: notification.attempts,
        outcome: "store_unavailable",
        status: None,
        error: error.to_string(),
    }
}

/// `Retry-After` in seconds or as an HTTP date.
fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let value = headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    (at.with_timezone(&chrono::Utc) - chrono::Utc::now())
        .to_std()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_reads_seconds_and_http_dates() {
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(reqwest::header::RETRY_AFTER, "120".parse().unwrap());
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(120)));
        let later = (chrono::Utc::now() + chrono::Duration::seconds(600)).to_rfc2822();
        headers.insert(reqwest::header::RETRY_AFTER, later.parse().unwrap());
        let read = retry_after(&headers).unwrap().as_secs();
        assert!((590..=600).contains(&read), "{read}");
        headers.insert(reqwest::header::RETRY_AFTER, "soon".parse().unwrap());
        assert_eq!(retry_after(&headers), None);
    }

    #[test]
    fn failures_follow_the_schedule_until_it_is_spent() {
        match schedule(1, "http_error", Some(500), "HTTP 500".into(), None) {
            Outcome::Retry {
                after, attempts, ..
            } => {
                assert_eq!(attempts, 1);
                assert!((5.0..=5.5).contains(&after.as_secs_f64()));
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            schedule(8, "http_error", Some(500), "HTTP 500".into(), None),
            Outcome::Failed { attempts: 8, .. }
        ));
    }
}
