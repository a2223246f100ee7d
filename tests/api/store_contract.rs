//! The storage contract: the same cases run against PostgreSQL and SQLite, directly on
//! [`Store`], so both backends are held to one behaviour.

use mealkitz::domain::{Email, OrderId, Role, UserId};
use mealkitz::store::{Store, StoreError};

use crate::helpers::{Db, TestDb, migrated_store, new_user};

crate::helpers::each_backend! {
    operations_before_migration_are_unavailable => before_migration;
    migrating_twice_is_harmless => migrate_twice;
    a_created_user_reads_back_by_id_and_email => create_and_read;
    a_second_user_with_the_same_email_is_a_duplicate => duplicate_email;
    unknown_users_read_as_none => unknown_users;
    the_first_stored_setting_wins => first_setting_wins;
    eta_corrections_are_saved_over_and_read_back => eta_corrections_round_trip;
    the_outbox_commits_with_the_journal_and_one_notifier_holds_each_message => outbox_and_claims;
    the_journal_writes_outbox_rows_only_for_entries_that_may_become_a_message => outbox_only_what_may_become_a_message;
    a_merchant_reads_with_its_active_menu_in_order => merchant_with_menu;
    webhook_endpoints_rotate_disable_and_list_their_deliveries => webhook_endpoints;
}

async fn before_migration(kind: Db) {
    let db = TestDb::create(kind).await;
    let store = Store::open(&db.config()).unwrap();
    assert!(!store.is_migrated());
    let error = store.user_by_id(UserId::new()).await.unwrap_err();
    assert!(matches!(error, StoreError::Unavailable(_)), "{error:?}");
    assert!(matches!(
        store.ping().await,
        Err(StoreError::Unavailable(_))
    ));
}

async fn migrate_twice(kind: Db) {
    let db = TestDb::create(kind).await;
    let store = migrated_store(&db).await;
    store
        .migrate()
        .await
        .expect("second migration run is a no-op");
    store.ping().await.expect("ping after migration");
}

async fn create_and_read(kind: Db) {
    let db = TestDb::create(kind).await;
    let store = migrated_store(&db).await;
    let created = store
        .create_user(new_user("Reader@Example.com", Role::Merchant))
        .await
        .unwrap();
    assert_eq!(created.email, "reader@example.com");
    assert_eq!(created.role, Role::Merchant);

    let by_id = store
        .user_by_id(created.id)
        .await
        .unwrap()
        .expect("found by id");
    assert_eq!(by_id, created);
    let by_email = store
        .user_by_email(&Email::parse("reader@example.com").unwrap())
        .await
        .unwrap()
        .expect("found by email");
    assert_eq!(by_email.user, created);
    assert!(by_email.password_hash.starts_with("$argon2id$"));
}

async fn duplicate_email(kind: Db) {
    let db = TestDb::create(kind).await;
    let store = migrated_store(&db).await;
    store
        .create_user(new_user("twice@example.com", Role::Customer))
        .await
        .unwrap();
    let error = store
        .create_user(new_user("twice@example.com", Role::Driver))
        .await
        .unwrap_err();
    assert!(matches!(error, StoreError::Duplicate(_)), "{error:?}");
}

async fn unknown_users(kind: Db) {
    let db = TestDb::create(kind).await;
    let store = migrated_store(&db).await;
    assert!(store.user_by_id(UserId::new()).await.unwrap().is_none());
    let email = Email::parse("ghost@example.com").unwrap();
    assert!(store.user_by_email(&email).await.unwrap().is_none());
}

async fn first_setting_wins(kind: Db) {
    let db = TestDb::create(kind).await;
    let store = migrated_store(&db).await;
    assert_eq!(
        store.setting_or_insert("k", "first").await.unwrap(),
        "first"
    );
    assert_eq!(
        store.setting_or_insert("k", "second").await.unwrap(),
        "first"
    );
    assert_eq!(store.setting_or_insert("other", "x").await.unwrap(), "x");
}

async fn eta_corrections_round_trip(kind: Db) {
    use mealkitz::maps::corrections::Correction;
    let db = TestDb::create(kind).await;
    let store = migrated_store(&db).await;
    assert!(store.eta_corrections().await.unwrap().is_empty());
    let first = vec![
        (
            "west".to_owned(),
            12,
            Correction {
                factor: 1.25,
                samples: 3,
            },
        ),
        (
            "east".to_owned(),
            0,
            Correction {
                factor: 0.75,
                samples: 1,
            },
        ),
    ];
    store.save_eta_corrections(&first).await.unwrap();
    // Saved again: the row is replaced, not duplicated.
    let again = vec![(
        "west".to_owned(),
        12,
        Correction {
            factor: 1.5,
            samples: 4,
        },
    )];
    store.save_eta_corrections(&again).await.unwrap();
    let mut read = store.eta_corrections().await.unwrap();
    read.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        read,
        vec![
            (
                "east".to_owned(),
                0,
                Correction {
                    factor: 0.75,
                    samples: 1
                }
            ),
            (
                "west".to_owned(),
                12,
                Correction {
                    factor: 1.5,
                    samples: 4
                }
            ),
        ]
    );
}

/// A merchant, and an order of one of its customers journaled through accepted and searching.
async fn journaled_order(store: &Store) -> (mealkitz::store::Merchant, mealkitz::domain::Order) {
    let (merchant, customer) = shop(store).await;
    let order = journal_order(store, &merchant, customer, OrderId::new()).await;
    (merchant, order)
}

/// A merchant (with its owner) and a customer.
async fn shop(store: &Store) -> (mealkitz::store::Merchant, UserId) {
    let owner = store
        .create_user(new_user("owner@example.com", Role::Merchant))
        .await
        .unwrap();
    let customer = store
        .create_user(new_user("eater@example.com", Role::Customer))
        .await
        .unwrap();
    let merchant = store
        .create_merchant(owner.id, "Kallio Kitchen", "Fleminginkatu 1", HERE)
        .await
        .unwrap();
    (merchant, customer.id)
}

const HERE: mealkitz::domain::Position = mealkitz::domain::Position {
    lat: 60.17,
    lon: 24.94,
};

/// Journals order `id` of `customer` at `merchant` through placed, accepted and searching.
async fn journal_order(
    store: &Store,
    merchant: &mealkitz::store::Merchant,
    customer: UserId,
    id: OrderId,
) -> mealkitz::domain::Order {
    use mealkitz::domain::{Cents, Change, NewOrder, Order};
    let (order, first) = Order::place(
        NewOrder {
            id,
            merchant_id: merchant.id,
            customer_id: customer,
            items: vec![],
            delivery_fee_cents: Cents(390),
            total_cents: Cents(2_450),
            pickup: HERE,
            dropoff: HERE,
            dropoff_address: "Mannerheimintie 1".into(),
            pickup_address: "Fleminginkatu 1".into(),
        },
        "helsinki".into(),
        mealkitz::store::now(),
    );
    store.create_order(&order, &first).await.unwrap();
    let mut after = order.clone();
    let accepted = after
        .decide(
            Change::MerchantAccepted { prep_minutes: 5 },
            mealkitz::store::now(),
        )
        .unwrap();
    after.apply(&accepted).unwrap();
    let searching = after
        .decide(Change::SearchStarted, mealkitz::store::now())
        .unwrap();
    after.apply(&searching).unwrap();
    store.append(&after, &[accepted, searching]).await.unwrap();
    after
}

/// A webhook endpoint of `merchant` for every event.
async fn endpoint_for_everything(
    store: &Store,
    merchant: &mealkitz::store::Merchant,
) -> mealkitz::store::WebhookEndpoint {
    use mealkitz::domain::NotifyEvent;
    store
        .create_webhook_endpoint(mealkitz::store::NewWebhookEndpoint {
            merchant_id: merchant.id,
            url: "https://pos.example.com/hook".into(),
            events: NotifyEvent::ALL.to_vec(),
            secret: "whsec_contract".into(),
        })
        .await
        .unwrap()
}

/// The events of the outbox rows waiting for `order`, in journal order.
async fn outbox_events(store: &Store, order: OrderId) -> Vec<&'static str> {
    let hold = std::time::Duration::from_secs(60);
    let mut entries: Vec<_> = store
        .claim_outbox("contract", 100, hold)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.order_id == order)
        .collect();
    entries.sort_by_key(|e| e.seq);
    entries.iter().map(|e| e.event.as_str()).collect()
}

async fn outbox_only_what_may_become_a_message(kind: Db) {
    use mealkitz::domain::Phone;
    let db = TestDb::create(kind).await;
    let store = migrated_store(&db).await;
    let (merchant, customer) = shop(&store).await;

    let quiet = journal_order(&store, &merchant, customer, OrderId::new()).await;
    assert_eq!(
        outbox_events(&store, quiet.id).await,
        Vec::<&str>::new(),
        "no endpoint, no phone: nothing to fan out"
    );

    let told = OrderId::new();
    let phone = Phone::parse("+358401234567").unwrap();
    store
        .set_order_contact(told, Some(&phone), Some(true))
        .await
        .unwrap();
    journal_order(&store, &merchant, customer, told).await;
    assert_eq!(
        outbox_events(&store, told).await,
        ["order.accepted"],
        "the customer agreed to WhatsApp updates: what they are told of (not `placed`)"
    );

    let refused = OrderId::new();
    store
        .set_order_contact(refused, Some(&phone), Some(false))
        .await
        .unwrap();
    journal_order(&store, &merchant, customer, refused).await;
    assert_eq!(
        outbox_events(&store, refused).await,
        Vec::<&str>::new(),
        "a phone without consent"
    );

    let endpoint = endpoint_for_everything(&store, &merchant).await;
    let hooked = journal_order(&store, &merchant, customer, OrderId::new()).await;
    assert_eq!(
        outbox_events(&store, hooked.id).await,
        ["order.placed", "order.accepted"],
        "an enabled endpoint at the merchant: every event"
    );

    store
        .disable_webhook_endpoint(endpoint.id, "gone")
        .await
        .unwrap();
    let after_disabled = journal_order(&store, &merchant, customer, OrderId::new()).await;
    assert_eq!(
        outbox_events(&store, after_disabled.id).await,
        Vec::<&str>::new(),
        "a disabled endpoint counts for nothing"
    );
}

async fn merchant_with_menu(kind: Db) {
    use mealkitz::domain::{Cents, MerchantId};
    let db = TestDb::create(kind).await;
    let store = migrated_store(&db).await;
    let (merchant, _) = shop(&store).await;
    let (read, menu) = store
        .merchant_with_menu(merchant.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(read, merchant);
    assert!(menu.is_empty(), "no menu yet: {menu:?}");
    let old = [("Soup".to_owned(), Cents(900))];
    store.replace_menu(merchant.id, &old).await.unwrap();
    let new = [
        ("Salmon bowl".to_owned(), Cents(1_450)),
        ("Rye bread".to_owned(), Cents(300)),
    ];
    store.replace_menu(merchant.id, &new).await.unwrap();
    let (_, menu) = store
        .merchant_with_menu(merchant.id)
        .await
        .unwrap()
        .unwrap();
    let listed: Vec<_> = menu
        .iter()
        .map(|item| (item.name.as_str(), item.price_cents, item.merchant_id))
        .collect();
    assert_eq!(
        listed,
        [
            ("Salmon bowl", Cents(1_450), merchant.id),
            ("Rye bread", Cents(300), merchant.id)
        ],
        "the active items in menu order; the retired soup is left out"
    );
    assert_eq!(menu, store.menu(merchant.id).await.unwrap());
    assert!(
        store
            .merchant_with_menu(MerchantId::new())
            .await
            .unwrap()
            .is_none()
    );
}

async fn outbox_and_claims(kind: Db) {
    use mealkitz::store::{Channel, NewNotification, NextStep};
    let db = TestDb::create(kind).await;
    let store = migrated_store(&db).await;
    let (merchant, customer) = shop(&store).await;
    endpoint_for_everything(&store, &merchant).await;
    let order = journal_order(&store, &merchant, customer, OrderId::new()).await;
    let hold = std::time::Duration::from_secs(60);
    let (mine, theirs) = futures_util::join!(
        store.claim_outbox("a", 10, hold),
        store.claim_outbox("b", 10, hold)
    );
    let (mine, theirs) = (mine.unwrap(), theirs.unwrap());
    assert_eq!(
        mine.len() + theirs.len(),
        2,
        "each outbox row claimed once: {mine:?} {theirs:?}"
    );
    let mut entries: Vec<_> = mine.into_iter().chain(theirs).collect();
    entries.sort_by_key(|e| e.seq);
    let events: Vec<_> = entries.iter().map(|e| e.event.as_str()).collect();
    assert_eq!(events, ["order.placed", "order.accepted"]);
    assert!(entries.iter().all(|e| e.order_id == order.id));
    for entry in &entries {
        let message = NewNotification {
            channel: Channel::Webhook,
            destination: "endpoint".into(),
            endpoint_id: None,
            payload: serde_json::json!({"seq": entry.seq}),
        };
        store
            .fan_out(entry, std::slice::from_ref(&message))
            .await
            .unwrap();
        store.fan_out(entry, &[message]).await.unwrap();
    }
    let claimed = store
        .claim_notifications("a", &[Channel::Webhook], 10, hold)
        .await
        .unwrap();
    assert_eq!(
        claimed.iter().map(|n| n.seq).collect::<Vec<_>>(),
        [1],
        "the earliest first"
    );
    assert!(
        store
            .claim_notifications("b", &[Channel::Webhook], 10, hold)
            .await
            .unwrap()
            .is_empty()
    );
    let retry = NextStep::Retry {
        at: mealkitz::store::now() - chrono::Duration::seconds(1),
        attempts: 1,
        error: "HTTP 500".into(),
    };
    assert!(
        store
            .record_notification(claimed[0].id, "a", None, &retry)
            .await
            .unwrap()
    );
    let again = store
        .claim_notifications("b", &[Channel::Webhook], 10, hold)
        .await
        .unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(
        (again[0].id, again[0].attempts),
        (claimed[0].id, 1),
        "the same message, retried"
    );
    let sent = NextStep::Sent {
        sent_as: "webhook".into(),
        provider_id: None,
    };
    assert!(
        !store
            .record_notification(again[0].id, "a", None, &sent)
            .await
            .unwrap(),
        "a's claim is gone"
    );
    assert!(
        store
            .record_notification(again[0].id, "b", None, &sent)
            .await
            .unwrap()
    );
    let next = store
        .claim_notifications("a", &[Channel::Webhook], 10, hold)
        .await
        .unwrap();
    assert_eq!(next.iter().map(|n| n.seq).collect::<Vec<_>>(), [2]);
    let shown = store.order_notifications(order.id).await.unwrap();
    assert_eq!(shown.len(), 2);
    assert_eq!(shown[0].state, "sent");
    assert!(shown[0].message_id.starts_with("msg_"));
    let later = mealkitz::store::now() + chrono::Duration::days(1);
    assert_eq!(
        store.prune_notifications(later).await.unwrap(),
        1,
        "only the finished one"
    );
    let kept = store.order_notifications(order.id).await.unwrap();
    assert_eq!(
        kept.iter().map(|n| n.state.as_str()).collect::<Vec<_>>(),
        ["pending"]
    );
}

async fn webhook_endpoints(kind: Db) {
    use mealkitz::domain::NotifyEvent;
    use mealkitz::store::NewWebhookEndpoint;
    let db = TestDb::create(kind).await;
    let store = migrated_store(&db).await;
    let (merchant, _) = journaled_order(&store).await;
    let endpoint = store
        .create_webhook_endpoint(NewWebhookEndpoint {
            merchant_id: merchant.id,
            url: "https://pos.example.com/hook".into(),
            events: vec![NotifyEvent::Placed, NotifyEvent::Cancelled],
            secret: "whsec_old".into(),
        })
        .await
        .unwrap();
    let listed = store.webhook_endpoints(merchant.id).await.unwrap();
    assert_eq!(listed, std::slice::from_ref(&endpoint));
    let later = mealkitz::store::now() + chrono::Duration::hours(24);
    let rotated = store
        .rotate_webhook_secret(endpoint.id, "whsec_new", later)
        .await
        .unwrap()
        .unwrap();
    let now = mealkitz::store::now();
    assert_eq!(rotated.signing_secrets(now), ["whsec_new", "whsec_old"]);
    assert_eq!(
        rotated.signing_secrets(later),
        ["whsec_new"],
        "the grace period ends"
    );
    let since = store
        .webhook_endpoint_failed(endpoint.id, now)
        .await
        .unwrap();
    assert_eq!(since, Some(now));
    let still = store
        .webhook_endpoint_failed(endpoint.id, now + chrono::Duration::hours(1))
        .await
        .unwrap();
    assert_eq!(still, Some(now), "failing since the first failure");
    store.webhook_endpoint_succeeded(endpoint.id).await.unwrap();
    assert!(
        store
            .disable_webhook_endpoint(endpoint.id, "gone")
            .await
            .unwrap()
    );
    assert!(
        !store
            .disable_webhook_endpoint(endpoint.id, "gone")
            .await
            .unwrap()
    );
    let disabled = store.webhook_endpoint(endpoint.id).await.unwrap().unwrap();
    assert_eq!(disabled.disabled_reason.as_deref(), Some("gone"));
    assert_eq!(disabled.failing_since, None);
    assert!(
        store
            .webhook_deliveries(endpoint.id, 50)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(store.delete_webhook_endpoint(endpoint.id).await.unwrap());
    assert!(store.webhook_endpoint(endpoint.id).await.unwrap().is_none());
}
