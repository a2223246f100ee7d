//! The storage contract for money: checkout keys, payment moves and the sandbox gateway's books,
//! run against PostgreSQL and SQLite directly on [`Store`]. PostgreSQL takes one-statement paths
//! for the common case of each (no transaction round trips); these cases hold both paths, and
//! the fallbacks behind them, to the same answers.

use chrono::{DateTime, Utc};
use futures_util::future::join_all;
use mealkitz::domain::{Cents, OrderId, Role};
use mealkitz::store::{
    KeyAnswer, KeyClaim, KeyHold, Payment, PaymentStatus, PendingCharge, SandboxAnswer,
};
use sqlx::{AssertSqlSafe, Connection};

use crate::helpers::{Db, TestDb, migrated_store, new_user};

crate::helpers::each_backend! {
    a_checkout_key_is_taken_once_replayed_when_done_and_free_again_once_expired => key_lifecycle;
    a_payment_moves_only_from_the_statuses_named_and_numbers_its_history_without_gaps => payment_moves;
    the_sandbox_answers_a_repeated_key_as_first_and_refuses_moves_from_the_wrong_state => sandbox_books;
    a_checkouts_authorisation_is_recorded_with_its_key_renewed_and_moves_even_when_the_key_is_lost => checkout_authorisation;
    a_key_taken_fresh_is_recorded_with_its_pending_payment_and_a_key_that_exists_with_none => key_with_payment;
    a_rounds_captures_are_recorded_together_and_only_for_payments_still_authorised => captures_together;
    answers_kept_together_complete_only_the_keys_still_in_progress => answers_together;
    concurrent_claims_each_get_the_answer_they_would_have_alone_and_one_key_claimed_twice_is_paid_once => claims_together;
    a_claim_whose_payment_cannot_be_written_leaves_its_key_free_and_the_concurrent_claims_stand => claim_failing;
    concurrent_authorisations_each_move_their_own_payment_and_renew_only_their_own_key => authorisations_together;
}

/// Runs `sql` on the test database itself (for what no store operation does: ageing a key).
async fn execute(db: &TestDb, sql: &str, at: DateTime<Utc>) {
    match db.kind {
        Db::Postgres => {
            let mut connection = sqlx::PgConnection::connect(&db.url).await.unwrap();
            sqlx::query(AssertSqlSafe(sql.to_owned()))
                .bind(at)
                .execute(&mut connection)
                .await
                .unwrap();
        }
        Db::Sqlite => {
            let mut connection = sqlx::SqliteConnection::connect(&db.url).await.unwrap();
            sqlx::query(AssertSqlSafe(sql.to_owned()))
                .bind(at)
                .execute(&mut connection)
                .await
                .unwrap();
        }
    }
}

/// How many payments the test database holds.
async fn payments_held(db: &TestDb) -> i64 {
    const COUNT: &str = "SELECT COUNT(*) FROM payments";
    match db.kind {
        Db::Postgres => {
            let mut connection = sqlx::PgConnection::connect(&db.url).await.unwrap();
            sqlx::query_scalar(COUNT)
                .fetch_one(&mut connection)
                .await
                .unwrap()
        }
        Db::Sqlite => {
            let mut connection = sqlx::SqliteConnection::connect(&db.url).await.unwrap();
            sqlx::query_scalar(COUNT)
                .fetch_one(&mut connection)
                .await
                .unwrap()
        }
    }
}

async fn key_lifecycle(kind: Db) {
    let db = TestDb::create(kind).await;
    let store = migrated_store(&db).await;
    let user = store
        .create_user(new_user("keys@example.com", Role::Customer))
        .await
        .unwrap()
        .id;
    let KeyClaim::Proceed { order_id, resumed } = store
        .claim_idempotency_key(user, "k", "hash-1", "node-a")
        .await
        .unwrap()
    else {
        panic!("a new key is taken")
    };
    assert!(!resumed);
    // Same process again (its request ended without recording how): it continues the same order.
    assert_eq!(
        store
            .claim_idempotency_key(user, "k", "hash-1", "node-a")
            .await
            .unwrap(),
        KeyClaim::Proceed {
            order_id,
            resumed: true
        }
    );
    assert_eq!(
        store
            .claim_idempotency_key(user, "k", "hash-2", "node-a")
            .await
            .unwrap(),
        KeyClaim::Mismatch
    );
    assert!(
        store
            .complete_idempotency_key(user, "k", 201, "{\"placed\":true}")
            .await
            .unwrap()
    );
    assert_eq!(
        store
            .claim_idempotency_key(user, "k", "hash-1", "node-b")
            .await
            .unwrap(),
        KeyClaim::Replay {
            status: 201,
            body: "{\"placed\":true}".into()
        }
    );
    // A day later the key is free again: a new request with it is a new checkout.
    execute(
        &db,
        "UPDATE idempotency_keys SET expires_at = $1",
        Utc::now() - chrono::Duration::minutes(1),
    )
    .await;
    let KeyClaim::Proceed {
        order_id: again,
        resumed,
    } = store
        .claim_idempotency_key(user, "k", "hash-2", "node-b")
        .await
        .unwrap()
    else {
        panic!("an expired key is taken again")
    };
    assert!(!resumed);
    assert_ne!(again, order_id, "a new checkout gets a new order id");
    // Taken afresh: in progress for its new holder, the old answer gone.
    assert_eq!(
        store
            .claim_idempotency_key(user, "k", "hash-2", "node-b")
            .await
            .unwrap(),
        KeyClaim::Proceed {
            order_id: again,
            resumed: true
        }
    );
}

async fn key_with_payment(kind: Db) {
    let db = TestDb::create(kind).await;
    let store = migrated_store(&db).await;
    let user = store
        .create_user(new_user("paying@example.com", Role::Customer))
        .await
        .unwrap()
        .id;
    let charge = || {
        Some(PendingCharge {
            amount_cents: Cents(2_350),
            payment_method: "card_visa".into(),
        })
    };
    let (claim, payment) = store
        .claim_idempotency_key_paying(user, "k", "hash-1", "node-a", charge())
        .await
        .unwrap();
    let KeyClaim::Proceed {
        order_id,
        resumed: false,
    } = claim
    else {
        panic!("a new key is taken: {claim:?}")
    };
    let payment = payment.expect("the pending payment comes back with a fresh key");
    assert_eq!(
        (payment.order_id, payment.customer_id, payment.amount_cents),
        (order_id, user, Cents(2_350))
    );
    // Recorded as returned: pending, for the key's order, and nothing else for it.
    let stored = store.payment_for_order(order_id).await.unwrap().unwrap();
    assert_eq!(stored.id, payment.id);
    assert_eq!(stored.status, PaymentStatus::Pending);
    assert_eq!(
        (stored.amount_cents, stored.payment_method.as_str()),
        (Cents(2_350), "card_visa")
    );
    assert_eq!(stored.gateway_ref, None);
    // The key exists now: resumed, mismatched or replayed as by a plain claim, and never a
    // second payment.
    let (again, none) = store
        .claim_idempotency_key_paying(user, "k", "hash-1", "node-a", charge())
        .await
        .unwrap();
    assert_eq!(
        again,
        KeyClaim::Proceed {
            order_id,
            resumed: true
        }
    );
    assert!(none.is_none());
    let (mismatch, none) = store
        .claim_idempotency_key_paying(user, "k", "hash-2", "node-a", charge())
        .await
        .unwrap();
    assert_eq!((mismatch, none), (KeyClaim::Mismatch, None));
    assert_eq!(
        store.payment_for_order(order_id).await.unwrap().unwrap().id,
        payment.id
    );
    // Without a charge (a request that did not validate) a fresh key is taken with no payment.
    let (bare, none) = store
        .claim_idempotency_key_paying(user, "other", "hash-3", "node-a", None)
        .await
        .unwrap();
    let KeyClaim::Proceed {
        order_id: bare_order,
        resumed: false,
    } = bare
    else {
        panic!("a new key is taken: {bare:?}")
    };
    assert!(none.is_none());
    assert!(store.payment_for_order(bare_order).await.unwrap().is_none());
    assert_eq!(payments_held(&db).await, 1, "one payment for one new key");
    // An expired key is taken again, with a new order and a new pending payment for it.
    execute(
        &db,
        "UPDATE idempotency_keys SET expires_at = $1",
        Utc::now() - chrono::Duration::minutes(1),
    )
    .await;
    let (renewed, fresh) = store
        .claim_idempotency_key_paying(user, "k", "hash-2", "node-b", charge())
        .await
        .unwrap();
    let KeyClaim::Proceed {
        order_id: new_order,
        resumed: false,
    } = renewed
    else {
        panic!("an expired key is taken again: {renewed:?}")
    };
    assert_ne!(new_order, order_id);
    let fresh = fresh.expect("a payment for the new checkout");
    assert_ne!(fresh.id, payment.id);
    assert_eq!(
        store
            .payment_for_order(new_order)
            .await
            .unwrap()
            .unwrap()
            .id,
        fresh.id
    );
    assert_eq!(payments_held(&db).await, 2);
}

async fn checkout_authorisation(kind: Db) {
    let db = TestDb::create(kind).await;
    let store = migrated_store(&db).await;
    let user = store
        .create_user(new_user("holder@example.com", Role::Customer))
        .await
        .unwrap()
        .id;
    let an_hour_ago = mealkitz::store::now() - chrono::Duration::hours(1);
    let half_an_hour_ago = mealkitz::store::now() - chrono::Duration::minutes(30);
    // A key claimed by node-a an hour ago, and its checkout's pending payment.
    let pending = |key: &'static str| {
        let store = store.clone();
        async move {
            let KeyClaim::Proceed { order_id, .. } = store
                .claim_idempotency_key(user, key, "hash", "node-a")
                .await
                .unwrap()
            else {
                panic!("a new key is taken")
            };
            let payment = Payment::pending(order_id, user, Cents(990), "pm_card_visa".into());
            store
                .create_payment(&payment, &format!("authorise-{key}"), "checkout")
                .await
                .unwrap();
            payment
        }
    };
    let record = |payment: &Payment, key: &'static str, holder: &'static str| {
        let (store, id) = (store.clone(), payment.id);
        async move {
            store
                .record_checkout_authorisation(
                    id,
                    PaymentStatus::Authorised,
                    Some("ref"),
                    None,
                    &format!("authorise-{key}"),
                    KeyHold { user, key, holder },
                )
                .await
                .unwrap()
        }
    };
    let authorised = |payment: &Payment| {
        let (store, order) = (store.clone(), payment.order_id);
        async move {
            let payment = store.payment_for_order(order).await.unwrap().unwrap();
            (
                payment.status,
                store.payment_events(payment.id).await.unwrap().len(),
            )
        }
    };

    let held = pending("held").await;
    execute(
        &db,
        "UPDATE idempotency_keys SET locked_at = $1",
        an_hour_ago,
    )
    .await;
    assert!(record(&held, "held", "node-a").await, "node-a holds it");
    assert_eq!(authorised(&held).await, (PaymentStatus::Authorised, 1));
    let given_up = store
        .abandon_idempotency_keys(half_an_hour_ago, 409, "{}", 10)
        .await
        .unwrap();
    assert!(
        given_up.is_empty(),
        "renewed as the authorisation was recorded, so not given up: {given_up:?}"
    );

    let taken_over = pending("taken-over").await;
    assert!(
        !record(&taken_over, "taken-over", "node-b").await,
        "node-b does not hold it"
    );
    assert_eq!(
        authorised(&taken_over).await,
        (PaymentStatus::Authorised, 1),
        "the hold is recorded all the same, for the reconciler to void"
    );

    let lost = pending("lost").await;
    execute(
        &db,
        "UPDATE idempotency_keys SET locked_at = $1 WHERE key = 'lost'",
        an_hour_ago,
    )
    .await;
    let given_up = store
        .abandon_idempotency_keys(half_an_hour_ago, 409, "{}", 10)
        .await
        .unwrap();
    assert_eq!(given_up.len(), 1);
    assert!(
        !record(&lost, "lost", "node-a").await,
        "given up by the reconciler: no longer anyone's"
    );
    assert_eq!(authorised(&lost).await, (PaymentStatus::Authorised, 1));
}

async fn payment_moves(kind: Db) {
    let db = TestDb::create(kind).await;
    let store = migrated_store(&db).await;
    let customer = store
        .create_user(new_user("payer@example.com", Role::Customer))
        .await
        .unwrap()
        .id;
    let payment = Payment::pending(
        OrderId::new(),
        customer,
        Cents(1_250),
        "pm_card_visa".into(),
    );
    store
        .create_payment(&payment, "authorise-key", "checkout")
        .await
        .unwrap();
    let stored = store.payment_for_order(payment.order_id).await.unwrap();
    assert_eq!(stored.map(|p| p.status), Some(PaymentStatus::Pending));
    assert!(store.payment_events(payment.id).await.unwrap().is_empty());

    assert!(
        store
            .record_authorisation(
                payment.id,
                PaymentStatus::Authorised,
                Some("ref-1"),
                None,
                "authorise-key",
                "checkout"
            )
            .await
            .unwrap()
    );
    // Recorded once: a second answer finds it no longer pending and writes nothing.
    assert!(
        !store
            .record_authorisation(
                payment.id,
                PaymentStatus::Declined,
                None,
                Some("card_declined"),
                "authorise-key",
                "checkout"
            )
            .await
            .unwrap()
    );
    // Two settlements race from the authorised payment: one captures, the other may void
    // only while it is authorised, or refund once it is captured. Whichever order they run
    // in, the history has one entry per move, numbered without gaps.
    let (captured, undone) = futures_util::join!(
        store.set_payment_status(
            payment.id,
            &[PaymentStatus::Authorised],
            PaymentStatus::Captured,
            Some("capture-key"),
            "settlement",
        ),
        store.set_payment_status(
            payment.id,
            &[PaymentStatus::Authorised, PaymentStatus::Captured],
            PaymentStatus::Refunded,
            Some("refund-key"),
            "settlement",
        ),
    );
    let (captured, undone) = (captured.unwrap(), undone.unwrap());
    assert!(undone, "the refund moves from either status");
    let events = store.payment_events(payment.id).await.unwrap();
    let seqs: Vec<i64> = events.iter().map(|e| e.seq).collect();
    let expected: Vec<i64> = (1..=events.len() as i64).collect();
    assert_eq!(seqs, expected, "{events:?}");
    let statuses: Vec<PaymentStatus> = events.iter().map(|e| e.status).collect();
    if captured {
        assert_eq!(
            statuses,
            [
                PaymentStatus::Authorised,
                PaymentStatus::Captured,
                PaymentStatus::Refunded
            ]
        );
    } else {
        assert_eq!(
            statuses,
            [PaymentStatus::Authorised, PaymentStatus::Refunded]
        );
    }
    let last = store
        .payment_for_order(payment.order_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(last.status, PaymentStatus::Refunded);
    assert_eq!(last.gateway_ref.as_deref(), Some("ref-1"));
    // Settlement's capture of a delivered order's payment: once, then never again.
    let delivered = Payment::pending(OrderId::new(), customer, Cents(800), "pm_card_visa".into());
    store
        .create_payment(&delivered, "k2", "checkout")
        .await
        .unwrap();
    let authorised = store
        .record_authorisation(
            delivered.id,
            PaymentStatus::Authorised,
            Some("ref-2"),
            None,
            "k2",
            "checkout",
        )
        .await
        .unwrap();
    assert!(authorised);
    assert!(
        store
            .capture_delivered(delivered.id, "capture:2")
            .await
            .unwrap()
    );
    assert!(
        !store
            .capture_delivered(delivered.id, "capture:2")
            .await
            .unwrap()
    );
    let captured_events = store.payment_events(delivered.id).await.unwrap();
    assert_eq!(
        captured_events.iter().map(|e| e.status).collect::<Vec<_>>(),
        [PaymentStatus::Authorised, PaymentStatus::Captured]
    );
    // From a status it is not in: nothing moves, nothing is recorded.
    assert!(
        !store
            .set_payment_status(
                payment.id,
                &[PaymentStatus::Authorised],
                PaymentStatus::Voided,
                Some("void-key"),
                "settlement"
            )
            .await
            .unwrap()
    );
    assert_eq!(
        store.payment_events(payment.id).await.unwrap().len(),
        events.len()
    );
}

async fn sandbox_books(kind: Db) {
    let db = TestDb::create(kind).await;
    let store = migrated_store(&db).await;
    let first = store
        .sandbox_authorise(
            "auth-1",
            Cents(900),
            SandboxAnswer::Authorised {
                reference: "ref-a".into(),
            },
        )
        .await
        .unwrap();
    assert_eq!(
        first,
        SandboxAnswer::Authorised {
            reference: "ref-a".into()
        }
    );
    // The same key again: the first answer stands, no second hold.
    let again = store
        .sandbox_authorise(
            "auth-1",
            Cents(900),
            SandboxAnswer::Authorised {
                reference: "ref-b".into(),
            },
        )
        .await
        .unwrap();
    assert_eq!(again, first);
    let declined = store
        .sandbox_authorise(
            "auth-2",
            Cents(900),
            SandboxAnswer::Declined {
                code: "card_declined".into(),
            },
        )
        .await
        .unwrap();
    assert_eq!(
        declined,
        SandboxAnswer::Declined {
            code: "card_declined".into()
        }
    );
    assert_eq!(
        store.sandbox_hold_counts().await.unwrap(),
        [("authorised".to_owned(), 1)]
    );

    let capture = |key: &'static str| {
        store.sandbox_transition("capture", key, "ref-a", "authorised", "captured")
    };
    assert_eq!(capture("cap-1").await.unwrap(), SandboxAnswer::Done);
    assert_eq!(capture("cap-1").await.unwrap(), SandboxAnswer::Done);
    // A new key finds it captured already.
    let refused = SandboxAnswer::Refused {
        reason: "cannot capture a payment that is captured".into(),
    };
    assert_eq!(capture("cap-2").await.unwrap(), refused);
    assert_eq!(capture("cap-2").await.unwrap(), refused, "kept as given");
    assert_eq!(
        store
            .sandbox_transition("void", "void-1", "ref-zz", "authorised", "voided")
            .await
            .unwrap(),
        SandboxAnswer::Refused {
            reason: "no payment ref-zz".into()
        }
    );
    assert_eq!(
        store.sandbox_hold_counts().await.unwrap(),
        [("captured".to_owned(), 1)]
    );
    assert_eq!(store.sandbox_answer("cap-2").await.unwrap(), Some(refused));
}

async fn captures_together(kind: Db) {
    let db = TestDb::create(kind).await;
    let store = migrated_store(&db).await;
    let customer = store
        .create_user(new_user("eater@example.com", Role::Customer))
        .await
        .unwrap()
        .id;
    let mut payments = Vec::new();
    for n in 0..3 {
        let payment = Payment::pending(
            OrderId::new(),
            customer,
            Cents(900 + n),
            "pm_card_visa".into(),
        );
        let key = format!("authorise:{n}");
        store
            .create_payment(&payment, &key, "checkout")
            .await
            .unwrap();
        assert!(
            store
                .record_authorisation(
                    payment.id,
                    PaymentStatus::Authorised,
                    Some(&format!("ref-{n}")),
                    None,
                    &key,
                    "checkout"
                )
                .await
                .unwrap()
        );
        payments.push(payment);
    }
    // The first failed a round before: its retries and alarm end with the capture.
    store
        .record_settlement_failure(payments[0].id, "gateway unavailable", Utc::now(), true)
        .await
        .unwrap();
    // The third was captured already (by a round that died before answering, say).
    assert!(
        store
            .capture_delivered(payments[2].id, "capture:earlier")
            .await
            .unwrap()
    );
    let batch: Vec<_> = payments
        .iter()
        .map(|p| (p.id, format!("capture:{}", p.id)))
        .collect();
    let mut moved = store.capture_delivered_all(&batch).await.unwrap();
    moved.sort();
    let mut expected = vec![payments[0].id, payments[1].id];
    expected.sort();
    assert_eq!(moved, expected, "only the two still authorised move");
    for payment in &payments[..2] {
        let stored = store
            .payment_for_order(payment.order_id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(stored.status, PaymentStatus::Captured);
        assert_eq!(
            (
                stored.settle_attempts,
                stored.needs_attention,
                stored.last_settle_error
            ),
            (0, false, None)
        );
        let events = store.payment_events(payment.id).await.unwrap();
        assert_eq!(
            events.iter().map(|e| (e.seq, e.status)).collect::<Vec<_>>(),
            [(1, PaymentStatus::Authorised), (2, PaymentStatus::Captured)]
        );
        let expected_key = format!("capture:{}", payment.id);
        assert_eq!(
            events[1].idempotency_key.as_deref(),
            Some(expected_key.as_str())
        );
    }
    // The one captured before keeps its single capture.
    let earlier = store.payment_events(payments[2].id).await.unwrap();
    assert_eq!(earlier.len(), 2);
    assert_eq!(
        earlier[1].idempotency_key.as_deref(),
        Some("capture:earlier")
    );
    // Recording the batch again moves nothing.
    assert!(
        store
            .capture_delivered_all(&batch)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(store.capture_delivered_all(&[]).await.unwrap().is_empty());
}

async fn answers_together(kind: Db) {
    let db = TestDb::create(kind).await;
    let store = migrated_store(&db).await;
    let user = store
        .create_user(new_user("answers@example.com", Role::Customer))
        .await
        .unwrap()
        .id;
    for key in ["a", "b", "done"] {
        assert!(matches!(
            store
                .claim_idempotency_key(user, key, "hash", "node-a")
                .await
                .unwrap(),
            KeyClaim::Proceed { .. }
        ));
    }
    // Completed elsewhere first: the batch leaves its answer alone.
    assert!(
        store
            .complete_idempotency_key(user, "done", 409, "{\"first\":true}")
            .await
            .unwrap()
    );
    let answer = |key: &str, body: &str| KeyAnswer {
        user,
        key: key.into(),
        status: 201,
        body: body.into(),
    };
    let batch = [
        answer("a", "{\"order\":\"a\"}"),
        answer("done", "{\"order\":\"late\"}"),
        answer("b", "{\"order\":\"b\"}"),
        answer("never-claimed", "{}"),
    ];
    assert_eq!(
        store.complete_idempotency_keys(&batch).await.unwrap(),
        vec![true, false, true, false]
    );
    for (key, status, body) in [
        ("a", 201, "{\"order\":\"a\"}"),
        ("b", 201, "{\"order\":\"b\"}"),
        ("done", 409, "{\"first\":true}"),
    ] {
        assert_eq!(
            store
                .claim_idempotency_key(user, key, "hash", "node-b")
                .await
                .unwrap(),
            KeyClaim::Replay {
                status,
                body: body.into()
            },
            "key {key}"
        );
    }
    // Nothing was made for the key no checkout claimed, and an empty batch writes nothing.
    assert!(matches!(
        store
            .claim_idempotency_key(user, "never-claimed", "hash", "node-b")
            .await
            .unwrap(),
        KeyClaim::Proceed { resumed: false, .. }
    ));
    assert!(
        store
            .complete_idempotency_keys(&[])
            .await
            .unwrap()
            .is_empty()
    );
}

/// A new test database of `kind`, its store, and a customer with `email`.
async fn with_customer(
    kind: Db,
    email: &str,
) -> (TestDb, mealkitz::store::Store, mealkitz::domain::UserId) {
    let db = TestDb::create(kind).await;
    let store = migrated_store(&db).await;
    let user = store
        .create_user(new_user(email, Role::Customer))
        .await
        .unwrap()
        .id;
    (db, store, user)
}

/// A charge of `cents` with the sandbox's good card.
fn charge_of(cents: i64) -> Option<PendingCharge> {
    Some(PendingCharge {
        amount_cents: Cents(cents),
        payment_method: "pm_card_visa".into(),
    })
}

/// Claims every `(key, charge)` of `claims` for `user` at once, as concurrent checkouts of
/// node-a do (request hash `hash`).
async fn claim_burst(
    store: &mealkitz::store::Store,
    user: mealkitz::domain::UserId,
    claims: &[(String, Option<PendingCharge>)],
) -> Vec<Result<(KeyClaim, Option<Payment>), mealkitz::store::StoreError>> {
    join_all(claims.iter().map(|(key, charge)| {
        store.claim_idempotency_key_paying(user, key, "hash", "node-a", charge.clone())
    }))
    .await
}

async fn claims_together(kind: Db) {
    let (db, store, user) = with_customer(kind, "burst@example.com").await;
    // Keys that exist before the burst: one answered, one of another request, one expired.
    for (key, hash) in [("done", "hash"), ("other", "hash-x"), ("expired", "hash")] {
        store
            .claim_idempotency_key(user, key, hash, "node-a")
            .await
            .unwrap();
    }
    assert!(
        store
            .complete_idempotency_key(user, "done", 201, r#"{"kept":true}"#)
            .await
            .unwrap()
    );
    execute(
        &db,
        "UPDATE idempotency_keys SET expires_at = $1 WHERE key = 'expired'",
        Utc::now() - chrono::Duration::minutes(1),
    )
    .await;

    let mut claims: Vec<(String, Option<PendingCharge>)> = (0..30)
        .map(|i| (format!("k{i}"), charge_of(1_000 + i)))
        .collect();
    for (key, cents) in [
        ("done", 5),
        ("other", 5),
        ("expired", 777),
        ("twice", 888),
        ("twice", 888),
    ] {
        claims.push((key.to_owned(), charge_of(cents)));
    }
    let answers = claim_burst(&store, user, &claims).await;

    // Each fresh key is taken with its own payment, as stored.
    for ((key, charge), answer) in claims.iter().zip(&answers).take(30) {
        let Ok((
            KeyClaim::Proceed {
                order_id,
                resumed: false,
            },
            Some(payment),
        )) = answer
        else {
            panic!("{key} is free: {answer:?}")
        };
        let charge = charge.as_ref().unwrap();
        assert_eq!(
            (payment.order_id, payment.amount_cents),
            (*order_id, charge.amount_cents),
            "{key}"
        );
        let stored = store.payment_for_order(*order_id).await.unwrap().unwrap();
        assert_eq!(
            (stored.id, stored.status, stored.amount_cents),
            (payment.id, PaymentStatus::Pending, charge.amount_cents),
            "{key}"
        );
    }
    // The keys that exist are decided as alone, with no payment; the expired one is free.
    let decided: Vec<_> = answers[30..32]
        .iter()
        .map(|a| a.as_ref().unwrap())
        .collect();
    assert_eq!(
        decided[0],
        &(
            KeyClaim::Replay {
                status: 201,
                body: r#"{"kept":true}"#.to_owned()
            },
            None
        )
    );
    assert_eq!(decided[1], &(KeyClaim::Mismatch, None));
    let expired = answers[32].as_ref().unwrap();
    assert!(
        matches!(
            expired,
            (KeyClaim::Proceed { resumed: false, .. }, Some(p)) if p.amount_cents == Cents(777)
        ),
        "an expired key is taken again with its payment: {expired:?}"
    );
    // One key twice in the burst: one claim takes it with a payment, the other finds it taken
    // (by this node: resumed) and records none.
    let mut twice: Vec<_> = answers[33..].iter().map(|a| a.as_ref().unwrap()).collect();
    twice.sort_by_key(|(_, payment)| payment.is_none());
    let (
        KeyClaim::Proceed {
            order_id,
            resumed: false,
        },
        Some(payment),
    ) = twice[0]
    else {
        panic!("one claim of a key twice in a burst takes it: {twice:?}")
    };
    assert_eq!(
        twice[1],
        &(
            KeyClaim::Proceed {
                order_id: *order_id,
                resumed: true
            },
            None
        )
    );
    assert_eq!(
        store
            .payment_for_order(*order_id)
            .await
            .unwrap()
            .unwrap()
            .id,
        payment.id
    );
    assert_eq!(
        payments_held(&db).await,
        32,
        "a payment for each key taken, no other"
    );
}

async fn claim_failing(kind: Db) {
    let (db, store, user) = with_customer(kind, "failing@example.com").await;
    // A charge the payments table refuses (amounts are never negative) among good ones.
    let mut claims: Vec<(String, Option<PendingCharge>)> = (0..12)
        .map(|i| (format!("good{i}"), charge_of(500 + i)))
        .collect();
    claims.insert(6, ("refused".to_owned(), charge_of(-1)));
    let answers = claim_burst(&store, user, &claims).await;
    for ((key, _), answer) in claims.iter().zip(&answers) {
        if key == "refused" {
            assert!(
                answer.is_err(),
                "a payment that cannot be written: {answer:?}"
            );
        } else {
            assert!(
                matches!(
                    answer,
                    Ok((KeyClaim::Proceed { resumed: false, .. }, Some(_)))
                ),
                "{key} is taken beside it: {answer:?}"
            );
        }
    }
    assert_eq!(payments_held(&db).await, 12);
    // Nothing of the refused claim was written: its key is free, for a good charge.
    let (claim, payment) = store
        .claim_idempotency_key_paying(user, "refused", "hash", "node-a", charge_of(1))
        .await
        .unwrap();
    assert!(
        matches!(claim, KeyClaim::Proceed { resumed: false, .. }) && payment.is_some(),
        "{claim:?}"
    );
}

async fn authorisations_together(kind: Db) {
    let (db, store, user) = with_customer(kind, "records@example.com").await;
    let claims: Vec<(String, Option<PendingCharge>)> = (0..24)
        .map(|i| (format!("k{i}"), charge_of(700 + i)))
        .collect();
    let payments: Vec<Payment> = claim_burst(&store, user, &claims)
        .await
        .into_iter()
        .map(|answer| answer.unwrap().1.unwrap())
        .collect();
    // k1 was taken over by node-b; k2's payment was authorised (and its key renewed) already.
    execute(
        &db,
        "UPDATE idempotency_keys SET holder = 'node-b' WHERE key = 'k1'",
        Utc::now(),
    )
    .await;
    let hold = |i: usize| KeyHold {
        user,
        key: claims[i].0.as_str(),
        holder: "node-a",
    };
    assert!(
        store
            .record_checkout_authorisation(
                payments[2].id,
                PaymentStatus::Authorised,
                Some("first"),
                None,
                "authorise-k2",
                hold(2),
            )
            .await
            .unwrap()
    );
    let an_hour_ago = Utc::now() - chrono::Duration::hours(1);
    execute(
        &db,
        "UPDATE idempotency_keys SET locked_at = $1",
        an_hour_ago,
    )
    .await;

    // Every third declined, the rest authorised with a reference of their own.
    let answer = |i: usize| -> (PaymentStatus, Option<String>, Option<&'static str>) {
        if i.is_multiple_of(3) {
            (PaymentStatus::Declined, None, Some("card_declined"))
        } else {
            (PaymentStatus::Authorised, Some(format!("ref-{i}")), None)
        }
    };
    let renewed = join_all(payments.iter().enumerate().map(|(i, payment)| {
        let (to, reference, decline) = answer(i);
        let store = store.clone();
        let gateway_key = format!("authorise-k{i}");
        let (id, key) = (payment.id, claims[i].0.clone());
        async move {
            store
                .record_checkout_authorisation(
                    id,
                    to,
                    reference.as_deref(),
                    decline,
                    &gateway_key,
                    KeyHold {
                        user,
                        key: &key,
                        holder: "node-a",
                    },
                )
                .await
        }
    }))
    .await;
    for (i, (payment, renewed)) in payments.iter().zip(&renewed).enumerate() {
        assert_eq!(
            *renewed.as_ref().unwrap(),
            i != 1,
            "k{i}: only the key taken over is not held"
        );
        let stored = store
            .payment_for_order(payment.order_id)
            .await
            .unwrap()
            .unwrap();
        let events = store.payment_events(payment.id).await.unwrap();
        if i == 2 {
            // Authorised before: not moved again, its first answer and event kept.
            assert_eq!(
                (stored.status, stored.gateway_ref.as_deref(), events.len()),
                (PaymentStatus::Authorised, Some("first"), 1)
            );
            continue;
        }
        let (to, reference, decline) = answer(i);
        assert_eq!(
            (
                stored.status,
                stored.gateway_ref,
                stored.decline_code.as_deref()
            ),
            (to, reference, decline),
            "k{i}: its own answer, whatever became of its key"
        );
        assert_eq!(events.len(), 1, "k{i}");
        assert_eq!(
            events[0].idempotency_key.as_deref(),
            Some(format!("authorise-k{i}").as_str())
        );
    }
    // The keys held were renewed (so the reconciler leaves them); the one taken over was not.
    let given_up = store
        .abandon_idempotency_keys(Utc::now() - chrono::Duration::minutes(30), 409, "{}", 100)
        .await
        .unwrap();
    assert_eq!(
        given_up.len(),
        1,
        "only k1 is still an hour old: {given_up:?}"
    );
}
