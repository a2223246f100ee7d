//! Benchmarks the offline map on the Helsinki extract (OpenStreetMap contributors, ODbL):
//! reading it, forward geocoding as people type (exact, a typo, an unfinished word, one letter),
//! reverse geocoding, and the streets of a box. The goal is a geocode well under 20 ms.
//!
//! Run with `cargo bench --bench geocode`.

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use mealkitz::geo::LatLon;
use mealkitz::maps::geocoder::EntryKind;
use mealkitz::maps::offline::OfflineMap;

fn extract() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("data/helsinki/Helsinki.osm.pbf")
}

fn at(lat: f64, lon: f64) -> LatLon {
    LatLon::new(lat, lon).expect("a valid point")
}

/// Every address of the extract typed three ways: lower case without `ä ö å`, with the
/// street's fourth letter dropped, and as the street's first six letters.
fn typed_queries(map: &OfflineMap) -> Vec<String> {
    let mut queries = Vec::new();
    for entry in map.gazetteer.entries() {
        let (EntryKind::Address, Some(number)) = (entry.kind, &entry.housenumber) else {
            continue;
        };
        let plain: String = entry
            .name
            .to_lowercase()
            .chars()
            .map(|c| match c {
                'ä' | 'å' => 'a',
                'ö' => 'o',
                other => other,
            })
            .collect();
        let chars: Vec<char> = plain.chars().collect();
        let typo: String = chars
            .iter()
            .enumerate()
            .filter(|&(i, _)| i != 3)
            .map(|(_, c)| c)
            .collect();
        let start: String = chars.iter().take(6).collect();
        queries.push(format!("{plain} {number}"));
        queries.push(format!("{typo} {number}"));
        queries.push(start);
    }
    queries
}

fn geocode(c: &mut Criterion) {
    let started = Instant::now();
    let map = OfflineMap::load(&extract()).expect("the Helsinki extract reads");
    println!(
        "loaded {} entries and {} streets in {} ms",
        map.gazetteer.len(),
        map.streets.len(),
        started.elapsed().as_millis()
    );
    let gazetteer = &map.gazetteer;
    let near = at(60.1699, 24.9384);

    let mut search = c.benchmark_group("geocode");
    for (name, query) in [
        ("exact_number", "Mannerheimintie 5"),
        ("with_city", "aleksanterinkatu 52, helsinki"),
        ("typo", "aleksanterinktu 52"),
        ("unfinished", "mannerh"),
        ("one_letter", "k"),
    ] {
        search.bench_function(name, |b| {
            b.iter(|| black_box(gazetteer.search(black_box(query), Some(near), 10)))
        });
    }
    search.finish();

    c.bench_function("reverse", |b| {
        b.iter(|| black_box(gazetteer.nearest(black_box(at(60.16868, 24.94190)))))
    });
    c.bench_function("streets_whole_extract", |b| {
        b.iter(|| black_box(map.streets.within(at(60.16, 24.93), at(60.18, 24.96))))
    });
    let mut load = c.benchmark_group("load");
    load.sample_size(10);
    load.bench_function("helsinki_extract", |b| {
        b.iter(|| black_box(OfflineMap::load(&extract()).expect("reads")))
    });
    load.finish();

    print_percentiles(&map);
}

/// Criterion reports means of repeated queries; a user types many different ones, so also time
/// each typed query of the whole extract once and print the percentiles.
fn print_percentiles(map: &OfflineMap) {
    let queries = typed_queries(map);
    let mut samples_ns: Vec<u64> = queries
        .iter()
        .map(|q| {
            let started = Instant::now();
            black_box(map.gazetteer.search(black_box(q), None, 10));
            started.elapsed().as_nanos() as u64
        })
        .collect();
    samples_ns.sort_unstable();
    let pick = |q: f64| samples_ns[((samples_ns.len() - 1) as f64 * q) as usize];
    println!(
        "{} typed queries (every address exact, with a typo, unfinished): p50 {} µs p90 {} µs \
         p99 {} µs max {} µs",
        samples_ns.len(),
        pick(0.50) / 1_000,
        pick(0.90) / 1_000,
        pick(0.99) / 1_000,
        pick(1.0) / 1_000,
    );
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(50)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = geocode
}
criterion_main!(benches);
