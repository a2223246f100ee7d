//! The fleet simulator against a running engine: every order delivered without errors, and the
//! same seed asks for the same demand.

use std::time::Duration;

use mealkitz::sim::SimConfig;

use crate::helpers::{Db, spawn_app};

#[actix_web::test]
async fn the_simulator_delivers_every_order_and_a_seed_repeats_its_demand() {
    let app = spawn_app(Db::Sqlite).await;
    let config = SimConfig {
        url: app.address.clone(),
        drivers: 40,
        merchants: 2,
        customers: 3,
        orders_per_minute: 40.0,
        duration: Duration::from_secs(8),
        seed: 11,
        accept_rate: 0.8,
        // Fast enough that every delivery ends within seconds.
        time_scale: 400.0,
        progress: false,
    };
    let first = mealkitz::sim::run(config.clone(), |_| {})
        .await
        .expect("first run");
    assert!(first.orders_placed > 0, "{}", first.table());
    assert!(first.clean(), "{}", first.table());
    assert_eq!(
        first.orders_delivered,
        first.orders_placed,
        "{}",
        first.table()
    );
    assert_eq!(first.dispatch_latency_ms.count, first.orders_placed);
    assert!(first.pickup_distance_m.mean > 0.0);

    // A second run with the same seed reuses the accounts and asks for the same orders.
    let second = mealkitz::sim::run(config, |_| {})
        .await
        .expect("second run");
    assert_eq!(second.demand_fingerprint, first.demand_fingerprint);
    assert_eq!(second.orders_planned, first.orders_planned);
    assert!(second.clean(), "{}", second.table());
}
