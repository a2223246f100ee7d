//! The OSRM client (`mealkitz::maps::osrm`) against a real osrm-routed on the Helsinki graph:
//! tables agree with routes, routes follow the roads, and every way OSRM can fail — a dead port,
//! a server that never answers, a server killed and brought back — answers within the deadline
//! and moves the breaker and the health as documented.

use std::time::{Duration, Instant};

use mealkitz::geo::{LatLon, haversine_m};
use mealkitz::maps::breaker::FAILURES_TO_OPEN;
use mealkitz::maps::osrm::{Osrm, OsrmError};
use mealkitz::maps::{Health, Maps};

use crate::osrm_support::{OsrmServer, free_port, points};

/// Generous for a loaded test machine; the real calls take about a millisecond.
const DEADLINE_MS: u64 = 2_000;
/// How much later than its deadline a timed-out call may return.
const TIMEOUT_SLACK_MS: u64 = 250;

fn client(url: &str) -> Osrm {
    Osrm::new(url, Duration::from_millis(DEADLINE_MS)).unwrap()
}

#[actix_web::test]
async fn a_one_to_three_table_agrees_with_the_three_routes() {
    let server = OsrmServer::start();
    let osrm = client(&server.url);
    let from = points::kamppi();
    let to = [
        points::kasarmikatu(),
        points::esplanadi(),
        points::bulevardi(),
    ];
    let table = osrm.table(&[from], &to).await.unwrap();
    assert_eq!(table.len(), 1);
    assert_eq!(table[0].len(), 3);
    for (cell, destination) in table[0].iter().zip(to) {
        let secs = cell.expect("the Helsinki graph connects these points");
        let route = osrm.route(&[from, destination]).await.unwrap();
        assert!(
            (secs - route.duration_secs).abs() <= 1.0,
            "table {secs} s, route {} s to {destination:?}",
            route.duration_secs
        );
        // Slower than the crow flies at 50 km/h, as city driving is.
        let straight_at_50_kmh = haversine_m(from, destination) / (50.0 / 3.6);
        assert!(
            secs > straight_at_50_kmh,
            "{secs} s vs {straight_at_50_kmh} s"
        );
    }
    assert_eq!(osrm.health(), Health::Ok);
}

#[actix_web::test]
async fn a_many_to_many_table_has_a_row_per_source_and_zero_on_the_diagonal() {
    let server = OsrmServer::start();
    let osrm = client(&server.url);
    let all = [points::kamppi(), points::kasarmikatu(), points::mikonkatu()];
    let table = osrm.table(&all, &all).await.unwrap();
    assert_eq!(table.len(), 3);
    for (i, row) in table.iter().enumerate() {
        assert_eq!(row.len(), 3);
        assert_eq!(row[i], Some(0.0), "row {i}: {row:?}");
        assert!(row.iter().all(|c| c.is_some()), "{row:?}");
    }
}

#[actix_web::test]
async fn a_route_follows_the_roads_from_near_its_first_point_to_near_its_last() {
    let server = OsrmServer::start();
    let osrm = client(&server.url);
    let (from, to) = (points::kamppi(), points::kasarmikatu());
    let route = osrm.route(&[from, to]).await.unwrap();
    assert!(route.by_road);
    assert!(route.geometry.len() > 10, "{} points", route.geometry.len());
    let first = route.geometry[0];
    let last = *route.geometry.last().unwrap();
    assert!(haversine_m(first, from) < 50.0, "starts at {first:?}");
    assert!(haversine_m(last, to) < 50.0, "ends at {last:?}");
    let along: f64 = route
        .geometry
        .windows(2)
        .map(|w| haversine_m(w[0], w[1]))
        .sum();
    assert!(
        (along - route.distance_m).abs() < route.distance_m * 0.05,
        "the line is {along} m, OSRM says {} m",
        route.distance_m
    );
    assert!(route.distance_m > haversine_m(from, to));
}

#[actix_web::test]
async fn no_route_between_unconnected_points_is_refused_and_osrm_stays_healthy() {
    let server = OsrmServer::start();
    let osrm = client(&server.url);
    // The first snaps to a road the car graph cannot leave toward the second.
    let a = LatLon::new(60.172, 24.94).unwrap();
    let b = LatLon::new(60.166, 24.95).unwrap();
    for _ in 0..FAILURES_TO_OPEN + 1 {
        assert_eq!(
            osrm.route(&[a, b]).await,
            Err(OsrmError::Refused("NoRoute".to_owned()))
        );
    }
    assert_eq!(osrm.health(), Health::Ok);
    assert!(osrm.route(&[points::kamppi(), b]).await.is_ok());
}

#[actix_web::test]
async fn a_dead_port_is_unreachable_at_once() {
    let osrm = client(&format!("http://127.0.0.1:{}", free_port()));
    let started = Instant::now();
    let error = osrm
        .table(&[points::kamppi()], &[points::kasarmikatu()])
        .await
        .unwrap_err();
    let took = started.elapsed();
    assert!(matches!(error, OsrmError::Unreachable(_)), "{error:?}");
    assert!(took < Duration::from_millis(200), "{took:?}");
    assert_eq!(error.kind(), "unreachable");
    match osrm.health() {
        Health::Degraded(why) => {
            assert!(why.contains("not reachable"), "{why}");
            // /ready shows it: no coordinates in it.
            assert!(!why.contains("60.17") && !why.contains("/table/"), "{why}");
        }
        other => panic!("expected degraded, got {other:?}"),
    }
}

#[actix_web::test]
async fn a_server_that_never_answers_times_out_at_the_deadline() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    // Accepts and reads nothing, answers nothing, keeps every connection open.
    actix_web::rt::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let deadline = Duration::from_millis(300);
    let osrm = Osrm::new(&url, deadline).unwrap();
    for call in ["table", "route"] {
        let started = Instant::now();
        let error = if call == "table" {
            osrm.table(&[points::kamppi()], &[points::kasarmikatu()])
                .await
                .unwrap_err()
        } else {
            osrm.route(&[points::kamppi(), points::kasarmikatu()])
                .await
                .unwrap_err()
        };
        let took = started.elapsed();
        assert_eq!(error, OsrmError::Timeout, "{call}");
        assert!(took >= deadline, "{call} gave up early: {took:?}");
        assert!(
            took < deadline + Duration::from_millis(TIMEOUT_SLACK_MS),
            "{call} took {took:?}"
        );
    }
    assert!(matches!(osrm.health(), Health::Degraded(why) if why.contains("deadline")));
}

#[actix_web::test]
async fn osrm_killed_opens_the_breaker_and_a_probe_closes_it_once_osrm_is_back() {
    let mut server = OsrmServer::start();
    let port = server.port;
    let osrm = client(&server.url);
    let (from, to) = (points::kamppi(), points::kasarmikatu());
    assert!(matches!(osrm.probe().await, Health::Ok));
    assert!(osrm.table(&[from], &[to]).await.is_ok());

    server.kill();
    for attempt in 0..FAILURES_TO_OPEN {
        let error = osrm.table(&[from], &[to]).await.unwrap_err();
        assert!(
            matches!(error, OsrmError::Unreachable(_)),
            "attempt {attempt}: {error:?}"
        );
    }
    let started = Instant::now();
    assert_eq!(osrm.route(&[from, to]).await, Err(OsrmError::BreakerOpen));
    assert!(started.elapsed() < Duration::from_millis(10));
    match osrm.health() {
        Health::Degraded(why) => assert!(why.contains("circuit breaker open"), "{why}"),
        other => panic!("expected degraded, got {other:?}"),
    }
    // A probe while OSRM is still down keeps it open.
    assert!(matches!(osrm.probe().await, Health::Degraded(_)));

    let _back = OsrmServer::start_on(port);
    assert_eq!(osrm.probe().await, Health::Ok);
    assert!(osrm.table(&[from], &[to]).await.unwrap()[0][0].is_some());
}

#[actix_web::test]
async fn maps_answers_by_road_while_osrm_runs_and_by_straight_line_once_it_is_killed() {
    let mut server = OsrmServer::start();
    let maps = Maps::straight_line(25.0).with_osrm(client(&server.url));
    let (from, to) = (points::kamppi(), points::kasarmikatu());
    let road = maps.table(&[from], &[to, points::esplanadi()]).await;
    assert!(road.by_road);
    let route = maps.route(&[from, to]).await;
    assert!(route.by_road);
    assert!((road.secs[0][0] - route.duration_secs).abs() <= 1.0);

    server.kill();
    let started = Instant::now();
    let straight = maps.table(&[from], &[to, points::esplanadi()]).await;
    assert!(started.elapsed() < Duration::from_millis(200));
    assert!(!straight.by_road);
    assert_eq!(
        straight,
        maps.straight_table(&[from], &[to, points::esplanadi()])
    );
    assert!(!maps.route(&[from, to]).await.by_road);
    assert!(matches!(maps.health(), Health::Degraded(_)));
}
