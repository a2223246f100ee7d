//! The notification service: drains the outbox the journal writes into, turning each order
//! transition into messages — to the customer on WhatsApp (Business Cloud API) and to the
//! merchant's webhook endpoints (Standard Webhooks) — sent at least once, in order per order and
//! destination, each with a stable id, by one replica at a time.
//!
//! - [`notifier`]: the loop — claim, fan out, send, record.
//! - [`fanout`]: what one outbox entry becomes, every fact frozen.
//! - [`whatsapp`] and [`webhook`]: the two channels and what their answers mean.
//! - [`status`]: WhatsApp's delivery statuses, recorded on the messages they are about.
//! - [`address`]: which webhook URLs may be called (no private addresses), and the resolver that
//!   keeps deliveries to public ones.
//! - [`signing`]: Standard Webhooks secrets and signatures.

pub mod address;
pub mod fanout;
pub mod notifier;
pub mod signing;
pub mod status;
pub mod webhook;
pub mod whatsapp;

pub use notifier::Notifier;

/// A message that went out.
#[derive(Debug, Clone, PartialEq)]
pub struct Sent {
    /// `text`, `template` or `webhook`.
    pub sent_as: &'static str,
    /// WhatsApp's message id.
    pub provider_id: Option<String>,
    /// The HTTP status of the answer.
    pub status: Option<u16>,
    /// Anything worth keeping with the attempt (a text re-sent as a template).
    pub note: Option<String>,
}

/// How one attempt on either channel ended.
#[derive(Debug)]
pub enum Outcome {
    Sent(Sent),
    /// Try again after `after`; `attempts` is the new count of the message's schedule.
    Retry {
        after: std::time::Duration,
        attempts: i32,
        outcome: &'static str,
        status: Option<u16>,
        error: String,
    },
    /// Given up after `attempts`.
    Failed {
        attempts: i32,
        outcome: &'static str,
        status: Option<u16>,
        error: String,
    },
    /// Not sent and never will be: the webhook endpoint is gone or disabled.
    Cancelled {
        status: Option<u16>,
        reason: String,
    },
    /// WhatsApp refused the token: the channel is paused; the message waits for it.
    Paused {
        status: Option<u16>,
        error: String,
    },
}

/// A delivery error's text with its causes, without the URL (a merchant may have put a token in
/// theirs), for the attempt's record.
pub(crate) fn describe(error: reqwest::Error) -> String {
    let error = error.without_url();
    let mut text = error.to_string();
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
