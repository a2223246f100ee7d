//! Paying a WhatsApp basket through its payment link (`/api/v1/pay/{token}`): the link issued
//! through the store as the conversation issues it, then read and paid over HTTP with no login,
//! on both stores — one order for the link's customer, one authorisation, the link used once.

use chrono::Utc;
use mealkitz::domain::chat::{Basket, BasketLine, Dropoff};
use mealkitz::domain::{Cents, MerchantId, Position, UserId};
use mealkitz::store::{NewPayLink, PayLink, Store, new_pay_token, pay_token_hash};
use serde_json::{Value, json};
use sqlx::Row;
use uuid::Uuid;

use crate::helpers::{Db, Session, TestApp, TestDb, at, migrated_store, on_both_backends};
use crate::merchants::{Shop, open_shop};

const PHONE: &str = "+358401234567";

/// A customer with a basket of `shop` (2 ramen kits, 1 gyoza) delivered 1 km from it, and a
/// payment link for it.
struct Fixture {
    store: Store,
    customer: Session,
    basket: Basket,
    basket_key: String,
    token: String,
    link: PayLink,
}

fn basket_of(shop: &Shop, dropoff: Position) -> Basket {
    let line = |i: usize, name: &str, quantity| BasketLine {
        menu_item_id: shop.items[i].0.parse().unwrap(),
        name: name.to_owned(),
        quantity,
        unit_price_cents: Cents(shop.items[i].1),
    };
    Basket {
        merchant_id: shop.merchant_id.parse::<MerchantId>().unwrap(),
        merchant_name: "Noodle Lab".to_owned(),
        lines: vec![line(0, "Ramen kit", 2), line(1, "Gyoza (6)", 1)],
        dropoff: Dropoff {
            position: dropoff,
            address: "5 Customer Court".to_owned(),
        },
    }
}

async fn issue(
    store: &Store,
    customer: UserId,
    basket: &Basket,
    basket_key: &str,
    token: &str,
    expires_in: chrono::Duration,
) -> Option<PayLink> {
    store
        .issue_pay_link(&NewPayLink {
            phone: PHONE,
            customer_id: customer,
            basket,
            basket_key,
            token_hash: &pay_token_hash(token),
            expires_at: mealkitz::store::now() + expires_in,
        })
        .await
        .unwrap()
}

async fn fixture_expiring(app: &TestApp, expires_in: chrono::Duration) -> Fixture {
    let shop = open_shop(app, -5_000.0, -5_000.0).await;
    let customer = app.signed_up("customer").await;
    let store = migrated_store(&app.db).await;
    let basket = basket_of(&shop, at(-4_000.0, -5_000.0));
    let basket_key = format!("whatsapp:{PHONE}:{}", Uuid::new_v4().simple());
    let token = new_pay_token();
    let link = issue(
        &store,
        customer.id.parse().unwrap(),
        &basket,
        &basket_key,
        &token,
        expires_in,
    )
    .await
    .expect("a new link is issued");
    Fixture {
        store,
        customer,
        basket,
        basket_key,
        token,
        link,
    }
}

async fn fixture(app: &TestApp) -> Fixture {
    fixture_expiring(app, chrono::Duration::minutes(30)).await
}

async fn show(app: &TestApp, token: &str) -> crate::helpers::Reply {
    app.get(&format!("/api/v1/pay/{token}")).await
}

async fn pay(app: &TestApp, token: &str, method: &str) -> crate::helpers::Reply {
    app.post_json(
        &format!("/api/v1/pay/{token}"),
        &json!({ "payment_method": method }),
    )
    .await
}

/// A value to bind in [`texts`].
enum Param {
    Text(String),
    Uuid(Uuid),
}

/// Every row `sql` selects, each column read as text (NULL as ""), on either store.
async fn texts(
    db: &TestDb,
    postgres: &'static str,
    sqlite: &'static str,
    param: Param,
) -> Vec<Vec<String>> {
    macro_rules! fetch {
        ($pool:expr, $sql:expr) => {{
            let query = sqlx::query($sql);
            let query = match param {
                Param::Text(text) => query.bind(text),
                Param::Uuid(id) => query.bind(id),
            };
            let rows = query.fetch_all(&$pool).await.unwrap();
            $pool.close().await;
            rows.iter()
                .map(|row| {
                    (0..row.len())
                        .map(|i| {
                            row.try_get::<Option<String>, _>(i)
                                .unwrap()
                                .unwrap_or_default()
                        })
                        .collect()
                })
                .collect()
        }};
    }
    match db.kind {
        Db::Postgres => {
            let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
            fetch!(pool, postgres)
        }
        Db::Sqlite => {
            let pool = sqlx::SqlitePool::connect(&db.url).await.unwrap();
            fetch!(pool, sqlite)
        }
    }
}

/// The inbox rows that tell the conversation `link` was paid: (kind, message JSON).
async fn paid_messages(db: &TestDb, link: Uuid) -> Vec<(String, Value)> {
    texts(
        db,
        "SELECT kind, message::text FROM whatsapp_inbox WHERE id = $1",
        "SELECT kind, message FROM whatsapp_inbox WHERE id = $1",
        Param::Text(format!("paid_{link}")),
    )
    .await
    .into_iter()
    .map(|row| (row[0].clone(), serde_json::from_str(&row[1]).unwrap()))
    .collect()
}

/// The statuses of `customer`'s payments, sorted.
async fn payment_statuses(db: &TestDb, customer: &Session) -> Vec<String> {
    let sql = "SELECT status FROM payments WHERE customer_id = $1 ORDER BY status";
    let mut statuses: Vec<String> = texts(db, sql, sql, Param::Uuid(customer.id.parse().unwrap()))
        .await
        .into_iter()
        .map(|row| row[0].clone())
        .collect();
    statuses.sort();
    statuses
}

async fn orders_of(app: &TestApp, customer: &Session) -> Vec<Value> {
    let mine = app.get_authed("/api/v1/orders", &customer.token).await;
    assert_eq!(mine.status, 200, "{}", mine.text);
    mine.body["orders"].as_array().unwrap().clone()
}

on_both_backends! {
    async fn a_paid_link_places_the_customers_order_and_is_then_used_up(app) {
        let f = fixture(&app).await;
        let shown = show(&app, &f.token).await;
        assert_eq!(shown.status, 200, "{}", shown.text);
        assert_eq!(shown.body["merchant_name"], "Noodle Lab");
        assert_eq!(shown.body["items"], json!([
            {"name": "Ramen kit", "quantity": 2, "unit_price_cents": 1250},
            {"name": "Gyoza (6)", "quantity": 1, "unit_price_cents": 599},
        ]));
        assert_eq!(shown.body["subtotal_cents"], 2 * 1250 + 599);
        // 1.99 and 0.60/km for the 1 km from the kitchen, as checkout prices it.
        assert_eq!(shown.body["delivery_fee_cents"], 199 + 60);
        assert_eq!(shown.body["total_cents"], 2 * 1250 + 599 + 199 + 60);
        assert_eq!(shown.body["dropoff_address"], "5 Customer Court");
        let expires: chrono::DateTime<Utc> = shown.body["expires_at"].as_str().unwrap().parse().unwrap();
        assert_eq!(expires, f.link.expires_at);
        let methods: Vec<&str> = shown.body["payment_methods"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap()).collect();
        assert_eq!(methods, ["pm_card_visa", "pm_card_chargeDeclined", "pm_card_chargeDeclinedInsufficientFunds"]);
        assert!(shown.body["payment_methods"].as_array().unwrap().iter().all(|m| !m["label"].as_str().unwrap().is_empty()));

        let paid = pay(&app, &f.token, "pm_card_visa").await;
        assert_eq!(paid.status, 201, "{}", paid.text);
        assert_eq!(paid.body["customer_id"], json!(f.customer.id));
        assert_eq!(paid.body["status"], "placed");
        assert_eq!(paid.body["total_cents"], shown.body["total_cents"]);
        assert_eq!(paid.body["dropoff_address"], "5 Customer Court");
        let order_id = paid.body["id"].as_str().unwrap().to_owned();
        // The order is the customer's, over REST like any other.
        let read = app.get_authed(&format!("/api/v1/orders/{order_id}"), &f.customer.token).await;
        assert_eq!(read.status, 200, "{}", read.text);
        assert_eq!(read.body["id"], json!(order_id));
        let payment = app.get_authed(&format!("/api/v1/orders/{order_id}/payment"), &f.customer.token).await;
        assert_eq!(payment.body["status"], "authorised", "{}", payment.text);
        // Its updates go to the chat's number on WhatsApp.
        let contact = f.store.customer_contact(order_id.parse().unwrap(), f.customer.id.parse().unwrap()).await.unwrap();
        assert_eq!(contact.phone.as_ref().map(|p| p.as_str()), Some(PHONE), "{contact:?}");
        assert!(contact.consent, "{contact:?}");

        // Used: neither read nor paid again.
        show(&app, &f.token).await.assert_error(410, "pay_link_used");
        pay(&app, &f.token, "pm_card_visa").await.assert_error(410, "pay_link_used");
        let stored = f.store.pay_link(&pay_token_hash(&f.token)).await.unwrap().unwrap();
        assert_eq!(stored.order_id.map(|o| o.to_string()), Some(order_id.clone()));
        assert!(stored.used_at.is_some());
        // The conversation is told once.
        assert_eq!(paid_messages(&app.db, f.link.id).await, [("paid".to_owned(), json!({"order_id": order_id}))]);
        assert_eq!(orders_of(&app, &f.customer).await.len(), 1);
        assert_eq!(payment_statuses(&app.db, &f.customer).await, ["authorised"]);
    }

    async fn a_declined_card_leaves_the_link_open_for_another_card(app) {
        let f = fixture(&app).await;
        pay(&app, &f.token, "pm_card_chargeDeclined").await.assert_error(402, "payment_declined");
        assert_eq!(show(&app, &f.token).await.status, 200, "the link stays open");
        pay(&app, &f.token, "pm_card_chargeDeclinedInsufficientFunds").await.assert_error(402, "insufficient_funds");
        let paid = pay(&app, &f.token, "pm_card_visa").await;
        assert_eq!(paid.status, 201, "{}", paid.text);

        let orders = orders_of(&app, &f.customer).await;
        assert_eq!(orders.len(), 1);
        assert_eq!(orders[0]["id"], paid.body["id"]);
        // One authorisation; each declined card recorded as declined, none with an order.
        assert_eq!(payment_statuses(&app.db, &f.customer).await, ["authorised", "declined", "declined"]);
        let stored = f.store.pay_link(&pay_token_hash(&f.token)).await.unwrap().unwrap();
        assert_eq!(stored.attempt, 2, "each declined card moved the attempt on");
        pay(&app, &f.token, "pm_card_chargeDeclined").await.assert_error(410, "pay_link_used");
    }

    async fn expired_and_unknown_links_are_refused_and_bad_requests_answered_as_elsewhere(app) {
        let f = fixture_expiring(&app, chrono::Duration::seconds(-1)).await;
        show(&app, &f.token).await.assert_error(410, "pay_link_expired");
        pay(&app, &f.token, "pm_card_visa").await.assert_error(410, "pay_link_expired");
        assert!(orders_of(&app, &f.customer).await.is_empty());
        assert!(payment_statuses(&app.db, &f.customer).await.is_empty());

        let unknown = new_pay_token();
        show(&app, &unknown).await.assert_error(404, "pay_link_not_found");
        pay(&app, &unknown, "pm_card_visa").await.assert_error(404, "pay_link_not_found");
        show(&app, &"x".repeat(500)).await.assert_error(404, "pay_link_not_found");

        let open = fixture(&app).await;
        let path = format!("/api/v1/pay/{}", open.token);
        let url = app.url(&path);
        let malformed = crate::helpers::Reply::read(
            app.client.post(&url).header("content-type", "application/json").body("{\"payment_method\":").send().await.unwrap(),
        ).await;
        malformed.assert_error(400, "malformed_json");
        let not_json = crate::helpers::Reply::read(
            app.client.post(&url).header("content-type", "text/plain").body("pm_card_visa").send().await.unwrap(),
        ).await;
        not_json.assert_error(415, "unsupported_media_type");
        app.post_json(&path, &json!({})).await.assert_error(422, "invalid_field");
        let unoffered = pay(&app, &open.token, "pm_card_unicorn").await;
        unoffered.assert_error(422, "invalid_field");
        assert_eq!(unoffered.body["error"]["field"], "payment_method");
        // None of these spent the link: it still pays.
        assert_eq!(pay(&app, &open.token, "pm_card_visa").await.status, 201);
    }

    async fn two_payments_at_once_place_one_order_and_authorise_once(app) {
        let f = fixture(&app).await;
        let (first, second) = tokio::join!(
            pay(&app, &f.token, "pm_card_visa"),
            pay(&app, &f.token, "pm_card_visa"),
        );
        let statuses = [first.status, second.status];
        assert!(statuses.contains(&201), "{statuses:?} {} {}", first.text, second.text);
        for reply in [&first, &second] {
            match reply.status {
                201 => {}
                409 => reply.assert_error(409, "request_in_progress"),
                _ => reply.assert_error(410, "pay_link_used"),
            }
        }
        let placed = if first.status == 201 { &first } else { &second };
        if first.status == 201 && second.status == 201 {
            assert_eq!(first.body["id"], second.body["id"], "one order");
        }
        assert_eq!(orders_of(&app, &f.customer).await.len(), 1);
        assert_eq!(payment_statuses(&app.db, &f.customer).await, ["authorised"]);
        assert_eq!(paid_messages(&app.db, f.link.id).await.len(), 1);
        let stored = f.store.pay_link(&pay_token_hash(&f.token)).await.unwrap().unwrap();
        assert_eq!(stored.order_id.map(|o| o.to_string()).as_deref(), placed.body["id"].as_str());
    }

    async fn an_order_placed_before_a_crash_completes_the_link_on_the_retry(app) {
        // The checkout of the link's key placed the order, and the server died before using the
        // link up: the client's retry replays the order and finishes the link.
        let f = fixture(&app).await;
        let key = format!("whatsapp-pay:{}:0", f.link.id);
        // The body the pay endpoint sends, field for field.
        let body = json!({
            "merchant_id": f.basket.merchant_id,
            "items": f.basket.lines.iter().map(|l| json!({"menu_item_id": l.menu_item_id, "quantity": l.quantity})).collect::<Vec<_>>(),
            "dropoff": {"lat": f.basket.dropoff.position.lat, "lon": f.basket.dropoff.position.lon, "address": f.basket.dropoff.address},
            "payment_method": "pm_card_visa",
            "phone": PHONE,
            "notify_whatsapp": true,
        });
        let placed = crate::checkout::checkout(&app, &f.customer.token, &key, &body).await;
        assert_eq!(placed.status, 201, "{}", placed.text);
        assert_eq!(show(&app, &f.token).await.status, 200, "not used yet");
        assert!(paid_messages(&app.db, f.link.id).await.is_empty());

        let retried = pay(&app, &f.token, "pm_card_visa").await;
        assert_eq!(retried.status, 201, "{}", retried.text);
        assert_eq!(retried.headers.get("idempotent-replayed").map(|v| v.to_str().unwrap()), Some("true"));
        assert_eq!(retried.body, placed.body, "the same order");
        show(&app, &f.token).await.assert_error(410, "pay_link_used");
        assert_eq!(paid_messages(&app.db, f.link.id).await, [("paid".to_owned(), json!({"order_id": placed.body["id"]}))]);
        assert_eq!(payment_statuses(&app.db, &f.customer).await, ["authorised"]);
    }

    async fn another_card_while_the_first_is_unfinished_is_asked_to_wait(app) {
        // An attempt with Visa failed in passing (its key unlocked, not answered): the link's
        // key is bound to Visa until it finishes.
        let f = fixture(&app).await;
        let key = format!("whatsapp-pay:{}:0", f.link.id);
        let hash = mealkitz::api::checkout::request_hash(&json!({"an": "unfinished visa attempt"}));
        let customer: UserId = f.customer.id.parse().unwrap();
        let claim = f.store.claim_idempotency_key(customer, &key, &hash, "gone-node").await.unwrap();
        assert!(matches!(claim, mealkitz::store::KeyClaim::Proceed { .. }), "{claim:?}");
        f.store.unlock_idempotency_key(customer, &key, "gone-node").await.unwrap();

        let refused = pay(&app, &f.token, "pm_card_chargeDeclined").await;
        refused.assert_error(409, "request_in_progress");
        assert!(refused.body["error"]["message"].as_str().unwrap().contains("another card"), "{}", refused.text);
        assert_eq!(refused.headers.get("retry-after").map(|v| v.to_str().unwrap()), Some("1"));
        assert!(orders_of(&app, &f.customer).await.is_empty());
        assert_eq!(show(&app, &f.token).await.status, 200, "the link stays open");
    }

    async fn reissuing_a_link_replaces_its_token_while_unused_and_never_stores_a_token(app) {
        let f = fixture(&app).await;
        let customer: UserId = f.customer.id.parse().unwrap();
        let later = chrono::Duration::minutes(45);
        let second_token = new_pay_token();
        let reissued = issue(&f.store, customer, &f.basket, &f.basket_key, &second_token, later).await.expect("an unused link is reissued");
        assert_eq!(reissued.id, f.link.id, "the same link");
        assert!(reissued.expires_at > f.link.expires_at, "its expiry renewed");
        assert_eq!(reissued.basket, f.basket);
        show(&app, &f.token).await.assert_error(404, "pay_link_not_found");
        assert_eq!(show(&app, &second_token).await.status, 200);

        // Nothing stored holds a token: only its hash.
        let rows = texts(
            &app.db,
            "SELECT id::text, token_hash, basket_key, phone, customer_id::text, basket::text, attempt::text, order_id::text, created_at::text, expires_at::text, used_at::text FROM pay_links WHERE id = $1",
            "SELECT hex(id), token_hash, basket_key, phone, hex(customer_id), basket, CAST(attempt AS TEXT), hex(order_id), created_at, expires_at, used_at FROM pay_links WHERE id = $1",
            Param::Uuid(f.link.id),
        ).await;
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0][1], pay_token_hash(&second_token));
        for token in [&f.token, &second_token] {
            assert!(rows[0].iter().all(|column| !column.contains(token.as_str())), "{rows:?}");
        }

        assert_eq!(pay(&app, &second_token, "pm_card_visa").await.status, 201);
        let third_token = new_pay_token();
        assert!(issue(&f.store, customer, &f.basket, &f.basket_key, &third_token, later).await.is_none(), "a used link is not reissued");
        show(&app, &third_token).await.assert_error(404, "pay_link_not_found");
        show(&app, &second_token).await.assert_error(410, "pay_link_used");
        // Another basket of the same conversation gets a link of its own.
        let other = issue(&f.store, customer, &f.basket, &format!("{}:2", f.basket_key), &third_token, later).await.expect("a new link");
        assert_ne!(other.id, f.link.id);
        assert_eq!(other.attempt, 0);
        assert_eq!(other.order_id, None);
    }
}

#[actix_web::test]
async fn the_pay_page_is_served_with_a_strict_content_security_policy() {
    let app = crate::helpers::spawn_app(Db::Sqlite).await;
    let response = app
        .client
        .get(app.url(&format!("/pay/{}", new_pay_token())))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let policy = response.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        policy.contains("default-src 'self'") && policy.contains("script-src 'self'"),
        "{policy}"
    );
    assert_eq!(response.headers()["referrer-policy"], "no-referrer");
    let page = response.text().await.unwrap();
    assert!(page.contains("/assets/pay.js"), "{page}");
    assert!(!page.contains("<script>"), "no inline script");
    assert!(!page.contains("http://") && !page.contains("https://"));
    let script = app
        .client
        .get(app.url("/assets/pay.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(script.status(), 200);
    assert!(
        script.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/javascript")
    );
    assert!(script.text().await.unwrap().contains("/api/v1/pay/"));
}
