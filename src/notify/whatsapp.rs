//! The WhatsApp Business Cloud API as a channel: one customer message sent as free text inside
//! the 24-hour customer-service window and as an approved template outside it (and again as the
//! template when WhatsApp answers 131047), what each error code asks of us (back off on rate
//! limits, pause the channel on an expired token, give up on the rest after a few tries), and
//! the pause itself.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use rand::Rng;
use serde_json::{Value, json};

use super::{Outcome, Sent, describe};
use crate::config::NotifyConfig;
use crate::config::notify::WhatsAppAccount;
use crate::domain::notification::{
    CustomerMessage, WhatsAppFailure, message_id, whatsapp_window_open,
};
use crate::domain::{NotifyEvent, Phone};
use crate::store::{Notification, Store};

/// Deadline of one call to the Graph API.
const WHATSAPP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the channel stays paused after WhatsApp refused the token (190); then one message
/// tries again.
pub const TOKEN_PAUSE: Duration = Duration::from_secs(600);
/// Back-off of a rate-limited message: from this, doubling…
const RATE_LIMIT_BACKOFF_MIN: Duration = Duration::from_secs(2);
/// …up to this.
const RATE_LIMIT_BACKOFF_MAX: Duration = Duration::from_secs(300);
/// Rate-limited attempts before a message is given up (about an hour of trying).
const RATE_LIMIT_MAX_ATTEMPTS: i32 = 20;
/// Attempts of a message failing otherwise (a server error, no answer) before it is given up.
const OTHER_MAX_ATTEMPTS: i32 = 5;

/// The channel, when an account is configured.
pub struct WhatsApp {
    client: reqwest::Client,
    messages_url: String,
    account: WhatsAppAccount,
    templates: std::collections::BTreeMap<NotifyEvent, String>,
    language: String,
    paused_until: Mutex<Option<Instant>>,
}

/// An error WhatsApp answered with.
struct ApiFailure {
    status: Option<u16>,
    code: Option<i64>,
    error: String,
}

impl WhatsApp {
    pub fn new(config: &NotifyConfig) -> Option<WhatsApp> {
        let account = config.whatsapp.clone()?;
        let client = reqwest::Client::builder()
            .timeout(WHATSAPP_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .ok()?;
        Some(WhatsApp {
            client,
            messages_url: format!(
                "{}/{}/{}/messages",
                config.whatsapp_api_url, config.whatsapp_api_version, account.phone_number_id
            ),
            account,
            templates: config.whatsapp_templates.clone(),
            language: config.whatsapp_template_language.clone(),
            paused_until: Mutex::new(None),
        })
    }

    /// Whether the channel is paused (the token was refused within [`TOKEN_PAUSE`]).
    pub fn is_paused(&self) -> bool {
        let mut paused = self.paused_until.lock().unwrap_or_else(|p| p.into_inner());
        match *paused {
            Some(until) if Instant::now() < until => true,
            Some(_) => {
                *paused = None;
                metrics::gauge!("whatsapp_channel_paused").set(0.0);
                false
            }
            None => false,
        }
    }

    fn pause(&self) {
        *self.paused_until.lock().unwrap_or_else(|p| p.into_inner()) =
            Some(Instant::now() + TOKEN_PAUSE);
        metrics::gauge!("whatsapp_channel_paused").set(1.0);
        metrics::counter!("whatsapp_token_refusals_total").increment(1);
        tracing::error!(
            pause_secs = TOKEN_PAUSE.as_secs(),
            "WhatsApp refused the access token (190): the channel is paused; replace MEALKITZ_WHATSAPP_TOKEN"
        );
    }

    /// Sends one customer message.
    pub async fn send(&self, store: &Store, notification: &Notification) -> Outcome {
        let message: CustomerMessage = match serde_json::from_value(notification.payload.clone()) {
            Ok(message) => message,
            Err(error) => {
                return Outcome::Failed {
                    attempts: notification.attempts + 1,
                    outcome: "invalid",
                    status: None,
                    error: format!("the stored message cannot be read: {error}"),
                };
            }
        };
        let Ok(phone) = Phone::parse(&notification.destination) else {
            return Outcome::Failed {
                attempts: notification.attempts + 1,
                outcome: "invalid",
                status: None,
                error: "the stored phone number is not E.164".to_owned(),
            };
        };
        let id = message_id(notification.outbox_id);
        let window_open = match store.whatsapp_last_inbound(&phone).await {
            Ok(last) => whatsapp_window_open(last, chrono::Utc::now()),
            Err(error) => {
                return Outcome::Retry {
                    after: RATE_LIMIT_BACKOFF_MIN,
                    attempts: notification.attempts + 1,
                    outcome: "store_unavailable",
                    status: None,
                    error: error.to_string(),
                };
            }
        };
        let mut note = None;
        if window_open {
            match self.post(&self.text_body(&phone, &message, &id)).await {
                Ok(provider_id) => return sent("text", provider_id, None),
                Err(failure)
                    if failure.code.map(WhatsAppFailure::of_code)
                        == Some(WhatsAppFailure::WindowClosed) =>
                {
                    metrics::counter!("whatsapp_window_closed_total").increment(1);
                    note = Some(
                        "text refused (131047, the window closed): sent as a template".to_owned(),
                    );
                }
                Err(failure) => return self.failed(failure, notification.attempts),
            }
        }
        match self.post(&self.template_body(&phone, &message, &id)).await {
            Ok(provider_id) => sent("template", provider_id, note),
            Err(failure) => self.failed(failure, notification.attempts),
        }
    }

    /// Sends one reply of a conversation: `body` is a Cloud API message (interactive or text,
    /// inside the window the customer's message opened), `id` its stable id, `attempts` those
    /// made before. Errors mean what they mean for notifications.
    pub async fn send_reply(&self, body: &Value, id: &str, attempts: i32) -> Outcome {
        let mut body = body.clone();
        body["biz_opaque_callback_data"] = json!(id);
        let sent_as = if body["type"] == "interactive" {
            "interactive"
        } else {
            "text"
        };
        match self.post(&body).await {
            Ok(provider_id) => sent(sent_as, provider_id, None),
            Err(failure) => self.failed(failure, attempts),
        }
    }

    fn failed(&self, failure: ApiFailure, attempts: i32) -> Outcome {
        let kind = failure
            .code
            .map_or(WhatsAppFailure::Other, WhatsAppFailure::of_code);
        let attempts = attempts + 1;
        match kind {
            WhatsAppFailure::TokenExpired => {
                self.pause();
                Outcome::Paused {
                    status: failure.status,
                    error: failure.error,
                }
            }
            WhatsAppFailure::RateLimited if attempts < RATE_LIMIT_MAX_ATTEMPTS => Outcome::Retry {
                after: backoff(attempts),
                attempts,
                outcome: "rate_limited",
                status: failure.status,
                error: failure.error,
            },
            // A server error or no answer passes; a refusal of this message (a bad number, a
            // template not approved) does not.
            WhatsAppFailure::Other | WhatsAppFailure::WindowClosed
                if failure.status.is_none_or(|s| s >= 500) && attempts < OTHER_MAX_ATTEMPTS =>
            {
                Outcome::Retry {
                    after: backoff(attempts),
                    attempts,
                    outcome: "failed",
                    status: failure.status,
                    error: failure.error,
                }
            }
            _ => Outcome::Failed {
                attempts,
                outcome: if kind == WhatsAppFailure::RateLimited {
                    "rate_limited"
                } else {
                    "failed"
                },
                status: failure.status,
                error: failure.error,
            },
        }
    }

    fn text_body(&self, phone: &Phone, message: &CustomerMessage, id: &str) -> Value {
        json!({
            "messaging_product": "whatsapp",
            "recipient_type": "individual",
            "to": phone.digits(),
            "type": "text",
            "text": { "preview_url": false, "body": message.text() },
            "biz_opaque_callback_data": id,
        })
    }

    fn template_body(&self, phone: &Phone, message: &CustomerMessage, id: &str) -> Value {
        let name = self
            .templates
            .get(&message.event)
            .cloned()
            .unwrap_or_else(|| format!("mealkitz_order_{}", message.event.template_key()));
        let parameters: Vec<Value> = message
            .template_parameters()
            .into_iter()
            .map(|text| json!({ "type": "text", "text": text }))
            .collect();
        json!({
            "messaging_product": "whatsapp",
            "recipient_type": "individual",
            "to": phone.digits(),
            "type": "template",
            "template": {
                "name": name,
                "language": { "code": self.language },
                "components": [{ "type": "body", "parameters": parameters }],
            },
            "biz_opaque_callback_data": id,
        })
    }

    /// One call; WhatsApp's message id on success.
    async fn post(&self, body: &Value) -> Result<String, ApiFailure> {
        let response = self
            .client
            .post(&self.messages_url)
            .bearer_auth(self.account.token.expose())
            .json(body)
            .send()
            .await
            .map_err(|error| ApiFailure {
                status: None,
                code: None,
                error: if error.is_timeout() {
                    "no answer within 10 s".to_owned()
                } else {
                    format!("cannot reach the Graph API: {}", describe(error))
                },
            })?;
        let status = response.status().as_u16();
        let answer: Value = response.json().await.unwrap_or(Value::Null);
        if (200..300).contains(&status)
            && let Some(id) = answer["messages"][0]["id"].as_str()
        {
            return Ok(id.to_owned());
        }
        let code = answer["error"]["code"].as_i64();
        let text = answer["error"]["message"]
            .as_str()
            .unwrap_or("no error message")
            .chars()
            .take(300)
            .collect::<String>();
        Err(ApiFailure {
            status: Some(status),
            code,
            error: match code {
                Some(code) => format!("HTTP {status}, error {code}: {text}"),
                None => format!("HTTP {status}: {text}"),
            },
        })
    }
}

fn sent(sent_as: &'static str, provider_id: String, note: Option<String>) -> Outcome {
    Outcome::Sent(Sent {
        sent_as,
        provider_id: Some(provider_id),
        status: Some(200),
        note,
    })
}

/// Exponential back-off with equal jitter.
fn backoff(attempts: i32) -> Duration {
    let exponent = attempts.clamp(1, 16) as u32 - 1;
    let full = RATE_LIMIT_BACKOFF_MIN
        .saturating_mul(1 << exponent)
        .min(RATE_LIMIT_BACKOFF_MAX)
        .as_secs_f64();
    Duration::from_secs_f64(full / 2.0 + full / 2.0 * rand::rng().random::<f64>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limit_back_off_doubles_from_two_seconds_to_five_minutes() {
        for _ in 0..20 {
            let first = backoff(1).as_secs_f64();
            assert!((1.0..=2.0).contains(&first), "{first}");
            let third = backoff(3).as_secs_f64();
            assert!((4.0..=8.0).contains(&third), "{third}");
            let late = backoff(15).as_secs_f64();
            assert!((150.0..=300.0).contains(&late), "{late}");
        }
    }
}
