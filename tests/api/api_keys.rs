//! API keys over real HTTP: made, shown once, used as bearer credentials within their scopes and
//! merchant, revoked on every replica within a second, rate-limited, and audited; and every
//! protected route refusing a credential without the scope its OpenAPI operation states.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::checkout::{admin, checkout, new_key, order_body};
use crate::helpers::{
    Db, TestApp, TestDb, at, config_for, each_backend, spawn_app_with, start_without_db,
    test_config, with_redis,
};
use crate::merchants::{Shop, open_shop};

/// Makes a key as `token` and returns the whole answer (asserting 201).
async fn make_key(app: &TestApp, token: &str, body: Value) -> Value {
    let made = app.post_authed("/api/v1/api-keys", token, &body).await;
    assert_eq!(made.status, 201, "{}", made.text);
    made.body
}

fn key_of(made: &Value) -> String {
    made["key"].as_str().unwrap().to_owned()
}

const POS_SCOPES: [&str; 4] = [
    "orders:read",
    "orders:write",
    "menu:write",
    "webhooks:manage",
];

each_backend! {
    a_key_orders_from_its_merchant_and_not_from_another => a_key_orders_from_its_merchant_and_not_from_another;
    a_key_without_a_scope_gets_insufficient_scope => a_key_without_a_scope_gets_insufficient_scope;
    keys_are_audited_and_admin_keys_on_every_use => keys_are_audited_and_admin_keys_on_every_use;
}

async fn a_key_orders_from_its_merchant_and_not_from_another(kind: Db) {
    let app = crate::helpers::spawn_app(kind).await;
    let shop = open_shop(&app, -5_000.0, -5_000.0).await;
    let other = open_shop(&app, -5_200.0, -5_000.0).await;
    let made = make_key(
        &app,
        &shop.owner.token,
        json!({"name": "POS", "scopes": POS_SCOPES, "merchant_id": shop.merchant_id, "expires_at": null}),
    )
    .await;
    let key = key_of(&made);
    assert!(key.starts_with("mk_live_"), "{key}");
    assert_eq!(made["prefix"].as_str().unwrap(), &key[..12]);
    assert_eq!(made["scopes"], json!(POS_SCOPES));
    assert_eq!(made["merchant_id"], json!(shop.merchant_id));

    // The key places an order at its own merchant (as the POS of a phone order)...
    let near = at(-5_500.0, -5_000.0);
    let placed = checkout(
        &app,
        &key,
        &new_key(),
        &order_body(&shop, near, "pm_card_visa"),
    )
    .await;
    assert_eq!(placed.status, 201, "{}", placed.text);
    let order_id = placed.body["id"].as_str().unwrap().to_owned();
    // ...but not at another merchant's.
    let refused = checkout(
        &app,
        &key,
        &new_key(),
        &order_body(&other, near, "pm_card_visa"),
    )
    .await;
    refused.assert_error(403, "merchant_not_in_grant");
    // The person behind the key is not limited, but a merchant orders at its own kitchens only.
    let refused = checkout(
        &app,
        &shop.owner.token,
        &new_key(),
        &order_body(&other, near, "pm_card_visa"),
    )
    .await;
    refused.assert_error(403, "forbidden");

    // It reads its merchant's orders, and another merchant's order does not exist for it.
    let list = app.get_authed("/api/v1/orders", &key).await;
    assert_eq!(list.status, 200, "{}", list.text);
    let ids: Vec<&str> = list.body["orders"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec![order_id.as_str()]);
    let customer = app.signed_up("customer").await;
    let theirs = checkout(
        &app,
        &customer.token,
        &new_key(),
        &order_body(&other, near, "pm_card_visa"),
    )
    .await;
    assert_eq!(theirs.status, 201, "{}", theirs.text);
    let path = format!("/api/v1/orders/{}", theirs.body["id"].as_str().unwrap());
    app.get_authed(&path, &other.owner.token)
        .await
        .assert_status(200);
    app.get_authed(&path, &key)
        .await
        .assert_error(404, "not_found");

    // Its menu, yes; the other merchant's, no.
    let menu = json!({"items": [{"name": "Ramen kit", "price_cents": 1300}]});
    let own = app
        .put_authed(
            &format!("/api/v1/merchants/{}/menu", shop.merchant_id),
            &key,
            &menu,
        )
        .await;
    assert_eq!(own.status, 200, "{}", own.text);
    app.put_authed(
        &format!("/api/v1/merchants/{}/menu", other.merchant_id),
        &key,
        &menu,
    )
    .await
    .assert_error(403, "merchant_not_in_grant");

    // The list shows the key without its secret, and its last use.
    let list = app.get_authed("/api/v1/api-keys", &shop.owner.token).await;
    assert_eq!(list.status, 200, "{}", list.text);
    assert!(!list.text.contains(&key), "a listed key shows its secret");
    let listed = &list.body["api_keys"][0];
    assert_eq!(listed["id"], made["id"]);
    assert_eq!(listed["prefix"], made["prefix"]);
    assert!(listed["last_used_at"].is_string(), "{listed}");
    assert!(listed.get("key").is_none());
}

async fn a_key_without_a_scope_gets_insufficient_scope(kind: Db) {
    let app = crate::helpers::spawn_app(kind).await;
    let shop = open_shop(&app, -5_000.0, -5_000.0).await;
    let reader = key_of(
        &make_key(
            &app,
            &shop.owner.token,
            json!({"name": "Board reader", "scopes": ["orders:read"]}),
        )
        .await,
    );
    let near = at(-5_500.0, -5_000.0);
    let body = order_body(&shop, near, "pm_card_visa");
    let refused = app
        .request(
            "POST",
            "/api/v1/orders",
            Some(&reader),
            &[("Idempotency-Key", &new_key())],
            Some(&body),
        )
        .await;
    refused.assert_error(403, "insufficient_scope");
    assert!(refused.text.contains("orders:write"), "{}", refused.text);
    let challenge = refused
        .headers
        .get("www-authenticate")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    assert!(
        challenge.contains("error=\"insufficient_scope\"") && challenge.contains("orders:write"),
        "{challenge}"
    );
    app.get_authed("/api/v1/orders", &reader)
        .await
        .assert_status(200);
    app.get_authed("/api/v1/me", &reader)
        .await
        .assert_error(403, "insufficient_scope");
    // Nothing was placed: the refusal came before any money moved.
    assert_eq!(
        crate::webhooks_api::count_rows(&app.db, "payments").await,
        0
    );
}

async fn keys_are_audited_and_admin_keys_on_every_use(kind: Db) {
    let app = crate::helpers::spawn_app(kind).await;
    let admin_token = admin(&app).await;
    let made = make_key(
        &app,
        &admin_token,
        json!({"name": "Ops", "scopes": ["admin", "orders:read"]}),
    )
    .await;
    let key = key_of(&made);
    let key_id = made["id"].as_str().unwrap().to_owned();
    app.get_authed("/api/v1/payments/attention", &key)
        .await
        .assert_status(200);
    app.get_authed("/api/v1/orders", &key)
        .await
        .assert_status(200);
    let revoked = app
        .request(
            "DELETE",
            &format!("/api/v1/api-keys/{key_id}"),
            Some(&admin_token),
            &[],
            None,
        )
        .await;
    assert_eq!(revoked.status, 204, "{}", revoked.text);
    app.get_authed("/api/v1/orders", &key)
        .await
        .assert_error(401, "invalid_token");

    let audit = app.get_authed("/api/v1/audit", &admin_token).await;
    assert_eq!(audit.status, 200, "{}", audit.text);
    let entries = audit.body["entries"].as_array().unwrap();
    let actions: Vec<(&str, &str)> = entries
        .iter()
        .map(|e| {
            (
                e["action"].as_str().unwrap(),
                e["target"].as_str().unwrap_or(""),
            )
        })
        .collect();
    // Newest first: revoked, each use of the admin-scoped key (whatever it did), created. The
    // refused use after revocation is not a use.
    assert_eq!(
        actions,
        vec![
            ("api_key.revoked", key_id.as_str()),
            ("api_key.used", "GET /api/v1/orders"),
            ("api_key.used", "GET /api/v1/payments/attention"),
            ("api_key.created", key_id.as_str()),
        ]
    );
    assert!(!audit.text.contains(&key), "the audit log shows a secret");

    // A page at a time.
    let first = app.get_authed("/api/v1/audit?limit=2", &admin_token).await;
    assert_eq!(first.body["entries"].as_array().unwrap().len(), 2);
    let before = first.body["next_before"].as_i64().unwrap();
    let rest = app
        .get_authed(
            &format!("/api/v1/audit?limit=10&before={before}"),
            &admin_token,
        )
        .await;
    assert_eq!(rest.body["entries"].as_array().unwrap().len(), 2);
    assert!(rest.body["next_before"].is_null());
    // Admins only.
    let customer = app.signed_up("customer").await;
    app.get_authed("/api/v1/audit", &customer.token)
        .await
        .assert_error(403, "forbidden");
}

/// The scope each operation of the OpenAPI document states (`security: [{bearer: [scope]}]`).
fn stated_scopes(doc: &Value) -> Vec<(String, String, String)> {
    let mut stated = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            let Some(security) = operation["security"].as_array() else {
                continue;
            };
            for requirement in security {
                if let Some(scopes) = requirement["bearer"].as_array() {
                    assert_eq!(
                        scopes.len(),
                        1,
                        "{method} {path} states {} scopes; each protected route states one",
                        scopes.len()
                    );
                    stated.push((
                        method.to_uppercase(),
                        path.clone(),
                        scopes[0].as_str().unwrap().to_owned(),
                    ));
                }
            }
        }
    }
    stated
}

#[actix_web::test]
async fn every_protected_route_refuses_a_key_without_the_scope_it_states() {
    let app = crate::helpers::spawn_app(Db::Sqlite).await;
    let doc = app.get("/openapi.json").await.body;
    let stated = stated_scopes(&doc);
    assert!(
        stated.len() >= 30,
        "only {} protected operations",
        stated.len()
    );
    let admin_token = admin(&app).await;
    let driver = app.signed_up("driver").await;
    let all_of = |role: mealkitz::domain::Role| mealkitz::domain::Scopes::for_role(role);
    for (method, path, scope) in &stated {
        let needed = mealkitz::domain::Scope::parse(scope)
            .unwrap_or_else(|| panic!("{method} {path} states an unknown scope {scope}"));
        // The key holds every scope its owner's role may hold, except the one stated.
        let (token, role) = if needed.allowed_for(mealkitz::domain::Role::Admin) {
            (&admin_token, mealkitz::domain::Role::Admin)
        } else {
            (&driver.token, mealkitz::domain::Role::Driver)
        };
        let others: Vec<&str> = all_of(role)
            .iter()
            .filter(|s| *s != needed)
            .map(|s| s.as_str())
            .collect();
        let key = key_of(
            &make_key(
                &app,
                token,
                json!({"name": "all but one", "scopes": others}),
            )
            .await,
        );
        let concrete = path
            .split('/')
            .map(|part| {
                if part.starts_with('{') {
                    uuid::Uuid::new_v4().to_string()
                } else {
                    part.to_owned()
                }
            })
            .collect::<Vec<_>>()
            .join("/");
        let response = app
            .client
            .request(method.parse().unwrap(), app.url(&concrete))
            .bearer_auth(&key)
            .header("Idempotency-Key", "scope-check")
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (403, Some("insufficient_scope")),
            "{method} {path} without `{scope}`: {body}"
        );
    }
}

#[actix_web::test]
async fn a_revoked_key_is_refused_by_both_replicas_within_a_second() {
    let db = TestDb::create(Db::Postgres).await;
    let url = db.database_url();
    let redis = crate::helpers::redis_url();
    let mut first = with_redis(config_for(url.clone()), &redis);
    first.dispatch.node_id = "first".into();
    let mut second = with_redis(config_for(url), &redis);
    second.dispatch.node_id = "second".into();
    second.redis = first.redis.clone();
    let first = spawn_app_with(db, first).await;
    let second = start_without_db(second).await;
    second.wait_until_ready().await;
    let shop: Shop = open_shop(&first, -5_000.0, -5_000.0).await;
    let made = make_key(
        &first,
        &shop.owner.token,
        json!({"name": "POS", "scopes": ["orders:read"], "merchant_id": shop.merchant_id}),
    )
    .await;
    let key = key_of(&made);
    let status_at = |address: String| {
        let client = first.client.clone();
        let key = key.clone();
        async move {
            client
                .get(format!("{address}/api/v1/orders"))
                .bearer_auth(&key)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(status_at(first.address.clone()).await, 200);
    assert_eq!(status_at(second.address.clone()).await, 200);

    let revoked_at = Instant::now();
    let revoked = first
        .request(
            "DELETE",
            &format!("/api/v1/api-keys/{}", made["id"].as_str().unwrap()),
            Some(&shop.owner.token),
            &[],
            None,
        )
        .await;
    assert_eq!(revoked.status, 204, "{}", revoked.text);
    // The replica that revoked it refuses it at once.
    assert_eq!(status_at(first.address.clone()).await, 401);
    // The other within a second.
    loop {
        if status_at(second.address.clone()).await == 401 {
            break;
        }
        assert!(
            revoked_at.elapsed() < Duration::from_secs(1),
            "the second replica still accepts the revoked key"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(revoked_at.elapsed() < Duration::from_secs(1));
    assert_eq!(status_at(first.address.clone()).await, 401);
    second.handle.stop(true).await;
}

#[actix_web::test]
async fn bad_key_requests_get_clear_errors_and_keys_cannot_grow() {
    let app = crate::helpers::spawn_app(Db::Sqlite).await;
    let shop = open_shop(&app, -5_000.0, -5_000.0).await;
    let other = open_shop(&app, -5_200.0, -5_000.0).await;
    let customer = app.signed_up("customer").await;
    let post = |token: String, body: Value| {
        let app = &app;
        async move { app.post_authed("/api/v1/api-keys", &token, &body).await }
    };
    let owner = shop.owner.token.clone();
    post(
        owner.clone(),
        json!({"name": "x", "scopes": ["orders:delete"]}),
    )
    .await
    .assert_error(422, "invalid_scope");
    post(owner.clone(), json!({"name": "x", "scopes": []}))
        .await
        .assert_error(422, "invalid_scope");
    post(
        customer.token.clone(),
        json!({"name": "x", "scopes": ["menu:write"]}),
    )
    .await
    .assert_error(422, "invalid_scope");
    post(owner.clone(), json!({"name": "x", "scopes": ["admin"]}))
        .await
        .assert_error(422, "invalid_scope");
    post(
        owner.clone(),
        json!({"name": "", "scopes": ["orders:read"]}),
    )
    .await
    .assert_error(422, "invalid_field");
    post(
        owner.clone(),
        json!({"name": "x", "scopes": ["orders:read"], "mode": "prod"}),
    )
    .await
    .assert_error(422, "invalid_field");
    post(
        owner.clone(),
        json!({"name": "x", "scopes": ["orders:read"], "expires_at": "2020-01-01T00:00:00Z"}),
    )
    .await
    .assert_error(422, "invalid_field");
    post(
        owner.clone(),
        json!({"name": "x", "scopes": ["orders:read"], "merchant_id": other.merchant_id}),
    )
    .await
    .assert_error(404, "not_found");
    post(
        owner.clone(),
        json!({"name": "x", "scope": ["orders:read"]}),
    )
    .await
    .assert_error(422, "invalid_field");

    // A key that may manage keys makes only keys within itself.
    let manager = key_of(
        &make_key(
            &app,
            &owner,
            json!({"name": "keys", "scopes": ["keys:manage", "orders:read"], "merchant_id": shop.merchant_id}),
        )
        .await,
    );
    post(
        manager.clone(),
        json!({"name": "wider", "scopes": ["orders:write"]}),
    )
    .await
    .assert_error(403, "insufficient_scope");
    post(
        manager.clone(),
        json!({"name": "elsewhere", "scopes": ["orders:read"], "merchant_id": other.merchant_id}),
    )
    .await
    .assert_error(403, "merchant_not_in_grant");
    let narrower = make_key(
        &app,
        &manager,
        json!({"name": "reader", "scopes": ["orders:read"]}),
    )
    .await;
    assert_eq!(
        narrower["merchant_id"],
        json!(shop.merchant_id),
        "limited like its maker"
    );

    // Test keys; malformed, unknown and expired keys.
    let sandbox = make_key(
        &app,
        &owner,
        json!({"name": "sandbox", "scopes": ["orders:read"], "mode": "test"}),
    )
    .await;
    assert!(key_of(&sandbox).starts_with("mk_test_"));
    app.get_authed("/api/v1/orders", &key_of(&sandbox))
        .await
        .assert_status(200);
    app.get_authed("/api/v1/orders", "mk_live_short")
        .await
        .assert_error(401, "invalid_token");
    let forged = format!("mk_live_{}", "A".repeat(48));
    app.get_authed("/api/v1/orders", &forged)
        .await
        .assert_error(401, "invalid_token");
    let real = key_of(&narrower);
    let tampered = format!(
        "{}{}",
        &real[..real.len() - 1],
        if real.ends_with('A') { 'B' } else { 'A' }
    );
    app.get_authed("/api/v1/orders", &tampered)
        .await
        .assert_error(401, "invalid_token");
    let soon = chrono::Utc::now() + chrono::Duration::milliseconds(1_500);
    let expiring = make_key(
        &app,
        &owner,
        json!({"name": "brief", "scopes": ["orders:read"], "expires_at": soon}),
    )
    .await;
    app.get_authed("/api/v1/orders", &key_of(&expiring))
        .await
        .assert_status(200);
    tokio::time::sleep(Duration::from_millis(1_700)).await;
    app.get_authed("/api/v1/orders", &key_of(&expiring))
        .await
        .assert_error(401, "token_expired");
    // Revoking another person's key: it does not exist for them.
    app.request(
        "DELETE",
        &format!("/api/v1/api-keys/{}", narrower["id"].as_str().unwrap()),
        Some(&customer.token),
        &[],
        None,
    )
    .await
    .assert_error(404, "api_key_not_found");
}

#[actix_web::test]
async fn each_key_has_its_own_request_limit() {
    let db = TestDb::create(Db::Sqlite).await;
    let mut config = test_config(&db);
    config.auth.api_key_requests_per_minute = 3;
    let app = spawn_app_with(db, config).await;
    let customer = app.signed_up("customer").await;
    let one = key_of(
        &make_key(
            &app,
            &customer.token,
            json!({"name": "a", "scopes": ["orders:read"]}),
        )
        .await,
    );
    let two = key_of(
        &make_key(
            &app,
            &customer.token,
            json!({"name": "b", "scopes": ["orders:read"]}),
        )
        .await,
    );
    for _ in 0..3 {
        app.get_authed("/api/v1/orders", &one)
            .await
            .assert_status(200);
    }
    let limited = app.get_authed("/api/v1/orders", &one).await;
    limited.assert_error(429, "rate_limited");
    assert!(limited.headers.get("retry-after").is_some());
    app.get_authed("/api/v1/orders", &two)
        .await
        .assert_status(200);
    // The person's own session is not a key and not limited so.
    for _ in 0..4 {
        app.get_authed("/api/v1/orders", &customer.token)
            .await
            .assert_status(200);
    }
}

#[actix_web::test]
async fn sockets_check_the_scope_of_the_handshake_and_of_every_message() {
    let app = crate::helpers::spawn_app(Db::Sqlite).await;
    let shop = open_shop(&app, -5_000.0, -5_000.0).await;
    let customer = app.signed_up("customer").await;
    let near = at(-5_500.0, -5_000.0);
    let placed = checkout(
        &app,
        &customer.token,
        &new_key(),
        &order_body(&shop, near, "pm_card_visa"),
    )
    .await;
    assert_eq!(placed.status, 201, "{}", placed.text);
    let order_id = placed.body["id"].as_str().unwrap().to_owned();

    // A read-only key watches the board, and every action it sends is refused.
    let reader = key_of(
        &make_key(
            &app,
            &shop.owner.token,
            json!({"name": "screen", "scopes": ["orders:read"]}),
        )
        .await,
    );
    let mut board = crate::ws::ws_connect(&app, "/ws/merchant", Some(&reader), None)
        .await
        .expect("a key with orders:read opens the board");
    let shown = board.expect("board").await;
    assert!(shown.to_string().contains(&order_id), "{shown}");
    board
        .send(json!({"type": "accept_order", "order_id": order_id, "prep_minutes": 10}))
        .await;
    let error = board.expect("error").await;
    assert_eq!(error["code"], "insufficient_scope", "{error}");
    let order = app
        .get_authed(&format!("/api/v1/orders/{order_id}"), &customer.token)
        .await;
    assert_eq!(
        order.body["status"], "placed",
        "the refused accept changed nothing"
    );

    // Without orders:read, no board; a driver key without drivers:write, no driver socket.
    let menu_only = key_of(
        &make_key(
            &app,
            &shop.owner.token,
            json!({"name": "menu", "scopes": ["menu:write"]}),
        )
        .await,
    );
    let (status, body) = crate::ws::ws_connect(&app, "/ws/merchant", Some(&menu_only), None)
        .await
        .err()
        .expect("refused");
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("insufficient_scope"), "{body}");
    let driver = app.signed_up("driver").await;
    let profile = key_of(
        &make_key(
            &app,
            &driver.token,
            json!({"name": "profile", "scopes": ["profile:read"]}),
        )
        .await,
    );
    let (status, body) = crate::ws::ws_connect(&app, "/ws/driver", Some(&profile), None)
        .await
        .err()
        .expect("refused");
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("insufficient_scope"), "{body}");

    // A key limited to another of the owner's merchants does not see this order's board.
    let second = app
        .post_authed(
            "/api/v1/merchants",
            &shop.owner.token,
            &json!({"name": "Second kitchen", "address": "2 Test Street", "location": at(-5_100.0, -5_000.0)}),
        )
        .await;
    assert_eq!(second.status, 201, "{}", second.text);
    let second = second.body["id"].as_str().unwrap().to_owned();
    let limited = key_of(
        &make_key(
            &app,
            &shop.owner.token,
            json!({"name": "one shop", "scopes": ["orders:read", "orders:write"], "merchant_id": second}),
        )
        .await,
    );
    let refused = crate::ws::ws_connect(
        &app,
        &format!("/ws/merchant?merchant_id={}", shop.merchant_id),
        Some(&limited),
        None,
    )
    .await
    .err()
    .expect("refused");
    assert_eq!(refused.0, 404, "{}", refused.1);
    let tracking = crate::ws::ws_connect(
        &app,
        &format!("/ws/orders/{order_id}"),
        Some(&limited),
        None,
    )
    .await
    .err()
    .expect("refused");
    assert_eq!(tracking.0, 404, "{}", tracking.1);
}

#[actix_web::test]
async fn a_socket_opened_with_a_key_closes_when_the_key_is_revoked() {
    let app = crate::helpers::spawn_app(Db::Postgres).await;
    let shop = open_shop(&app, -5_000.0, -5_000.0).await;
    let made = make_key(
        &app,
        &shop.owner.token,
        json!({"name": "screen", "scopes": ["orders:read"], "merchant_id": shop.merchant_id}),
    )
    .await;
    let mut board = crate::ws::ws_connect(&app, "/ws/merchant", Some(&key_of(&made)), None)
        .await
        .expect("the board opens");
    board.expect("board").await;
    let revoked = app
        .request(
            "DELETE",
            &format!("/api/v1/api-keys/{}", made["id"].as_str().unwrap()),
            Some(&shop.owner.token),
            &[],
            None,
        )
        .await;
    assert_eq!(revoked.status, 204, "{}", revoked.text);
    let (code, reason) = board
        .closed(Duration::from_secs(3))
        .await
        .expect("the socket closes within the key check's second");
    assert_eq!((code, reason.as_str()), (1008, "credential_revoked"));
}
