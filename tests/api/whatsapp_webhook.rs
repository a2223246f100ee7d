//! The WhatsApp Business webhook (issue 17, part 1): Meta's verification handshake, the signature
//! over the raw body checked before anything is read, inbound messages kept once per `wamid`
//! (opening the customer-service window), statuses handed to the notification records, and
//! envelopes that cannot be read answered 200 and kept as ignored.

use hmac::{Hmac, Mac};
use mealkitz::config::Secret;
use mealkitz::domain::Phone;
use serde_json::{Value, json};
use sha2::Sha256;

use crate::helpers::{
    Db, TestApp, TestDb, each_backend, migrated_store, spawn_app_with, test_config,
};
use crate::webhooks_api::count_rows;

const APP_SECRET: &str = "meta-app-secret-0123456789";
const VERIFY_TOKEN: &str = "verify-me-0123456789abcdef";

async fn app(kind: Db) -> TestApp {
    let db = TestDb::create(kind).await;
    let mut config = test_config(&db);
    config.notify.whatsapp_app_secret = Some(Secret::new(APP_SECRET));
    config.notify.whatsapp_verify_token = Some(Secret::new(VERIFY_TOKEN));
    spawn_app_with(db, config).await
}

/// `sha256=` and the hex HMAC-SHA256 of `body` under `secret`, as Meta signs a delivery.
pub(crate) fn signature(body: &[u8], secret: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    let hex: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("sha256={hex}")
}

/// POSTs `body` to the webhook with `signature` (if any); the status.
async fn post(app: &TestApp, body: &[u8], signature: Option<String>) -> u16 {
    let mut request = reqwest::Client::new()
        .post(format!("{}/webhooks/whatsapp", app.address))
        .header("content-type", "application/json")
        .body(body.to_vec());
    if let Some(signature) = signature {
        request = request.header("X-Hub-Signature-256", signature);
    }
    request.send().await.unwrap().status().as_u16()
}

/// Meta's envelope around `value`.
fn envelope(value: Value) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "object": "whatsapp_business_account",
        "entry": [{"id": "102290129340398", "changes": [{"field": "messages", "value": value}]}]
    }))
    .unwrap()
}

fn text_from(from: &str, wamid: &str, at: i64) -> Vec<u8> {
    envelope(json!({
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": "15550783881", "phone_number_id": "1234567890"},
        "contacts": [{"profile": {"name": "Aino"}, "wa_id": from}],
        "messages": [{"from": from, "id": wamid, "timestamp": at.to_string(), "type": "text",
                      "text": {"body": "hi"}}]
    }))
}

#[actix_web::test]
async fn the_verification_handshake_echoes_the_challenge_only_for_the_right_token() {
    let app = app(Db::Sqlite).await;
    let get = |query: String| {
        let url = format!("{}/webhooks/whatsapp?{query}", app.address);
        async move { reqwest::get(url).await.unwrap() }
    };
    let right = get(format!(
        "hub.mode=subscribe&hub.verify_token={VERIFY_TOKEN}&hub.challenge=1158201444"
    ))
    .await;
    assert_eq!(right.status().as_u16(), 200);
    assert_eq!(right.text().await.unwrap(), "1158201444");
    for query in [
        "hub.mode=subscribe&hub.verify_token=wrong-token-0123456789&hub.challenge=1".to_owned(),
        format!("hub.mode=unsubscribe&hub.verify_token={VERIFY_TOKEN}&hub.challenge=1"),
        "hub.mode=subscribe&hub.challenge=1".to_owned(),
    ] {
        assert_eq!(get(query.clone()).await.status().as_u16(), 403, "{query}");
    }
}

#[actix_web::test]
async fn a_delivery_without_the_right_signature_is_refused_with_401_and_nothing_is_kept() {
    let app = app(Db::Sqlite).await;
    let body = text_from("358401234567", "wamid.unsigned", 1_764_748_800);
    assert_eq!(post(&app, &body, None).await, 401);
    assert_eq!(
        post(&app, &body, Some(signature(&body, "another-secret"))).await,
        401
    );
    let tampered = text_from("358401234567", "wamid.tampered", 1_764_748_800);
    assert_eq!(
        post(&app, &tampered, Some(signature(&body, APP_SECRET))).await,
        401
    );
    assert_eq!(count_rows(&app.db, "whatsapp_inbox").await, 0);
}

each_backend! {
    a_signed_message_is_kept_once_opens_the_window_and_a_redelivery_does_nothing => kept_once;
}

async fn kept_once(kind: Db) {
    let app = app(kind).await;
    let at = chrono::Utc::now().timestamp();
    let body = text_from("358401234567", "wamid.HBgLMzU4NDAxMjM0NTY3", at);
    assert_eq!(
        post(&app, &body, Some(signature(&body, APP_SECRET))).await,
        200
    );
    assert_eq!(
        post(&app, &body, Some(signature(&body, APP_SECRET))).await,
        200,
        "a redelivery"
    );
    assert_eq!(count_rows(&app.db, "whatsapp_inbox").await, 1, "kept once");
    let store = migrated_store(&app.db).await;
    let phone = Phone::parse("+358401234567").unwrap();
    let opened = store.whatsapp_last_inbound(&phone).await.unwrap();
    assert_eq!(
        opened.map(|t| t.timestamp()),
        Some(at),
        "the window opens at the message's time"
    );
    store.close().await;

    let malformed = b"{not json";
    assert_eq!(
        post(&app, malformed, Some(signature(malformed, APP_SECRET))).await,
        200
    );
    assert_eq!(
        post(&app, malformed, Some(signature(malformed, APP_SECRET))).await,
        200
    );
    assert_eq!(
        count_rows(&app.db, "whatsapp_inbox").await,
        2,
        "kept as ignored, once"
    );
    // JSON, but not Meta's envelope (no object, entries of the wrong shape): the same.
    for odd in [
        &br#"{"hello":"world"}"#[..],
        br#"{"object":"whatsapp_business_account","entry":{"id":"1"}}"#,
        br#"[1,2,3]"#,
    ] {
        assert_eq!(post(&app, odd, Some(signature(odd, APP_SECRET))).await, 200);
    }
    assert_eq!(
        count_rows(&app.db, "whatsapp_inbox WHERE state = 'ignored'").await,
        4,
        "each unreadable body kept as ignored"
    );
    // A message that calls itself what only the pay endpoint writes is read as unknown.
    let forged = envelope(json!({
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": "15550783881", "phone_number_id": "1234567890"},
        "messages": [{"from": "358401234567", "id": "wamid.forged", "timestamp": at.to_string(),
                      "type": "paid", "order_id": "00000000-0000-0000-0000-000000000001"}]
    }));
    assert_eq!(
        post(&app, &forged, Some(signature(&forged, APP_SECRET))).await,
        200
    );
    assert_eq!(
        count_rows(
            &app.db,
            "whatsapp_inbox WHERE id = 'wamid.forged' AND kind = 'unknown'"
        )
        .await,
        1
    );

    let status = envelope(json!({
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": "15550783881", "phone_number_id": "1234567890"},
        "statuses": [{"id": "wamid.unknown", "status": "delivered", "timestamp": at.to_string(),
                      "recipient_id": "358401234567"}]
    }));
    assert_eq!(
        post(&app, &status, Some(signature(&status, APP_SECRET))).await,
        200
    );
    let metrics = reqwest::get(format!("{}/metrics", app.address))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("whatsapp_message_statuses_total{status=\"delivered\"} 1"),
        "the status was read: {metrics}"
    );
}
