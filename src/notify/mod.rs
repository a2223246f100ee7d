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
