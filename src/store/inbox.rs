//! The WhatsApp inbox: inbound messages stored before the webhook answers, keyed by WhatsApp's
//! message id so that a redelivered message is recognised — across restarts and replicas.

use chrono::{DateTime, Utc};
use sqlx::types::Json;

use super::{Store, StoreError, on_writer};

/// An inbound message to keep.
#[derive(Debug, Clone, PartialEq)]
pub struct InboundMessage {
    /// WhatsApp's message id (`wamid…`), or `ignored_<hash>` for an envelope that could not be read.
    pub id: String,
    /// The sender (E.164), empty when unknown.
    pub phone: String,
    /// `text`, `interactive`, `location`, … or `malformed`.
    pub kind: String,
    pub message: serde_json::Value,
    /// `received` (for the conversation to take) or `ignored`.
    pub state: &'static str,
    pub received_at: DateTime<Utc>,
}

impl Store {
    /// Keeps an inbound message; `false` when one with its id was kept before (a redelivery).
    pub async fn record_inbound_message(
        &self,
        message: &InboundMessage,
    ) -> Result<bool, StoreError> {
        let inserted = on_writer!(self, |pool| {
            sqlx::query(
                "INSERT INTO whatsapp_inbox (id, phone, kind, message, state, received_at) \
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (id) DO NOTHING",
            )
            .bind(&message.id)
            .bind(&message.phone)
            .bind(&message.kind)
            .bind(Json(&message.message))
            .bind(message.state)
            .bind(message.received_at)
            .execute(pool)
            .await?
            .rows_affected()
        });
        if inserted == 1 && message.state == "received" {
            self.inner.inbox_signal.notify_one();
        }
        Ok(inserted == 1)
    }
}
