//! Checkout as a recoverable saga: a checkout whose server died part-way is continued by the
//! retry with the same key — same order id, same authorisation, at once when the server that
//! held the key is gone — and a hold that no order will use is released by the reconciler, once.
//! Settlement failures back off and surface to an admin. The "died part-way" states are made
//! through the store and the sandbox gateway exactly as a dying attempt leaves them.

use std::time::Duration;

use mealkitz::domain::{Cents, OrderId, UserId};
use mealkitz::payments::reconcile::{Reconciled, reconcile};
use mealkitz::payments::sandbox::{SANDBOX_VISA, SandboxGateway};
use mealkitz::payments::{Authorisation, AuthoriseRequest, PaymentGateway, authorise_key};
use mealkitz::store::{KeyClaim, Payment, PaymentStatus, Store};
use serde_json::Value;

use crate::checkout::{admin, answer_kept, checkout, key_state, new_key, order_body};
use crate::helpers::at;
use crate::helpers::{Db, Session, TestApp, TestDb, each_backend, on_both_backends, spawn_app};
use crate::merchants::{Shop, open_shop};
use crate::ws::store_of;

/// A process that is not running: a key it holds is free.
const DEAD_NODE: &str = "a-server-that-was-killed";

fn user_id(session: &Session) -> UserId {
    UserId(session.id.parse().unwrap())
}

/// What an attempt leaves behind when its server dies after the gateway authorised and before
/// the answer was recorded: the key claimed by `holder`, a pending payment, a hold at the
/// gateway. Returns the order id the key is bound to and the gateway's reference of the hold.
async fn died_after_authorising(
    store: &Store,
    customer: &Session,
    key: &str,
    body: &Value,
    total: Cents,
    holder: &str,
) -> (OrderId, String) {
    let hash = mealkitz::api::checkout::request_hash(body);
    let KeyClaim::Proceed { order_id, resumed } = store
        .claim_idempotency_key(user_id(customer), key, &hash, holder)
        .await
        .unwrap()
    else {
        panic!("a fresh key is claimed")
    };
    assert!(!resumed);
    let payment = Payment::pending(order_id, user_id(customer), total, SANDBOX_VISA.into());
    store
        .create_payment(&payment, &authorise_key(order_id), "checkout")
        .await
        .unwrap();
    let gateway = SandboxGateway::new(store.clone());
    let Authorisation::Authorised { reference } = gateway
        .authorise(AuthoriseRequest {
            idempotency_key: &authorise_key(order_id),
            amount: total,
            payment_method: SANDBOX_VISA,
        })
        .await
        .unwrap()
    else {
        panic!("visa authorises")
    };
    (order_id, reference)
}

/// The total the shop charges for `body` (learnt from a checkout of the same body).
async fn total_of(app: &TestApp, customer: &Session, body: &Value) -> Cents {
    let placed = checkout(app, &customer.token, &new_key(), body).await;
    assert_eq!(placed.status, 201, "{}", placed.text);
    Cents(placed.body["total_cents"].as_i64().unwrap())
}

async fn holds(store: &Store) -> Vec<(String, i64)> {
    store.sandbox_hold_counts().await.unwrap()
}

async fn setup(app: &TestApp, north_m: f64) -> (Shop, Session, Value, Cents, Store) {
    let shop = open_shop(app, north_m, 5_000.0).await;
    let customer = app.signed_up("customer").await;
    let body = order_body(&shop, at(north_m + 500.0, 5_000.0), SANDBOX_VISA);
    let total = total_of(app, &customer, &body).await;
    (shop, customer, body, total, store_of(app).await)
}

on_both_backends! {
    async fn a_checkout_whose_server_died_after_authorising_is_continued_at_once_with_the_same_order_and_hold(app) {
        let (_shop, customer, body, total, store) = setup(&app, 5_000.0).await;
        let key = new_key();
        let (order_id, reference) =
            died_after_authorising(&store, &customer, &key, &body, total, DEAD_NODE).await;

        let retried = checkout(&app, &customer.token, &key, &body).await;
        assert_eq!(retried.status, 201, "the retry is not refused: {}", retried.text);
        assert_eq!(retried.body["id"], order_id.to_string(), "the same order id");
        let payment = store.payment_for_order(order_id).await.unwrap().unwrap();
        assert_eq!(payment.status, PaymentStatus::Authorised);
        assert_eq!(payment.gateway_ref.as_deref(), Some(reference.as_str()), "the same hold");
        // One hold for the probe checkout, one for this one: none made twice.
        assert_eq!(holds(&store).await, [("authorised".to_owned(), 2)]);
        let history = app.get_authed(&format!("/api/v1/orders/{order_id}/payment"), &customer.token).await;
        let statuses: Vec<&str> = history.body["events"].as_array().unwrap().iter().map(|e| e["status"].as_str().unwrap()).collect();
        assert_eq!(statuses, ["authorised"]);
        // And the answer is now kept.
        let again = checkout(&app, &customer.token, &key, &body).await;
        assert_eq!(again.body["id"], order_id.to_string());
        assert_eq!(again.headers.get("idempotent-replayed").map(|v| v.to_str().unwrap()), Some("true"));
        store.close().await;
    }

    async fn a_placed_checkouts_answer_lost_with_its_server_is_kept_by_the_reconciler_once_its_order_closes(app) {
        let (_shop, customer, body, _total, store) = setup(&app, 5_000.0).await;
        let gateway = SandboxGateway::new(store.clone());
        // This server counts as alive once its first heartbeat after migrating has landed.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        let this_server = loop {
            let members = store.live_members().await.unwrap();
            if let Some(member) = members.into_iter().next() {
                break member;
            }
            assert!(tokio::time::Instant::now() < deadline, "the server never joined the cluster");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        // Two placed checkouts whose answers did not reach the store: one held by a server
        // that died, one by this live one (its answer still on its way).
        let mut placed = Vec::new();
        for (address, holder) in [("1 Lost Answer Road", DEAD_NODE), ("2 Slow Answer Road", this_server.as_str())] {
            let mut order = body.clone();
            order["dropoff"]["address"] = address.into();
            let key = new_key();
            let reply = checkout(&app, &customer.token, &key, &order).await;
            assert_eq!(reply.status, 201, "{}", reply.text);
            // Its answer is kept off the answer's path: once kept, it is lost again here.
            answer_kept(&app.db, &key).await;
            reopen_key(&app.db, &key, holder).await;
            placed.push((key, order, reply.body["id"].as_str().unwrap().to_owned()));
        }
        // While its order is open, the key is left to its retry (which hands the order to
        // dispatch again).
        let open = reconcile(&store, &gateway, Duration::from_secs(1)).await.unwrap();
        assert_eq!(open.answers_kept, 0);
        assert_eq!(key_state(&app.db, &placed[0].0).await, "in_progress");
        for (_, _, order_id) in &placed {
            let cancelled = app.post_authed(&format!("/api/v1/orders/{order_id}/cancel"), &customer.token, &serde_json::json!({})).await;
            assert_eq!(cancelled.status, 200, "{}", cancelled.text);
        }
        // This round (or the server's own money loop, woken by the cancels) keeps the dead
        // server's answer; the live server's key is its own to complete.
        reconcile(&store, &gateway, Duration::from_secs(1)).await.unwrap();
        let (dead_key, dead_body, dead_order) = &placed[0];
        assert_eq!(key_state(&app.db, dead_key).await, "completed");
        assert_eq!(key_state(&app.db, &placed[1].0).await, "in_progress");
        let again = checkout(&app, &customer.token, dead_key, dead_body).await;
        assert_eq!(again.status, 201, "{}", again.text);
        assert_eq!(again.body["id"], dead_order.as_str(), "the order placed, not another");
        assert_eq!(again.body["status"], "cancelled", "as the order stood when kept");
        assert_eq!(again.headers.get("idempotent-replayed").map(|v| v.to_str().unwrap()), Some("true"));
        assert_eq!(reconcile(&store, &gateway, Duration::from_secs(1)).await.unwrap().answers_kept, 0, "kept once");
        store.close().await;
    }

    async fn a_retry_after_the_order_was_placed_but_not_answered_answers_with_that_order(app) {
        let (_shop, customer, body, total, store) = setup(&app, -5_000.0).await;
        let key = new_key();
        let (order_id, _) =
            died_after_authorising(&store, &customer, &key, &body, total, DEAD_NODE).await;
        // A first retry places the order; then its answer is lost with its server: the key is
        // in progress again, held by a dead process.
        assert_eq!(checkout(&app, &customer.token, &key, &body).await.status, 201);
        reopen_key(&app.db, &key, DEAD_NODE).await;
        let retried = checkout(&app, &customer.token, &key, &body).await;
        assert_eq!(retried.status, 201, "{}", retried.text);
        assert_eq!(retried.body["id"], order_id.to_string());
        let mine = app.get_authed("/api/v1/orders", &customer.token).await;
        assert_eq!(mine.body["orders"].as_array().unwrap().len(), 2, "the probe and this one: {}", mine.text);
        assert_eq!(holds(&store).await, [("authorised".to_owned(), 2)]);
        store.close().await;
    }

    async fn a_hold_for_a_checkout_that_ended_with_a_final_error_is_voided_by_the_reconciler(app) {
        let (shop, customer, body, total, store) = setup(&app, 5_000.0).await;
        let key = new_key();
        let (order_id, reference) =
            died_after_authorising(&store, &customer, &key, &body, total, DEAD_NODE).await;
        // The merchant closes before the retry: the retry's answer is final (money was held,
        // so the key is kept, not released), and the hold is released.
        let closed = app.post_authed(&format!("/api/v1/merchants/{}/close", shop.merchant_id), &shop.owner.token, &serde_json::json!({})).await;
        assert_eq!(closed.status, 200, "{}", closed.text);
        checkout(&app, &customer.token, &key, &body).await.assert_error(409, "merchant_closed");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        loop {
            let payment = store.payment_for_order(order_id).await.unwrap().unwrap();
            if payment.status == PaymentStatus::Voided {
                assert_eq!(payment.gateway_ref.as_deref(), Some(reference.as_str()));
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "still {}", payment.status);
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        assert_eq!(holds(&store).await, [("authorised".to_owned(), 1), ("voided".to_owned(), 1)]);
        // Reopening does not turn the key into an order: its answer is kept.
        let shop_open = app.post_authed(&format!("/api/v1/merchants/{}/open", shop.merchant_id), &shop.owner.token, &serde_json::json!({})).await;
        assert_eq!(shop_open.status, 200);
        checkout(&app, &customer.token, &key, &body).await.assert_error(409, "merchant_closed");
        assert!(store.load_order(order_id).await.unwrap().is_none());
        store.close().await;
    }
}

/// Puts a completed key back in progress, held by `holder` (the answer of the attempt that
/// completed it was lost with its server).
async fn reopen_key(db: &TestDb, key: &str, holder: &str) {
    let sql = "UPDATE idempotency_keys SET state = 'in_progress', response_status = NULL, \
               response_body = NULL, holder = $1 WHERE key = $2";
    crate::helpers::with_db_pool!(db, |pool| {
        sqlx::query(sql)
            .bind(holder)
            .bind(key)
            .execute(&pool)
            .await
            .unwrap();
    });
}

async fn unfinished_checkouts_are_given_up_after_the_abandon_time_and_their_holds_released_once(
    db: Db,
) {
    let app = spawn_app(db).await;
    let (_shop, customer, body, total, store) = setup(&app, -5_000.0).await;
    let gateway = SandboxGateway::new(store.clone());
    let stale_key = new_key();
    let (stale_order, _) =
        died_after_authorising(&store, &customer, &stale_key, &body, total, DEAD_NODE).await;
    // Long enough for the stale one, not for one claimed just now.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let mut fresh_body = body.clone();
    fresh_body["dropoff"]["address"] = "7 Other Street".into();
    let fresh_key = new_key();
    let (fresh_order, _) =
        died_after_authorising(&store, &customer, &fresh_key, &fresh_body, total, DEAD_NODE).await;

    let first = reconcile(&store, &gateway, Duration::from_secs(1))
        .await
        .unwrap();
    assert_eq!(
        first,
        Reconciled {
            abandoned_keys: 1,
            voided: 1,
            closed_without_hold: 0,
            answers_kept: 0,
        }
    );
    let stale = store.payment_for_order(stale_order).await.unwrap().unwrap();
    assert_eq!(stale.status, PaymentStatus::Voided);
    let fresh = store.payment_for_order(fresh_order).await.unwrap().unwrap();
    assert_eq!(
        fresh.status,
        PaymentStatus::Pending,
        "a key that may still be retried keeps its hold"
    );
    // Never twice.
    let second = reconcile(&store, &gateway, Duration::from_secs(1))
        .await
        .unwrap();
    assert_eq!(second, Reconciled::default());
    assert_eq!(
        holds(&store).await,
        [("authorised".to_owned(), 2), ("voided".to_owned(), 1)]
    );
    // The customer's retry learns the checkout was given up; it makes no order.
    checkout(&app, &customer.token, &stale_key, &body)
        .await
        .assert_error(410, "checkout_abandoned");
    assert!(store.load_order(stale_order).await.unwrap().is_none());
    // The fresh one still completes.
    let fresh_retry = checkout(&app, &customer.token, &fresh_key, &fresh_body).await;
    assert_eq!(fresh_retry.status, 201, "{}", fresh_retry.text);
    assert_eq!(fresh_retry.body["id"], fresh_order.to_string());

    // A key abandoned before the gateway answered: nothing was held, nothing to void.
    let silent_key = new_key();
    let mut silent_body = body.clone();
    silent_body["dropoff"]["address"] = "9 Quiet Lane".into();
    let KeyClaim::Proceed {
        order_id: silent_order,
        ..
    } = store
        .claim_idempotency_key(
            user_id(&customer),
            &silent_key,
            &mealkitz::api::checkout::request_hash(&silent_body),
            DEAD_NODE,
        )
        .await
        .unwrap()
    else {
        panic!("claimed")
    };
    store
        .create_payment(
            &Payment::pending(silent_order, user_id(&customer), total, SANDBOX_VISA.into()),
            &authorise_key(silent_order),
            "checkout",
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let third = reconcile(&store, &gateway, Duration::from_secs(1))
        .await
        .unwrap();
    assert_eq!(
        third,
        Reconciled {
            abandoned_keys: 1,
            voided: 0,
            closed_without_hold: 1,
            answers_kept: 0,
        }
    );
    let silent = store
        .payment_for_order(silent_order)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(silent.status, PaymentStatus::Abandoned);
    store.close().await;
}

async fn a_key_held_by_a_live_server_is_in_progress_and_free_the_moment_that_server_is_gone(
    db: Db,
) {
    let app = spawn_app(db).await;
    let (_shop, customer, body, total, store) = setup(&app, 5_000.0).await;
    let live = format!("live-server-{}", uuid::Uuid::new_v4().simple());
    store
        .heartbeat_member(&live, Duration::from_secs(60))
        .await
        .unwrap();
    // On PostgreSQL a live server also has connections open under its name.
    let connection = match db {
        Db::Postgres => {
            let options: sqlx::postgres::PgConnectOptions = app.db.url.parse().unwrap();
            Some(
                sqlx::PgPool::connect_with(options.application_name(&live))
                    .await
                    .unwrap(),
            )
        }
        Db::Sqlite => None,
    };
    let key = new_key();
    let (order_id, _) = died_after_authorising(&store, &customer, &key, &body, total, &live).await;
    let busy = checkout(&app, &customer.token, &key, &body).await;
    busy.assert_error(409, "request_in_progress");
    assert!(busy.headers.get("retry-after").is_some());

    // The server dies: on PostgreSQL its connections close with it (its membership row is
    // still fresh for a minute); on SQLite its row goes.
    match connection {
        Some(pool) => pool.close().await,
        None => store.leave_cluster(&live).await.unwrap(),
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let taken = loop {
        let reply = checkout(&app, &customer.token, &key, &body).await;
        if reply.status != 409 || tokio::time::Instant::now() > deadline {
            break reply;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(taken.status, 201, "{}", taken.text);
    assert_eq!(taken.body["id"], order_id.to_string());
    store.close().await;
}

each_backend! {
    unfinished_checkouts_are_given_up_after_the_abandon_time_and_their_holds_released_once
        => unfinished_checkouts_are_given_up_after_the_abandon_time_and_their_holds_released_once;
    a_key_held_by_a_live_server_is_in_progress_and_free_the_moment_that_server_is_gone
        => a_key_held_by_a_live_server_is_in_progress_and_free_the_moment_that_server_is_gone;
    a_payment_whose_settlement_is_refused_is_backed_off_and_listed_for_an_admin
        => a_payment_whose_settlement_is_refused_is_backed_off_and_listed_for_an_admin;
}

async fn a_payment_whose_settlement_is_refused_is_backed_off_and_listed_for_an_admin(db: Db) {
    let app = spawn_app(db).await;
    let (_shop, customer, body, _total, store) = setup(&app, -5_000.0).await;
    let placed = checkout(&app, &customer.token, &new_key(), &body).await;
    assert_eq!(placed.status, 201, "{}", placed.text);
    let order_id: OrderId = placed.body["id"].as_str().unwrap().parse().unwrap();
    let payment = store.payment_for_order(order_id).await.unwrap().unwrap();
    // Someone released the hold at the gateway behind our back: the void after cancelling is
    // refused, and no retry will change that.
    SandboxGateway::new(store.clone())
        .void(
            "released-elsewhere",
            payment.gateway_ref.as_deref().unwrap(),
        )
        .await
        .unwrap();
    let cancelled = app
        .post_authed(
            &format!("/api/v1/orders/{order_id}/cancel"),
            &customer.token,
            &serde_json::json!({}),
        )
        .await;
    assert_eq!(cancelled.status, 200, "{}", cancelled.text);

    let admin = admin(&app).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let listed = loop {
        let reply = app.get_authed("/api/v1/payments/attention", &admin).await;
        assert_eq!(reply.status, 200, "{}", reply.text);
        if let Some(found) = reply.body["payments"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["order_id"] == order_id.to_string())
        {
            break found.clone();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not listed: {}",
            reply.text
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(listed["status"], "authorised");
    assert_eq!(listed["settle_attempts"], 1);
    assert!(
        listed["last_error"].as_str().unwrap().contains("voided"),
        "{listed}"
    );
    // Backed off: the next attempt is not before the first retry delay (at least 1 s away,
    // and the loop runs every 5 s), so the count stays at one for now.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let again = store.payment_for_order(order_id).await.unwrap().unwrap();
    assert_eq!(again.settle_attempts, 1);
    assert!(again.needs_attention);

    app.get_authed("/api/v1/payments/attention", &customer.token)
        .await
        .assert_error(403, "forbidden");
    let metrics = app.get("/metrics").await;
    assert!(
        metrics.text.contains("payment_settlement_retries_total"),
        "retries are counted"
    );
    store.close().await;
}

#[actix_web::test]
async fn a_key_this_server_holds_but_no_request_runs_is_taken_over_at_once() {
    // This server's own request could not record how it ended (the database blinked after the
    // order was placed): the key is still marked as held by this server, which is alive.
    let db = TestDb::create(Db::Postgres).await;
    let mut config = crate::helpers::test_config(&db);
    config.dispatch.node_id = format!("this-server-{}", uuid::Uuid::new_v4().simple());
    let node = config.dispatch.node_id.clone();
    let app = crate::helpers::spawn_app_with(db, config).await;
    let (_shop, customer, body, total, store) = setup(&app, 5_000.0).await;
    store
        .heartbeat_member(&node, Duration::from_secs(60))
        .await
        .unwrap();
    let key = new_key();
    let (order_id, _) = died_after_authorising(&store, &customer, &key, &body, total, &node).await;
    let retried = checkout(&app, &customer.token, &key, &body).await;
    assert_eq!(
        retried.status, 201,
        "not refused for a minute: {}",
        retried.text
    );
    assert_eq!(retried.body["id"], order_id.to_string());
    store.close().await;
}

on_both_backends! {
    async fn an_order_whose_write_committed_but_whose_answer_was_lost_is_adopted_by_dispatch_on_retry(app) {
        // The attempt authorised, recorded it, and wrote the order; the database went away at
        // the commit, so it never learnt the order was stored: no actor, no board told.
        let (shop, customer, body, total, store) = setup(&app, 5_000.0).await;
        let mut board = crate::ws::ws_connect(&app, "/ws/merchant", Some(&shop.owner.token), None).await.unwrap();
        board.expect("board").await;
        let key = new_key();
        let (order_id, reference) =
            died_after_authorising(&store, &customer, &key, &body, total, DEAD_NODE).await;
        let payment = store.payment_for_order(order_id).await.unwrap().unwrap();
        assert!(store
            .record_authorisation(payment.id, PaymentStatus::Authorised, Some(&reference), None, &authorise_key(order_id), "checkout")
            .await
            .unwrap());
        let probe = app.get_authed("/api/v1/orders", &customer.token).await;
        let probe_id: OrderId = probe.body["orders"][0]["id"].as_str().unwrap().parse().unwrap();
        let probe_order = store.load_order(probe_id).await.unwrap().unwrap();
        let (order, entry) = mealkitz::domain::Order::place(
            mealkitz::domain::NewOrder { id: order_id, ..probe_order.placement() },
            probe_order.region_id.clone(),
            mealkitz::store::now(),
        );
        store.create_order(&order, &entry).await.unwrap();
        // The probe's own announcement may still be on the board's socket.
        while board.next(Duration::from_millis(300)).await.is_some() {}

        let retried = checkout(&app, &customer.token, &key, &body).await;
        assert_eq!(retried.status, 201, "{}", retried.text);
        assert_eq!(retried.body["id"], order_id.to_string());
        // Dispatch runs it now: the board is told, and the merchant can accept it.
        let seen = board.expect_order("the adopted order", |o| o["id"] == order_id.to_string()).await;
        assert_eq!(seen["status"], "placed");
        board.send(serde_json::json!({"type": "accept_order", "order_id": order_id, "prep_minutes": 5})).await;
        board.expect_order("accepted", |o| o["id"] == order_id.to_string() && o["status"] == "accepted").await;
        store.close().await;
    }
}
