//! The fleet simulator against a running engine: every order delivered without errors, the
//! same seed asks for the same demand, and the Helsinki city runs on an engine serving the
//! Helsinki regions, with the engine's ETAs scored against what the drivers did.

use std::time::Duration;

use mealkitz::config::{Config, MapsConfig};
use mealkitz::sim::{CityKind, SimConfig};

use crate::helpers::{Db, TestDb, spawn_app, spawn_app_with, test_config};

fn quick_run(url: String, city: CityKind) -> SimConfig {
    SimConfig {
        url,
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
        city,
        maps: MapsConfig::default(),
    }
}

#[actix_web::test]
async fn the_simulator_delivers_every_order_and_a_seed_repeats_its_demand() {
    let app = spawn_app(Db::Sqlite).await;
    let config = quick_run(app.address.clone(), CityKind::Synthetic);
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

#[actix_web::test]
async fn a_helsinki_run_delivers_on_the_helsinki_regions_and_scores_every_eta() {
    let db = TestDb::create(Db::Sqlite).await;
    let mut config = test_config(&db);
    let regions = format!(
        "--regions={}/data/helsinki/regions.geojson",
        env!("CARGO_MANIFEST_DIR")
    );
    config.dispatch.regions = Config::from_args([regions])
        .expect("the Helsinki regions are valid")
        .dispatch
        .regions;
    let app = spawn_app_with(db, config).await;
    let report = mealkitz::sim::run(quick_run(app.address.clone(), CityKind::Helsinki), |_| {})
        .await
        .expect("Helsinki run");
    let table = report.table();
    assert!(report.orders_placed > 0, "{table}");
    assert!(report.clean(), "{table}");
    assert_eq!(report.orders_delivered, report.orders_placed, "{table}");
    assert_eq!(report.city, CityKind::Helsinki);
    assert_eq!(report.routing, "straight_line");
    // Every delivery is scored against its offer's pickup ETA. (Its last leg's route frame
    // comes only when the engine is not holding back re-routing, which at this time scale it
    // mostly is: the delivery figure has its own unit test.)
    assert_eq!(
        report.pickup_eta_error.count, report.orders_delivered,
        "{table}"
    );
    assert!(report.pickup_eta_error.mean_abs_secs.is_finite(), "{table}");
    assert!(report.delivery_eta_error.count <= report.orders_delivered);

    // The synthetic city against this engine is refused up front, saying why.
    let wrong = mealkitz::sim::run(quick_run(app.address.clone(), CityKind::Synthetic), |_| {})
        .await
        .expect_err("the synthetic city is not served here");
    assert!(
        wrong
            .to_string()
            .contains("does not serve the synthetic city"),
        "{wrong}"
    );
}
