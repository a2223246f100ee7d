//! Order snapshots behind the journal: an open order is snapshotted once a snapshot interval
//! at most, as it is at the end of it; a closed order's pending snapshot is never written.

use mealkitz::actors::Canceller;
use mealkitz::actors::commands::*;
use mealkitz::domain::{MerchantId, Order, OrderStatus};
use mealkitz::store::SnapshotKind;
use std::time::{Duration, Instant};

use crate::helpers::{Db, at, dispatch_app, migrated_store};

/// Longer than a handful of engine commands take on a loaded machine, so that an order placed
/// and cancelled at once closes inside it.
const SNAPSHOT_INTERVAL_MS: u64 = 2_000;

crate::helpers::each_backend! {
    an_open_order_is_snapshotted_after_an_interval_as_it_is_then_and_a_closed_one_never => open_and_closed;
}

async fn open_and_closed(kind: Db) {
    let app = dispatch_app(kind, |dispatch| {
        dispatch.snapshot_interval = Duration::from_millis(SNAPSHOT_INTERVAL_MS);
    })
    .await;
    let store = migrated_store(&app.db).await;
    let customer = app.user_id("customer").await;
    let merchant = MerchantId::new();

    // Two changes inside one interval: placed, then accepted (no driver: it stays searching).
    let open = app.place_at(customer, merchant, at(5_000.0, 5_000.0)).await;
    app.engine
        .execute(MerchantAccept {
            merchant_id: merchant,
            order_id: open.id,
            prep_minutes: 10,
        })
        .await
        .expect("the merchant accepts");
    // Placed and cancelled at once: closed within the interval.
    let started = Instant::now();
    let closed = app.place_at(customer, merchant, at(5_100.0, 5_000.0)).await;
    let cancelled = app
        .engine
        .execute(CancelOrder {
            order_id: closed.id,
            by: Canceller::Customer(customer),
            reason: "changed my mind".into(),
        })
        .await
        .expect("the customer cancels before acceptance");
    assert_eq!(cancelled.status, OrderStatus::Cancelled);
    assert!(
        started.elapsed() < Duration::from_millis(SNAPSHOT_INTERVAL_MS),
        "placing and cancelling took {:?}: the closed order's snapshot may be due",
        started.elapsed()
    );

    // The open order's one snapshot lands after an interval (and the writer's next batch),
    // holding the order as accepted — not as placed.
    let deadline = Instant::now() + Duration::from_millis(5 * SNAPSHOT_INTERVAL_MS);
    let snapshot = loop {
        let held = store
            .snapshot_state::<Order>(SnapshotKind::Order, open.id.as_uuid())
            .await
            .unwrap();
        if let Some(order) = held {
            break order;
        }
        assert!(Instant::now() < deadline, "no snapshot of the open order");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let current = store.load_order(open.id).await.unwrap().expect("stored");
    assert_eq!(snapshot.state.status, OrderStatus::Accepted);
    assert_eq!(snapshot.version, current.version, "the order as it is now");

    // By now the closed order's would have landed too, had it been kept.
    let none = store
        .snapshot_state::<Order>(SnapshotKind::Order, closed.id.as_uuid())
        .await
        .unwrap();
    assert!(none.is_none(), "a closed order was snapshotted: {none:?}");
    // And it reads back whole from its journal alone.
    let read = store.load_order(closed.id).await.unwrap().expect("stored");
    assert_eq!(read.state.status, OrderStatus::Cancelled);
    assert!(read.version >= 2, "placed and cancelled: {read:?}");
}
