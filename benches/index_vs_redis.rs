//! The driver index against Redis GEO on the same data: 100k drivers spread uniformly over the
//! demo city's 30 km square, "10 nearest within 3 km" queries and GPS moves of a few metres,
//! both measured by this one program on this machine.
//!
//! ```sh
//! cargo bench --bench index_vs_redis                     # 100,000 drivers, 10 s windows
//! INDEX_VS_REDIS_DRIVERS=10000 INDEX_VS_REDIS_SECS=5 cargo bench --bench index_vs_redis
//! REDIS_URL=redis://127.0.0.1:6380 cargo bench --bench index_vs_redis
//! ```
//!
//! Redis is reached at `REDIS_URL` (default redis://127.0.0.1:6379). The run writes one sorted
//! set under a fresh `mealkitz:bench:index_vs_redis:<uuid>:drivers` key, deletes it at the end,
//! and gives it a TTL in case the run dies half-way.
//!
//! What is measured:
//! - our index, single thread, in process: building it by upserts; query throughput and
//!   per-query p50/p99; move throughput and per-move p50/p99;
//! - Redis: loading by pipelined GEOADD; GEOSEARCH from one client (latency) and from 50
//!   concurrent clients (saturated throughput); GEOADD moves from 50 unpipelined clients, and
//!   pipelined (1 and 4 connections, the best reported).
//!
//! Before timing anything, both answer the same query points and their answers are compared.
//! They can legitimately differ only at the boundary: Redis stores positions as 52-bit geohashes
//! (within ~0.3 m) and measures with a slightly different Earth radius, so a driver tied with
//! the 10th, or at 3 km to within a metre, may be in one answer and not the other.

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use mealkitz::geo::region::{DEMO_CITY_CENTRE_LAT_DEG, DEMO_CITY_CENTRE_LON_DEG, DEMO_CITY_SIDE_M};
use mealkitz::geo::{DriverIndex, LatLon, LocalProjection, haversine_m};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use redis::AsyncConnectionConfig;
use redis::aio::MultiplexedConnection;
use uuid::Uuid;

const DEFAULT_DRIVERS: usize = 100_000;
const DEFAULT_WINDOW_SECS: usize = 10;
const SEED: u64 = 0x1D3_7EDD;
const NEIGHBOURS: usize = 10;
const SEARCH_RADIUS_M: f64 = 3_000.0;
/// Drivers wander within this radius of a home point, so consecutive positions of one driver
/// are at most ~50 m apart: a GPS ping every few seconds (as in benches/driver_index.rs).
const JITTER_RADIUS_M: f64 = 25.0;
/// Pre-generated query points, cycled through; the first ones are also the correctness check's.
const QUERY_POINTS: usize = 1 << 16;
/// Pre-generated moves, cycled through. Every other pass over the list is shifted north by
/// [`PASS_SHIFT_DEG`], so a driver with a single move in the list still gets a different
/// position each pass: an unchanged position would be a near no-op for both systems and
/// flatter them.
const MOVES: usize = 1 << 20;
/// About 1.1 m: more than a geohash cell, so Redis sees a change too.
const PASS_SHIFT_DEG: f64 = 1e-5;
/// Per-operation samples for the in-process percentiles.
const TIMED_SAMPLES: usize = 1 << 16;
/// How often the in-process throughput loops look at the clock.
const CLOCK_CHECK_EVERY: usize = 1_024;
/// Queries the single sequential Redis client sends at most (for its latency percentiles); it
/// also stops when the window ends, as one GEOSEARCH over 3 km can take milliseconds.
const SEQUENTIAL_QUERIES: usize = 20_000;
/// Points on which both answers are compared.
const CHECK_POINTS: usize = 1_000;
/// A driver in one answer but not the other is a tie, not an error, when it is this close to
/// the 10th answer's distance or to the radius (see the module docs).
const TIE_TOLERANCE_M: f64 = 2.0;
const CONCURRENT_CLIENTS: usize = 50;
const PIPELINE_COMMANDS: usize = 1_000;
const PIPELINED_CONNECTIONS: [usize; 2] = [1, 4];
/// Safety net: a run that panics half-way cannot delete its key, so the key expires on its own.
const KEY_TTL_SECS: i64 = 3_600;
/// The redis crate gives up on a reply after 500 ms by default; with 50 clients and Redis
/// sharing two cores, a reply can queue longer than that without anything being wrong.
const RESPONSE_TIMEOUT_SECS: u64 = 30;
/// Above this much background load (% of all cores) before the run, the tool warns.
const IDLE_BUSY_WARN_PERCENT: f64 = 10.0;
/// Linux reports process CPU in clock ticks of 1/100 s.
const CLOCK_TICKS_PER_SEC: f64 = 100.0;

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.rsplit(')').next()?.split_whitespace().collect();
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

/// The whole machine from /proc/stat: (busy, total) ticks over all cores.
fn machine_ticks() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let fields: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    let at = |i: usize| fields.get(i).copied().unwrap_or(0);
    // user nice system idle iowait irq softirq steal.
    let total: u64 = (0..8).map(at).sum();
    (total - at(3) - at(4), total)
}

/// How busy the machine is (% of all cores) over `sample`: load from other processes takes
/// cores from both systems and skews the comparison.
fn busy_percent(sample: Duration) -> f64 {
    let (busy0, total0) = machine_ticks();
    std::thread::sleep(sample);
    let (busy1, total1) = machine_ticks();
    (busy1 - busy0) as f64 / (total1 - total0).max(1) as f64 * 100.0
}

/// CPU of this process, of Redis (when it runs on this machine) and of the whole machine over
/// one phase.
#[derive(Clone, Copy)]
struct CpuWatch {
    redis_pid: Option<u32>,
    started: Instant,
    ours: Option<u64>,
    redis: Option<u64>,
    machine_busy: u64,
}

impl CpuWatch {
    fn start(redis_pid: Option<u32>) -> CpuWatch {
        CpuWatch {
            redis_pid,
            started: Instant::now(),
            ours: cpu_ticks(std::process::id()),
            redis: redis_pid.and_then(cpu_ticks),
            machine_busy: machine_ticks().0,
        }
    }

    /// "Redis X %, this process Y %, everything else Z % (of one core)" since `start`.
    fn report(&self) -> String {
        let secs = self.started.elapsed().as_secs_f64();
        let used = |before: Option<u64>, pid: Option<u32>| Some(pid.and_then(cpu_ticks)? - before?);
        let percent = |ticks: u64| ticks as f64 / CLOCK_TICKS_PER_SEC / secs * 100.0;
        let redis = used(self.redis, self.redis_pid);
        let ours = used(self.ours, Some(std::process::id()));
        // Kernel work charged to no process (loopback softirqs) and any other process.
        let other = machine_ticks().0 - self.machine_busy;
        let other = other.saturating_sub(redis.unwrap_or(0) + ours.unwrap_or(0));
        format!(
            "CPU: Redis {}, this process {:.0} %, everything else {:.0} % (of one core)",
            redis.map_or("n/a".to_owned(), |t| format!("{:.0} %", percent(t))),
            percent(ours.unwrap_or(0)),
            percent(other)
        )
    }
}

/// A duration in ns as µs, or as ms once that reads better.
fn fmt_ns(ns: u64) -> String {
    if ns >= 10_000_000 {
        format!("{:.1} ms", ns as f64 / 1e6)
    } else if ns >= 10_000 {
        format!("{:.0} µs", ns as f64 / 1e3)
    } else {
        format!("{:.2} µs", ns as f64 / 1e3)
    }
}

/// p50 and p99 of samples, in the samples' unit.
fn p50_p99(mut samples: Vec<u64>) -> (u64, u64) {
    if samples.is_empty() {
        return (0, 0);
    }
    samples.sort_unstable();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q) as usize];
    (at(0.50), at(0.99))
}

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

/// The same drivers, moves and query points for both systems.
struct Data {
    ids: Vec<Uuid>,
    /// Redis members: the ids as text, formatted once so that formatting is not timed.
    members: Vec<String>,
    start: Vec<LatLon>,
    /// (driver index, new location).
    moves: Vec<(usize, LatLon)>,
    queries: Vec<LatLon>,
}

impl Data {
    fn generate(drivers: usize) -> Data {
        let projection = LocalProjection::new(centre());
        let mut rng = StdRng::seed_from_u64(SEED);
        let ids: Vec<Uuid> = (0..drivers)
            .map(|_| Uuid::from_u128(rng.random()))
            .collect();
        let homes: Vec<[f64; 2]> = (0..drivers).map(|_| random_xy(&mut rng)).collect();
        let moves = (0..MOVES)
            .map(|_| {
                let driver = rng.random_range(0..drivers);
                let [x, y] = homes[driver];
                let angle = rng.random_range(0.0..std::f64::consts::TAU);
                let r = JITTER_RADIUS_M * rng.random::<f64>().sqrt();
                (
                    driver,
                    projection.to_latlon([x + r * angle.cos(), y + r * angle.sin()]),
                )
            })
            .collect();
        let queries = (0..QUERY_POINTS)
            .map(|_| projection.to_latlon(random_xy(&mut rng)))
            .collect();
        Data {
            members: ids.iter().map(Uuid::to_string).collect(),
            ids,
            start: homes.iter().map(|&xy| projection.to_latlon(xy)).collect(),
            moves,
            queries,
        }
    }

    /// The `i`-th move of the endless sequence (see [`MOVES`]).
    fn move_at(&self, i: usize) -> (usize, LatLon) {
        let (driver, mut p) = self.moves[i % MOVES];
        if (i / MOVES) % 2 == 1 {
            p.lat += PASS_SHIFT_DEG;
        }
        (driver, p)
    }

    fn query_at(&self, i: usize) -> LatLon {
        self.queries[i % QUERY_POINTS]
    }
}

/// Rate, p50 and p99 (ns) of one measured operation.
#[derive(Clone, Copy, Default)]
struct Figures {
    per_sec: f64,
    p50_ns: u64,
    p99_ns: u64,
}

struct IndexFigures {
    build_secs: f64,
    bulk_load_secs: f64,
    queries: Figures,
    updates: Figures,
}

/// Our index, single thread: throughput from an untimed loop over `window`, percentiles from a
/// separate pass that times each call (the clock costs ~2 × 20 ns, which would bias the rate).
fn measure_index(data: &Data, window: Duration) -> (DriverIndex<Uuid>, IndexFigures) {
    let projection = LocalProjection::new(centre());
    // Built by upserts, as a live index is; bulk loading is timed too, for reference.
    let started = Instant::now();
    let mut index = DriverIndex::new(projection);
    for (&id, &p) in data.ids.iter().zip(&data.start) {
        index.upsert(id, p);
    }
    let build_secs = started.elapsed().as_secs_f64();
    assert_eq!(index.len(), data.ids.len());
    let started = Instant::now();
    let bulk = DriverIndex::bulk_load(
        projection,
        data.ids.iter().copied().zip(data.start.iter().copied()),
    );
    let bulk_load_secs = started.elapsed().as_secs_f64();
    assert_eq!(bulk.len(), index.len());
    drop(bulk);

    let started = Instant::now();
    let mut done = 0;
    while started.elapsed() < window {
        for _ in 0..CLOCK_CHECK_EVERY {
            let p = data.query_at(done);
            done += 1;
            black_box(index.nearest_within(black_box(p), NEIGHBOURS, SEARCH_RADIUS_M, |_| false));
        }
    }
    let query_rate = done as f64 / started.elapsed().as_secs_f64();
    let samples = (0..TIMED_SAMPLES)
        .map(|i| {
            let p = data.query_at(i);
            let started = Instant::now();
            black_box(index.nearest_within(black_box(p), NEIGHBOURS, SEARCH_RADIUS_M, |_| false));
            started.elapsed().as_nanos() as u64
        })
        .collect();
    let (q50, q99) = p50_p99(samples);

    let mut next_move = 0;
    let started = Instant::now();
    while started.elapsed() < window {
        for _ in 0..CLOCK_CHECK_EVERY {
            let (driver, p) = data.move_at(next_move);
            next_move += 1;
            index.upsert(black_box(data.ids[driver]), black_box(p));
        }
    }
    let update_rate = next_move as f64 / started.elapsed().as_secs_f64();
    let samples = (0..TIMED_SAMPLES)
        .map(|_| {
            let (driver, p) = data.move_at(next_move);
            next_move += 1;
            let started = Instant::now();
            index.upsert(black_box(data.ids[driver]), black_box(p));
            started.elapsed().as_nanos() as u64
        })
        .collect();
    let (u50, u99) = p50_p99(samples);
    assert_eq!(index.len(), data.ids.len());

    // The comparison with Redis needs the drivers where Redis has them: back to the start.
    let index = DriverIndex::bulk_load(
        projection,
        data.ids.iter().copied().zip(data.start.iter().copied()),
    );
    (
        index,
        IndexFigures {
            build_secs,
            bulk_load_secs,
            queries: Figures {
                per_sec: query_rate,
                p50_ns: q50,
                p99_ns: q99,
            },
            updates: Figures {
                per_sec: update_rate,
                p50_ns: u50,
                p99_ns: u99,
            },
        },
    )
}

/// GPS updates/s as the engine absorbs them: one index per region of the demo city (each driver
/// in every region whose polygon plus 3 km band covers it), the regions split over two threads
/// as the region actors are (a region is one actor on its own event loop; the machine has two
/// cores). Each thread applies every move to the indexes of its regions that cover the new
/// position, and takes the driver out of those that no longer do.
fn measure_regional_updates(data: &Arc<Data>, window: Duration) -> f64 {
    const BAND_M: f64 = 3_000.0;
    const THREADS: usize = 2;
    let regions = Arc::new(mealkitz::geo::RegionMap::demo_city());
    let owned: Vec<Vec<usize>> = (0..THREADS)
        .map(|t| {
            (0..regions.regions().len())
                .filter(|r| r % THREADS == t)
                .collect()
        })
        .collect();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let barrier = Arc::new(std::sync::Barrier::new(THREADS + 1));
    let workers: Vec<_> = owned
        .into_iter()
        .map(|mine| {
            let (regions, stop, barrier) = (regions.clone(), stop.clone(), barrier.clone());
            let data = data.clone();
            std::thread::spawn(move || {
                let mut indexes: Vec<(usize, DriverIndex<Uuid>)> = mine
                    .iter()
                    .map(|&r| {
                        let region = &regions.regions()[r];
                        let members = data
                            .ids
                            .iter()
                            .zip(&data.start)
                            .filter(|(_, p)| region.covers(**p, BAND_M))
                            .map(|(id, p)| (*id, *p));
                        (r, DriverIndex::bulk_load(*region.projection(), members))
                    })
                    .collect();
                barrier.wait();
                let mut done = 0usize;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    for _ in 0..CLOCK_CHECK_EVERY {
                        let (driver, p) = data.move_at(done);
                        done += 1;
                        let id = data.ids[driver];
                        for (r, index) in &mut indexes {
                            if regions.regions()[*r].covers(p, BAND_M) {
                                index.upsert(black_box(id), black_box(p));
                            } else {
                                index.remove(&id);
                            }
                        }
                    }
                }
                done
            })
        })
        .collect();
    barrier.wait();
    let started = Instant::now();
    std::thread::sleep(window);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let counts: Vec<usize> = workers.into_iter().map(|w| w.join().unwrap()).collect();
    let elapsed = started.elapsed().as_secs_f64();
    // Every thread walks the whole move sequence; the engine's rate is the slower thread's.
    *counts.iter().min().unwrap_or(&0) as f64 / elapsed
}

fn geosearch(key: &str, p: LatLon) -> redis::Cmd {
    let mut cmd = redis::cmd("GEOSEARCH");
    cmd.arg(key)
        .arg("FROMLONLAT")
        .arg(p.lon)
        .arg(p.lat)
        .arg("BYRADIUS")
        .arg(SEARCH_RADIUS_M)
        .arg("m")
        .arg("ASC")
        .arg("COUNT")
        .arg(NEIGHBOURS);
    cmd
}

fn geoadd(key: &str, p: LatLon, member: &str) -> redis::Cmd {
    let mut cmd = redis::cmd("GEOADD");
    cmd.arg(key).arg(p.lon).arg(p.lat).arg(member);
    cmd
}

async fn connect(client: &redis::Client) -> MultiplexedConnection {
    let config = AsyncConnectionConfig::new()
        .set_response_timeout(Some(Duration::from_secs(RESPONSE_TIMEOUT_SECS)));
    client
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .expect("Redis reachable at REDIS_URL")
}

/// Redis's process id, when the server runs on this machine (so its CPU can be read).
async fn local_redis_pid(con: &mut MultiplexedConnection) -> Option<u32> {
    let info: String = redis::cmd("INFO")
        .arg("server")
        .query_async(con)
        .await
        .ok()?;
    let pid: u32 = info
        .lines()
        .find_map(|line| line.strip_prefix("process_id:"))?
        .trim()
        .parse()
        .ok()?;
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
    comm.contains("redis").then_some(pid)
}

#[derive(Default)]
struct CheckOutcome {
    identical: usize,
    boundary_ties: usize,
    /// The largest |distance − boundary| among the tied drivers, metres.
    widest_tie_m: f64,
    mismatches: Vec<String>,
}

/// Asks both for the 10 nearest on the first [`CHECK_POINTS`] query points and compares the
/// sets of driver ids.
async fn check_answers(
    data: &Data,
    index: &DriverIndex<Uuid>,
    con: &mut MultiplexedConnection,
    key: &str,
) -> CheckOutcome {
    let mut outcome = CheckOutcome::default();
    for &p in data.queries.iter().take(CHECK_POINTS) {
        let ours = index.nearest_within(p, NEIGHBOURS, SEARCH_RADIUS_M, |_| false);
        let theirs: Vec<String> = geosearch(key, p).query_async(con).await.unwrap();
        let theirs: Vec<Uuid> = theirs.iter().map(|m| m.parse().unwrap()).collect();
        let only_ours: Vec<Uuid> = ours
            .iter()
            .map(|n| n.key)
            .filter(|id| !theirs.contains(id))
            .collect();
        let only_theirs: Vec<Uuid> = theirs
            .iter()
            .copied()
            .filter(|id| !ours.iter().any(|n| n.key == *id))
            .collect();
        if only_ours.is_empty() && only_theirs.is_empty() {
            outcome.identical += 1;
            continue;
        }
        // The 10th answer's distance, or the radius when fewer than 10 are within it.
        let boundary_m = if ours.len() == NEIGHBOURS {
            ours[NEIGHBOURS - 1].distance_m
        } else {
            SEARCH_RADIUS_M
        };
        let off_boundary_m = |id: &Uuid| {
            let distance_m = haversine_m(p, index.location(id).expect("a known driver"));
            (distance_m - boundary_m)
                .abs()
                .min((distance_m - SEARCH_RADIUS_M).abs())
        };
        let widest_m = only_ours
            .iter()
            .chain(&only_theirs)
            .map(off_boundary_m)
            .fold(0.0, f64::max);
        if widest_m <= TIE_TOLERANCE_M {
            outcome.boundary_ties += 1;
            outcome.widest_tie_m = outcome.widest_tie_m.max(widest_m);
        } else {
            let distances = |ids: &[Uuid]| -> Vec<String> {
                ids.iter()
                    .map(|id| format!("{:.1} m", haversine_m(p, index.location(id).unwrap())))
                    .collect()
            };
            outcome.mismatches.push(format!(
                "at ({:.6}, {:.6}): 10th at {boundary_m:.1} m; only ours {:?}, only Redis {:?}",
                p.lat,
                p.lon,
                distances(&only_ours),
                distances(&only_theirs)
            ));
        }
    }
    outcome
}

struct RedisFigures {
    load_secs: f64,
    sequential_queries: Figures,
    saturated_queries: Figures,
    unpipelined_updates: Figures,
    /// (connections, updates/s) for each pipelined variant.
    pipelined_updates: Vec<(usize, f64)>,
}

/// `clients` tasks, each on its own connection, each running `op(i)` with a fresh `i` from a
/// shared counter until `window` passes. Returns (operations, seconds, per-op latencies in ns).
async fn saturate<F, Fut>(
    client: &redis::Client,
    clients: usize,
    window: Duration,
    counter: &Arc<AtomicUsize>,
    op: F,
) -> (usize, f64, Vec<u64>)
where
    F: Fn(MultiplexedConnection, usize) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = MultiplexedConnection> + Send,
{
    let mut connections = Vec::with_capacity(clients);
    for _ in 0..clients {
        connections.push(connect(client).await);
    }
    // Everyone connected first, so connecting is not in the window.
    let started = Instant::now();
    let deadline = started + window;
    let tasks: Vec<_> = connections
        .into_iter()
        .map(|mut con| {
            let op = op.clone();
            let counter = counter.clone();
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                while Instant::now() < deadline {
                    let i = counter.fetch_add(1, Ordering::Relaxed);
                    let sent = Instant::now();
                    con = op(con, i).await;
                    latencies.push(sent.elapsed().as_nanos() as u64);
                }
                latencies
            })
        })
        .collect();
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await.unwrap());
    }
    (latencies.len(), started.elapsed().as_secs_f64(), latencies)
}

async fn measure_redis(
    data: Arc<Data>,
    index: &DriverIndex<Uuid>,
    client: &redis::Client,
    key: &str,
    window: Duration,
) -> RedisFigures {
    let mut con = connect(client).await;
    let redis_pid = local_redis_pid(&mut con).await;

    // Load: the same drivers at the same start positions, pipelines of 1000 GEOADDs.
    let started = Instant::now();
    for chunk in (0..data.ids.len())
        .collect::<Vec<_>>()
        .chunks(PIPELINE_COMMANDS)
    {
        let mut pipe = redis::pipe();
        for &d in chunk {
            pipe.add_command(geoadd(key, data.start[d], &data.members[d]))
                .ignore();
        }
        pipe.query_async::<()>(&mut con).await.unwrap();
    }
    let load_secs = started.elapsed().as_secs_f64();
    let _: bool = redis::cmd("EXPIRE")
        .arg(key)
        .arg(KEY_TTL_SECS)
        .query_async(&mut con)
        .await
        .unwrap();
    let stored: usize = redis::cmd("ZCARD")
        .arg(key)
        .query_async(&mut con)
        .await
        .unwrap();
    assert_eq!(stored, data.ids.len(), "Redis holds every driver");
    println!(
        "Redis: {stored} drivers loaded in {:.0} ms ({:.0} GEOADD/s, pipelines of {PIPELINE_COMMANDS})",
        load_secs * 1e3,
        stored as f64 / load_secs
    );

    let check = check_answers(&data, index, &mut con, key).await;
    println!(
        "answers on {CHECK_POINTS} points: {} identical, {} differ only by boundary ties (within {TIE_TOLERANCE_M} m; widest {:.2} m), {} mismatches",
        check.identical,
        check.boundary_ties,
        check.widest_tie_m,
        check.mismatches.len()
    );
    for mismatch in check.mismatches.iter().take(5) {
        println!("  mismatch {mismatch}");
    }

    // (a)(i) One client, one query at a time: the latency a single dispatcher sees.
    let cpu = CpuWatch::start(redis_pid);
    let mut samples = Vec::with_capacity(SEQUENTIAL_QUERIES);
    let started = Instant::now();
    for i in 0..SEQUENTIAL_QUERIES {
        if started.elapsed() >= window {
            break;
        }
        let sent = Instant::now();
        let answer: Vec<String> = geosearch(key, data.query_at(i))
            .query_async(&mut con)
            .await
            .unwrap();
        samples.push(sent.elapsed().as_nanos() as u64);
        black_box(answer);
    }
    let sequential_rate = samples.len() as f64 / started.elapsed().as_secs_f64();
    let sequential_count = samples.len();
    let (s50, s99) = p50_p99(samples);
    println!(
        "Redis GEOSEARCH, 1 client sequential, {sequential_count} queries: {sequential_rate:.0} queries/s, p50 {}, p99 {}; {}",
        fmt_ns(s50),
        fmt_ns(s99),
        cpu.report()
    );

    // (a)(ii) 50 clients at once: what Redis serves when saturated.
    let cpu = CpuWatch::start(redis_pid);
    let queries = Arc::new(AtomicUsize::new(0));
    let (done, secs, samples) = {
        let data = data.clone();
        let key = key.to_owned();
        saturate(
            client,
            CONCURRENT_CLIENTS,
            window,
            &queries,
            move |mut con, i| {
                let query = geosearch(&key, data.query_at(i));
                async move {
                    let answer: Vec<String> = query.query_async(&mut con).await.unwrap();
                    black_box(answer);
                    con
                }
            },
        )
        .await
    };
    let (c50, c99) = p50_p99(samples);
    let saturated_rate = done as f64 / secs;
    println!(
        "Redis GEOSEARCH, {CONCURRENT_CLIENTS} concurrent clients for {secs:.1} s: {saturated_rate:.0} queries/s, p50 {}, p99 {}; {}",
        fmt_ns(c50),
        fmt_ns(c99),
        cpu.report()
    );

    // (b)(i) Moves, one GEOADD per round trip from 50 clients.
    let moves = Arc::new(AtomicUsize::new(0));
    let cpu = CpuWatch::start(redis_pid);
    let (done, secs, samples) = {
        let data = data.clone();
        let key = key.to_owned();
        saturate(
            client,
            CONCURRENT_CLIENTS,
            window,
            &moves,
            move |mut con, i| {
                let (driver, p) = data.move_at(i);
                let add = geoadd(&key, p, &data.members[driver]);
                async move {
                    let _: i64 = add.query_async(&mut con).await.unwrap();
                    con
                }
            },
        )
        .await
    };
    let (u50, u99) = p50_p99(samples);
    let unpipelined_rate = done as f64 / secs;
    println!(
        "Redis GEOADD, {CONCURRENT_CLIENTS} concurrent unpipelined clients for {secs:.1} s: {unpipelined_rate:.0} updates/s, p50 {}, p99 {}; {}",
        fmt_ns(u50),
        fmt_ns(u99),
        cpu.report()
    );

    // (b)(ii) Moves pipelined, 1000 GEOADDs a round trip, as a batching ingest would send them.
    // The counter hands out pipeline numbers; pipeline j holds moves from `base + j * 1000`.
    let mut pipelined_updates = Vec::new();
    for connections in PIPELINED_CONNECTIONS {
        let base = moves.load(Ordering::Relaxed);
        let pipelines = Arc::new(AtomicUsize::new(0));
        let cpu = CpuWatch::start(redis_pid);
        let (done, secs, _) = {
            let data = data.clone();
            let key = key.to_owned();
            saturate(
                client,
                connections,
                window,
                &pipelines,
                move |mut con, j| {
                    let mut pipe = redis::pipe();
                    let first = base + j * PIPELINE_COMMANDS;
                    for i in first..first + PIPELINE_COMMANDS {
                        let (driver, p) = data.move_at(i);
                        pipe.add_command(geoadd(&key, p, &data.members[driver]))
                            .ignore();
                    }
                    async move {
                        pipe.query_async::<()>(&mut con).await.unwrap();
                        con
                    }
                },
            )
            .await
        };
        moves.fetch_add(done * PIPELINE_COMMANDS, Ordering::Relaxed);
        let rate = (done * PIPELINE_COMMANDS) as f64 / secs;
        println!(
            "Redis GEOADD pipelined ({PIPELINE_COMMANDS} a pipeline), {connections} connection(s) for {secs:.1} s: {rate:.0} updates/s; {}",
            cpu.report()
        );
        pipelined_updates.push((connections, rate));
    }

    RedisFigures {
        load_secs,
        sequential_queries: Figures {
            per_sec: sequential_rate,
            p50_ns: s50,
            p99_ns: s99,
        },
        saturated_queries: Figures {
            per_sec: saturated_rate,
            p50_ns: c50,
            p99_ns: c99,
        },
        unpipelined_updates: Figures {
            per_sec: unpipelined_rate,
            p50_ns: u50,
            p99_ns: u99,
        },
        pipelined_updates,
    }
}

fn main() {
    let drivers = env_or("INDEX_VS_REDIS_DRIVERS", DEFAULT_DRIVERS);
    let window = Duration::from_secs(env_or("INDEX_VS_REDIS_SECS", DEFAULT_WINDOW_SECS) as u64);
    let redis_url =
        std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());

    let background = busy_percent(Duration::from_secs(1));
    if background > IDLE_BUSY_WARN_PERCENT {
        println!(
            "WARNING: the machine is already {background:.0} % busy before the run; other processes will skew the figures"
        );
    }

    let started = Instant::now();
    let data = Arc::new(Data::generate(drivers));
    println!(
        "{drivers} drivers uniform over the demo city's {:.0} km square, {MOVES} moves, {QUERY_POINTS} query points (seed {SEED:#x}) generated in {:.1} s",
        DEMO_CITY_SIDE_M / 1e3,
        started.elapsed().as_secs_f64()
    );

    // Ours first, alone on the machine, single thread (as a region actor runs it).
    let (index, ours) = measure_index(&data, window);
    println!(
        "our index: built by {drivers} upserts in {:.0} ms ({:.0} upserts/s); bulk load {:.0} ms",
        ours.build_secs * 1e3,
        drivers as f64 / ours.build_secs,
        ours.bulk_load_secs * 1e3
    );
    println!(
        "our index: {:.0} queries/s (k={NEIGHBOURS} within {SEARCH_RADIUS_M} m), p50 {}, p99 {}",
        ours.queries.per_sec,
        fmt_ns(ours.queries.p50_ns),
        fmt_ns(ours.queries.p99_ns)
    );
    println!(
        "our index: {:.0} updates/s (moves of up to ~50 m), p50 {}, p99 {}",
        ours.updates.per_sec,
        fmt_ns(ours.updates.p50_ns),
        fmt_ns(ours.updates.p99_ns)
    );

    let regional = measure_regional_updates(&data, window);
    println!(
        "our engine: {regional:.0} GPS updates/s into per-region indexes (4 regions + 3 km bands, on 2 threads as the region actors run)"
    );

    let key = format!(
        "mealkitz:bench:index_vs_redis:{}:drivers",
        Uuid::new_v4().simple()
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let theirs = runtime.block_on(async {
        let client = redis::Client::open(redis_url.as_str()).expect("a valid REDIS_URL");
        let figures = measure_redis(data.clone(), &index, &client, &key, window).await;
        let mut con = connect(&client).await;
        let _: i64 = redis::cmd("DEL")
            .arg(&key)
            .query_async(&mut con)
            .await
            .unwrap();
        figures
    });

    let (best_connections, best_pipelined) = theirs
        .pipelined_updates
        .iter()
        .copied()
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .unwrap_or((0, 0.0));
    let query_ratio = ours.queries.per_sec / theirs.saturated_queries.per_sec;
    let update_ratio = ours.updates.per_sec / best_pipelined;
    println!();
    println!(
        "{drivers} drivers, k = {NEIGHBOURS} within {SEARCH_RADIUS_M} m, {} s windows:",
        window.as_secs()
    );
    println!(
        "{:<34} {:>18} {:>22} {:>9}  goal",
        "", "our index", "Redis GEO", "ratio"
    );
    println!(
        "{:<34} {:>18.0} {:>22.0} {:>8.0}×  ≥ 300× {}",
        "queries/s (Redis: 50 clients)",
        ours.queries.per_sec,
        theirs.saturated_queries.per_sec,
        query_ratio,
        if query_ratio >= 300.0 {
            "met"
        } else {
            "NOT met"
        }
    );
    println!(
        "{:<34} {:>18} {:>22} {:>8.0}×",
        "query latency p50 (Redis: 1 client)",
        fmt_ns(ours.queries.p50_ns),
        fmt_ns(theirs.sequential_queries.p50_ns),
        theirs.sequential_queries.p50_ns as f64 / ours.queries.p50_ns.max(1) as f64
    );
    println!(
        "{:<34} {:>18} {:>22} {:>8.0}×",
        "query latency p99 (Redis: 1 client)",
        fmt_ns(ours.queries.p99_ns),
        fmt_ns(theirs.sequential_queries.p99_ns),
        theirs.sequential_queries.p99_ns as f64 / ours.queries.p99_ns.max(1) as f64
    );
    println!(
        "{:<34} {:>18.0} {:>22.0} {:>8.1}×  ≥ 2× {}",
        format!("updates/s (Redis: pipelined, {best_connections} conn)"),
        ours.updates.per_sec,
        best_pipelined,
        update_ratio,
        if update_ratio >= 2.0 {
            "met"
        } else {
            "NOT met"
        }
    );
    println!(
        "{:<34} {:>18.0} {:>22.0} {:>8.1}×  ≥ 2× {}",
        "  … per-region, 2 threads (engine)",
        regional,
        best_pipelined,
        regional / best_pipelined,
        if regional / best_pipelined >= 2.0 {
            "met"
        } else {
            "NOT met"
        }
    );
    println!(
        "{:<34} {:>18} {:>22.0} {:>8.1}×",
        "updates/s (Redis: 50 unpipelined)",
        "",
        theirs.unpipelined_updates.per_sec,
        ours.updates.per_sec / theirs.unpipelined_updates.per_sec
    );
    println!(
        "{:<34} {:>18} {:>22}",
        "update latency p50 / p99",
        format!(
            "{} / {}",
            fmt_ns(ours.updates.p50_ns),
            fmt_ns(ours.updates.p99_ns)
        ),
        format!(
            "{} / {}",
            fmt_ns(theirs.unpipelined_updates.p50_ns),
            fmt_ns(theirs.unpipelined_updates.p99_ns)
        )
    );
    println!(
        "{:<34} {:>18} {:>22}",
        format!("build / load ({drivers} drivers)"),
        format!("{:.0} ms", ours.build_secs * 1e3),
        format!("{:.0} ms", theirs.load_secs * 1e3)
    );
    println!(
        "(ours: one thread in process, no network; Redis: over loopback, client and server on this machine's {} cores; \
         Redis saturated latencies p50 {} / p99 {} at 50 clients)",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        fmt_ns(theirs.saturated_queries.p50_ns),
        fmt_ns(theirs.saturated_queries.p99_ns)
    );
}
