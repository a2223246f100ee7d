//! Dispatch through the engine interface, on PostgreSQL and SQLite: who gets an offer, what
//! happens on decline, expiry and acceptance, border drivers, simultaneous orders, widening
//! searches, and full deliveries.

use mealkitz::actors::commands::{self, *};
use std::time::Duration;

use mealkitz::actors::{DriverFeed, EngineError};
use mealkitz::domain::{Cents, MerchantId, NewOrder, OrderId, OrderStatus, Position};

use crate::helpers::{Db, Driver, PROMPTLY_SECS, at, dispatch_app, next_offer};

/// How long a test waits for something that should happen promptly.
const PROMPTLY: Duration = Duration::from_secs(PROMPTLY_SECS);

/// Waits for the driver's feed to say its offer expired.
pub async fn offer_expired(driver: &mut Driver, offer_id: uuid::Uuid, within: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, driver.feed.recv()).await {
            Ok(Some(DriverFeed::OfferExpired { offer_id: id })) if id == offer_id => return true,
            Ok(Some(_)) => continue,
            Ok(None) | Err(_) => return false,
        }
    }
}

/// Asserts nothing is offered to `driver` for a little while.
async fn assert_no_offer(driver: &mut Driver) {
    if let Some(offer) = next_offer(driver, Duration::from_millis(300)).await {
        panic!("unexpected offer {offer:?}");
    }
}

crate::helpers::each_backend! {
    the_nearest_driver_gets_the_offer => nearest_driver_gets_the_offer;
    a_decline_passes_the_order_to_the_next_nearest => decline_passes_to_next;
    an_expired_offer_passes_to_the_next_nearest_and_a_late_accept_is_refused => expiry_passes_to_next;
    a_driver_in_the_border_band_serves_the_neighbouring_region => border_driver_serves_neighbour;
    simultaneous_orders_never_get_the_same_driver => simultaneous_orders_distinct_drivers;
    simultaneous_orders_never_get_the_same_driver_with_regions_sharing_one_event_loop => simultaneous_orders_on_one_event_loop;
    a_widened_radius_finds_a_far_driver => widened_radius_finds_far_driver;
    a_delivery_runs_to_the_end_and_frees_the_driver => full_delivery;
    bad_commands_get_typed_errors => bad_commands;
    batched_matching_minimises_the_total_pickup_time => batched_beats_greedy;
    when_everyone_in_reach_declined_they_are_asked_again => second_round;
    ready_marked_while_the_accept_is_journaled_does_not_collide_with_the_first_offer => ready_during_accept;
}

async fn nearest_driver_gets_the_offer(kind: Db) {
    let app = dispatch_app(kind, |_| {}).await;
    let pickup = at(-5_000.0, -5_000.0);
    let mut far = app.driver_at(at(-5_000.0, -3_000.0)).await;
    let mut near = app.driver_at(at(-5_400.0, -5_000.0)).await;
    let mut middle = app.driver_at(at(-5_000.0, -6_000.0)).await;
    let customer = app.user_id("customer").await;
    let merchant = MerchantId::new();
    let order = app.place_at(customer, merchant, pickup).await;
    assert_eq!(order.status, OrderStatus::Placed);
    assert_no_offer(&mut near).await;

    let accepted = app
        .engine
        .execute(MerchantAccept {
            merchant_id: merchant,
            order_id: order.id,
            prep_minutes: 10,
        })
        .await
        .unwrap();
    assert_eq!(accepted.status, OrderStatus::Accepted);
    // Journaled together with the acceptance: the merchant's answer already shows the offer.
    assert_eq!(accepted.dispatch_status.to_string(), "offered");
    let offer = next_offer(&mut near, PROMPTLY)
        .await
        .expect("nearest driver offered");
    assert_eq!(offer.order_id, order.id);
    assert!(offer.expires_at > chrono::Utc::now());
    assert_no_offer(&mut middle).await;
    assert_no_offer(&mut far).await;
    let view = app.engine.order(order.id).await.unwrap();
    assert_eq!(view.dispatch_status.to_string(), "offered");
}

/// The merchant marks the order ready while its accept is still being journaled, so the ready
/// waits in the order's mailbox while the accept starts the driver search. Both commands and the
/// offer must each journal on top of the other, never from the same version.
async fn ready_during_accept(kind: Db) {
    let app = dispatch_app(kind, |_| {}).await;
    let pickup = at(-5_000.0, 5_000.0);
    let mut driver = app.driver_at(at(-5_300.0, 5_000.0)).await;
    let customer = app.user_id("customer").await;
    let merchant = MerchantId::new();
    let order = app.place_at(customer, merchant, pickup).await;

    let (accepted, ready) = tokio::join!(
        app.engine.execute(MerchantAccept {
            merchant_id: merchant,
            order_id: order.id,
            prep_minutes: 10
        }),
        app.engine.execute(MerchantReady {
            merchant_id: merchant,
            order_id: order.id
        }),
    );
    assert_eq!(
        accepted.expect("accept journaled").status,
        OrderStatus::Accepted
    );
    assert_eq!(ready.expect("ready journaled").status, OrderStatus::Ready);
    let offer = next_offer(&mut driver, PROMPTLY)
        .await
        .expect("the driver is offered the order");
    let view = app.engine.order(order.id).await.unwrap();
    assert_eq!(view.status, OrderStatus::Ready);
    assert_eq!(view.dispatch_status.to_string(), "offered");
    let assigned = app
        .engine
        .execute(AnswerOffer {
            driver: driver.id,
            offer_id: offer.offer_id,
            accept: true,
        })
        .await
        .map(Option::unwrap)
        .expect("assigned");
    assert_eq!(assigned.driver_id, Some(driver.id));
}

async fn decline_passes_to_next(kind: Db) {
    let app = dispatch_app(kind, |_| {}).await;
    let pickup = at(-5_000.0, -5_000.0);
    let mut first = app.driver_at(at(-5_300.0, -5_000.0)).await;
    let mut second = app.driver_at(at(-5_000.0, -5_800.0)).await;
    let mut third = app.driver_at(at(-5_000.0, -7_000.0)).await;
    let (_, order) = app.accepted_at(pickup, 10).await;

    let offer = next_offer(&mut first, PROMPTLY)
        .await
        .expect("first offered");
    app.engine
        .execute(AnswerOffer {
            driver: first.id,
            offer_id: offer.offer_id,
            accept: false,
        })
        .await
        .map(drop)
        .unwrap();
    let offer = next_offer(&mut second, PROMPTLY)
        .await
        .expect("second offered after decline");
    assert_eq!(offer.order_id, order.id);
    app.engine
        .execute(AnswerOffer {
            driver: second.id,
            offer_id: offer.offer_id,
            accept: false,
        })
        .await
        .map(drop)
        .unwrap();
    let offer = next_offer(&mut third, PROMPTLY)
        .await
        .expect("third offered");
    // A driver who declined is not asked again.
    assert_no_offer(&mut first).await;
    let assigned = app
        .engine
        .execute(AnswerOffer {
            driver: third.id,
            offer_id: offer.offer_id,
            accept: true,
        })
        .await
        .map(Option::unwrap)
        .unwrap();
    assert_eq!(assigned.driver_id, Some(third.id));
}

async fn expiry_passes_to_next(kind: Db) {
    let app = dispatch_app(kind, |d| d.offer_timeout = Duration::from_millis(600)).await;
    let pickup = at(-5_000.0, -5_000.0);
    let mut first = app.driver_at(at(-5_200.0, -5_000.0)).await;
    let mut second = app.driver_at(at(-5_000.0, -6_000.0)).await;
    let (_, order) = app.accepted_at(pickup, 10).await;

    let offer = next_offer(&mut first, PROMPTLY)
        .await
        .expect("first offered");
    assert!(
        offer_expired(&mut first, offer.offer_id, PROMPTLY).await,
        "offer_expired sent"
    );
    let late = app
        .engine
        .execute(AnswerOffer {
            driver: first.id,
            offer_id: offer.offer_id,
            accept: true,
        })
        .await
        .map(Option::unwrap);
    assert!(matches!(late, Err(EngineError::OfferExpired)), "{late:?}");
    let next = next_offer(&mut second, PROMPTLY)
        .await
        .expect("second offered after expiry");
    assert_eq!(next.order_id, order.id);
    let assigned = app
        .engine
        .execute(AnswerOffer {
            driver: second.id,
            offer_id: next.offer_id,
            accept: true,
        })
        .await
        .map(Option::unwrap)
        .unwrap();
    assert_eq!(assigned.driver_id, Some(second.id));

    let journal = app.engine.order(order.id).await.unwrap().events;
    let dispatch: Vec<String> = journal
        .iter()
        .filter_map(|e| e.dispatch_status.map(|d| d.to_string()))
        .collect();
    assert_eq!(
        dispatch,
        ["searching", "offered", "searching", "offered", "assigned"]
    );
}

async fn border_driver_serves_neighbour(kind: Db) {
    let app = dispatch_app(kind, |_| {}).await;
    // Pickup in the south-west region, 500 m west of the border with the south-east region;
    // the only driver is 1.5 km east of that border, inside the south-east region.
    let pickup = at(-5_000.0, -500.0);
    let mut driver = app.driver_at(at(-5_000.0, 1_500.0)).await;
    let sw = mealkitz::geo::RegionId::from("sw");
    let se = mealkitz::geo::RegionId::from("se");
    assert_eq!(
        app.engine
            .execute(IndexedDrivers { region: sw.clone() })
            .await
            .unwrap(),
        1,
        "in the sw band"
    );
    assert_eq!(
        app.engine
            .execute(IndexedDrivers { region: se.clone() })
            .await
            .unwrap(),
        1,
        "home region se"
    );
    app.accepted_at(pickup, 5).await;
    let offer = next_offer(&mut driver, PROMPTLY)
        .await
        .expect("border driver offered");
    let assigned = app
        .engine
        .execute(AnswerOffer {
            driver: driver.id,
            offer_id: offer.offer_id,
            accept: true,
        })
        .await
        .map(Option::unwrap)
        .unwrap();
    assert_eq!(assigned.driver_id, Some(driver.id));
    // Taken, the driver leaves both indexes.
    assert_eq!(
        app.engine
            .execute(IndexedDrivers { region: sw.clone() })
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        app.engine
            .execute(IndexedDrivers { region: se.clone() })
            .await
            .unwrap(),
        0
    );
}

async fn simultaneous_orders_distinct_drivers(kind: Db) {
    simultaneous_orders_on(kind, 4).await;
}

async fn simultaneous_orders_on_one_event_loop(kind: Db) {
    simultaneous_orders_on(kind, 1).await;
}

/// Orders racing for the same drivers from two regions, whose actors run on `event_loops`
/// threads (the demo city's four regions each on its own with 4, all on one with 1).
async fn simultaneous_orders_on(kind: Db, event_loops: usize) {
    let app = dispatch_app(kind, |d| {
        d.search_retry = Duration::from_millis(100);
        d.engine_threads = Some(event_loops);
    })
    .await;
    let customer = app.user_id("customer").await;
    // Orders on both sides of the sw/se border, all accepted at once; drivers straddle it, so
    // both regions see every driver and their orders race for the same nearest ones.
    const N: usize = 8;
    let mut drivers = Vec::new();
    for i in 0..N {
        drivers.push(app.driver_at(at(-5_000.0 + 100.0 * i as f64, 0.0)).await);
    }
    let mut orders = Vec::new();
    for i in 0..N {
        let side = if i % 2 == 0 { -300.0 } else { 300.0 };
        let merchant = MerchantId::new();
        let order = app.place_at(customer, merchant, at(-5_000.0, side)).await;
        orders.push((merchant, order.id));
    }
    let accepts = orders.iter().map(|(merchant, order)| {
        app.engine.execute(MerchantAccept {
            merchant_id: *merchant,
            order_id: *order,
            prep_minutes: 5,
        })
    });
    for accepted in futures_util::future::join_all(accepts).await {
        accepted.unwrap();
    }
    // Every driver gets exactly one offer and takes it.
    let mut assigned_orders = Vec::new();
    for driver in &mut drivers {
        let offer = next_offer(driver, PROMPTLY)
            .await
            .expect("every driver gets one offer");
        let view = app
            .engine
            .execute(AnswerOffer {
                driver: driver.id,
                offer_id: offer.offer_id,
                accept: true,
            })
            .await
            .map(Option::unwrap)
            .unwrap();
        assert_eq!(view.driver_id, Some(driver.id));
        assigned_orders.push(view.id);
    }
    for driver in &mut drivers {
        assert_no_offer(driver).await;
    }
    assigned_orders.sort();
    assigned_orders.dedup();
    assert_eq!(
        assigned_orders.len(),
        N,
        "each order went to a different driver"
    );
    let mut assigned_drivers = Vec::new();
    for (_, order) in &orders {
        let view = app.engine.order(*order).await.unwrap();
        assigned_drivers.push(view.driver_id.expect("assigned"));
    }
    assigned_drivers.sort();
    assigned_drivers.dedup();
    assert_eq!(assigned_drivers.len(), N, "no driver has two orders");
}

async fn widened_radius_finds_far_driver(kind: Db) {
    let app = dispatch_app(kind, |d| {
        d.search_retry = Duration::from_millis(100);
        d.search_radius_m = 3_000.0;
        d.search_radius_step_m = 3_000.0;
        d.max_search_radius_m = 12_000.0;
    })
    .await;
    let pickup = at(-8_000.0, -8_000.0);
    // 7 km away: outside the first radius, inside the third.
    let mut far = app.driver_at(at(-8_000.0, -1_000.0)).await;
    let (_, order) = app.accepted_at(pickup, 5).await;
    let offer = next_offer(&mut far, PROMPTLY)
        .await
        .expect("found after widening");
    assert_eq!(offer.order_id, order.id);
}

async fn full_delivery(kind: Db) {
    let app = dispatch_app(kind, |_| {}).await;
    let pickup = at(5_000.0, 5_000.0);
    let mut driver = app.driver_at(at(5_500.0, 5_000.0)).await;
    let customer = app.user_id("customer").await;
    let merchant = MerchantId::new();
    let order = app.place_at(customer, merchant, pickup).await;
    let (_, mut tracker) = app
        .engine
        .subscribe(SubscribeOrder::new(order.id))
        .await
        .unwrap();
    let (board, mut board_feed) = app
        .engine
        .subscribe(SubscribeBoard::new(merchant))
        .await
        .unwrap();
    assert_eq!(board.iter().map(|o| o.id).collect::<Vec<_>>(), [order.id]);

    app.engine
        .execute(MerchantAccept {
            merchant_id: merchant,
            order_id: order.id,
            prep_minutes: 12,
        })
        .await
        .unwrap();
    let offer = next_offer(&mut driver, PROMPTLY).await.unwrap();
    app.engine
        .execute(AnswerOffer {
            driver: driver.id,
            offer_id: offer.offer_id,
            accept: true,
        })
        .await
        .map(Option::unwrap)
        .unwrap();
    app.engine
        .execute(DriverLocation {
            driver: driver.id,
            lat: pickup.lat,
            lon: pickup.lon,
            ts_ms: None,
        })
        .await
        .unwrap();
    app.engine
        .execute(MerchantReady {
            merchant_id: merchant,
            order_id: order.id,
        })
        .await
        .unwrap();
    let picked = app
        .engine
        .execute(commands::PickedUp {
            driver: driver.id,
            order_id: order.id,
        })
        .await
        .unwrap();
    assert_eq!(picked.status, OrderStatus::PickedUp);
    let delivered = app
        .engine
        .execute(commands::Delivered {
            driver: driver.id,
            order_id: order.id,
        })
        .await
        .unwrap();
    assert_eq!(delivered.status, OrderStatus::Delivered);

    // The tracker saw every status in order, and the driver's location on the way.
    let mut statuses = Vec::new();
    let mut saw_location = false;
    while let Ok(Some(update)) = tokio::time::timeout(PROMPTLY, tracker.recv()).await {
        match update {
            mealkitz::actors::OrderFeed::Update(view) => {
                if statuses.last() != Some(&view.status) {
                    statuses.push(view.status);
                }
            }
            mealkitz::actors::OrderFeed::DriverLocation { eta_seconds, .. } => {
                assert!(eta_seconds >= 0.0);
                saw_location = true;
            }
            mealkitz::actors::OrderFeed::Route(route) => {
                assert!(route.points.len() >= 2, "a route has a line: {route:?}");
            }
        }
    }
    use OrderStatus::*;
    assert_eq!(statuses, [Accepted, Ready, PickedUp, Delivered]);
    assert!(saw_location);
    // The board saw the order leave.
    let mut last = None;
    while let Ok(Some(view)) =
        tokio::time::timeout(Duration::from_millis(500), board_feed.recv()).await
    {
        last = Some(view.status);
    }
    assert_eq!(last, Some(Delivered));
    // The driver is free again: a new order nearby is offered to it.
    let second = app.place_at(customer, merchant, pickup).await;
    app.engine
        .execute(MerchantAccept {
            merchant_id: merchant,
            order_id: second.id,
            prep_minutes: 5,
        })
        .await
        .unwrap();
    let offer = next_offer(&mut driver, PROMPTLY)
        .await
        .expect("free driver offered again");
    assert_eq!(offer.order_id, second.id);
    // The journal holds every transition of the first order.
    let stored = app.engine.order(order.id).await.unwrap();
    assert_eq!(stored.status, Delivered);
    assert_eq!(stored.driver_id, Some(driver.id));
}

async fn bad_commands(kind: Db) {
    let app = dispatch_app(kind, |_| {}).await;
    let customer = app.user_id("customer").await;
    let merchant = MerchantId::new();
    let outside = Position {
        lat: 41.5,
        lon: -73.98,
    };
    let placed = app
        .engine
        .execute(PlaceOrder {
            order: NewOrder {
                id: OrderId::new(),
                merchant_id: merchant,
                customer_id: customer,
                items: vec![],
                delivery_fee_cents: Cents(0),
                total_cents: Cents(100),
                pickup: outside,
                dropoff: at(0.0, 100.0),
                dropoff_address: "x".into(),
                pickup_address: "1 Kitchen Street".into(),
            },
        })
        .await;
    assert!(
        matches!(placed, Err(EngineError::OutsideServiceArea)),
        "{placed:?}"
    );
    let bad = app
        .engine
        .execute(DriverLocation {
            driver: customer,
            lat: f64::NAN,
            lon: 0.0,
            ts_ms: None,
        })
        .await;
    assert!(
        matches!(bad, Err(EngineError::InvalidLocation(_))),
        "{bad:?}"
    );
    let bad = app
        .engine
        .execute(DriverLocation {
            driver: customer,
            lat: 91.0,
            lon: 0.0,
            ts_ms: None,
        })
        .await;
    assert!(
        matches!(bad, Err(EngineError::InvalidLocation(_))),
        "{bad:?}"
    );

    let order = app.place_at(customer, merchant, at(1_000.0, 1_000.0)).await;
    let wrong_merchant = app
        .engine
        .execute(MerchantAccept {
            merchant_id: MerchantId::new(),
            order_id: order.id,
            prep_minutes: 5,
        })
        .await;
    assert!(
        matches!(wrong_merchant, Err(EngineError::OrderNotFound)),
        "{wrong_merchant:?}"
    );
    let unknown = app
        .engine
        .execute(MerchantAccept {
            merchant_id: merchant,
            order_id: OrderId::new(),
            prep_minutes: 5,
        })
        .await;
    assert!(
        matches!(unknown, Err(EngineError::OrderNotFound)),
        "{unknown:?}"
    );
    let not_ready = app
        .engine
        .execute(MerchantReady {
            merchant_id: merchant,
            order_id: order.id,
        })
        .await;
    assert!(
        matches!(not_ready, Err(EngineError::Transition(_))),
        "{not_ready:?}"
    );
    let stranger = app.user_id("driver").await;
    let pickup = app
        .engine
        .execute(commands::PickedUp {
            driver: stranger,
            order_id: order.id,
        })
        .await;
    assert!(
        matches!(pickup, Err(EngineError::OrderNotFound)),
        "{pickup:?}"
    );
    let no_offer = app
        .engine
        .execute(AnswerOffer {
            driver: stranger,
            offer_id: uuid::Uuid::now_v7(),
            accept: true,
        })
        .await
        .map(Option::unwrap);
    assert!(
        matches!(no_offer, Err(EngineError::OfferNotFound)),
        "{no_offer:?}"
    );

    app.engine
        .execute(DriverLocation {
            driver: stranger,
            lat: 40.7,
            lon: -74.0,
            ts_ms: Some(2_000),
        })
        .await
        .unwrap();
    let stale = app
        .engine
        .execute(DriverLocation {
            driver: stranger,
            lat: 40.7,
            lon: -74.0,
            ts_ms: Some(1_000),
        })
        .await;
    assert!(
        matches!(stale, Err(EngineError::StaleLocation)),
        "{stale:?}"
    );

    app.engine
        .execute(MerchantAccept {
            merchant_id: merchant,
            order_id: order.id,
            prep_minutes: 5,
        })
        .await
        .unwrap();
    let late_cancel = app
        .engine
        .execute(CancelOrder {
            order_id: order.id,
            by: mealkitz::actors::Canceller::Customer(customer),
            reason: String::new(),
        })
        .await;
    assert!(
        matches!(late_cancel, Err(EngineError::Transition(_))),
        "{late_cancel:?}"
    );
    let cancelled = app
        .engine
        .execute(CancelOrder {
            order_id: order.id,
            by: mealkitz::actors::Canceller::Admin,
            reason: "test".into(),
        })
        .await
        .unwrap();
    assert_eq!(cancelled.status, OrderStatus::Cancelled);
    let after = app
        .engine
        .execute(MerchantReady {
            merchant_id: merchant,
            order_id: order.id,
        })
        .await;
    assert!(
        matches!(after, Err(EngineError::OrderClosed(OrderStatus::Cancelled))),
        "{after:?}"
    );
}

async fn batched_beats_greedy(kind: Db) {
    let app = dispatch_app(kind, |d| {
        d.matching = mealkitz::config::Matching::Batched {
            window: Duration::from_millis(400),
        };
    })
    .await;
    // On one street: greedy would give order `a` the driver at 0 m (900 m away) and leave order
    // `b` the driver at 2,000 m (2,100 m away): 3,000 m in all. The best pairing is 1,200 m.
    let mut west = app.driver_at(at(-5_000.0, -6_000.0)).await;
    let mut east = app.driver_at(at(-5_000.0, -4_000.0)).await;
    let customer = app.user_id("customer").await;
    let (ma, mb) = (MerchantId::new(), MerchantId::new());
    let a = app.place_at(customer, ma, at(-5_000.0, -5_100.0)).await;
    let b = app.place_at(customer, mb, at(-5_000.0, -6_100.0)).await;
    let (ra, rb) = tokio::join!(
        app.engine.execute(MerchantAccept {
            merchant_id: ma,
            order_id: a.id,
            prep_minutes: 5
        }),
        app.engine.execute(MerchantAccept {
            merchant_id: mb,
            order_id: b.id,
            prep_minutes: 5
        })
    );
    ra.unwrap();
    rb.unwrap();
    let to_east = next_offer(&mut east, PROMPTLY)
        .await
        .expect("east driver offered");
    let to_west = next_offer(&mut west, PROMPTLY)
        .await
        .expect("west driver offered");
    assert_eq!(
        to_east.order_id, a.id,
        "order a goes to the east driver (1,100 m)"
    );
    assert_eq!(
        to_west.order_id, b.id,
        "order b goes to the west driver (100 m)"
    );
    let metrics = app.get("/metrics").await.text;
    assert!(metrics.contains("dispatch_batch_orders"), "{metrics}");
}

async fn second_round(kind: Db) {
    let app = dispatch_app(kind, |d| {
        d.search_retry = Duration::from_millis(100);
        d.search_radius_m = 3_000.0;
        d.max_search_radius_m = 3_000.0;
    })
    .await;
    let mut only = app.driver_at(at(5_000.0, 5_200.0)).await;
    let merchant = MerchantId::new();
    let order = app
        .place_at(
            app.user_id("customer").await,
            merchant,
            at(5_000.0, 5_000.0),
        )
        .await;
    app.engine
        .execute(MerchantAccept {
            merchant_id: merchant,
            order_id: order.id,
            prep_minutes: 5,
        })
        .await
        .unwrap();
    let first = next_offer(&mut only, PROMPTLY).await.expect("offered");
    app.engine
        .execute(AnswerOffer {
            driver: only.id,
            offer_id: first.offer_id,
            accept: false,
        })
        .await
        .map(drop)
        .unwrap();
    // Nobody else in reach: rather than search forever, the order comes back to the same driver.
    let again = next_offer(&mut only, PROMPTLY)
        .await
        .expect("offered again");
    assert_eq!(again.order_id, order.id);
    assert_ne!(again.offer_id, first.offer_id);
}
