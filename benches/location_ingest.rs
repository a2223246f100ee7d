//! Location ingest through WebSockets: thousands of connected drivers sending GPS updates to a
//! running `mealkitz serve`; how many updates a second the server sustains, and at what CPU.
//!
//! ```sh
//! cargo bench --bench location_ingest                      # 10,000 drivers × 10/s for 30 s
//! INGEST_RATE_PER_DRIVER_HZ=5 cargo bench --bench location_ingest
//! INGEST_DRIVERS=2000 INGEST_SECS=10 cargo bench --bench location_ingest
//! ```
//!
//! Knobs (environment):
//! - `INGEST_DRIVERS` (10000): driver sockets connected to `/ws/driver`;
//! - `INGEST_RATE_PER_DRIVER_HZ` (10, may be fractional): locations each driver sends a second,
//!   so 100,000 updates/s are offered by default;
//! - `INGEST_SECS` (30): the measured window;
//! - `INGEST_WARMUP_SECS` (3): load offered before the window opens, so it opens on a steady
//!   state rather than on the first second's connection effects;
//! - `INGEST_SENDERS` (4): client tasks that write, each to its share of the sockets;
//! - `BENCH_SERVER_WRAPPER`: runs the server under a profiler, e.g. `heaptrack -o /tmp/ingest`
//!   (docs/performance.md, "Memory per online driver").
//!
//! The tool creates the drivers in a fresh SQLite store, starts the release binary on it as a
//! separate process (with the per-socket rate limit raised so that it does not cap the
//! measurement), connects every driver, declares it available, and has it circle its own spot
//! in the demo city a few metres per update. The client is built to stay cheap next to the
//! server on a small machine: a few writer tasks each feed many sockets (one write per socket
//! a tick), and one idle task per socket only drains what the server sends.
//!
//! "Processed" is the server's own count, `ws_messages_in_total{kind="driver",type="location"}`
//! from `/metrics`, read when the window opens and when it closes (a message is counted when it
//! is parsed; a session handles one at a time, so at most one a socket is still in flight);
//! "sent" is counted here. After the window the tool waits for the server to catch up, then
//! checks that every driver is in the driver index of each region covering its last location
//! (`dispatch_available_drivers`) and that no socket was closed on it.
//!
//! Memory per online driver is the server's resident set over the idle one, divided by the
//! drivers: weighed 1 s after they connected, and again after the streaming with them still
//! online — the steadier figure, as the first counts memory freed from the connection phase that
//! the allocator still holds.

mod common;

use common::{MachineTicks, cpu_ticks, env_f64_or, env_or, machine_ticks, thread_ticks, token};

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use mealkitz::config::{DatabaseConfig, DatabaseUrl};
use mealkitz::domain::{Email, Role, UserId};
use mealkitz::geo::region::{DEMO_CITY_CENTRE_LAT_DEG, DEMO_CITY_CENTRE_LON_DEG, DEMO_CITY_SIDE_M};
use mealkitz::geo::{DEFAULT_BORDER_BAND_M, LatLon, LocalProjection, RegionMap};
use mealkitz::sim::ClientSocket as Socket;
use mealkitz::store::{NewUser, Store};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio_tungstenite::tungstenite::Message;

const SECRET: &str = "location-ingest-secret-0123456789abcdef";
const SEED: u64 = 0x1A6E57;
/// Sockets connecting at once (stays under the listen backlog).
const CONNECT_CONCURRENCY: usize = 100;
/// Users inserted at once: SQLite writes one at a time anyway, but overlapping the round trips
/// to its pool hides their latency.
const USER_CREATE_CONCURRENCY: usize = 16;
/// How often a writer task wakes and sends what is due. At 10 updates/s a driver gets at most
/// one frame a tick, so every write carries one frame; the tick only bounds the jitter.
const TICK_MS: u64 = 10;
/// Drivers circle their home point at this radius...
const ORBIT_RADIUS_M: f64 = 20.0;
/// ...advancing this far around it per update: 20 m × 0.2 rad = 4 m an update.
const ORBIT_STEP_RAD: f64 = 0.2;
/// Homes stay this far inside the demo square, so every location is inside it.
const EDGE_MARGIN_M: f64 = 100.0;
/// After the window, how long the server may take to process what was sent.
const DRAIN_TIMEOUT_SECS: u64 = 30;
const DRAIN_POLL_MS: u64 = 250;
/// A progress line (rates over the last interval) this often during the window.
const PROGRESS_SECS: u64 = 5;
/// Server threads listed with their CPU.
const TOP_THREADS: usize = 8;
/// Above this much background load (% of all cores) before the run, the tool warns.
const IDLE_BUSY_WARN_PERCENT: f64 = 10.0;
/// Linux reports CPU in clock ticks of 1/100 s.
const CLOCK_TICKS_PER_SEC: f64 = 100.0;
const LOCATION_SERIES: (&str, &[(&str, &str)]) = (
    "ws_messages_in_total",
    &[("kind", "driver"), ("type", "location")],
);

/// Resident memory of `pid` in KiB (`VmRSS`), 0 if unreadable.
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("VmRSS:"))
                .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// Every series of metric `name` in a Prometheus text page whose labels include `labels`:
/// (label text, value).
fn series(page: &str, name: &str, labels: &[(&str, &str)]) -> Vec<(String, f64)> {
    page.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let (key, value) = line.rsplit_once(' ')?;
            let (metric, label_text) = key.split_once('{').unwrap_or((key, ""));
            let wanted = metric == name
                && labels
                    .iter()
                    .all(|(k, v)| label_text.contains(&format!("{k}=\"{v}\"")));
            wanted.then(|| {
                (
                    label_text.trim_end_matches('}').to_owned(),
                    value.parse().unwrap_or(0.0),
                )
            })
        })
        .collect()
}

fn sum(page: &str, (name, labels): (&str, &[(&str, &str)])) -> f64 {
    // `+ 0.0`: an empty f64 sum is -0.0, which would print as "-0".
    series(page, name, labels)
        .iter()
        .map(|(_, v)| v)
        .sum::<f64>()
        + 0.0
}

/// Warnings, errors and anything else unexpected the server wrote to stderr: how many, and the
/// first few lines.
type Problems = Mutex<(u64, Vec<String>)>;
/// Problem lines kept for the report.
const PROBLEM_LINES_KEPT: usize = 20;

/// One `/metrics` page and when it was taken (midway through the request, as the server
/// renders it somewhere in between). Panics with what the server logged if it is gone.
async fn scrape(http: &reqwest::Client, base: &str, problems: &Problems) -> (Instant, String) {
    let sent = Instant::now();
    let page = match http.get(format!("{base}/metrics")).send().await {
        Ok(response) => response.text().await.ok(),
        Err(_) => None,
    };
    let Some(page) = page else {
        let problems = problems.lock().unwrap();
        panic!(
            "the server stopped answering /metrics; it logged:\n{}",
            problems.1.join("\n")
        );
    };
    (sent + sent.elapsed() / 2, page)
}

/// What the per-socket read tasks saw.
#[derive(Default)]
struct ReadSide {
    /// Set before the tool shuts things down: closes after that are expected.
    stopping: AtomicBool,
    /// Close frames from the server, by code.
    closes: Mutex<HashMap<String, u64>>,
    /// Read errors, or streams that ended without a close frame.
    broken: AtomicU64,
    /// `error` messages from the server, by code.
    errors: Mutex<HashMap<String, u64>>,
}

async fn drain(mut read: SplitStream<Socket>, side: Arc<ReadSide>) {
    let mut closed = false;
    while let Some(frame) = read.next().await {
        match frame {
            Ok(Message::Text(text)) => {
                let Ok(value) = serde_json::from_str::<serde_json::Value>(&text) else {
                    continue;
                };
                if value["type"] == "error" {
                    let code = value["code"].as_str().unwrap_or("?").to_owned();
                    *side.errors.lock().unwrap().entry(code).or_default() += 1;
                }
            }
            Ok(Message::Close(frame)) => {
                closed = true;
                if !side.stopping.load(Ordering::Relaxed) {
                    let code = frame.map_or("none".to_owned(), |f| {
                        format!("{} {}", u16::from(f.code), f.reason)
                    });
                    *side.closes.lock().unwrap().entry(code).or_default() += 1;
                }
                break;
            }
            Ok(_) => {}
            Err(_) => break,
        }
    }
    if !closed && !side.stopping.load(Ordering::Relaxed) {
        side.broken.fetch_add(1, Ordering::Relaxed);
    }
}

/// One driver as a writer task holds it.
struct Driver {
    sink: SplitSink<Socket, Message>,
    /// Planar metres from the demo centre.
    home: [f64; 2],
    angle_rad: f64,
    last: Option<LatLon>,
    /// Fed since the last flush.
    fed: bool,
    dead: bool,
}

/// Sends each driver's locations at `rate_hz`, round-robin over `drivers`, from `begin` for
/// `run_for`. Every tick it sends what is due by then (so it catches up after a stall rather
/// than dropping load silently), then flushes each socket it fed: one write per socket a tick.
async fn write_locations(
    mut drivers: Vec<Driver>,
    rate_hz: f64,
    begin: tokio::time::Instant,
    run_for: Duration,
    sent: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
) -> Vec<Driver> {
    let projection = LocalProjection::new(
        LatLon::new(DEMO_CITY_CENTRE_LAT_DEG, DEMO_CITY_CENTRE_LON_DEG).unwrap(),
    );
    let mut ticker = tokio::time::interval_at(begin, Duration::from_millis(TICK_MS));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let per_sec = rate_hz * drivers.len() as f64;
    let mut next = 0;
    let mut done: u64 = 0;
    let mut fed = Vec::new();
    loop {
        ticker.tick().await;
        let elapsed = begin.elapsed();
        if elapsed >= run_for || drivers.is_empty() {
            break;
        }
        let due = (elapsed.as_secs_f64() * per_sec) as u64;
        let ts_ms = chrono::Utc::now().timestamp_millis();
        let before = done;
        while done < due {
            let index = next;
            next = (next + 1) % drivers.len();
            done += 1;
            let driver = &mut drivers[index];
            if driver.dead {
                continue;
            }
            driver.angle_rad += ORBIT_STEP_RAD;
            let p = projection.to_latlon([
                driver.home[0] + ORBIT_RADIUS_M * driver.angle_rad.cos(),
                driver.home[1] + ORBIT_RADIUS_M * driver.angle_rad.sin(),
            ]);
            let text = format!(
                r#"{{"type":"location","lat":{:.7},"lon":{:.7},"ts":{ts_ms}}}"#,
                p.lat, p.lon
            );
            if driver.sink.feed(Message::text(text)).await.is_err() {
                driver.dead = true;
                failed.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            driver.last = Some(p);
            if !driver.fed {
                driver.fed = true;
                fed.push(index);
            }
        }
        for index in fed.drain(..) {
            let driver = &mut drivers[index];
            driver.fed = false;
            if driver.sink.flush().await.is_err() {
                driver.dead = true;
                failed.fetch_add(1, Ordering::Relaxed);
            }
        }
        sent.fetch_add(done - before, Ordering::Relaxed);
    }
    drivers
}

/// CPU counters at one instant.
struct CpuSample {
    at: Instant,
    server: u64,
    client: u64,
    threads: HashMap<String, (String, u64)>,
    machine: MachineTicks,
}

impl CpuSample {
    fn take(server_pid: u32) -> CpuSample {
        CpuSample {
            at: Instant::now(),
            server: cpu_ticks(server_pid),
            client: cpu_ticks(std::process::id()),
            threads: thread_ticks(server_pid),
            machine: machine_ticks(),
        }
    }
}

/// How busy the machine is before anything starts, as % of all cores over `sample`: load from
/// other processes would take cores from the server and the client and skew the figures.
fn idle_check(sample: Duration) -> f64 {
    let before = machine_ticks();
    std::thread::sleep(sample);
    let after = machine_ticks();
    (after.busy - before.busy) as f64 / (after.total - before.total).max(1) as f64 * 100.0
}

fn main() {
    let background = idle_check(Duration::from_secs(1));
    if background > IDLE_BUSY_WARN_PERCENT {
        println!(
            "WARNING: the machine is already {background:.0} % busy before the run; other processes will skew the figures"
        );
    }
    let drivers = env_or("INGEST_DRIVERS", 10_000);
    let rate_hz = env_f64_or("INGEST_RATE_PER_DRIVER_HZ", 10.0);
    let seconds = env_or("INGEST_SECS", 30);
    let warmup = env_or("INGEST_WARMUP_SECS", 3);
    let senders = env_or("INGEST_SENDERS", 4).max(1);
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(run(drivers, rate_hz, seconds, warmup, senders));
}

async fn run(driver_count: usize, rate_hz: f64, seconds: usize, warmup: usize, senders: usize) {
    let dir =
        std::env::temp_dir().join(format!("mealkitz-ingest-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let url = format!("sqlite://{}", dir.join("ingest.db").display());
    let store = Store::open(&DatabaseConfig {
        url: DatabaseUrl::Sqlite(url.clone()),
        max_connections: 4,
        ..DatabaseConfig::default()
    })
    .unwrap();
    store.migrate().await.unwrap();
    let started = Instant::now();
    let store_ref = &store;
    let driver_ids: Vec<UserId> = futures_util::stream::iter(0..driver_count)
        .map(|i| async move {
            store_ref
                .create_user(NewUser {
                    email: Email::parse(&format!("driver-{i}@ingest.example")).unwrap(),
                    name: "Ingest".into(),
                    role: Role::Driver,
                    // Nobody logs in: tokens are signed here. Any well-formed hash will do.
                    password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into(),
                })
                .await
                .unwrap()
                .id
        })
        .buffer_unordered(USER_CREATE_CONCURRENCY)
        .collect()
        .await;
    let users_secs = started.elapsed().as_secs_f64();
    store.close().await;
    println!(
        "{driver_count} driver users created in {users_secs:.1} s ({:.0}/s, {USER_CREATE_CONCURRENCY} at once, SQLite)",
        driver_count as f64 / users_secs
    );

    // The server, as operators run it, with the per-socket limit (20/s) out of the way.
    let mut child = common::server_command()
        .args(["serve", "--bind", "127.0.0.1:0"])
        .env("DATABASE_URL", &url)
        .env("MEALKITZ_JWT_SECRET", SECRET)
        .env("MEALKITZ_LOG_FORMAT", "json")
        .env("RUST_LOG", "info,mealkitz::api::middleware=warn")
        .env("MEALKITZ_WS_RATE_PER_SEC", "1000")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start mealkitz serve");
    let server_pid = child.id();
    let stderr = child.stderr.take().unwrap();
    let (port_tx, port_rx) = std::sync::mpsc::channel();
    // Warnings and errors the server logs, counted (the first few kept) for the report. The
    // thread also keeps the pipe drained, or the server would block on logging.
    let problems: Arc<Problems> = Arc::default();
    let server_problems = problems.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            // Anything that is not a JSON log line (a panic, say) is a problem too.
            let entry = serde_json::from_str::<serde_json::Value>(&line).unwrap_or_default();
            if entry["message"] == "mealkitz listening" {
                let _ = port_tx.send(entry["port"].as_u64().unwrap() as u16);
            } else if !entry.is_object() || entry["level"] == "WARN" || entry["level"] == "ERROR" {
                let mut problems = server_problems.lock().unwrap();
                problems.0 += 1;
                if problems.1.len() < PROBLEM_LINES_KEPT {
                    problems.1.push(line);
                }
            }
        }
    });
    let port = port_rx
        .recv_timeout(Duration::from_secs(60))
        .expect("server port");
    let base = format!("http://127.0.0.1:{port}");
    // Scrapes come about every 5 s, as long as the server's keep-alive: an idle connection is
    // dropped by the client first, never reused as the server closes it.
    let http = reqwest::Client::builder()
        .pool_idle_timeout(Duration::from_secs(2))
        .build()
        .expect("an HTTP client");
    common::wait_ready(&http, port).await;
    println!("server pid {server_pid} on port {port}");
    let rss_idle_kib = rss_kib(server_pid);

    // Homes uniform over the demo square (seeded), each driver starting at a random point of
    // its circle so that the first updates are spread out too.
    let mut rng = StdRng::seed_from_u64(SEED);
    let half_m = DEMO_CITY_SIDE_M / 2.0 - EDGE_MARGIN_M;
    let homes: Vec<([f64; 2], f64)> = (0..driver_count)
        .map(|_| {
            (
                [
                    rng.random_range(-half_m..=half_m),
                    rng.random_range(-half_m..=half_m),
                ],
                rng.random_range(0.0..std::f64::consts::TAU),
            )
        })
        .collect();

    let started = Instant::now();
    let connect_failures = AtomicU64::new(0);
    let connected: Vec<(usize, Socket)> = futures_util::stream::iter(driver_ids.iter().enumerate())
        .map(|(i, &driver_id)| {
            let url = format!("ws://127.0.0.1:{port}/ws/driver");
            let connect_failures = &connect_failures;
            async move {
                let token = token(SECRET, driver_id, Role::Driver);
                let connected = async {
                    let mut socket = mealkitz::sim::connect_client(&url, &token).await?;
                    socket
                        .send(Message::text(r#"{"type":"availability","available":true}"#))
                        .await?;
                    Ok::<_, tokio_tungstenite::tungstenite::Error>(socket)
                }
                .await;
                match connected {
                    Ok(socket) => Some((i, socket)),
                    Err(error) => {
                        if connect_failures.fetch_add(1, Ordering::Relaxed) == 0 {
                            println!("a driver failed to connect: {error}");
                        }
                        None
                    }
                }
            }
        })
        .buffer_unordered(CONNECT_CONCURRENCY)
        .filter_map(std::future::ready)
        .collect()
        .await;
    let connect_failures = connect_failures.into_inner();
    println!(
        "{} drivers connected and available in {:.1} s ({connect_failures} failed to connect)",
        connected.len(),
        started.elapsed().as_secs_f64()
    );
    // Let the last availability messages reach the driver and region actors before weighing.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_online_kib = rss_kib(server_pid);
    println!(
        "server resident memory {:.0} MiB idle -> {:.0} MiB with the drivers online: {:.1} KiB per online driver (socket session, driver actor, index entries, buffers)",
        rss_idle_kib as f64 / 1024.0,
        rss_online_kib as f64 / 1024.0,
        rss_online_kib.saturating_sub(rss_idle_kib) as f64 / connected.len().max(1) as f64
    );

    // Split each socket: its read half to a task of its own, its write half to a writer task.
    let read_side = Arc::new(ReadSide::default());
    let mut groups: Vec<Vec<Driver>> = (0..senders).map(|_| Vec::new()).collect();
    for (n, (i, socket)) in connected.into_iter().enumerate() {
        let (sink, read) = socket.split();
        tokio::spawn(drain(read, read_side.clone()));
        let (home, angle_rad) = homes[i];
        groups[n % senders].push(Driver {
            sink,
            home,
            angle_rad,
            last: None,
            fed: false,
            dead: false,
        });
    }
    let connected_count: usize = groups.iter().map(Vec::len).sum();

    let offered_per_sec = connected_count as f64 * rate_hz;
    println!(
        "offering {offered_per_sec:.0} updates/s ({connected_count} drivers × {rate_hz}/s) from {senders} writer tasks: {warmup} s warm-up, then {seconds} s measured"
    );
    let sent = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let run_for = Duration::from_secs((warmup + seconds) as u64);
    let begin = tokio::time::Instant::now() + Duration::from_millis(TICK_MS);
    let writers: Vec<_> = groups
        .into_iter()
        .map(|group| {
            tokio::spawn(write_locations(
                group,
                rate_hz,
                begin,
                run_for,
                sent.clone(),
                failed.clone(),
            ))
        })
        .collect();

    tokio::time::sleep_until(begin + Duration::from_secs(warmup as u64)).await;
    let (t0, page) = scrape(&http, &base, &problems).await;
    let sent0 = sent.load(Ordering::Relaxed);
    let processed0 = sum(&page, LOCATION_SERIES);
    let cpu0 = CpuSample::take(server_pid);
    let window_end = tokio::time::Instant::now() + Duration::from_secs(seconds as u64);
    let (mut last_at, mut last_sent, mut last_processed) = (t0, sent0, processed0);
    let mut last_cpu = CpuSample::take(server_pid);
    let (t1, sent1, processed1) = loop {
        let now = tokio::time::Instant::now();
        let until = (now + Duration::from_secs(PROGRESS_SECS)).min(window_end);
        tokio::time::sleep_until(until).await;
        let (at, page) = scrape(&http, &base, &problems).await;
        let sent_now = sent.load(Ordering::Relaxed);
        let processed = sum(&page, LOCATION_SERIES);
        let cpu = CpuSample::take(server_pid);
        let secs = at.duration_since(last_at).as_secs_f64();
        let percent = |a: u64, b: u64| (b - a) as f64 / CLOCK_TICKS_PER_SEC / secs * 100.0;
        let server = percent(last_cpu.server, cpu.server);
        let client = percent(last_cpu.client, cpu.client);
        let others = (percent(last_cpu.machine.busy, cpu.machine.busy) - server - client).max(0.0);
        println!(
            "  +{:>4.1} s: sent {:>7.0}/s, processed {:>7.0}/s, CPU % of a core: server {server:>3.0}, client {client:>3.0}, others {others:>3.0}; backlog {:.0}",
            at.duration_since(t0).as_secs_f64(),
            (sent_now - last_sent) as f64 / secs,
            (processed - last_processed) / secs,
            sent_now as f64 - processed
        );
        (last_at, last_sent, last_processed, last_cpu) = (at, sent_now, processed, cpu);
        if tokio::time::Instant::now() >= window_end {
            break (at, sent_now, processed);
        }
    };
    let cpu1 = CpuSample::take(server_pid);

    let mut held = Vec::new();
    for writer in writers {
        held.extend(writer.await.unwrap());
    }
    let sent_total = sent.load(Ordering::Relaxed);
    let failed_total = failed.load(Ordering::Relaxed);

    // Let the server work off what is still queued (in its mailboxes and the sockets).
    let drain_started = Instant::now();
    let mut processed_total = processed1;
    while drain_started.elapsed() < Duration::from_secs(DRAIN_TIMEOUT_SECS) {
        let (_, page) = scrape(&http, &base, &problems).await;
        processed_total = sum(&page, LOCATION_SERIES);
        if processed_total >= (sent_total - failed_total) as f64 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(DRAIN_POLL_MS)).await;
    }
    let drain_secs = drain_started.elapsed().as_secs_f64();
    // The last locations reach the regions by one more hop (driver → region actor).
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (_, page) = scrape(&http, &base, &problems).await;
    // Weighed again with the drivers still online after streaming: what a driver costs once
    // the connection phase's transient buffers are long reused or returned (the figure 1 s
    // after connecting counts memory the allocator has freed but still holds).
    let rss_streamed_kib = rss_kib(server_pid);

    let window_secs = t1.duration_since(t0).as_secs_f64();
    let cpu_secs = |a: u64, b: u64| (b - a) as f64 / CLOCK_TICKS_PER_SEC;
    let cpu_window = cpu1.at.duration_since(cpu0.at).as_secs_f64();
    let server_cpu = cpu_secs(cpu0.server, cpu1.server);
    let client_cpu = cpu_secs(cpu0.client, cpu1.client);
    let processed_rate = (processed1 - processed0) / window_secs;
    let sent_rate = (sent1 - sent0) as f64 / window_secs;

    // Expected index entries: each driver in every region whose polygon or border band covers
    // its last location, as the server's driver actors decide it.
    let regions = RegionMap::demo_city();
    let expected_entries: usize = held
        .iter()
        .filter_map(|driver| driver.last)
        .map(|p| regions.covering(p, DEFAULT_BORDER_BAND_M).count())
        .sum();
    let indexed = series(&page, "dispatch_available_drivers", &[]);
    let indexed_total: f64 = indexed.iter().map(|(_, v)| v).sum();

    println!();
    println!(
        "location ingest, {connected_count} driver sockets, {window_secs:.1} s window after {warmup} s warm-up:"
    );
    println!(
        "  offered   {offered_per_sec:>9.0} updates/s ({rate_hz}/s per driver); client sent {sent_rate:.0}/s"
    );
    println!(
        "  processed {processed_rate:>9.0} updates/s by the server ({:.0} % of offered, {:.0} % of sent)",
        processed_rate / offered_per_sec * 100.0,
        processed_rate / sent_rate * 100.0
    );
    println!(
        "  backlog at window end {:.0} frames (sent, not yet processed); after the writers stopped the server took {drain_secs:.1} s to process {:.0} of {} ({failed_total} failed to send)",
        sent1 as f64 - processed1,
        processed_total,
        sent_total - failed_total
    );
    println!(
        "  server CPU {:.0} % of one core ({server_cpu:.1} s over {cpu_window:.1} s) = {:.1} µs of CPU per processed update",
        server_cpu / cpu_window * 100.0,
        server_cpu * 1e6 / (processed_rate * window_secs).max(1.0)
    );
    println!(
        "  client CPU {:.0} % of one core ({client_cpu:.1} s) = {:.1} µs per sent update",
        client_cpu / cpu_window * 100.0,
        client_cpu * 1e6 / (sent_rate * window_secs).max(1.0)
    );
    println!(
        "  server resident memory after streaming, drivers still online: {:.0} MiB: {:.1} KiB per online driver (1 s after connecting: {:.1} KiB)",
        rss_streamed_kib as f64 / 1024.0,
        rss_streamed_kib.saturating_sub(rss_idle_kib) as f64 / connected_count.max(1) as f64,
        rss_online_kib.saturating_sub(rss_idle_kib) as f64 / connected_count.max(1) as f64
    );
    let (m0, m1) = (cpu0.machine, cpu1.machine);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    // Interrupt and softirq time (loopback TCP) is also charged to whichever process it
    // interrupted, so it overlaps the two figures above; it is shown for scale only.
    let irq_cpu = cpu_secs(m0.irq, m1.irq);
    // Other processes on the machine: not part of the ingest, and they skew the figures.
    let other_cpu = (cpu_secs(m0.busy, m1.busy) - server_cpu - client_cpu).max(0.0);
    let share = |ticks: u64| ticks as f64 / (m1.total - m0.total).max(1) as f64 * 100.0;
    println!(
        "  machine ({cores} cores): {:.0} % busy, {:.1} % stolen by the hypervisor; other processes {:.0} % of one core; softirq/irq {:.0} % of one core (inside the figures above)",
        share(m1.busy - m0.busy),
        share(m1.steal - m0.steal),
        other_cpu / cpu_window * 100.0,
        irq_cpu / cpu_window * 100.0
    );
    let mut threads: Vec<(String, String, f64)> = cpu1
        .threads
        .iter()
        .map(|(tid, (name, after))| {
            let before = cpu0.threads.get(tid).map_or(0, |(_, ticks)| *ticks);
            (tid.clone(), name.clone(), cpu_secs(before, *after))
        })
        .collect();
    threads.sort_by(|a, b| b.2.total_cmp(&a.2));
    println!("  busiest server threads (% of one core):");
    for (tid, name, secs) in threads.iter().take(TOP_THREADS) {
        println!(
            "    {:>5.0} %  {name} (tid {tid})",
            secs / cpu_window * 100.0
        );
    }

    let dropped = series(&page, "ws_messages_dropped_total", &[("kind", "driver")]);
    let invalid = sum(
        &page,
        (
            "ws_messages_in_total",
            &[("kind", "driver"), ("type", "invalid")],
        ),
    );
    let snapshots_dropped = sum(&page, ("snapshot_dropped_total", &[]));
    println!(
        "  driver index entries (dispatch_available_drivers): {indexed_total:.0} {}, expected {expected_entries} for the last locations (border bands overlap) — {}",
        indexed
            .iter()
            .map(|(labels, v)| format!("{labels}: {v:.0}"))
            .collect::<Vec<_>>()
            .join(", "),
        if indexed_total as usize == expected_entries {
            "OK"
        } else if indexed_total as usize >= connected_count {
            "every driver indexed, some band edge differs"
        } else {
            "MISSING DRIVERS"
        }
    );
    println!(
        "  unexpected closes {:?}, broken streams {}, error messages {:?}, dropped {:?}, invalid {invalid:.0}, snapshots dropped {snapshots_dropped:.0}",
        read_side.closes.lock().unwrap(),
        read_side.broken.load(Ordering::Relaxed),
        read_side.errors.lock().unwrap(),
        dropped
    );
    let problems = problems.lock().unwrap();
    println!("  server warnings/errors logged: {}", problems.0);
    for line in problems.1.iter().take(5) {
        println!("    {line}");
    }

    read_side.stopping.store(true, Ordering::Relaxed);
    let _ = child.kill();
    let _ = child.wait();
    drop(held);
    let _ = std::fs::remove_dir_all(&dir);
}
