//! Road-aware dispatch and road ETAs against a real `osrm-routed` on the Helsinki extract
//! (started per test by [`OsrmServer`]): a driver nearer by air but farther by road loses the
//! offer, greedy and batched; the offer's pickup ETA and the tracking ETA agree with OSRM's own
//! answers; with OSRM killed, dispatch goes on by the straight line and `/ready` says the maps
//! are degraded.

use std::time::Duration;

use mealkitz::actors::commands::*;
use mealkitz::actors::{LegKind, OrderFeed};
use mealkitz::config::Config;
use mealkitz::domain::{OrderStatus, Position};
use serde_json::Value;

use crate::helpers::{
    Db, Driver, PROMPTLY_SECS, TestApp, TestDb, next_offer, spawn_app_with, test_config,
};
use crate::osrm_support::OsrmServer;

const PROMPTLY: Duration = Duration::from_secs(PROMPTLY_SECS);

/// A pickup on Kaivokatu's west end, central Helsinki.
const PICKUP: Position = Position {
    lat: 60.170325,
    lon: 24.941969,
};
/// 251 m from the pickup by air, but about 714 s by road (one-way streets and pedestrian
/// blocks between them), as OSRM routes the shipped extract.
const NEAR_BY_AIR: Position = Position {
    lat: 60.168187,
    lon: 24.940492,
};
/// 387 m from the pickup by air, about 142 s by road.
const NEAR_BY_ROAD: Position = Position {
    lat: 60.167387,
    lon: 24.938209,
};

fn helsinki_file(name: &str) -> String {
    format!("{}/data/helsinki/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// An engine serving the two Helsinki regions with the Helsinki extract's addresses and
/// streets, routing by OSRM at `osrm_url` when given.
pub async fn helsinki_app(kind: Db, osrm_url: Option<&str>) -> TestApp {
    helsinki_app_with(kind, osrm_url, &[]).await
}

/// [`helsinki_app`] with `extra` flags.
async fn helsinki_app_with(kind: Db, osrm_url: Option<&str>, extra: &[&str]) -> TestApp {
    let db = TestDb::create(kind).await;
    let mut config = test_config(&db);
    let mut args = vec![
        format!("--regions={}", helsinki_file("regions.geojson")),
        format!("--map-data={}", helsinki_file("Helsinki.osm.pbf")),
    ];
    if let Some(url) = osrm_url {
        args.push(format!("--osrm-url={url}"));
    }
    args.extend(extra.iter().map(|flag| flag.to_string()));
    let parsed = Config::from_args(args).expect("the Helsinki settings are valid");
    config.dispatch.regions = parsed.dispatch.regions;
    config.dispatch.matching = parsed.dispatch.matching;
    config.maps = parsed.maps;
    spawn_app_with(db, config).await
}

/// OSRM's own answer: seconds by road from `from` to `to` (`/route/v1/driving`).
async fn osrm_route_secs(osrm: &OsrmServer, from: Position, to: Position) -> f64 {
    let url = format!(
        "{}/route/v1/driving/{:.6},{:.6};{:.6},{:.6}?overview=false",
        osrm.url, from.lon, from.lat, to.lon, to.lat
    );
    let body: Value = reqwest::get(url).await.unwrap().json().await.unwrap();
    assert_eq!(body["code"], "Ok", "{body}");
    body["routes"][0]["duration"].as_f64().unwrap()
}

/// Places an order at [`PICKUP`] and has its merchant accept it.
async fn accepted_order(app: &TestApp) -> mealkitz::domain::OrderView {
    app.accepted_at(PICKUP, 10).await.1
}

async fn assert_no_offer(driver: &mut Driver) {
    if let Some(offer) = next_offer(driver, Duration::from_millis(500)).await {
        panic!("unexpected offer {offer:?}");
    }
}

crate::helpers::each_backend! {
    a_driver_nearer_by_air_but_farther_by_road_loses_the_offer_to_the_one_nearer_by_road => nearer_by_road_wins;
}

async fn nearer_by_road_wins(kind: Db) {
    let osrm = OsrmServer::start();
    let app = helsinki_app(kind, Some(&osrm.url)).await;
    road_winner_is_offered(&app, &osrm).await;
    assert!(
        osrm_route_secs(&osrm, NEAR_BY_ROAD, PICKUP).await
            < osrm_route_secs(&osrm, NEAR_BY_AIR, PICKUP).await
    );
}

#[actix_web::test]
async fn batched_matching_costs_its_window_by_road_too() {
    let osrm = OsrmServer::start();
    let app = helsinki_app_with(
        Db::Postgres,
        Some(&osrm.url),
        &["--matching=batched", "--batch-window-ms=200"],
    )
    .await;
    road_winner_is_offered(&app, &osrm).await;
}

/// With both drivers online, an accepted order at [`PICKUP`] is offered to the one nearer by
/// road only, and the offer carries OSRM's travel time from that driver and the kitchen's
/// address.
async fn road_winner_is_offered(app: &TestApp, osrm: &OsrmServer) {
    let mut by_air = app.driver_at(NEAR_BY_AIR).await;
    let mut by_road = app.driver_at(NEAR_BY_ROAD).await;
    let order = accepted_order(app).await;
    let offer = next_offer(&mut by_road, PROMPTLY)
        .await
        .expect("the driver nearer by road is offered the order");
    assert_eq!(offer.order_id, order.id);
    assert_no_offer(&mut by_air).await;
    let road = osrm_route_secs(osrm, NEAR_BY_ROAD, PICKUP).await;
    let eta = offer
        .pickup_eta_seconds
        .expect("the offer carries its pickup ETA");
    assert!(
        (eta - road).abs() <= 2.0,
        "offer says {eta} s, OSRM {road} s"
    );
    assert_eq!(offer.pickup_address, "1 Kitchen Street");
}

#[actix_web::test]
async fn by_the_straight_line_the_driver_nearer_by_air_would_have_won() {
    // The control for the test above: the same places without OSRM.
    let app = helsinki_app(Db::Sqlite, None).await;
    let mut by_air = app.driver_at(NEAR_BY_AIR).await;
    let mut by_road = app.driver_at(NEAR_BY_ROAD).await;
    accepted_order(&app).await;
    next_offer(&mut by_air, PROMPTLY)
        .await
        .expect("by the straight line, the driver nearer by air is offered the order");
    assert_no_offer(&mut by_road).await;
}

#[actix_web::test]
async fn the_tracking_eta_is_osrms_route_duration_and_the_route_is_shown() {
    let osrm = OsrmServer::start();
    let app = helsinki_app(Db::Postgres, Some(&osrm.url)).await;
    let mut driver = app.driver_at(NEAR_BY_ROAD).await;
    let order = accepted_order(&app).await;
    let offer = next_offer(&mut driver, PROMPTLY).await.expect("offered");
    app.engine
        .execute(AnswerOffer {
            driver: driver.id,
            offer_id: offer.offer_id,
            accept: true,
        })
        .await
        .expect("accepted");
    let (_, mut tracker) = app
        .engine
        .subscribe(SubscribeOrder::new(order.id))
        .await
        .unwrap();
    let fix = || DriverLocation {
        driver: driver.id,
        lat: NEAR_BY_ROAD.lat,
        lon: NEAR_BY_ROAD.lon,
        ts_ms: None,
    };
    app.engine.execute(fix()).await.unwrap();
    // The first fix of a leg routes it: the route frame follows.
    let route = loop {
        match tokio::time::timeout(PROMPTLY, tracker.recv()).await {
            Ok(Some(OrderFeed::Route(route))) => break *route,
            Ok(Some(_)) => continue,
            other => panic!("no route frame: {other:?}"),
        }
    };
    assert_eq!(route.leg, LegKind::ToPickup);
    assert!(route.by_road);
    assert!(route.points.len() > 2, "a road route bends: {route:?}");
    let to_pickup = osrm_route_secs(&osrm, NEAR_BY_ROAD, PICKUP).await;
    assert!(
        (route.duration_secs - to_pickup).abs() < 1.0,
        "{route:?} vs {to_pickup}"
    );
    // From now on the ETA follows the routed leg, then the delivery leg.
    app.engine.execute(fix()).await.unwrap();
    let eta = loop {
        match tokio::time::timeout(PROMPTLY, tracker.recv()).await {
            Ok(Some(OrderFeed::DriverLocation { eta_seconds, .. })) => break eta_seconds,
            Ok(Some(_)) => continue,
            other => panic!("no location frame: {other:?}"),
        }
    };
    let dropoff = app.engine.order(order.id).await.unwrap().dropoff;
    let expected = to_pickup + osrm_route_secs(&osrm, PICKUP, dropoff).await;
    assert!(
        (eta - expected).abs() <= 2.0,
        "ETA {eta} s, OSRM says {expected} s"
    );

    // The pickup ends the first leg: its prediction is compared with what happened (the
    // error is measured; a leg this short is too fast to teach the correction anything).
    let merchant_id = order.merchant_id;
    app.engine
        .execute(MerchantReady {
            merchant_id,
            order_id: order.id,
        })
        .await
        .unwrap();
    app.engine
        .execute(PickedUp {
            driver: driver.id,
            order_id: order.id,
        })
        .await
        .unwrap();
    let metrics = app.get("/metrics").await.text;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("eta_abs_error_seconds_count{leg=\"pickup\"} 1")),
        "the pickup leg's ETA error is measured"
    );
}

#[actix_web::test]
async fn with_osrm_killed_dispatch_goes_on_by_the_straight_line_and_ready_says_degraded() {
    let mut osrm = OsrmServer::start();
    let app = helsinki_app(Db::Postgres, Some(&osrm.url)).await;
    let ready = app.get("/ready").await.body;
    assert_eq!(ready["checks"]["maps"], "ok", "{ready}");
    osrm.kill();
    let mut by_air = app.driver_at(NEAR_BY_AIR).await;
    let order = accepted_order(&app).await;
    let offer = next_offer(&mut by_air, PROMPTLY)
        .await
        .expect("dispatch goes on without OSRM");
    assert_eq!(offer.order_id, order.id);
    let response = app.get("/ready").await;
    assert_eq!(response.status, 200, "the maps never fail readiness");
    let ready = response.body;
    let maps = ready["checks"]["maps"].as_str().unwrap_or_default();
    assert!(maps.starts_with("degraded"), "{ready}");
    let metrics = app.get("/metrics").await.text;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("maps_fallbacks_total{") && !l.ends_with(" 0")),
        "the fall-back is counted"
    );
    let view = app.engine.order(order.id).await.unwrap();
    assert_eq!(view.status, OrderStatus::Accepted);
}
