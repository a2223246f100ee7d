//! Benchmarks the driver index's hot path: a GPS update (move one driver a few metres) and a
//! dispatch query (10 nearest within 3 km), with drivers spread over the demo city.
//!
//! Run with `cargo bench --bench driver_index`.

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use mealkitz::geo::region::{DEMO_CITY_CENTRE_LAT_DEG, DEMO_CITY_CENTRE_LON_DEG, DEMO_CITY_SIDE_M};
use mealkitz::geo::{DriverIndex, LatLon, LocalProjection};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use uuid::Uuid;

const DRIVER_COUNTS: [usize; 2] = [10_000, 100_000];
/// Drivers wander within this radius of a home point, so consecutive positions of one driver
/// are at most 50 m apart: a GPS ping every few seconds.
const JITTER_RADIUS_M: f64 = 25.0;
const SEARCH_RADIUS_M: f64 = 3_000.0;
const NEIGHBOURS: usize = 10;
/// Pre-generated moves and queries, cycled through; a power of two for a cheap wrap.
const PREGENERATED: usize = 1 << 16;

fn centre() -> LatLon {
    LatLon::new(DEMO_CITY_CENTRE_LAT_DEG, DEMO_CITY_CENTRE_LON_DEG).expect("demo centre is valid")
}

/// A uniform point in the demo city's 30 km square, in the centre's planar metres.
fn random_xy(rng: &mut StdRng) -> [f64; 2] {
    let half_m = DEMO_CITY_SIDE_M / 2.0;
    [
        rng.random_range(-half_m..=half_m),
        rng.random_range(-half_m..=half_m),
    ]
}

struct Fixture {
    index: DriverIndex<Uuid>,
    moves: Vec<(Uuid, LatLon)>,
    queries: Vec<LatLon>,
}

fn fixture(n: usize) -> Fixture {
    let projection = LocalProjection::new(centre());
    let mut rng = StdRng::seed_from_u64(n as u64);
    let drivers: Vec<(Uuid, [f64; 2])> = (0..n)
        .map(|_| (Uuid::from_u128(rng.random()), random_xy(&mut rng)))
        .collect();
    // Built by upserts, as a live index is, rather than bulk loaded.
    let mut index = DriverIndex::new(projection);
    for &(key, xy) in &drivers {
        index.upsert(key, projection.to_latlon(xy));
    }
    let moves = (0..PREGENERATED)
        .map(|_| {
            let (key, [x, y]) = drivers[rng.random_range(0..n)];
            let angle = rng.random_range(0.0..std::f64::consts::TAU);
            let r = JITTER_RADIUS_M * rng.random::<f64>().sqrt();
            (
                key,
                projection.to_latlon([x + r * angle.cos(), y + r * angle.sin()]),
            )
        })
        .collect();
    let queries = (0..PREGENERATED)
        .map(|_| projection.to_latlon(random_xy(&mut rng)))
        .collect();
    Fixture {
        index,
        moves,
        queries,
    }
}

fn driver_index(c: &mut Criterion) {
    let fixtures: Vec<(usize, Fixture)> = DRIVER_COUNTS.iter().map(|&n| (n, fixture(n))).collect();

    let mut update = c.benchmark_group("update");
    for (n, fx) in &fixtures {
        let mut index = fx.index.clone();
        update.bench_function(BenchmarkId::from_parameter(n), |b| {
            let mut i = 0;
            b.iter(|| {
                let (key, p) = fx.moves[i & (PREGENERATED - 1)];
                i += 1;
                index.upsert(black_box(key), black_box(p));
            });
        });
        assert_eq!(index.len(), *n);
    }
    update.finish();

    let mut query = c.benchmark_group("query_k10_3km");
    for (n, fx) in &fixtures {
        query.bench_function(BenchmarkId::from_parameter(n), |b| {
            let mut i = 0;
            b.iter(|| {
                let p = fx.queries[i & (PREGENERATED - 1)];
                i += 1;
                fx.index
                    .nearest_within(black_box(p), NEIGHBOURS, SEARCH_RADIUS_M, |_| false)
            });
        });
    }
    query.finish();

    for (n, fx) in &fixtures {
        print_percentiles(*n, fx);
    }
}

/// Criterion reports the mean of many iterations; the goals are stated as a per-operation
/// median, so also time each operation alone and print its percentiles.
fn print_percentiles(n: usize, fx: &Fixture) {
    fn percentiles(mut samples_ns: Vec<u64>) -> (u64, u64, u64) {
        samples_ns.sort_unstable();
        let at = |q: f64| samples_ns[((samples_ns.len() - 1) as f64 * q) as usize];
        (at(0.50), at(0.90), at(0.99))
    }
    let mut index = fx.index.clone();
    let moves: Vec<u64> = fx
        .moves
        .iter()
        .map(|&(key, p)| {
            let started = std::time::Instant::now();
            index.upsert(black_box(key), black_box(p));
            started.elapsed().as_nanos() as u64
        })
        .collect();
    let queries: Vec<u64> = fx
        .queries
        .iter()
        .map(|&p| {
            let started = std::time::Instant::now();
            black_box(index.nearest_within(black_box(p), NEIGHBOURS, SEARCH_RADIUS_M, |_| false));
            started.elapsed().as_nanos() as u64
        })
        .collect();
    let (u50, u90, u99) = percentiles(moves);
    let (q50, q90, q99) = percentiles(queries);
    println!(
        "per-operation, {n} drivers ({PREGENERATED} each): update p50 {u50} ns p90 {u90} ns p99 {u99} ns; \
         query k=10 within 3 km p50 {q50} ns p90 {q90} ns p99 {q99} ns"
    );
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(50)
        .warm_up_time(Duration::from_secs(2))
        .measurement_time(Duration::from_secs(5));
    targets = driver_index
}
criterion_main!(benches);
