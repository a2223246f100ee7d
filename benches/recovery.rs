//! Recovery time: seeds a database with many open orders (journals and, for half of them,
//! snapshots), then times how long a fresh engine takes to rebuild them all and have every
//! order actor answering. Not a criterion bench: one measurement of a one-off event.
//!
//! ```sh
//! cargo bench --bench recovery                         # 100k orders on PostgreSQL
//! RECOVERY_ORDERS=20000 RECOVERY_BACKEND=sqlite cargo bench --bench recovery
//! MEALKITZ_ENGINE_THREADS=4 cargo bench --bench recovery  # event loops, as the server's setting
//! ```
//! PostgreSQL is reached at `BENCH_DATABASE_URL` (default postgres://postgres@127.0.0.1:5432/postgres);
//! a fresh database is created and dropped.

use std::time::{Duration, Instant};

use chrono::Utc;
use futures_util::StreamExt;
use mealkitz::actors::Engine;
use mealkitz::config::{DatabaseConfig, DatabaseUrl, DispatchConfig, Secret};
use mealkitz::domain::{
    Cents, Change, Email, JournalEntry, MerchantId, NewOrder, Order, OrderId, OrderItem, Position,
    Role, UserId,
};
use mealkitz::geo::LatLon;
use mealkitz::store::{NewUser, Snapshot, SnapshotKind, Store};
use sqlx::{AssertSqlSafe, Connection, PgConnection};

/// The demo city's centre.
const DEMO_CENTRE: LatLon = LatLon {
    lat: 40.75,
    lon: -73.98,
};

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

fn rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0.0, |kib| kib / 1024.0)
}

/// A point spread over the demo box, deterministic in `i`.
fn spread(i: usize) -> Position {
    let x = ((i * 7919) % 1000) as f64 / 1000.0 - 0.5;
    let y = ((i * 104_729) % 1000) as f64 / 1000.0 - 0.5;
    let LatLon { lat, lon } = DEMO_CENTRE.offset_m(y * 28_000.0, x * 28_000.0);
    Position { lat, lon }
}

fn step(order: &mut Order, entries: &mut Vec<JournalEntry>, change: Change) {
    let entry = order
        .decide(change, mealkitz::store::now())
        .expect("legal seed step");
    order.apply(&entry).unwrap();
    entries.push(entry);
}

fn main() {
    let orders: usize = env_or("RECOVERY_ORDERS", "100000").parse().unwrap();
    let backend = env_or("RECOVERY_BACKEND", "postgres");
    actix_web::rt::System::new().block_on(run(orders, backend));
}

async fn run(count: usize, backend: String) {
    let name = format!("mealkitz_bench_recovery_{}", uuid::Uuid::new_v4().simple());
    let admin = env_or(
        "BENCH_DATABASE_URL",
        "postgres://postgres@127.0.0.1:5432/postgres",
    );
    let dir = std::env::temp_dir().join(&name);
    let url = if backend == "sqlite" {
        std::fs::create_dir_all(&dir).unwrap();
        DatabaseUrl::Sqlite(format!("sqlite://{}", dir.join("bench.db").display()))
    } else {
        let mut connection = PgConnection::connect(&admin)
            .await
            .expect("PostgreSQL reachable");
        sqlx::query(AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
            .execute(&mut connection)
            .await
            .unwrap();
        let base = admin.rsplit_once('/').unwrap().0;
        DatabaseUrl::Postgres(Secret::new(format!("{base}/{name}")))
    };
    let store = Store::open(&DatabaseConfig {
        url,
        max_connections: 8,
        ..DatabaseConfig::default()
    })
    .unwrap();
    store.migrate().await.unwrap();

    // Who the orders belong to: one customer, and a driver per assigned or offered order.
    let drivers_needed = count / 5;
    let new_user = |role: Role, i: usize| NewUser {
        email: Email::parse(&format!("{}-{i}@bench.example", role.as_str())).unwrap(),
        name: "Bench".into(),
        role,
        password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into(),
    };
    let customer = store
        .create_user(new_user(Role::Customer, 0))
        .await
        .unwrap()
        .id;
    let seeding = Instant::now();
    let drivers: Vec<UserId> = futures_util::stream::iter(0..drivers_needed)
        .map(|i| {
            let store = store.clone();
            let user = new_user(Role::Driver, i);
            async move { store.create_user(user).await.unwrap().id }
        })
        .buffer_unordered(16)
        .collect()
        .await;

    // States: 40 % placed, 40 % searching, 5 % offered, 5 % assigned, 5 % ready, 5 % picked up.
    let regions = mealkitz::geo::RegionMap::demo_city();
    let mut seeded = Vec::with_capacity(count);
    let mut snapshots = Vec::new();
    let expires_at = Utc::now() + chrono::Duration::hours(1);
    for i in 0..count {
        let pickup = spread(i);
        let location = mealkitz::geo::LatLon::new(pickup.lat, pickup.lon).unwrap();
        let region = regions
            .locate(location)
            .expect("inside the box")
            .id()
            .to_string();
        let new = NewOrder {
            id: OrderId::new(),
            merchant_id: MerchantId::new(),
            customer_id: customer,
            items: vec![OrderItem {
                menu_item_id: None,
                name: "Kit".into(),
                quantity: 1,
                unit_price_cents: Cents(1200),
            }],
            delivery_fee_cents: Cents(0),
            total_cents: Cents(1500),
            pickup,
            dropoff: spread(i + 1),
            dropoff_address: "Bench Street".into(),
            pickup_address: "1 Kitchen Street".into(),
        };
        let (mut order, first) = Order::place(new, region, mealkitz::store::now());
        let mut entries = vec![first];
        let bucket = i % 20;
        if bucket >= 8 {
            step(
                &mut order,
                &mut entries,
                Change::MerchantAccepted { prep_minutes: 10 },
            );
            step(&mut order, &mut entries, Change::SearchStarted);
        }
        if bucket >= 16 {
            let driver_id = drivers[(i / 20 * 4 + (bucket - 16)) % drivers.len()];
            let offer_id = uuid::Uuid::now_v7();
            step(
                &mut order,
                &mut entries,
                Change::Offered {
                    offer_id,
                    driver_id,
                    expires_at,
                },
            );
            if bucket >= 17 {
                step(
                    &mut order,
                    &mut entries,
                    Change::DriverAssigned {
                        offer_id,
                        driver_id,
                    },
                );
            }
            if bucket >= 18 {
                step(&mut order, &mut entries, Change::MarkedReady);
            }
            if bucket >= 19 {
                step(&mut order, &mut entries, Change::PickedUp);
            }
        }
        if i % 2 == 0 {
            snapshots.push(
                Snapshot::of(
                    SnapshotKind::Order,
                    order.id.as_uuid(),
                    order.version,
                    &order,
                )
                .unwrap(),
            );
        }
        seeded.push((order, entries));
    }
    for chunk in seeded.chunks(10_000) {
        store.import_orders(chunk).await.unwrap();
    }
    for chunk in snapshots.chunks(10_000) {
        store.save_snapshots(chunk).await.unwrap();
    }
    let events: usize = seeded.iter().map(|(_, e)| e.len()).sum();
    println!(
        "seeded {count} open orders ({events} journal entries, {} snapshots, {drivers_needed} drivers) on {backend} in {:.1} s",
        snapshots.len(),
        seeding.elapsed().as_secs_f64()
    );
    let ids: Vec<OrderId> = seeded.iter().map(|(order, _)| order.id).collect();
    drop(seeded);

    let rss_before = rss_mib();
    let config = DispatchConfig {
        offer_timeout: Duration::from_secs(3600),
        search_retry: Duration::from_secs(3600),
        engine_threads: std::env::var("MEALKITZ_ENGINE_THREADS")
            .ok()
            .map(|threads| {
                threads
                    .parse()
                    .expect("MEALKITZ_ENGINE_THREADS is a number")
            }),
        ..DispatchConfig::default()
    };
    let engine = Engine::start(
        config,
        store.clone(),
        Default::default(),
        std::sync::Arc::new(mealkitz::maps::Maps::straight_line(25.0)),
    );
    let started = Instant::now();
    let recovered = engine.recover().await.unwrap();
    let loaded = started.elapsed();
    // Every order actor answering means every one has started on its region's event loop.
    futures_util::stream::iter(ids)
        .map(|id| {
            let engine = engine.clone();
            async move { engine.order(id).await.unwrap() }
        })
        .buffer_unordered(256)
        .for_each(|_| async {})
        .await;
    let answering = started.elapsed();
    let rss_after = rss_mib();
    assert_eq!(recovered, count);
    println!(
        "recovered {recovered} open orders: journal and snapshots read and actors started in {:.2} s; every actor answering after {:.2} s",
        loaded.as_secs_f64(),
        answering.as_secs_f64()
    );
    println!(
        "resident memory {:.0} MiB -> {:.0} MiB: about {:.1} KiB per open order (actor, state, feed, registry)",
        rss_before,
        rss_after,
        (rss_after - rss_before) * 1024.0 / count as f64
    );
    engine.shutdown().await;
    store.close().await;
    if backend == "sqlite" {
        let _ = std::fs::remove_dir_all(&dir);
    } else {
        let mut connection = PgConnection::connect(&admin).await.unwrap();
        sqlx::query(AssertSqlSafe(format!(
            "DROP DATABASE \"{name}\" WITH (FORCE)"
        )))
        .execute(&mut connection)
        .await
        .unwrap();
    }
}
