//! Benchmarks the maps service's travel-time calls against a real osrm-routed on the Helsinki
//! graph (started here as the tests start it, on a free loopback port): the 1×10 table dispatch
//! asks for (a pickup and 10 drivers in central Helsinki), one route, and the straight-line
//! table they replace. Prints p50/p90/p99 of the 1×10 table timed call by call, as
//! docs/performance.md states it.
//!
//! Needs `scripts/osrm.sh install && scripts/osrm.sh prepare` (MEALKITZ_TEST_OSRM_HOME, default
//! ~/.cache/mealkitz/osrm); without them only the straight-line table is measured.
//!
//! Run with `cargo bench --bench maps`.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use mealkitz::geo::LatLon;
use mealkitz::maps::Maps;
use mealkitz::maps::osrm::Osrm;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

#[path = "../tests/api/osrm_support.rs"]
mod osrm_support;

use osrm_support::{OsrmServer, find_binary_and_graph, points};

const DRIVERS: usize = 10;
/// The straight line's speed, as the engine's default.
const STRAIGHT_SPEED_KMH: f64 = 25.0;
/// Far above a local call's latency, so that a slow call is measured rather than cut off.
const DEADLINE_MS: u64 = 1_000;
/// Calls timed one by one for the percentiles.
const TIMED_CALLS: usize = 2_000;
/// Central Helsinki, inside the extract (data/helsinki/README.md).
const SOUTH_LAT_DEG: f64 = 60.164;
const NORTH_LAT_DEG: f64 = 60.176;
const WEST_LON_DEG: f64 = 24.936;
const EAST_LON_DEG: f64 = 24.952;

/// 10 driver positions, the same on every run.
fn drivers() -> Vec<LatLon> {
    let mut rng = StdRng::seed_from_u64(15);
    (0..DRIVERS)
        .map(|_| {
            LatLon::new(
                rng.random_range(SOUTH_LAT_DEG..NORTH_LAT_DEG),
                rng.random_range(WEST_LON_DEG..EAST_LON_DEG),
            )
            .expect("inside Helsinki")
        })
        .collect()
}

fn maps(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let pickup = points::esplanadi();
    let drivers = drivers();
    let straight = Maps::straight_line(STRAIGHT_SPEED_KMH);

    c.bench_function("straight_table_1x10", |b| {
        b.iter(|| straight.straight_table(black_box(&[pickup]), black_box(&drivers)))
    });

    let server = match find_binary_and_graph() {
        Ok(_) => OsrmServer::start(),
        Err(missing) => {
            println!(
                "SKIPPED the OSRM benchmarks: {missing} (scripts/osrm.sh install && \
                 scripts/osrm.sh prepare)"
            );
            return;
        }
    };
    let osrm = Osrm::new(&server.url, Duration::from_millis(DEADLINE_MS)).expect("OSRM client");
    let cells = runtime
        .block_on(osrm.table(&[pickup], &drivers))
        .expect("osrm-routed answers the 1×10 table");
    let unroutable = cells[0].iter().filter(|c| c.is_none()).count();
    println!(
        "1×10 table from {pickup:?}: {:?} s ({unroutable} cells without a road route)",
        cells[0]
    );

    c.bench_function("osrm_table_1x10", |b| {
        b.iter(|| {
            runtime
                .block_on(osrm.table(black_box(&[pickup]), black_box(&drivers)))
                .expect("table")
        })
    });
    let route_points = [points::kamppi(), points::kasarmikatu()];
    c.bench_function("osrm_route", |b| {
        b.iter(|| {
            runtime
                .block_on(osrm.route(black_box(&route_points)))
                .expect("route")
        })
    });
    let with_osrm = Maps::straight_line(STRAIGHT_SPEED_KMH)
        .with_osrm(Osrm::new(&server.url, Duration::from_millis(DEADLINE_MS)).expect("client"));
    c.bench_function("maps_table_1x10_via_osrm", |b| {
        b.iter(|| {
            let table =
                runtime.block_on(with_osrm.table(black_box(&[pickup]), black_box(&drivers)));
            assert!(table.by_road);
            table
        })
    });

    let mut samples_us: Vec<f64> = (0..TIMED_CALLS)
        .map(|_| {
            let started = Instant::now();
            runtime
                .block_on(osrm.table(&[pickup], &drivers))
                .expect("table");
            started.elapsed().as_secs_f64() * 1e6
        })
        .collect();
    samples_us.sort_by(f64::total_cmp);
    let at = |q: f64| samples_us[((samples_us.len() - 1) as f64 * q) as usize];
    println!(
        "osrm_table_1x10, {TIMED_CALLS} calls one by one: p50 {:.0} µs, p90 {:.0} µs, \
         p99 {:.0} µs, max {:.0} µs",
        at(0.50),
        at(0.90),
        at(0.99),
        at(1.0)
    );
    drop(server);
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .measurement_time(Duration::from_secs(5))
        .warm_up_time(Duration::from_secs(1));
    targets = maps
}
criterion_main!(benches);
