//! Checkout over REST with the sandbox gateway: idempotency, payments and their settlement,
//! webhooks, order access, pagination and limits. On both stores where it matters.

use mealkitz::actors::commands::*;
use std::time::Duration;

use mealkitz::domain::Position;
use mealkitz::payments::webhook::sign;
use serde_json::{Value, json};

use crate::helpers::at;
use crate::helpers::{
    Db, Reply, TEST_WEBHOOK_SECRET, TestApp, TestDb, on_both_backends, spawn_app, spawn_app_with,
    test_config,
};
use crate::merchants::{Shop, open_shop};
use crate::ws::{driver_online, ws_connect};

pub fn order_body(shop: &Shop, dropoff: Position, method: &str) -> Value {
    json!({
        "merchant_id": shop.merchant_id,
        "items": [
            {"menu_item_id": shop.items[0].0, "quantity": 2},
            {"menu_item_id": shop.items[1].0, "quantity": 1},
        ],
        "dropoff": {"lat": dropoff.lat, "lon": dropoff.lon, "address": "5 Customer Court"},
        "payment_method": method,
    })
}

pub async fn checkout(app: &TestApp, token: &str, key: &str, body: &Value) -> Reply {
    app.request(
        "POST",
        "/api/v1/orders",
        Some(token),
        &[("Idempotency-Key", key)],
        Some(body),
    )
    .await
}

pub fn new_key() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// Waits until the answer to a checkout with `key` is kept for the key (it is written off the
/// answer's path, shortly after the answer).
pub(crate) async fn answer_kept(db: &crate::helpers::TestDb, key: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while key_state(db, key).await != "completed" {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the answer is never kept"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The state of Idempotency-Key `key` in `db` (`in_progress`, `completed`), read directly.
pub(crate) async fn key_state(db: &crate::helpers::TestDb, key: &str) -> String {
    let (state,): (String,) = crate::helpers::with_db_pool!(db, |pool| {
        sqlx::query_as("SELECT state FROM idempotency_keys WHERE key = $1")
            .bind(key)
            .fetch_one(&pool)
            .await
            .unwrap()
    });
    state
}

async fn payment_status(app: &TestApp, token: &str, order_id: &str) -> String {
    let payment = app
        .get_authed(&format!("/api/v1/orders/{order_id}/payment"), token)
        .await;
    assert_eq!(payment.status, 200, "{}", payment.text);
    payment.body["status"].as_str().unwrap().to_owned()
}

/// Waits for settlement to move the payment to `status`.
async fn payment_becomes(app: &TestApp, token: &str, order_id: &str, status: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let now = payment_status(app, token, order_id).await;
        if now == status {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "payment stayed {now}, expected {status}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

on_both_backends! {
    async fn checkout_board_dispatch_delivery_and_capture_run_end_to_end(app) {
        let shop = open_shop(&app, -5_000.0, -5_000.0).await;
        let customer = app.signed_up("customer").await;
        let driver = app.signed_up("driver").await;
        let mut board = ws_connect(&app, "/ws/merchant", Some(&shop.owner.token), None).await.unwrap();
        board.expect("board").await;
        let mut driver_ws = driver_online(&app, &driver, at(-5_200.0, -5_000.0)).await;

        let dropoff = at(-4_000.0, -5_000.0);
        let placed = checkout(&app, &customer.token, &new_key(), &order_body(&shop, dropoff, "pm_card_visa")).await;
        assert_eq!(placed.status, 201, "{}", placed.text);
        let order = &placed.body;
        assert_eq!(order["status"], "placed");
        // 2 × 12.50 + 5.99, plus 1.99 and 0.60/km for ~1 km.
        let subtotal = 2 * 1250 + 599;
        assert_eq!(order["total_cents"].as_i64().unwrap(), subtotal + order["delivery_fee_cents"].as_i64().unwrap());
        assert_eq!(order["delivery_fee_cents"].as_i64().unwrap(), 199 + 60);
        let order_id = order["id"].as_str().unwrap().to_owned();
        assert_eq!(payment_status(&app, &customer.token, &order_id).await, "authorised");

        let seen = board.expect_order("it is the new order", |o| o["id"] == json!(order_id)).await;
        assert_eq!(seen["status"], "placed");
        board.send(json!({"type": "accept_order", "order_id": order_id, "prep_minutes": 10})).await;
        let offer = driver_ws.expect("offer").await;
        driver_ws.send(json!({"type": "accept_offer", "offer_id": offer["offer_id"]})).await;
        driver_ws.expect("assigned").await;
        board.send(json!({"type": "order_ready", "order_id": order_id})).await;
        driver_ws.expect_order("ready", |o| o["status"] == "ready").await;
        driver_ws.send(json!({"type": "picked_up", "order_id": order_id})).await;
        driver_ws.expect_order("picked up", |o| o["status"] == "picked_up").await;
        driver_ws.send(json!({"type": "delivered", "order_id": order_id})).await;
        driver_ws.expect_order("delivered", |o| o["status"] == "delivered").await;

        payment_becomes(&app, &customer.token, &order_id, "captured").await;
        let payment = app.get_authed(&format!("/api/v1/orders/{order_id}/payment"), &customer.token).await;
        let history: Vec<&str> = payment.body["events"].as_array().unwrap().iter().map(|e| e["status"].as_str().unwrap()).collect();
        assert_eq!(history, ["authorised", "captured"]);
        let stored = app.get_authed(&format!("/api/v1/orders/{order_id}"), &customer.token).await;
        assert_eq!(stored.body["status"], "delivered");
    }

    async fn a_retry_right_after_a_201_gets_that_answer_another_body_is_refused_and_the_store_keeps_it(app) {
        let shop = open_shop(&app, 5_000.0, 5_000.0).await;
        let customer = app.signed_up("customer").await;
        let body = order_body(&shop, at(5_500.0, 5_000.0), "pm_card_visa");
        let key = new_key();
        let first = checkout(&app, &customer.token, &key, &body).await;
        assert_eq!(first.status, 201, "{}", first.text);
        // At once, when the answer may still be on its way to the store: the same answer.
        let again = checkout(&app, &customer.token, &key, &body).await;
        assert_eq!(again.status, 201, "{}", again.text);
        assert_eq!(again.headers.get("idempotent-replayed").map(|v| v.to_str().unwrap()), Some("true"));
        assert_eq!(again.body, first.body);
        let other = order_body(&shop, at(5_600.0, 5_000.0), "pm_card_visa");
        checkout(&app, &customer.token, &key, &other).await.assert_error(422, "idempotency_key_reused");
        // The store keeps the answer (a moment after the 201, with others'): another replica (a
        // second store handle here) replays it.
        answer_kept(&app.db, &key).await;
        let store = crate::helpers::migrated_store(&app.db).await;
        let customer_id = mealkitz::domain::UserId(first.body["customer_id"].as_str().unwrap().parse().unwrap());
        let hash = mealkitz::api::idempotent::request_hash(&body);
        let kept = store.claim_idempotency_key(customer_id, &key, &hash, "elsewhere").await.unwrap();
        assert_eq!(kept, mealkitz::store::KeyClaim::Replay { status: 201, body: first.text.clone() });
        let mine = app.get_authed("/api/v1/orders", &customer.token).await;
        assert_eq!(mine.body["orders"].as_array().unwrap().len(), 1, "{}", mine.text);
    }

    async fn a_double_submit_with_one_key_makes_one_order_and_one_authorisation(app) {
        let shop = open_shop(&app, 5_000.0, 5_000.0).await;
        let customer = app.signed_up("customer").await;
        let body = order_body(&shop, at(5_500.0, 5_000.0), "pm_card_visa");
        let key = new_key();
        let (first, second) = tokio::join!(
            checkout(&app, &customer.token, &key, &body),
            checkout(&app, &customer.token, &key, &body),
        );
        let statuses = [first.status, second.status];
        assert!(statuses.contains(&201), "{statuses:?} {} {}", first.text, second.text);
        for reply in [&first, &second] {
            if reply.status != 201 {
                reply.assert_error(409, "request_in_progress");
            }
        }
        let again = checkout(&app, &customer.token, &key, &body).await;
        assert_eq!(again.status, 201, "{}", again.text);
        assert_eq!(again.headers.get("idempotent-replayed").map(|v| v.to_str().unwrap()), Some("true"));
        let created = if first.status == 201 { &first } else { &second };
        assert_eq!(again.body, created.body, "the replay is the first response");

        let mine = app.get_authed("/api/v1/orders", &customer.token).await;
        assert_eq!(mine.body["orders"].as_array().unwrap().len(), 1, "{}", mine.text);
        let order_id = created.body["id"].as_str().unwrap();
        let payment = app.get_authed(&format!("/api/v1/orders/{order_id}/payment"), &customer.token).await;
        let authorised = payment.body["events"].as_array().unwrap().iter().filter(|e| e["status"] == "authorised").count();
        assert_eq!(authorised, 1);

        // The same key with another body is refused.
        let other = order_body(&shop, at(5_600.0, 5_000.0), "pm_card_visa");
        checkout(&app, &customer.token, &key, &other).await.assert_error(422, "idempotency_key_reused");
        // Keys belong to their user: another customer may use the same string.
        let someone = app.signed_up("customer").await;
        assert_eq!(checkout(&app, &someone.token, &key, &body).await.status, 201);
    }

    async fn a_declined_card_makes_no_order_and_no_board_message(app) {
        let shop = open_shop(&app, -5_000.0, 5_000.0).await;
        let customer = app.signed_up("customer").await;
        let mut board = ws_connect(&app, "/ws/merchant", Some(&shop.owner.token), None).await.unwrap();
        board.expect("board").await;
        let key = new_key();
        let body = order_body(&shop, at(-5_500.0, 5_000.0), "pm_card_chargeDeclined");
        checkout(&app, &customer.token, &key, &body).await.assert_error(402, "payment_declined");
        // The answer is kept for the key.
        let again = checkout(&app, &customer.token, &key, &body).await;
        again.assert_error(402, "payment_declined");
        let poor = order_body(&shop, at(-5_500.0, 5_000.0), "pm_card_chargeDeclinedInsufficientFunds");
        checkout(&app, &customer.token, &new_key(), &poor).await.assert_error(402, "insufficient_funds");
        let unknown = order_body(&shop, at(-5_500.0, 5_000.0), "pm_card_unicorn");
        let refused = checkout(&app, &customer.token, &new_key(), &unknown).await;
        refused.assert_error(422, "invalid_field");
        assert_eq!(refused.body["error"]["field"], "payment_method");

        let mine = app.get_authed("/api/v1/orders", &customer.token).await;
        assert_eq!(mine.body["orders"], json!([]));
        assert!(board.next(Duration::from_millis(500)).await.is_none(), "the board saw nothing");
    }

    async fn cancelling_before_acceptance_voids_the_payment_and_after_pickup_is_refused(app) {
        let shop = open_shop(&app, 5_000.0, -5_000.0).await;
        let customer = app.signed_up("customer").await;
        let body = order_body(&shop, at(5_500.0, -5_000.0), "pm_card_visa");
        let placed = checkout(&app, &customer.token, &new_key(), &body).await;
        let order_id = placed.body["id"].as_str().unwrap().to_owned();
        let cancelled = app.post_authed(&format!("/api/v1/orders/{order_id}/cancel"), &customer.token, &json!({"reason": "changed my mind"})).await;
        assert_eq!(cancelled.status, 200, "{}", cancelled.text);
        assert_eq!(cancelled.body["status"], "cancelled");
        payment_becomes(&app, &customer.token, &order_id, "voided").await;

        // Merchant rejection also voids.
        let placed = checkout(&app, &customer.token, &new_key(), &body).await;
        let rejected_id = placed.body["id"].as_str().unwrap().to_owned();
        let merchant: mealkitz::domain::MerchantId = shop.merchant_id.parse().unwrap();
        app.engine.execute(MerchantReject { merchant_id: merchant, order_id: rejected_id.parse().unwrap(), reason: "out of stock".into() }).await.unwrap();
        payment_becomes(&app, &customer.token, &rejected_id, "voided").await;

        // After pickup nobody may cancel.
        let driver = app.signed_up("driver").await;
        let mut driver_ws = driver_online(&app, &driver, at(5_200.0, -5_000.0)).await;
        let placed = checkout(&app, &customer.token, &new_key(), &body).await;
        let late_id = placed.body["id"].as_str().unwrap().to_owned();
        let late: mealkitz::domain::OrderId = late_id.parse().unwrap();
        app.engine.execute(MerchantAccept { merchant_id: merchant, order_id: late, prep_minutes: 5 }).await.unwrap();
        app.post_authed(&format!("/api/v1/orders/{late_id}/cancel"), &customer.token, &json!({}))
            .await
            .assert_error(409, "invalid_transition");
        let offer = driver_ws.expect("offer").await;
        driver_ws.send(json!({"type": "accept_offer", "offer_id": offer["offer_id"]})).await;
        driver_ws.expect("assigned").await;
        app.engine.execute(MerchantReady { merchant_id: merchant, order_id: late }).await.unwrap();
        app.engine.execute(PickedUp { driver: driver.id.parse().unwrap(), order_id: late }).await.unwrap();
        let admin = crate::checkout::admin(&app).await;
        app.post_authed(&format!("/api/v1/orders/{late_id}/cancel"), &admin, &json!({}))
            .await
            .assert_error(409, "invalid_transition");
        assert_eq!(payment_status(&app, &customer.token, &late_id).await, "authorised");
    }

    async fn pagination_through_120_orders_loses_and_repeats_none(app) {
        let shop = open_shop(&app, -3_000.0, -3_000.0).await;
        let customer = app.signed_up("customer").await;
        let body = order_body(&shop, at(-3_500.0, -3_000.0), "pm_card_visa");
        let mut placed = Vec::new();
        for _ in 0..120 {
            let reply = checkout(&app, &customer.token, &new_key(), &body).await;
            assert_eq!(reply.status, 201, "{}", reply.text);
            placed.push(reply.body["id"].as_str().unwrap().to_owned());
        }
        let mut seen = Vec::new();
        let mut cursor: Option<String> = None;
        let mut pages = 0;
        loop {
            let path = match &cursor {
                Some(c) => format!("/api/v1/orders?limit=25&cursor={c}"),
                None => "/api/v1/orders?limit=25".to_owned(),
            };
            let page = app.get_authed(&path, &customer.token).await;
            assert_eq!(page.status, 200, "{}", page.text);
            pages += 1;
            seen.extend(page.body["orders"].as_array().unwrap().iter().map(|o| o["id"].as_str().unwrap().to_owned()));
            match page.body["next_cursor"].as_str() {
                Some(next) => cursor = Some(next.to_owned()),
                None => break,
            }
        }
        assert_eq!(pages, 5);
        placed.reverse();
        assert_eq!(seen, placed, "newest first, each exactly once");
        // The merchant sees them too; another customer sees none.
        let merchants_view = app.get_authed("/api/v1/orders?limit=100", &shop.owner.token).await;
        assert_eq!(merchants_view.body["orders"].as_array().unwrap().len(), 100);
        let stranger = app.signed_up("customer").await;
        assert_eq!(app.get_authed("/api/v1/orders", &stranger.token).await.body["orders"], json!([]));
        app.get_authed("/api/v1/orders?limit=0", &customer.token).await.assert_error(400, "invalid_query");
        app.get_authed("/api/v1/orders?cursor=garbage", &customer.token).await.assert_error(400, "invalid_query");
    }
}

/// An admin's token (created through the store: `mealkitz admin create` is the only other way).
pub async fn admin(app: &TestApp) -> String {
    let store = crate::ws::store_of(app).await;
    let email = format!("admin-{}@example.com", uuid::Uuid::new_v4().simple());
    let hash = mealkitz::api::auth::Passwords::new()
        .hash("correct horse battery".into())
        .await
        .unwrap();
    store
        .create_user(mealkitz::store::NewUser {
            email: mealkitz::domain::Email::parse(&email).unwrap(),
            name: "Admin".into(),
            role: mealkitz::domain::Role::Admin,
            password_hash: hash,
        })
        .await
        .unwrap();
    store.close().await;
    app.login(&email, "correct horse battery").await.body["token"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[actix_web::test]
async fn checkout_refuses_bad_requests_before_touching_money() {
    let app = spawn_app(Db::Sqlite).await;
    let shop = open_shop(&app, -5_000.0, -5_000.0).await;
    let customer = app.signed_up("customer").await;
    let near = at(-5_500.0, -5_000.0);
    let good = order_body(&shop, near, "pm_card_visa");

    let no_key = app
        .request(
            "POST",
            "/api/v1/orders",
            Some(&customer.token),
            &[],
            Some(&good),
        )
        .await;
    no_key.assert_error(400, "idempotency_key_required");
    let long_key = "k".repeat(256);
    checkout(&app, &customer.token, &long_key, &good)
        .await
        .assert_error(400, "invalid_idempotency_key");
    // Drivers do not order; a merchant orders at its own kitchens only (tests/api/api_keys.rs).
    let driver = app.signed_up("driver").await;
    checkout(&app, &driver.token, &new_key(), &good)
        .await
        .assert_error(403, "forbidden");

    let mut unknown_item = good.clone();
    unknown_item["items"][1]["menu_item_id"] = json!(uuid::Uuid::now_v7());
    let refused = checkout(&app, &customer.token, &new_key(), &unknown_item).await;
    refused.assert_error(422, "invalid_field");
    assert_eq!(refused.body["error"]["field"], "items[1].menu_item_id");
    let mut zero = good.clone();
    zero["items"][0]["quantity"] = json!(0);
    let refused = checkout(&app, &customer.token, &new_key(), &zero).await;
    assert_eq!(refused.body["error"]["field"], "items[0].quantity");
    let mut empty = good.clone();
    empty["items"] = json!([]);
    checkout(&app, &customer.token, &new_key(), &empty)
        .await
        .assert_error(422, "invalid_field");
    let mut missing = good.clone();
    missing.as_object_mut().unwrap().remove("dropoff");
    let refused = checkout(&app, &customer.token, &new_key(), &missing).await;
    assert_eq!(refused.body["error"]["field"], "dropoff");
    let outside = order_body(
        &shop,
        Position {
            lat: 41.5,
            lon: -73.98,
        },
        "pm_card_visa",
    );
    checkout(&app, &customer.token, &new_key(), &outside)
        .await
        .assert_error(422, "outside_service_area");
    let far = order_body(&shop, at(8_000.0, 5_000.0), "pm_card_visa");
    checkout(&app, &customer.token, &new_key(), &far)
        .await
        .assert_error(422, "dropoff_too_far");

    // A refused request keeps nothing: the key works for a corrected request.
    let key = new_key();
    checkout(&app, &customer.token, &key, &far)
        .await
        .assert_error(422, "dropoff_too_far");
    assert_eq!(
        checkout(&app, &customer.token, &key, &good).await.status,
        201
    );

    app.post_authed(
        &format!("/api/v1/merchants/{}/close", shop.merchant_id),
        &shop.owner.token,
        &json!({}),
    )
    .await;
    checkout(&app, &customer.token, &new_key(), &good)
        .await
        .assert_error(409, "merchant_closed");
}

#[actix_web::test]
async fn another_customers_order_is_not_found() {
    let app = spawn_app(Db::Sqlite).await;
    let shop = open_shop(&app, 2_000.0, 2_000.0).await;
    let owner = app.signed_up("customer").await;
    let placed = checkout(
        &app,
        &owner.token,
        &new_key(),
        &order_body(&shop, at(2_500.0, 2_000.0), "pm_card_visa"),
    )
    .await;
    let order_id = placed.body["id"].as_str().unwrap().to_owned();
    let stranger = app.signed_up("customer").await;
    let driver = app.signed_up("driver").await;
    for token in [&stranger.token, &driver.token] {
        app.get_authed(&format!("/api/v1/orders/{order_id}"), token)
            .await
            .assert_error(404, "not_found");
        app.get_authed(&format!("/api/v1/orders/{order_id}/payment"), token)
            .await
            .assert_error(404, "not_found");
        app.post_authed(
            &format!("/api/v1/orders/{order_id}/cancel"),
            token,
            &json!({}),
        )
        .await
        .assert_error(404, "not_found");
    }
    assert_eq!(
        app.get_authed(&format!("/api/v1/orders/{order_id}"), &shop.owner.token)
            .await
            .status,
        200
    );
    let admin = admin(&app).await;
    assert_eq!(
        app.get_authed(&format!("/api/v1/orders/{order_id}"), &admin)
            .await
            .status,
        200
    );
    app.get_authed(
        &format!("/api/v1/orders/{}", uuid::Uuid::now_v7()),
        &owner.token,
    )
    .await
    .assert_error(404, "not_found");
    app.get(&format!("/api/v1/orders/{order_id}"))
        .await
        .assert_error(401, "missing_token");
}

fn webhook_request(event: &Value, header: &str) -> (Vec<u8>, String) {
    (serde_json::to_vec(event).unwrap(), header.to_owned())
}

async fn post_webhook(app: &TestApp, body: &[u8], signature: Option<&str>) -> Reply {
    let mut request = app
        .client
        .post(app.url("/api/v1/payments/webhook"))
        .header("content-type", "application/json")
        .body(body.to_vec());
    if let Some(signature) = signature {
        request = request.header("Mealkitz-Signature", signature);
    }
    Reply::read(request.send().await.unwrap()).await
}

#[actix_web::test]
async fn webhooks_need_a_fresh_valid_signature_and_apply_each_event_once() {
    let app = spawn_app(Db::Sqlite).await;
    let shop = open_shop(&app, -2_000.0, 2_000.0).await;
    let customer = app.signed_up("customer").await;
    let placed = checkout(
        &app,
        &customer.token,
        &new_key(),
        &order_body(&shop, at(-2_500.0, 2_000.0), "pm_card_visa"),
    )
    .await;
    let order_id = placed.body["id"].as_str().unwrap().to_owned();
    let payment = app
        .get_authed(
            &format!("/api/v1/orders/{order_id}/payment"),
            &customer.token,
        )
        .await;
    let payment_id = payment.body["id"].as_str().unwrap().to_owned();
    let secret = TEST_WEBHOOK_SECRET.as_bytes();
    let now = chrono::Utc::now().timestamp();
    let event = json!({"id": "evt_1", "type": "payment.failed", "data": {"payment": payment_id}});
    let (body, _) = webhook_request(&event, "");

    let forged = sign(b"not-the-secret", now, &body);
    post_webhook(&app, &body, Some(&forged))
        .await
        .assert_error(400, "invalid_signature");
    let old = sign(secret, now - 301, &body);
    post_webhook(&app, &body, Some(&old))
        .await
        .assert_error(400, "invalid_signature");
    post_webhook(&app, &body, None)
        .await
        .assert_error(400, "invalid_signature");
    let tampered = sign(secret, now, b"{\"id\":\"evt_1\"}");
    post_webhook(&app, &body, Some(&tampered))
        .await
        .assert_error(400, "invalid_signature");
    assert_eq!(
        payment_status(&app, &customer.token, &order_id).await,
        "authorised",
        "nothing changed"
    );

    let good = sign(secret, now, &body);
    let applied = post_webhook(&app, &body, Some(&good)).await;
    assert_eq!(applied.status, 200, "{}", applied.text);
    assert_eq!(
        applied.body,
        json!({"received": true, "duplicate": false, "applied": true})
    );
    assert_eq!(
        payment_status(&app, &customer.token, &order_id).await,
        "failed"
    );

    let replay = post_webhook(&app, &body, Some(&sign(secret, now + 1, &body))).await;
    assert_eq!(
        replay.body,
        json!({"received": true, "duplicate": true, "applied": false})
    );
    let history = app
        .get_authed(
            &format!("/api/v1/orders/{order_id}/payment"),
            &customer.token,
        )
        .await;
    let failed = history.body["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["status"] == "failed")
        .count();
    assert_eq!(failed, 1, "applied once");

    // A rotated secret: the old and the new signature side by side.
    let rotated =
        json!({"id": "evt_2", "type": "payment.unknown_kind", "data": {"payment": payment_id}});
    let body = serde_json::to_vec(&rotated).unwrap();
    let old_sig = sign(b"previous-secret", now, &body);
    let new_sig = sign(secret, now, &body);
    let header = format!("{},v1={}", old_sig, new_sig.split_once(",v1=").unwrap().1);
    let ignored = post_webhook(&app, &body, Some(&header)).await;
    assert_eq!(
        ignored.body,
        json!({"received": true, "duplicate": false, "applied": false})
    );
}

#[actix_web::test]
async fn logins_are_rate_limited_per_email_and_checkouts_per_customer() {
    let db = TestDb::create(Db::Sqlite).await;
    let mut config = test_config(&db);
    config.checkout.login_attempts_per_minute = 3;
    config.checkout.checkouts_per_minute = 2;
    let app = spawn_app_with(db, config).await;
    app.register("slow@example.com", "correct horse battery", "customer")
        .await;
    for _ in 0..3 {
        app.login("slow@example.com", "wrong password")
            .await
            .assert_error(401, "invalid_credentials");
    }
    let limited = app.login("slow@example.com", "correct horse battery").await;
    limited.assert_error(429, "rate_limited");
    let retry_after: u64 = limited.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry_after));
    let other = app
        .register("other@example.com", "correct horse battery", "customer")
        .await;
    assert_eq!(other.status, 201);
    assert_eq!(
        app.login("other@example.com", "correct horse battery")
            .await
            .status,
        200
    );

    let shop = open_shop(&app, 3_000.0, 3_000.0).await;
    let token = app
        .login("other@example.com", "correct horse battery")
        .await
        .body["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let body = order_body(&shop, at(3_500.0, 3_000.0), "pm_card_visa");
    assert_eq!(checkout(&app, &token, &new_key(), &body).await.status, 201);
    assert_eq!(checkout(&app, &token, &new_key(), &body).await.status, 201);
    checkout(&app, &token, &new_key(), &body)
        .await
        .assert_error(429, "rate_limited");
}

#[actix_web::test]
async fn failed_logins_from_one_address_are_limited_but_successes_are_not_counted() {
    let db = TestDb::create(Db::Sqlite).await;
    let mut config = test_config(&db);
    config.checkout.login_failures_per_address_per_minute = 2;
    config.checkout.login_attempts_per_minute = 100;
    let app = spawn_app_with(db, config).await;
    app.register("fine@example.com", "correct horse battery", "customer")
        .await;
    for _ in 0..5 {
        assert_eq!(
            app.login("fine@example.com", "correct horse battery")
                .await
                .status,
            200
        );
    }
    app.login("a@example.com", "wrong password")
        .await
        .assert_error(401, "invalid_credentials");
    app.login("b@example.com", "wrong password")
        .await
        .assert_error(401, "invalid_credentials");
    app.login("fine@example.com", "correct horse battery")
        .await
        .assert_error(429, "rate_limited");
}
