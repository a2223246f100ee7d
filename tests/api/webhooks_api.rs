//! The notification service's REST surface: merchants' webhook endpoints (registered, listed,
//! rotated, removed, their deliveries read and replayed, only by the owner or an admin, only to
//! public https:// addresses), the phone and consent a checkout gives, and the notifications of
//! an order, seen by whoever may see the order.

use std::time::Duration;

use mealkitz::domain::{NotifyEvent, OrderId, Phone, UserId};
use mealkitz::store::{Channel, NewNotification, Store};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::checkout::{admin, checkout, new_key, order_body};
use crate::helpers::{
    Db, Reply, Session, TestApp, TestDb, at, each_backend, spawn_app_with, test_config,
};
use crate::merchants::{Shop, open_shop};

/// A webhook URL that passes the public-address check and never connects (`.invalid` never
/// resolves), so that a notifier running beside a test sends nowhere.
const HOOK_URL: &str = "https://hooks.mealkitz-test.invalid/orders";

/// An application whose webhook URLs must be public (`allow_private` false), or not.
async fn app_allowing_private(kind: Db, allow_private: bool) -> TestApp {
    let db = TestDb::create(kind).await;
    let mut config = test_config(&db);
    config.notify.webhook_allow_private = allow_private;
    spawn_app_with(db, config).await
}

fn webhooks_path(merchant_id: &str) -> String {
    format!("/api/v1/merchants/{merchant_id}/webhooks")
}

async fn register(app: &TestApp, token: &str, merchant_id: &str, body: &Value) -> Reply {
    app.post_authed(&webhooks_path(merchant_id), token, body)
        .await
}

async fn delete(app: &TestApp, token: &str, path: &str) -> Reply {
    app.request("DELETE", path, Some(token), &[], None).await
}

async fn patch_me(app: &TestApp, token: &str, body: &Value) -> Reply {
    app.request("PATCH", "/api/v1/me", Some(token), &[], Some(body))
        .await
}

/// Registers `HOOK_URL` for every event; returns the endpoint's id.
async fn hook(app: &TestApp, shop: &Shop) -> String {
    let events: Vec<&str> = NotifyEvent::ALL.iter().map(|e| e.as_str()).collect();
    let created = register(
        app,
        &shop.owner.token,
        &shop.merchant_id,
        &json!({"url": HOOK_URL, "events": events}),
    )
    .await;
    assert_eq!(created.status, 201, "{}", created.text);
    created.body["id"].as_str().unwrap().to_owned()
}

/// Waits until the endpoint has a delivery of `order`, making it from the order's outbox entry
/// when no notifier has claimed that yet (the way a notifier does); returns the delivery's id.
async fn delivery_of(store: &Store, endpoint: &str, order: &str) -> String {
    let endpoint = endpoint.parse::<Uuid>().unwrap();
    let order = order.parse::<OrderId>().unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let deliveries = store.webhook_deliveries(endpoint, 200).await.unwrap();
        if let Some(delivery) = deliveries.iter().find(|d| d.order_id == order) {
            return delivery.id.to_string();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no delivery of order {order} to endpoint {endpoint}"
        );
        for entry in store
            .claim_outbox("webhooks-api-test", 100, Duration::from_secs(30))
            .await
            .unwrap()
        {
            let notification = NewNotification {
                channel: Channel::Webhook,
                destination: endpoint.to_string(),
                endpoint_id: Some(endpoint),
                payload: json!({"type": entry.event.as_str()}),
            };
            store.fan_out(&entry, &[notification]).await.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Rows in `table` of the application's database.
/// A customer's order at `shop`, and its delivery to `endpoint`: (customer, order id, delivery id).
async fn placed_with_delivery(
    app: &TestApp,
    shop: &Shop,
    endpoint: &str,
) -> (Session, String, String) {
    let customer = app.signed_up("customer").await;
    let placed = checkout(
        app,
        &customer.token,
        &new_key(),
        &order_body(shop, at(-5_500.0, -5_000.0), "pm_card_visa"),
    )
    .await;
    assert_eq!(placed.status, 201, "{}", placed.text);
    let order_id = placed.body["id"].as_str().unwrap().to_owned();
    let store = crate::ws::store_of(app).await;
    let delivery = delivery_of(&store, endpoint, &order_id).await;
    store.close().await;
    (customer, order_id, delivery)
}

pub(crate) async fn count_rows(db: &TestDb, table: &str) -> i64 {
    let sql = sqlx::AssertSqlSafe(format!("SELECT COUNT(*) FROM {table}"));
    match db.kind {
        Db::Postgres => {
            let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
            let (count,): (i64,) = sqlx::query_as(sql).fetch_one(&pool).await.unwrap();
            pool.close().await;
            count
        }
        Db::Sqlite => {
            let pool = sqlx::SqlitePool::connect(&db.url).await.unwrap();
            let (count,): (i64,) = sqlx::query_as(sql).fetch_one(&pool).await.unwrap();
            pool.close().await;
            count
        }
    }
}

fn hours_from_now(iso: &Value) -> f64 {
    let at = chrono::DateTime::parse_from_rfc3339(iso.as_str().expect("a timestamp")).unwrap();
    (at.timestamp() - chrono::Utc::now().timestamp()) as f64 / 3_600.0
}

each_backend! {
    endpoints_are_registered_listed_rotated_and_removed_with_the_secret_shown_only_twice => lifecycle;
    deliveries_are_listed_and_one_is_replayed_only_through_its_own_endpoint => deliveries_and_replay;
    a_checkout_keeps_its_phone_and_consent_for_the_order => checkout_contact;
    a_checkout_with_an_invalid_phone_is_refused_before_any_payment_or_order => checkout_invalid_phone;
    an_orders_notifications_are_seen_by_exactly_those_who_see_the_order => order_notifications;
}

async fn lifecycle(kind: Db) {
    let app = app_allowing_private(kind, false).await;
    let shop = open_shop(&app, -5_000.0, -5_000.0).await;
    let owner = &shop.owner.token;
    let created = register(
        &app,
        owner,
        &shop.merchant_id,
        &json!({"url": HOOK_URL, "events": ["order.placed", "order.accepted", "order.placed"]}),
    )
    .await;
    assert_eq!(created.status, 201, "{}", created.text);
    let id = created.body["id"].as_str().unwrap().to_owned();
    let secret = created.body["secret"].as_str().unwrap().to_owned();
    assert!(
        secret.starts_with("whsec_") && secret.len() > 20,
        "{secret}"
    );
    assert_eq!(created.body["url"], HOOK_URL);
    assert_eq!(created.body["merchant_id"], shop.merchant_id.as_str());
    assert_eq!(
        created.body["events"],
        json!(["order.placed", "order.accepted"])
    );
    for unset in [
        "disabled_at",
        "disabled_reason",
        "failing_since",
        "previous_secret_expires_at",
    ] {
        assert!(created.body[unset].is_null(), "{unset}: {}", created.text);
    }

    let listed = app
        .get_authed(&webhooks_path(&shop.merchant_id), owner)
        .await;
    assert_eq!(listed.status, 200, "{}", listed.text);
    let webhooks = listed.body["webhooks"].as_array().unwrap();
    assert_eq!(webhooks.len(), 1, "{}", listed.text);
    assert_eq!(webhooks[0]["id"], id.as_str());
    assert_eq!(webhooks[0]["events"], created.body["events"]);
    assert!(webhooks[0].get("secret").is_none(), "{}", listed.text);
    assert!(!listed.text.contains(&secret), "{}", listed.text);

    let rotated = app
        .post_authed(
            &format!("{}/{id}/rotate-secret", webhooks_path(&shop.merchant_id)),
            owner,
            &json!({}),
        )
        .await;
    assert_eq!(rotated.status, 200, "{}", rotated.text);
    let new_secret = rotated.body["secret"].as_str().unwrap().to_owned();
    assert!(new_secret.starts_with("whsec_"), "{new_secret}");
    assert_ne!(new_secret, secret);
    assert_eq!(rotated.body["id"], id.as_str());
    let grace = hours_from_now(&rotated.body["previous_secret_expires_at"]);
    assert!((23.9..=24.1).contains(&grace), "grace of {grace} h");
    // Both secrets sign during the grace period.
    let store = crate::ws::store_of(&app).await;
    let endpoint = store
        .webhook_endpoint(id.parse().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        endpoint.signing_secrets(chrono::Utc::now()),
        [new_secret.as_str(), secret.as_str()]
    );
    store.close().await;

    let listed = app
        .get_authed(&webhooks_path(&shop.merchant_id), owner)
        .await;
    assert!(
        !listed.text.contains(&secret) && !listed.text.contains(&new_secret),
        "{}",
        listed.text
    );
    assert_eq!(
        listed.body["webhooks"][0]["previous_secret_expires_at"],
        rotated.body["previous_secret_expires_at"]
    );

    let path = format!("{}/{id}", webhooks_path(&shop.merchant_id));
    let removed = delete(&app, owner, &path).await;
    assert_eq!(removed.status, 204, "{}", removed.text);
    assert!(removed.text.is_empty());
    let listed = app
        .get_authed(&webhooks_path(&shop.merchant_id), owner)
        .await;
    assert_eq!(listed.body, json!({"webhooks": []}));
    delete(&app, owner, &path)
        .await
        .assert_error(404, "not_found");
    app.post_authed(&format!("{path}/rotate-secret"), owner, &json!({}))
        .await
        .assert_error(404, "not_found");
}

async fn deliveries_and_replay(kind: Db) {
    let app = app_allowing_private(kind, false).await;
    let shop = open_shop(&app, -5_000.0, -5_000.0).await;
    let owner = &shop.owner.token;
    let endpoint = hook(&app, &shop).await;
    let other_endpoint = hook(&app, &shop).await;
    let (_, order_id, delivery) = placed_with_delivery(&app, &shop, &endpoint).await;
    let order_id = order_id.as_str();

    let base = format!("{}/{endpoint}", webhooks_path(&shop.merchant_id));
    let listed = app.get_authed(&format!("{base}/deliveries"), owner).await;
    assert_eq!(listed.status, 200, "{}", listed.text);
    let deliveries = listed.body["deliveries"].as_array().unwrap();
    let mine = deliveries
        .iter()
        .find(|d| d["id"] == delivery.as_str())
        .unwrap_or_else(|| panic!("{}", listed.text));
    assert_eq!(mine["order_id"], order_id);
    assert_eq!(mine["event"], "order.placed");
    assert!(
        mine["message_id"].as_str().unwrap().starts_with("msg_"),
        "{mine}"
    );
    assert!(mine["attempts"].is_array(), "{mine}");
    let one = app
        .get_authed(&format!("{base}/deliveries?limit=1"), owner)
        .await;
    assert_eq!(
        one.body["deliveries"].as_array().unwrap().len(),
        1,
        "{}",
        one.text
    );
    for bad in ["0", "201", "-1", "many"] {
        app.get_authed(&format!("{base}/deliveries?limit={bad}"), owner)
            .await
            .assert_error(400, "invalid_query");
    }

    let replayed = app
        .post_authed(
            &format!("{base}/deliveries/{delivery}/retry"),
            owner,
            &json!({}),
        )
        .await;
    assert_eq!(replayed.status, 202, "{}", replayed.text);
    assert_eq!(
        replayed.body,
        json!({"id": delivery.as_str(), "state": "pending"})
    );
    // Another endpoint's delivery, or none, is not found.
    let other = format!("{}/{other_endpoint}", webhooks_path(&shop.merchant_id));
    app.post_authed(
        &format!("{other}/deliveries/{delivery}/retry"),
        owner,
        &json!({}),
    )
    .await
    .assert_error(404, "not_found");
    app.post_authed(
        &format!("{base}/deliveries/{}/retry", Uuid::now_v7()),
        owner,
        &json!({}),
    )
    .await
    .assert_error(404, "not_found");
    // The endpoint through another merchant's path is not found either.
    let elsewhere = open_shop(&app, -5_000.0, -5_200.0).await;
    app.get_authed(
        &format!(
            "{}/{endpoint}/deliveries",
            webhooks_path(&elsewhere.merchant_id)
        ),
        &elsewhere.owner.token,
    )
    .await
    .assert_error(404, "not_found");
}

async fn checkout_contact(kind: Db) {
    let app = app_allowing_private(kind, false).await;
    let shop = open_shop(&app, -5_000.0, -5_000.0).await;
    let customer = app.signed_up("customer").await;
    let updated = patch_me(
        &app,
        &customer.token,
        &json!({"phone": "+358401234567", "notify_whatsapp": true}),
    )
    .await;
    assert_eq!(updated.status, 200, "{}", updated.text);
    let body = |extra: Value| {
        let mut body = order_body(&shop, at(-5_500.0, -5_000.0), "pm_card_visa");
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        body
    };
    let customer_id = customer.id.parse::<UserId>().unwrap();
    let store = crate::ws::store_of(&app).await;
    let cases = [
        // Another number for this order only.
        (
            json!({"phone": "+46 70 123 45 67", "notify_whatsapp": true}),
            Some("+46701234567"),
            true,
        ),
        // No WhatsApp for this order, whatever the account says.
        (
            json!({"notify_whatsapp": false}),
            Some("+358401234567"),
            false,
        ),
        // Nothing said: the account's settings.
        (json!({}), Some("+358401234567"), true),
    ];
    for (extra, phone, consent) in cases {
        let placed = checkout(&app, &customer.token, &new_key(), &body(extra.clone())).await;
        assert_eq!(placed.status, 201, "{extra}: {}", placed.text);
        let order = placed.body["id"].as_str().unwrap().parse().unwrap();
        let contact = store.customer_contact(order, customer_id).await.unwrap();
        assert_eq!(
            contact.phone,
            phone.map(|p| Phone::parse(p).unwrap()),
            "{extra}"
        );
        assert_eq!(contact.consent, consent, "{extra}");
    }
    store.close().await;
}

async fn checkout_invalid_phone(kind: Db) {
    let app = app_allowing_private(kind, false).await;
    let shop = open_shop(&app, -5_000.0, -5_000.0).await;
    let customer = app.signed_up("customer").await;
    let key = new_key();
    let mut body = order_body(&shop, at(-5_500.0, -5_000.0), "pm_card_visa");
    for phone in [json!("0401234567"), json!("+358 40 CALL ME"), json!("")] {
        body["phone"] = phone;
        body["notify_whatsapp"] = json!(true);
        let refused = checkout(&app, &customer.token, &key, &body).await;
        refused.assert_error(422, "invalid_phone");
        assert!(
            refused.body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("E.164"),
            "{}",
            refused.text
        );
    }
    assert_eq!(count_rows(&app.db, "payments").await, 0);
    assert_eq!(count_rows(&app.db, "order_contacts").await, 0);
    let orders = app.get_authed("/api/v1/orders", &customer.token).await;
    assert_eq!(orders.body["orders"], json!([]), "{}", orders.text);
    // Nothing was kept for the key: corrected, the same key checks out.
    body["phone"] = json!("+358401234567");
    let placed = checkout(&app, &customer.token, &key, &body).await;
    assert_eq!(placed.status, 201, "{}", placed.text);
    assert_eq!(count_rows(&app.db, "payments").await, 1);
}

async fn order_notifications(kind: Db) {
    let app = app_allowing_private(kind, false).await;
    let shop = open_shop(&app, -5_000.0, -5_000.0).await;
    let endpoint = hook(&app, &shop).await;
    let (customer, order_id, _) = placed_with_delivery(&app, &shop, &endpoint).await;
    let order_id = order_id.as_str();

    let path = format!("/api/v1/orders/{order_id}/notifications");
    let admin = admin(&app).await;
    for token in [&customer.token, &shop.owner.token, &admin] {
        let seen = app.get_authed(&path, token).await;
        assert_eq!(seen.status, 200, "{}", seen.text);
        let webhook = seen.body["notifications"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["channel"] == "webhook" && n["event"] == "order.placed")
            .unwrap_or_else(|| panic!("{}", seen.text));
        assert!(webhook["message_id"].as_str().unwrap().starts_with("msg_"));
    }
    let stranger = app.signed_up("customer").await;
    let driver = app.signed_up("driver").await;
    let other_shop = open_shop(&app, -5_000.0, -5_200.0).await;
    for token in [&stranger.token, &driver.token, &other_shop.owner.token] {
        // As GET /api/v1/orders/{id} answers them.
        app.get_authed(&format!("/api/v1/orders/{order_id}"), token)
            .await
            .assert_error(404, "not_found");
        app.get_authed(&path, token)
            .await
            .assert_error(404, "not_found");
    }
    app.get_authed(
        &format!("/api/v1/orders/{}/notifications", Uuid::now_v7()),
        &customer.token,
    )
    .await
    .assert_error(404, "not_found");
    app.get(&path).await.assert_error(401, "missing_token");
}

#[actix_web::test]
async fn webhook_urls_that_are_private_plain_http_or_malformed_are_refused_with_the_reason() {
    let app = app_allowing_private(Db::Sqlite, false).await;
    let shop = open_shop(&app, -5_000.0, -5_000.0).await;
    let cases = [
        ("https://127.0.0.1/hook", "127.0.0.1"),
        ("https://169.254.169.254/x", "169.254.169.254"),
        ("https://10.1.2.3/x", "10.1.2.3"),
        ("https://[::1]/x", "::1"),
        ("https://localhost:8443/x", "localhost"),
        ("http://hooks.example.com/x", "https://"),
        ("not a url", "not a valid absolute URL"),
        ("ftp://hooks.example.com/x", "not a valid absolute URL"),
        (
            "https://user:pw@hooks.example.com/x",
            "user name or password",
        ),
        ("", "not a valid absolute URL"),
    ];
    for (url, reason) in cases {
        let refused = register(
            &app,
            &shop.owner.token,
            &shop.merchant_id,
            &json!({"url": url, "events": ["order.placed"]}),
        )
        .await;
        refused.assert_error(422, "webhook_url_refused");
        let message = refused.body["error"]["message"].as_str().unwrap();
        assert!(
            message.starts_with("url ") && message.contains(reason),
            "{url}: {message}"
        );
    }
    let listed = app
        .get_authed(&webhooks_path(&shop.merchant_id), &shop.owner.token)
        .await;
    assert_eq!(listed.body, json!({"webhooks": []}));
}

#[actix_web::test]
async fn private_and_plain_http_urls_are_accepted_when_the_setting_allows_them() {
    let app = app_allowing_private(Db::Sqlite, true).await;
    let shop = open_shop(&app, -5_000.0, -5_000.0).await;
    for url in ["http://127.0.0.1:9/hook", "https://169.254.169.254/x"] {
        let created = register(
            &app,
            &shop.owner.token,
            &shop.merchant_id,
            &json!({"url": url, "events": ["order.placed"]}),
        )
        .await;
        assert_eq!(created.status, 201, "{url}: {}", created.text);
        assert_eq!(created.body["url"], url);
    }
}

#[actix_web::test]
async fn events_must_be_known_and_at_least_one_and_a_merchant_has_at_most_ten_endpoints() {
    let app = app_allowing_private(Db::Sqlite, false).await;
    let shop = open_shop(&app, -5_000.0, -5_000.0).await;
    for events in [
        json!([]),
        json!(["order.placed", "order.eaten"]),
        json!(["ORDER.PLACED"]),
        json!("order.placed"),
        Value::Null,
    ] {
        let mut body = json!({"url": HOOK_URL});
        if !events.is_null() {
            body["events"] = events.clone();
        }
        let refused = register(&app, &shop.owner.token, &shop.merchant_id, &body).await;
        refused.assert_error(422, "invalid_field");
        assert_eq!(refused.body["error"]["field"], "events", "{events}");
    }
    let refused = register(
        &app,
        &shop.owner.token,
        &shop.merchant_id,
        &json!({"url": HOOK_URL, "events": ["order.eaten"]}),
    )
    .await;
    let message = refused.body["error"]["message"].as_str().unwrap();
    for event in NotifyEvent::ALL {
        assert!(message.contains(event.as_str()), "{message}");
    }

    for _ in 0..10 {
        hook(&app, &shop).await;
    }
    let eleventh = register(
        &app,
        &shop.owner.token,
        &shop.merchant_id,
        &json!({"url": HOOK_URL, "events": ["order.placed"]}),
    )
    .await;
    eleventh.assert_error(422, "invalid_field");
    assert!(
        eleventh.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("at most 10"),
        "{}",
        eleventh.text
    );
}

#[actix_web::test]
async fn only_the_merchants_owner_or_an_admin_manages_its_webhooks() {
    let app = app_allowing_private(Db::Sqlite, false).await;
    let shop = open_shop(&app, -5_000.0, -5_000.0).await;
    let endpoint = hook(&app, &shop).await;
    let base = webhooks_path(&shop.merchant_id);
    let one = format!("{base}/{endpoint}");
    let create = json!({"url": HOOK_URL, "events": ["order.placed"]});
    let other_owner = open_shop(&app, -5_000.0, -5_200.0).await.owner;
    let customer = app.signed_up("customer").await;
    let driver = app.signed_up("driver").await;
    for token in [&other_owner.token, &customer.token, &driver.token] {
        register(&app, token, &shop.merchant_id, &create)
            .await
            .assert_error(403, "forbidden");
        app.get_authed(&base, token)
            .await
            .assert_error(403, "forbidden");
        delete(&app, token, &one)
            .await
            .assert_error(403, "forbidden");
        app.post_authed(&format!("{one}/rotate-secret"), token, &json!({}))
            .await
            .assert_error(403, "forbidden");
        app.get_authed(&format!("{one}/deliveries"), token)
            .await
            .assert_error(403, "forbidden");
        app.post_authed(
            &format!("{one}/deliveries/{}/retry", Uuid::now_v7()),
            token,
            &json!({}),
        )
        .await
        .assert_error(403, "forbidden");
    }
    app.get(&base).await.assert_error(401, "missing_token");
    let unknown = Uuid::now_v7().to_string();
    register(&app, &shop.owner.token, &unknown, &create)
        .await
        .assert_error(404, "not_found");
    app.get_authed(&webhooks_path(&unknown), &shop.owner.token)
        .await
        .assert_error(404, "not_found");
    delete(
        &app,
        &shop.owner.token,
        &format!("{base}/{}", Uuid::now_v7()),
    )
    .await
    .assert_error(404, "not_found");
    delete(&app, &shop.owner.token, &format!("{base}/not-an-id"))
        .await
        .assert_error(404, "not_found");

    // Nothing above changed anything; an admin manages it too.
    let admin = admin(&app).await;
    let listed = app.get_authed(&base, &admin).await;
    assert_eq!(listed.status, 200, "{}", listed.text);
    assert_eq!(listed.body["webhooks"][0]["id"], endpoint.as_str());
    assert_eq!(listed.body["webhooks"].as_array().unwrap().len(), 1);
    assert_eq!(
        register(&app, &admin, &shop.merchant_id, &create)
            .await
            .status,
        201
    );
    assert_eq!(delete(&app, &admin, &one).await.status, 204);
}
