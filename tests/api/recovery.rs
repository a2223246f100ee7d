//! Crash recovery: an engine in a child process is killed with SIGKILL (no shutdown, no final
//! snapshot) with orders in every state; a new engine on the same database must find every order
//! as it was — same status, same dispatch status, same driver — re-issue open offers, resume
//! searches, and let assigned drivers carry on.

use mealkitz::actors::commands::*;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::Duration;

use mealkitz::actors::{DriverFeed, Engine};
use mealkitz::config::{DatabaseUrl, Secret};
use mealkitz::domain::{MerchantId, OrderId, OrderView, Role, UserId};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};

use crate::helpers::{Db, TestDb, spawn_app_with};
use crate::helpers::{Driver, at, next_offer};

const CHILD_DB_ENV: &str = "MEALKITZ_CHILD_DATABASE_URL";

fn child_config(url: &str) -> mealkitz::config::Config {
    let db_url = if url.starts_with("postgres") {
        DatabaseUrl::Postgres(Secret::new(url))
    } else {
        DatabaseUrl::Sqlite(url.to_owned())
    };
    let mut config = crate::helpers::config_for(db_url);
    tune(&mut config.dispatch);
    config
}

/// Settings shared by the killed engine and its successor.
fn tune(dispatch: &mut mealkitz::config::DispatchConfig) {
    dispatch.offer_timeout = Duration::from_secs(120);
    dispatch.search_retry = Duration::from_millis(200);
    dispatch.snapshot_interval = Duration::from_millis(200);
    // A successor takes over a killed engine's regions after this.
    dispatch.lease_ttl = Duration::from_secs(FAILOVER_LEASE_TTL_SECS);
}

/// Lease TTL of the engines in these tests.
const FAILOVER_LEASE_TTL_SECS: u64 = 3;

/// Not a test: the engine that the recovery tests start as a child process and kill. It reads
/// one JSON command per line on stdin and answers one JSON line on stdout.
#[test]
#[ignore = "started by the recovery tests as a child process"]
fn child_engine() {
    let Ok(url) = std::env::var(CHILD_DB_ENV) else {
        return;
    };
    actix_web::rt::System::new().block_on(async move {
        let app = crate::helpers::start_without_db(child_config(&url)).await;
        app.wait_until_ready().await;
        let engine = app.engine.clone();
        let mut feeds: std::collections::HashMap<UserId, Driver> = Default::default();
        let mut stdout = tokio::io::stdout();
        stdout.write_all(b"{\"ready\":true}\n").await.unwrap();
        stdout.flush().await.unwrap();
        let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            let command: Value = serde_json::from_str(&line).unwrap();
            let reply = match run(&engine, &mut feeds, &command).await {
                Ok(value) => json!({ "ok": value }),
                Err(error) => json!({ "error": error }),
            };
            stdout
                .write_all(format!("{reply}\n").as_bytes())
                .await
                .unwrap();
            stdout.flush().await.unwrap();
        }
    });
}

fn field<T: serde::de::DeserializeOwned>(command: &Value, name: &str) -> T {
    serde_json::from_value(command[name].clone()).unwrap_or_else(|e| panic!("{name}: {e}"))
}

async fn run(
    engine: &Engine,
    feeds: &mut std::collections::HashMap<UserId, Driver>,
    command: &Value,
) -> Result<Value, String> {
    let err = |e: mealkitz::actors::EngineError| e.to_string();
    let view = |v: OrderView| serde_json::to_value(v).unwrap();
    match command["cmd"].as_str().unwrap() {
        "driver_up" => {
            let id: UserId = field(command, "driver");
            let (_, _, feed) = engine
                .subscribe(SubscribeDriver::new(id))
                .await
                .map(|(snapshot, feed)| (snapshot.status, snapshot.active, feed))
                .map_err(err)?;
            engine
                .execute(DriverAvailability {
                    driver: id,
                    available: true,
                })
                .await
                .map_err(err)?;
            engine
                .execute(DriverLocation {
                    driver: id,
                    lat: field(command, "lat"),
                    lon: field(command, "lon"),
                    ts_ms: None,
                })
                .await
                .map_err(err)?;
            feeds.insert(id, Driver { id, feed });
            Ok(Value::Null)
        }
        "place" => {
            let new = mealkitz::domain::NewOrder {
                id: field(command, "id"),
                merchant_id: field(command, "merchant"),
                customer_id: field(command, "customer"),
                items: vec![],
                delivery_fee_cents: mealkitz::domain::Cents(0),
                total_cents: mealkitz::domain::Cents(1234),
                pickup: field(command, "pickup"),
                dropoff: field(command, "dropoff"),
                dropoff_address: "2 Recovery Road".into(),
                pickup_address: "1 Kitchen Street".into(),
            };
            engine
                .execute(PlaceOrder { order: new })
                .await
                .map(view)
                .map_err(err)
        }
        "accept" => engine
            .execute(MerchantAccept {
                merchant_id: field(command, "merchant"),
                order_id: field(command, "order"),
                prep_minutes: 10,
            })
            .await
            .map(view)
            .map_err(err),
        "reject" => engine
            .execute(MerchantReject {
                merchant_id: field(command, "merchant"),
                order_id: field(command, "order"),
                reason: "closed".into(),
            })
            .await
            .map(view)
            .map_err(err),
        "ready" => engine
            .execute(MerchantReady {
                merchant_id: field(command, "merchant"),
                order_id: field(command, "order"),
            })
            .await
            .map(view)
            .map_err(err),
        "cancel" => engine
            .execute(CancelOrder {
                order_id: field(command, "order"),
                by: mealkitz::actors::Canceller::Admin,
                reason: "test".into(),
            })
            .await
            .map(view)
            .map_err(err),
        "next_offer" => {
            let id: UserId = field(command, "driver");
            let driver = feeds.get_mut(&id).unwrap();
            let offer = next_offer(driver, Duration::from_secs(5))
                .await
                .ok_or("no offer")?;
            Ok(serde_json::to_value(offer).unwrap())
        }
        "accept_offer" => engine
            .execute(AnswerOffer {
                driver: field(command, "driver"),
                offer_id: field(command, "offer_id"),
                accept: true,
            })
            .await
            .map(Option::unwrap)
            .map(view)
            .map_err(err),
        "picked_up" => engine
            .execute(PickedUp {
                driver: field(command, "driver"),
                order_id: field(command, "order"),
            })
            .await
            .map(view)
            .map_err(err),
        "delivered" => engine
            .execute(Delivered {
                driver: field(command, "driver"),
                order_id: field(command, "order"),
            })
            .await
            .map(view)
            .map_err(err),
        other => Err(format!("unknown command {other}")),
    }
}

/// The parent's end of the child engine.
struct ChildEngine {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl ChildEngine {
    /// Starts a child engine and waits until it is ready (it holds the region leases).
    fn start(database_url: &str) -> ChildEngine {
        let mut engine = ChildEngine::spawn(database_url);
        engine.wait_ready();
        engine
    }

    /// Starts a child engine without waiting for it.
    fn spawn(database_url: &str) -> ChildEngine {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "recovery::child_engine",
                "--exact",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_DB_ENV, database_url)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the child engine");
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        ChildEngine {
            child,
            stdin,
            stdout,
        }
    }

    /// Waits for the child to report ready (libtest prints its own lines first).
    fn wait_ready(&mut self) {
        let mut line = String::new();
        loop {
            line.clear();
            assert!(
                self.stdout.read_line(&mut line).unwrap() > 0,
                "child engine exited early"
            );
            if line.trim_end().ends_with("{\"ready\":true}") {
                break;
            }
        }
    }

    fn call(&mut self, command: Value) -> Value {
        writeln!(self.stdin, "{command}").unwrap();
        self.stdin.flush().unwrap();
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        let reply: Value =
            serde_json::from_str(&line).unwrap_or_else(|_| panic!("bad reply {line:?}"));
        assert!(reply.get("error").is_none(), "{command} failed: {reply}");
        reply["ok"].clone()
    }

    fn kill(mut self) {
        let status = Command::new("kill")
            .args(["-KILL", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        self.child.wait().unwrap();
    }
}

struct Scenario {
    customer: UserId,
    drivers: Vec<UserId>,
}

async fn create_users(db: &TestDb, drivers: usize) -> Scenario {
    let store = crate::helpers::migrated_store(db).await;
    let create = |role: Role| {
        let store = store.clone();
        async move {
            store
                .create_user(crate::helpers::new_user(
                    &format!("{}@example.com", uuid::Uuid::new_v4()),
                    role,
                ))
                .await
                .unwrap()
                .id
        }
    };
    let customer = create(Role::Customer).await;
    let mut ids = Vec::new();
    for _ in 0..drivers {
        ids.push(create(Role::Driver).await);
    }
    store.close().await;
    Scenario {
        customer,
        drivers: ids,
    }
}

fn order_id(view: &Value) -> OrderId {
    serde_json::from_value(view["id"].clone()).unwrap()
}

fn killed_with_orders_in_every_state_then_recovered(kind: Db) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let db = runtime.block_on(TestDb::create(kind));
    let scenario = runtime.block_on(create_users(&db, 6));
    let [
        d_offered,
        d_assigned,
        d_ready,
        d_picked,
        d_delivered,
        d_spare,
    ] = scenario.drivers[..]
    else {
        unreachable!()
    };
    let customer = scenario.customer;
    let merchant = MerchantId::new();
    let mut engine = ChildEngine::start(&db.url);

    // Each driver waits near its own pickup in the north-west; the searching order is placed
    // in the far south-east, out of every driver's reach.
    let place = |engine: &mut ChildEngine, north: f64, east: f64| {
        let pickup = at(north, east);
        let dropoff = at(north + 800.0, east);
        engine.call(
            json!({"cmd": "place", "id": OrderId::new(), "customer": customer,
            "merchant": merchant, "pickup": pickup, "dropoff": dropoff}),
        )
    };
    let mut orders: Vec<(&str, OrderId)> = Vec::new();
    let placed = place(&mut engine, 4_000.0, -4_000.0);
    orders.push(("placed", order_id(&placed)));
    let searching = place(&mut engine, -13_000.0, 13_000.0);
    engine.call(json!({"cmd": "accept", "merchant": merchant, "order": order_id(&searching)}));
    orders.push(("searching", order_id(&searching)));
    let rejected = place(&mut engine, 4_000.0, -4_100.0);
    engine.call(json!({"cmd": "reject", "merchant": merchant, "order": order_id(&rejected)}));
    orders.push(("rejected", order_id(&rejected)));
    let cancelled = place(&mut engine, 4_000.0, -4_200.0);
    engine.call(json!({"cmd": "cancel", "order": order_id(&cancelled)}));
    orders.push(("cancelled", order_id(&cancelled)));

    let steps: [(&str, UserId, f64); 5] = [
        ("offered", d_offered, -2_000.0),
        ("assigned", d_assigned, -3_000.0),
        ("ready", d_ready, -4_000.0),
        ("picked_up", d_picked, -5_000.0),
        ("delivered", d_delivered, -6_000.0),
    ];
    let mut offers = std::collections::HashMap::new();
    for (name, driver, east) in steps {
        let pickup = at(6_000.0, east);
        engine.call(
            json!({"cmd": "driver_up", "driver": driver, "lat": pickup.lat, "lon": pickup.lon}),
        );
        let order = place(&mut engine, 6_000.0, east);
        let id = order_id(&order);
        engine.call(json!({"cmd": "accept", "merchant": merchant, "order": id}));
        let offer = engine.call(json!({"cmd": "next_offer", "driver": driver}));
        assert_eq!(
            offer["order_id"],
            json!(id),
            "{name}: offered to its own driver"
        );
        offers.insert(name, offer.clone());
        if name != "offered" {
            engine.call(
                json!({"cmd": "accept_offer", "driver": driver, "offer_id": offer["offer_id"]}),
            );
        }
        if matches!(name, "ready" | "picked_up" | "delivered") {
            engine.call(json!({"cmd": "ready", "merchant": merchant, "order": id}));
        }
        if matches!(name, "picked_up" | "delivered") {
            engine.call(json!({"cmd": "picked_up", "driver": driver, "order": id}));
        }
        if name == "delivered" {
            engine.call(json!({"cmd": "delivered", "driver": driver, "order": id}));
        }
        orders.push((name, id));
    }
    // Let some snapshots land, then change more after them, so recovery needs both the
    // snapshots and the journal written after them.
    std::thread::sleep(Duration::from_millis(600));
    let late = place(&mut engine, -12_500.0, 12_000.0);
    engine.call(json!({"cmd": "accept", "merchant": merchant, "order": order_id(&late)}));
    orders.push(("searching_late", order_id(&late)));

    engine.kill();

    actix_web::rt::System::new().block_on(async move {
        let config = child_config(&db.url);
        let app = spawn_app_with(db, config).await;
        let engine = &app.engine;
        let mut before_after = Vec::new();
        for (name, id) in &orders {
            let view = engine.order(*id).await.unwrap();
            before_after.push((name, view));
        }
        let expect = |name: &str, status: &str, dispatch: &str, driver: Option<UserId>| {
            let (_, view) = before_after.iter().find(|(n, _)| **n == name).unwrap();
            assert_eq!(view.status.to_string(), status, "{name}");
            assert_eq!(view.dispatch_status.to_string(), dispatch, "{name}");
            assert_eq!(view.driver_id, driver, "{name}");
        };
        expect("placed", "placed", "unassigned", None);
        expect("searching", "accepted", "searching", None);
        expect("searching_late", "accepted", "searching", None);
        expect("rejected", "rejected", "unassigned", None);
        expect("cancelled", "cancelled", "unassigned", None);
        expect("offered", "accepted", "offered", None);
        expect("assigned", "accepted", "assigned", Some(d_assigned));
        expect("ready", "ready", "assigned", Some(d_ready));
        expect("picked_up", "picked_up", "assigned", Some(d_picked));
        expect("delivered", "delivered", "assigned", Some(d_delivered));

        // The open offer is issued again to its driver when it reconnects, same id and deadline.
        let (status, _, mut feed) = engine
            .subscribe(SubscribeDriver::new(d_offered))
            .await
            .map(|(snapshot, feed)| (snapshot.status, snapshot.active, feed))
            .unwrap();
        let original = &offers["offered"];
        let reissued = match status.offer {
            Some(offer) => offer,
            None => match tokio::time::timeout(Duration::from_secs(5), feed.recv()).await {
                Ok(Some(DriverFeed::Offer(offer))) => *offer,
                other => panic!("no re-issued offer: {other:?}"),
            },
        };
        assert_eq!(json!(reissued.offer_id), original["offer_id"]);
        assert_eq!(json!(reissued.expires_at), original["expires_at"]);
        let assigned = engine
            .execute(AnswerOffer {
                driver: d_offered,
                offer_id: reissued.offer_id,
                accept: true,
            })
            .await
            .map(Option::unwrap)
            .unwrap();
        assert_eq!(assigned.driver_id, Some(d_offered));

        // Assigned drivers come back offline and resume their order on reconnecting.
        let (status, active, _) = engine
            .subscribe(SubscribeDriver::new(d_picked))
            .await
            .map(|(snapshot, feed)| (snapshot.status, snapshot.active, feed))
            .unwrap();
        assert_eq!(status.active_order_id, active.as_ref().map(|o| o.id));
        let picked_order = active.expect("active order back");
        let delivered = engine
            .execute(Delivered {
                driver: d_picked,
                order_id: picked_order.id,
            })
            .await
            .unwrap();
        assert_eq!(delivered.status.to_string(), "delivered");

        // A searching order resumes its search: a driver appearing near it gets the offer.
        let searching_id = orders
            .iter()
            .find(|(n, _)| *n == "searching_late")
            .unwrap()
            .1;
        let searching_view = engine.order(searching_id).await.unwrap();
        let (_, _, feed) = engine
            .subscribe(SubscribeDriver::new(d_spare))
            .await
            .map(|(snapshot, feed)| (snapshot.status, snapshot.active, feed))
            .unwrap();
        let mut spare = Driver { id: d_spare, feed };
        engine
            .execute(DriverAvailability {
                driver: d_spare,
                available: true,
            })
            .await
            .unwrap();
        let near = searching_view.pickup;
        engine
            .execute(DriverLocation {
                driver: d_spare,
                lat: near.lat,
                lon: near.lon,
                ts_ms: None,
            })
            .await
            .unwrap();
        let offer = next_offer(&mut spare, Duration::from_secs(5))
            .await
            .expect("search resumed");
        // Both recovered searching orders are within reach; either may win the driver.
        let earlier = orders.iter().find(|(n, _)| *n == "searching").unwrap().1;
        assert!(
            offer.order_id == searching_id || offer.order_id == earlier,
            "offer for a recovered searching order, got {:?}",
            offer.order_id
        );
        drop(app);
    });
}

#[test]
fn postgres_engine_killed_with_sigkill_recovers_every_order_as_it_was() {
    killed_with_orders_in_every_state_then_recovered(Db::Postgres);
}

#[test]
fn sqlite_engine_killed_with_sigkill_recovers_every_order_as_it_was() {
    killed_with_orders_in_every_state_then_recovered(Db::Sqlite);
}

/// Two engines on one PostgreSQL database: the first owns the regions, the second stands by.
/// The owner is killed with SIGKILL mid-delivery; within the lease TTL plus recovery the standby
/// owns the regions and the delivery completes there. The journal then shows no order with two
/// drivers, no driver with two active orders, and every acknowledged transition.
#[test]
fn the_owner_killed_mid_delivery_hands_its_regions_to_the_standby() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let db = runtime.block_on(TestDb::create(Db::Postgres));
    let scenario = runtime.block_on(create_users(&db, 2));
    let [driver, other_driver] = scenario.drivers[..] else {
        unreachable!()
    };
    let merchant = MerchantId::new();
    let mut owner = ChildEngine::start(&db.url);
    let mut standby = ChildEngine::spawn(&db.url);

    // Every reply acknowledges a transition: (order, the journal event it must have written).
    let mut acknowledged: Vec<(OrderId, &str)> = Vec::new();
    let mut ack = |view: &Value, event: &'static str| {
        acknowledged.push((order_id(view), event));
        view.clone()
    };
    let pickup = at(6_000.0, -3_000.0);
    owner.call(json!({"cmd": "driver_up", "driver": driver, "lat": pickup.lat, "lon": pickup.lon}));
    let far = at(-6_000.0, 6_000.0);
    owner.call(json!({"cmd": "driver_up", "driver": other_driver, "lat": far.lat, "lon": far.lon}));
    let placed = ack(
        &owner.call(json!({"cmd": "place", "id": OrderId::new(),
        "customer": scenario.customer, "merchant": merchant, "pickup": pickup,
        "dropoff": at(6_800.0, -3_000.0)})),
        "placed",
    );
    let id = order_id(&placed);
    ack(
        &owner.call(json!({"cmd": "accept", "merchant": merchant, "order": id})),
        "merchant_accepted",
    );
    let offer = owner.call(json!({"cmd": "next_offer", "driver": driver}));
    ack(
        &owner
            .call(json!({"cmd": "accept_offer", "driver": driver, "offer_id": offer["offer_id"]})),
        "driver_assigned",
    );
    ack(
        &owner.call(json!({"cmd": "ready", "merchant": merchant, "order": id})),
        "marked_ready",
    );
    // A second order, still searching far from both drivers' reach at the kill.
    let searching = ack(
        &owner.call(json!({"cmd": "place", "id": OrderId::new(),
        "customer": scenario.customer, "merchant": merchant, "pickup": at(-13_000.0, 13_000.0),
        "dropoff": at(-12_500.0, 13_000.0)})),
        "placed",
    );
    ack(
        &owner.call(json!({"cmd": "accept", "merchant": merchant, "order": order_id(&searching)})),
        "merchant_accepted",
    );

    let killed_at = std::time::Instant::now();
    owner.kill();
    standby.wait_ready();
    let took = killed_at.elapsed();
    assert!(
        took < Duration::from_secs(FAILOVER_LEASE_TTL_SECS + 10),
        "standby took {took:?} to take over"
    );
    eprintln!(
        "failover: standby ready {} ms after SIGKILL",
        took.as_millis()
    );

    // The driver reconnects to the new owner and finishes the delivery.
    standby
        .call(json!({"cmd": "driver_up", "driver": driver, "lat": pickup.lat, "lon": pickup.lon}));
    let picked = ack(
        &standby.call(json!({"cmd": "picked_up", "driver": driver, "order": id})),
        "picked_up",
    );
    assert_eq!(picked["status"], "picked_up");
    let delivered = ack(
        &standby.call(json!({"cmd": "delivered", "driver": driver, "order": id})),
        "delivered",
    );
    assert_eq!(delivered["status"], "delivered");
    assert_eq!(delivered["driver_id"], json!(driver));
    standby.kill();

    runtime.block_on(async {
        use sqlx::Connection;
        let mut raw = sqlx::PgConnection::connect(&db.url).await.unwrap();
        // No order ever had two drivers assigned without a release between them.
        let assignments: Vec<(uuid::Uuid, String, Value)> = sqlx::query_as(
            "SELECT order_id, event, detail FROM order_events \
             WHERE event IN ('driver_assigned', 'driver_released') ORDER BY order_id, seq",
        )
        .fetch_all(&mut raw)
        .await
        .unwrap();
        let mut holder: std::collections::HashMap<uuid::Uuid, Option<Value>> = Default::default();
        for (order, event, detail) in assignments {
            let current = holder.entry(order).or_default();
            if event == "driver_assigned" {
                assert!(current.is_none(), "order {order} assigned twice: {detail}");
                *current = Some(detail["driver_id"].clone());
            } else {
                *current = None;
            }
        }
        // No driver holds two active orders.
        let doubled: Vec<(uuid::Uuid, i64)> = sqlx::query_as(
            "SELECT driver_id, COUNT(*) FROM orders WHERE driver_id IS NOT NULL \
             AND status IN ('accepted', 'ready', 'picked_up') GROUP BY driver_id HAVING COUNT(*) > 1",
        )
        .fetch_all(&mut raw)
        .await
        .unwrap();
        assert!(doubled.is_empty(), "{doubled:?}");
        // Every acknowledged transition is in the journal.
        for (order, event) in &acknowledged {
            let (found,): (i64,) = sqlx::query_as(
                "SELECT COUNT(*) FROM order_events WHERE order_id = $1 AND event = $2",
            )
            .bind(order.as_uuid())
            .bind(*event)
            .fetch_one(&mut raw)
            .await
            .unwrap();
            assert_eq!(found, 1, "order {order}: acknowledged {event}, journaled {found} times");
        }
        // The new owner holds every region under a newer epoch.
        let leases: Vec<(String, i64)> =
            sqlx::query_as("SELECT owner, epoch FROM region_leases")
                .fetch_all(&mut raw)
                .await
                .unwrap();
        assert!(leases.iter().all(|(_, epoch)| *epoch == 2), "{leases:?}");
    });
}
