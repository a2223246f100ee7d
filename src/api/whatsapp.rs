//! The WhatsApp Business webhook: Meta's verification handshake (`GET /webhooks/whatsapp`) and
//! its deliveries (`POST /webhooks/whatsapp`), signed with the app secret over the raw body and
//! checked in constant time before anything is read. Each inbound message is kept in the inbox
//! (deduplicated on its `wamid`) and opens the customer-service window; each status is recorded on
//! the message it is about. The answer is 200 as soon as that is stored — Meta retries anything
//! slower or failed for days — and 200 for what cannot be read (kept as ignored), never a 500.

use std::collections::HashMap;

use actix_web::{HttpRequest, HttpResponse, web};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use super::error::{ApiError, ErrorBody, ErrorCode};
use super::state::AppState;
use crate::domain::Phone;
use crate::notify::status::{change_values, record_statuses, statuses_in};
use crate::payments::webhook::{decode_hex, encode_hex};
use crate::store::InboundMessage;

/// The header carrying `sha256=<hex HMAC-SHA256 of the raw body>`.
pub const WHATSAPP_SIGNATURE_HEADER: &str = "X-Hub-Signature-256";

/// `GET /webhooks/whatsapp`: Meta's subscription check. Answers the challenge when the verify
/// token matches, 403 otherwise.
#[utoipa::path(
    get, path = "/webhooks/whatsapp", tag = "whatsapp",
    params(
        ("hub.mode" = String, Query, description = "subscribe"),
        ("hub.verify_token" = String, Query, description = "MEALKITZ_WHATSAPP_VERIFY_TOKEN"),
        ("hub.challenge" = String, Query, description = "echoed back"),
    ),
    responses(
        (status = 200, description = "The challenge, as plain text", body = String),
        (status = 403, body = ErrorBody),
    )
)]
pub async fn verify(
    state: web::Data<AppState>,
    query: web::Query<HashMap<String, String>>,
) -> Result<HttpResponse, ApiError> {
    let given = query.get("hub.verify_token").map(String::as_bytes);
    let matches = match (&state.notify.whatsapp_verify_token, given) {
        (Some(expected), Some(given)) => {
            use subtle::ConstantTimeEq;
            let expected = expected.expose().as_bytes();
            expected.len() == given.len() && bool::from(expected.ct_eq(given))
        }
        _ => false,
    };
    let challenge = query
        .get("hub.challenge")
        .filter(|c| !c.is_empty() && c.len() <= 256);
    match (
        query.get("hub.mode").map(String::as_str),
        matches,
        challenge,
    ) {
        (Some("subscribe"), true, Some(challenge)) => Ok(HttpResponse::Ok()
            .content_type("text/plain; charset=utf-8")
            .body(challenge.clone())),
        _ => Err(ApiError::new(ErrorCode::Forbidden)
            .with_message("The verify token does not match MEALKITZ_WHATSAPP_VERIFY_TOKEN.")),
    }
}

/// Whether `header` is `sha256=` and the hex HMAC-SHA256 of `body` under `secret`; the
/// comparison is constant-time.
pub fn signature_matches(header: Option<&str>, body: &[u8], secret: &[u8]) -> bool {
    let Some(hex) = header.and_then(|h| h.trim().strip_prefix("sha256=")) else {
        return false;
    };
    let Some(given) = decode_hex(hex) else {
        return false;
    };
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(body);
    mac.verify_slice(&given).is_ok()
}

/// `POST /webhooks/whatsapp`: Meta's deliveries. Signature first; then every message is kept
/// (once per `wamid`) and every status recorded. 200 once stored; 503 when the store cannot keep
/// it (Meta delivers it again).
#[utoipa::path(
    post, path = "/webhooks/whatsapp", tag = "whatsapp",
    params(("X-Hub-Signature-256" = String, Header, description = "sha256=<hex HMAC-SHA256 of the raw body under the app secret>")),
    request_body(content = String, description = "Meta's envelope: object, entry[].changes[].value with metadata, contacts, messages[], statuses[]"),
    responses(
        (status = 200, description = "Stored (also repeats and envelopes that cannot be read, kept as ignored)"),
        (status = 401, description = "whatsapp_signature_invalid", body = ErrorBody),
        (status = 413, body = ErrorBody),
        (status = 503, description = "whatsapp_webhook_disabled, or the database is unavailable", body = ErrorBody),
    )
)]
pub async fn receive(
    req: HttpRequest,
    state: web::Data<AppState>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let Some(secret) = &state.notify.whatsapp_app_secret else {
        return Err(ErrorCode::WhatsappWebhookDisabled.into());
    };
    let header = req
        .headers()
        .get(WHATSAPP_SIGNATURE_HEADER)
        .and_then(|v| v.to_str().ok());
    if !signature_matches(header, &body, secret.expose().as_bytes()) {
        metrics::counter!("whatsapp_webhooks_total", "outcome" => "bad_signature").increment(1);
        metrics::counter!("whatsapp_inbound_rejected_total", "reason" => "bad_signature")
            .increment(1);
        return Err(ErrorCode::WhatsappSignatureInvalid.into());
    }
    let now = crate::store::now();
    let envelope = serde_json::from_slice::<serde_json::Value>(&body).ok();
    let Some(envelope) = envelope.filter(is_envelope) else {
        keep_unreadable(&state, &body, now).await?;
        return Ok(HttpResponse::Ok().finish());
    };
    let mut fresh = 0;
    for value in change_values(&envelope) {
        for message in value["messages"].as_array().into_iter().flatten() {
            if keep_message(&state, value, message, now).await? {
                fresh += 1;
            }
        }
    }
    let statuses = statuses_in(&envelope);
    record_statuses(&state.store, &statuses).await?;
    tracing::debug!(
        messages = fresh,
        statuses = statuses.len(),
        "WhatsApp webhook received"
    );
    metrics::counter!("whatsapp_webhooks_total", "outcome" => "received").increment(1);
    Ok(HttpResponse::Ok().finish())
}

/// Whether a body is Meta's envelope: `object` is `whatsapp_business_account` and `entry` a list.
fn is_envelope(envelope: &serde_json::Value) -> bool {
    envelope["object"] == "whatsapp_business_account" && envelope["entry"].is_array()
}

/// Keeps a signed body that is not Meta's envelope as ignored (once per body: its SHA-256 is the
/// id), so it shows in the inbox and Meta, answered 200, does not send it again.
async fn keep_unreadable(
    state: &AppState,
    body: &[u8],
    now: chrono::DateTime<chrono::Utc>,
) -> Result<(), ApiError> {
    let digest = encode_hex(&Sha256::digest(body));
    let json = serde_json::from_slice::<serde_json::Value>(body).is_ok();
    state
        .store
        .record_inbound_message(&InboundMessage {
            id: format!("ignored_{digest}"),
            phone: String::new(),
            kind: "malformed".to_owned(),
            message: serde_json::Value::String(if json {
                format!(
                    "{} bytes of JSON that are not a WhatsApp envelope",
                    body.len()
                )
            } else {
                format!("{} bytes that are not JSON", body.len())
            }),
            state: "ignored",
            received_at: now,
        })
        .await?;
    metrics::counter!("whatsapp_webhooks_total", "outcome" => "ignored").increment(1);
    Ok(())
}

/// Keeps one of Meta's message objects in the inbox, with the sender's profile name from the
/// envelope's `contacts`; `true` when it was new. A message without a readable sender, or over
/// the per-phone rate, is kept as ignored: answered 200, never read.
async fn keep_message(
    state: &AppState,
    value: &serde_json::Value,
    message: &serde_json::Value,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<bool, ApiError> {
    let Some(id) = message["id"].as_str().filter(|id| !id.is_empty()) else {
        return Ok(false);
    };
    let from = message["from"].as_str();
    let phone = from.and_then(|from| Phone::parse(&format!("+{from}")).ok());
    let mut kind = message["type"].as_str().unwrap_or("unknown").to_owned();
    if kind == crate::domain::chat::PAID_KIND {
        // Only the pay endpoint writes that kind; whatever Meta calls it, it is not ours.
        kind = "unknown".to_owned();
    }
    let sent_at = message["timestamp"]
        .as_str()
        .and_then(|t| t.parse::<i64>().ok())
        .and_then(|secs| chrono::DateTime::from_timestamp(secs, 0))
        .unwrap_or(now);
    let limited = match &phone {
        Some(phone) => state
            .limits
            .whatsapp_per_phone
            .ensure_below(phone.as_str())
            .await
            .is_err(),
        None => false,
    };
    if limited {
        metrics::counter!("whatsapp_inbound_rejected_total", "reason" => "rate_limited")
            .increment(1);
        kind = "rate_limited".to_owned();
    }
    let mut message = message.clone();
    let profile_name = value["contacts"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|contact| contact["wa_id"].as_str() == from)
        .and_then(|contact| contact["profile"]["name"].as_str());
    if let (Some(name), Some(fields)) = (profile_name, message.as_object_mut()) {
        fields.insert(
            "profile".to_owned(),
            serde_json::json!({ "name": name.chars().take(100).collect::<String>() }),
        );
    }
    let kept = state
        .store
        .record_inbound_message(&InboundMessage {
            id: id.to_owned(),
            phone: phone
                .as_ref()
                .map(|p| p.as_str().to_owned())
                .unwrap_or_default(),
            kind: kind.clone(),
            message,
            state: if phone.is_some() && !limited {
                "received"
            } else {
                "ignored"
            },
            received_at: now,
        })
        .await?;
    if !kept {
        metrics::counter!("whatsapp_inbound_duplicates_total").increment(1);
        return Ok(false);
    }
    metrics::counter!("whatsapp_inbound_messages_total", "kind" => kind).increment(1);
    if let Some(phone) = &phone {
        if !limited {
            state.limits.whatsapp_per_phone.record(phone.as_str()).await;
        }
        state.store.record_whatsapp_inbound(phone, sent_at).await?;
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_the_hex_hmac_of_the_raw_body_under_the_app_secret() {
        let body = br#"{"object":"whatsapp_business_account"}"#;
        let mut mac = Hmac::<Sha256>::new_from_slice(b"app-secret").unwrap();
        mac.update(body);
        let hex: String = mac
            .finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert!(signature_matches(
            Some(&format!("sha256={hex}")),
            body,
            b"app-secret"
        ));
        assert!(!signature_matches(
            Some(&format!("sha256={hex}")),
            b"{}",
            b"app-secret"
        ));
        assert!(!signature_matches(
            Some(&format!("sha256={hex}")),
            body,
            b"other"
        ));
        assert!(!signature_matches(Some(&hex), body, b"app-secret"));
        assert!(!signature_matches(Some("sha256=zz"), body, b"app-secret"));
        assert!(!signature_matches(None, body, b"app-secret"));
    }
}
