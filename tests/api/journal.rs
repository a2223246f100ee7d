//! Group commit of the order journal, on both backends: writes handed in together commit in
//! fewer transactions than there are writes, and each gets the answer it would have had alone —
//! a stale version, a region whose lease was taken over, a duplicate order or a driver already
//! busy refuse only their own write; a write that fails half-way leaves none of itself; an
//! order's writes commit in the order they came.

use futures_util::future::join_all;
use std::time::Duration;

use mealkitz::config::DatabaseConfig;
use mealkitz::domain::{
    Cents, Change, JournalEntry, MerchantId, NewOrder, Order, OrderId, Position, Role, UserId,
};
use mealkitz::store::{Claim, Store, StoreError};

use crate::cluster::next;
use crate::helpers::{Db, TestDb, at, new_user};

async fn store_with(db: &TestDb, journal_batch_max: usize) -> Store {
    let store = Store::open(&DatabaseConfig {
        journal_batch_max,
        ..db.config()
    })
    .unwrap();
    store.migrate().await.expect("migrations apply");
    store
}

async fn user(store: &Store, role: Role) -> UserId {
    store
        .create_user(new_user(
            &format!("{}@example.com", uuid::Uuid::new_v4()),
            role,
        ))
        .await
        .unwrap()
        .id
}

/// A new order of `customer` (a fresh merchant id, no items, 10.00) from `pickup` to `dropoff`.
pub(crate) fn new_order(customer: UserId, pickup: Position, dropoff: Position) -> NewOrder {
    NewOrder {
        id: OrderId::new(),
        merchant_id: MerchantId::new(),
        customer_id: customer,
        items: vec![],
        delivery_fee_cents: Cents(0),
        total_cents: Cents(1000),
        pickup,
        dropoff,
        dropoff_address: "1 Batch Street".into(),
        pickup_address: "1 Kitchen Street".into(),
    }
}

/// An order of `customer` placed in `region` (not yet stored).
pub(crate) fn placed(customer: UserId, region: &str) -> (Order, JournalEntry) {
    let pickup = at(5_000.0, 5_000.0);
    let dropoff = Position {
        lat: pickup.lat + 0.01,
        lon: pickup.lon,
    };
    Order::place(
        new_order(customer, pickup, dropoff),
        region.into(),
        mealkitz::store::now(),
    )
}

fn accept(order: &Order) -> (Order, JournalEntry) {
    next(order, Change::MerchantAccepted { prep_minutes: 5 })
}

crate::helpers::each_backend! {
    writes_handed_in_together_commit_together_and_each_gets_its_own_answer => grouped_answers;
    without_group_commit_every_write_is_its_own_transaction => one_by_one;
    a_write_that_fails_after_its_order_row_leaves_nothing_and_the_others_of_its_batch_stand => failed_part_way;
}

/// A write whose order row moves but whose entries cannot be written (two with one `seq`)
/// fails half-way through: none of it may stay, and the writes batched with it still commit.
async fn failed_part_way(kind: Db) {
    let db = TestDb::create(kind).await;
    let store = store_with(&db, 256).await;
    let customer = user(&store, Role::Customer).await;
    let orders: Vec<(Order, JournalEntry)> = (0..12).map(|_| placed(customer, "ne")).collect();
    let created = join_all(orders.iter().map(|(o, e)| store.create_order(o, e))).await;
    assert!(created.iter().all(Result::is_ok), "{created:?}");

    let (broken, entry) = accept(&orders[0].0);
    let broken_entries = vec![entry.clone(), entry];
    let good: Vec<(Order, JournalEntry)> = orders[1..].iter().map(|(o, _)| accept(o)).collect();
    // Handed in behind others: the first two writes lead, and the broken one waits with the
    // rest for a batch of several.
    let mut answers = join_all(
        good.iter()
            .map(|(after, e)| (after, std::slice::from_ref(e)))
            .take(5)
            .chain([(&broken, broken_entries.as_slice())])
            .chain(
                good.iter()
                    .skip(5)
                    .map(|(after, e)| (after, std::slice::from_ref(e))),
            )
            .map(|(after, entries)| store.append(after, entries)),
    )
    .await;
    let broken_answer = answers.remove(5);
    let good_answers = answers;
    assert!(
        matches!(broken_answer, Err(StoreError::Duplicate(_))),
        "{broken_answer:?}"
    );
    assert!(good_answers.iter().all(Result::is_ok), "{good_answers:?}");

    let stored = store.load_order(broken.id).await.unwrap().unwrap();
    assert_eq!(stored.version, 1, "the failed write's order row was undone");
    assert_eq!(store.journal(broken.id).await.unwrap().len(), 1);
    for (after, _) in &good {
        let stored = store.load_order(after.id).await.unwrap().unwrap();
        assert_eq!(stored.version, after.version);
        assert_eq!(store.journal(after.id).await.unwrap().len(), 2);
    }
}

async fn grouped_answers(kind: Db) {
    let db = TestDb::create(kind).await;
    let store = store_with(&db, 256).await;
    let other = store_with(&db, 256).await;
    let ttl = Duration::from_secs(60);
    let regions = ["ne".to_owned(), "nw".to_owned()];
    let Claim::Granted(leases) = store.claim_regions("a", &regions, ttl).await.unwrap() else {
        panic!("free regions are granted");
    };
    store.fence("a", &leases);
    let customer = user(&store, Role::Customer).await;
    let driver = user(&store, Role::Driver).await;

    // 40 new orders at once: all stored, in fewer transactions than orders.
    let orders: Vec<(Order, JournalEntry)> = (0..40)
        .map(|i| placed(customer, if i % 2 == 0 { "ne" } else { "nw" }))
        .collect();
    let before = store.journal_commits();
    let created = join_all(orders.iter().map(|(o, e)| store.create_order(o, e))).await;
    assert!(created.iter().all(Result::is_ok), "{created:?}");
    let commits = store.journal_commits() - before;
    assert!(
        commits < 40,
        "40 writes handed in together took {commits} commits"
    );

    // Region nw changes hands: "a" still holds its old epoch there.
    store.release_region("a", "nw").await.unwrap();
    let Claim::Granted(taken) = other
        .claim_regions("b", &["nw".to_owned()], ttl)
        .await
        .unwrap()
    else {
        panic!("a released region is granted");
    };
    other.fence("b", &taken);

    // One burst: good moves of ne's orders, one stale version, one of nw (fence), a duplicate
    // order, two orders given the same driver (the database allows one active order per
    // driver), and an order's two consecutive writes.
    let ne: Vec<&Order> = orders
        .iter()
        .map(|(o, _)| o)
        .filter(|o| o.region_id == "ne")
        .collect();
    let nw_order = &orders[1].0;
    let mut writes: Vec<(&'static str, Order, Vec<JournalEntry>)> = Vec::new();
    for order in &ne[..10] {
        let (after, entry) = accept(order);
        writes.push(("ok", after, vec![entry]));
    }
    let (mut stale, entry) = accept(ne[10]);
    let mut stale_entry = entry.clone();
    stale_entry.seq += 1;
    stale.version += 1;
    writes.push(("stale", stale, vec![stale_entry]));
    let (fenced, entry) = accept(nw_order);
    writes.push(("fenced", fenced, vec![entry]));
    for (i, order) in [ne[11], ne[12]].into_iter().enumerate() {
        let (mut busy, entry) = accept(order);
        busy.driver_id = Some(driver);
        writes.push((if i == 0 { "ok" } else { "driver_busy" }, busy, vec![entry]));
    }
    let (first, first_entry) = accept(ne[13]);
    let (second, second_entry) = next(&first, Change::SearchStarted);
    writes.push(("ok", first, vec![first_entry]));
    writes.push(("ok", second.clone(), vec![second_entry]));
    // An order that was never created: refused, and none of its entries written — the journal
    // has no foreign key to refuse them (PostgreSQL), so the batch must not write them.
    let (ghost, ghost_entry) = accept(&placed(customer, "ne").0);
    writes.push(("ghost", ghost, vec![ghost_entry]));

    let duplicate = store.create_order(&orders[0].0, &orders[0].1);
    let before = store.journal_commits();
    let (answers, duplicate) = futures_util::join!(
        join_all(
            writes
                .iter()
                .map(|(_, after, entries)| store.append(after, entries))
        ),
        duplicate
    );
    for ((expect, after, _), answer) in writes.iter().zip(&answers) {
        match (*expect, answer) {
            ("ok", Ok(())) => {}
            ("stale", Err(StoreError::Conflict(_))) => {}
            ("fenced", Err(StoreError::LeaseLost(_))) => {}
            ("ghost", Err(StoreError::Conflict(_))) => {}
            ("driver_busy", Err(StoreError::Duplicate(_))) => {}
            _ => panic!("{expect} write of order {} answered {answer:?}", after.id),
        }
    }
    assert!(
        matches!(duplicate, Err(StoreError::Duplicate(_))),
        "{duplicate:?}"
    );
    assert!(store.journal_commits() > before);

    // What was answered Ok is in the journal, and nothing else.
    for (expect, after, entries) in &writes {
        let journal = store.journal(after.id).await.unwrap();
        if *expect == "ghost" {
            assert!(store.load_order(after.id).await.unwrap().is_none());
            assert!(
                journal.is_empty(),
                "a never-created order was journaled: {journal:?}"
            );
            continue;
        }
        let stored = store.load_order(after.id).await.unwrap().unwrap();
        if *expect == "ok" {
            assert!(stored.version >= after.version, "{} lost a write", after.id);
            assert!(journal.iter().any(|e| e.seq == entries[0].seq));
        } else {
            assert_eq!(stored.version, 1, "{expect}: {} was written", after.id);
            assert_eq!(journal.len(), 1, "{expect}: {} was journaled", after.id);
        }
    }
    let two_writes = store.load_order(second.id).await.unwrap().unwrap();
    assert_eq!(two_writes.version, 3, "both writes, in order");
}

async fn one_by_one(kind: Db) {
    let db = TestDb::create(kind).await;
    let store = store_with(&db, 1).await;
    let customer = user(&store, Role::Customer).await;
    let orders: Vec<(Order, JournalEntry)> = (0..10).map(|_| placed(customer, "ne")).collect();
    let before = store.journal_commits();
    let created = join_all(orders.iter().map(|(o, e)| store.create_order(o, e))).await;
    assert!(created.iter().all(Result::is_ok), "{created:?}");
    assert_eq!(store.journal_commits() - before, 10);
    let (after, entry) = accept(&orders[0].0);
    store
        .append(&after, std::slice::from_ref(&entry))
        .await
        .unwrap();
    let again = store.append(&after, &[entry]).await;
    assert!(matches!(again, Err(StoreError::Conflict(_))), "{again:?}");
}
