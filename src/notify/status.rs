//! WhatsApp's message status callbacks (`sent`, `delivered`, `read`, `failed`), as they arrive in
//! the `statuses[]` of a webhook envelope: read and recorded on the notification they are about
//! (found by WhatsApp's message id). The inbound webhook endpoint hands them here.

use chrono::{DateTime, Utc};
use serde::Deserialize;

use crate::store::{Store, StoreError};

/// One status of one message, as Meta sends it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct StatusUpdate {
    /// WhatsApp's message id (`wamid…`).
    pub id: String,
    /// `sent`, `delivered`, `read` or `failed`.
    pub status: String,
    /// Unix seconds, as a string.
    pub timestamp: String,
    #[serde(default)]
    pub recipient_id: Option<String>,
    /// What we put in `biz_opaque_callback_data` (our message id), when WhatsApp echoes it.
    #[serde(default)]
    pub biz_opaque_callback_data: Option<String>,
    #[serde(default)]
    pub errors: Vec<StatusError>,
}

/// Why a message failed.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct StatusError {
    pub code: i64,
    #[serde(default)]
    pub title: Option<String>,
}

/// Statuses WhatsApp reports; anything else is ignored.
const KNOWN_STATUSES: [&str; 4] = ["sent", "delivered", "read", "failed"];

/// Each `entry[].changes[].value` of a WhatsApp webhook envelope: where its `messages[]` and
/// `statuses[]` are.
pub fn change_values(envelope: &serde_json::Value) -> impl Iterator<Item = &serde_json::Value> {
    envelope["entry"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|entry| entry["changes"].as_array().into_iter().flatten())
        .map(|change| &change["value"])
}

/// Every status in a webhook envelope (`entry[].changes[].value.statuses[]`); malformed ones are
/// skipped.
pub fn statuses_in(envelope: &serde_json::Value) -> Vec<StatusUpdate> {
    change_values(envelope)
        .flat_map(|value| value["statuses"].as_array().into_iter().flatten())
        .filter_map(|status| {
            serde_json::from_value::<StatusUpdate>(status.clone())
                .inspect_err(
                    |error| tracing::debug!(error = %error, "a WhatsApp status was not understood"),
                )
                .ok()
        })
        .collect()
}

/// Records each status on its notification. Returns how many were about messages of ours.
pub async fn record_statuses(store: &Store, updates: &[StatusUpdate]) -> Result<usize, StoreError> {
    let mut recorded = 0;
    for update in updates {
        if !KNOWN_STATUSES.contains(&update.status.as_str()) {
            continue;
        }
        let at = update
            .timestamp
            .parse::<i64>()
            .ok()
            .and_then(|secs| DateTime::<Utc>::from_timestamp(secs, 0))
            .unwrap_or_else(Utc::now);
        let error = update.errors.first().map(|e| {
            format!(
                "WhatsApp error {}: {}",
                e.code,
                e.title.as_deref().unwrap_or("no title")
            )
        });
        metrics::counter!("whatsapp_message_statuses_total", "status" => update.status.clone())
            .increment(1);
        if store
            .record_whatsapp_status(&update.id, &update.status, at, error.as_deref())
            .await?
        {
            recorded += 1;
        }
    }
    Ok(recorded)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_read_out_of_meta_s_envelope() {
        let envelope = serde_json::json!({
            "object": "whatsapp_business_account",
            "entry": [{
                "id": "102290129340398",
                "changes": [{
                    "field": "messages",
                    "value": {
                        "messaging_product": "whatsapp",
                        "metadata": {"display_phone_number": "15550783881", "phone_number_id": "106540352242922"},
                        "statuses": [
                            {"id": "wamid.HBgLMTY1", "status": "delivered", "timestamp": "1750263773",
                             "recipient_id": "358401234567", "biz_opaque_callback_data": "msg_1"},
                            {"id": "wamid.HBgLMTY2", "status": "failed", "timestamp": "1750263774",
                             "recipient_id": "358401234567",
                             "errors": [{"code": 131026, "title": "Message undeliverable"}]},
                            {"status": "read"}
                        ]
                    }
                }]
            }]
        });
        let statuses = statuses_in(&envelope);
        assert_eq!(statuses.len(), 2);
        assert_eq!(statuses[0].status, "delivered");
        assert_eq!(
            statuses[0].biz_opaque_callback_data.as_deref(),
            Some("msg_1")
        );
        assert_eq!(statuses[1].errors[0].code, 131_026);
        assert!(statuses_in(&serde_json::json!({"object": "x"})).is_empty());
    }
}
