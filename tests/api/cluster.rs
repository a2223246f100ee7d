//! Region leases across replicas sharing one database: claims are all or nothing, a standby
//! takes over when the owner stops, and a replica whose lease was taken can no longer journal
//! and steps down without exiting.
//! (The SIGKILL failover is in `recovery.rs`, with the child-engine harness.)

use mealkitz::actors::commands::*;
use std::time::{Duration, Instant};

use mealkitz::domain::{Change, JournalEntry, MerchantId, Order, Position, Role};
use mealkitz::store::{Claim, Store, StoreError};
use serde_json::Value;
use sqlx::Connection;

use crate::helpers::at;
use crate::helpers::{
    Db, TestDb, config_for, migrated_store, new_user, spawn_app_with, start_without_db,
    test_config, with_redis,
};
use crate::relay::Relay;

/// A customer row and an order placed in region `ne` for them (not yet stored).
async fn placed_order(store: &Store) -> (Order, JournalEntry) {
    let customer = store
        .create_user(new_user(
            &format!("{}@example.com", uuid::Uuid::new_v4()),
            Role::Customer,
        ))
        .await
        .unwrap();
    crate::journal::placed(customer.id, "ne")
}

/// `order` with `change` applied as its next journal entry.
pub(crate) fn next(order: &Order, change: Change) -> (Order, JournalEntry) {
    let mut after = order.clone();
    let entry = after.decide(change, mealkitz::store::now()).unwrap();
    after.apply(&entry).unwrap();
    (after, entry)
}

crate::helpers::each_backend! {
    a_claim_is_all_or_nothing_and_a_stale_epoch_cannot_journal => claim_and_fence;
}

async fn claim_and_fence(kind: Db) {
    let db = TestDb::create(kind).await;
    let first = migrated_store(&db).await;
    let second = migrated_store(&db).await;
    let regions = vec!["ne".to_owned(), "nw".to_owned()];
    let ttl = Duration::from_secs(60);

    let Claim::Granted(leases) = first.claim_regions("a", &regions, ttl).await.unwrap() else {
        panic!("free regions are granted");
    };
    assert_eq!(leases.iter().map(|l| l.epoch).collect::<Vec<_>>(), [1, 1]);
    // One region held is enough to refuse the whole claim.
    let held = second
        .claim_regions("b", &["sw".to_owned(), "ne".to_owned()], ttl)
        .await
        .unwrap();
    assert!(
        matches!(&held, Claim::Held { owner, region_id, .. } if owner == "a" && region_id == "ne"),
        "{held:?}"
    );
    let sw_left_free = second.claim_regions("c", &["sw".to_owned()], ttl).await;
    assert!(
        matches!(sw_left_free, Ok(Claim::Granted(_))),
        "a refused claim takes nothing: {sw_left_free:?}"
    );

    first.fence("a", &leases);
    let (order, placed) = placed_order(&first).await;
    first.create_order(&order, &placed).await.unwrap();
    assert_eq!(first.renew_regions("a", ttl).await.unwrap().len(), 2);

    // "a" stops cleanly; "b" takes over under new epochs.
    first.release_regions("a").await.unwrap();
    let Claim::Granted(taken) = second.claim_regions("b", &regions, ttl).await.unwrap() else {
        panic!("released regions are granted");
    };
    assert_eq!(taken.iter().map(|l| l.epoch).collect::<Vec<_>>(), [2, 2]);
    second.fence("b", &taken);

    // "a", still running on its old epoch, can neither journal nor renew.
    let (accepted, entry) = next(&order, Change::MerchantAccepted { prep_minutes: 5 });
    let refused = first
        .append(&accepted, std::slice::from_ref(&entry))
        .await
        .unwrap_err();
    assert!(matches!(refused, StoreError::LeaseLost(_)), "{refused:?}");
    let (other, other_placed) = placed_order(&first).await;
    let refused = first.create_order(&other, &other_placed).await.unwrap_err();
    assert!(matches!(refused, StoreError::LeaseLost(_)), "{refused:?}");
    assert_eq!(first.renew_regions("a", ttl).await.unwrap().len(), 0);
    // The new owner's write of the same transition goes through.
    second.append(&accepted, &[entry]).await.unwrap();
    let stored = second.load_order(order.id).await.unwrap().unwrap();
    assert_eq!(stored.version, 2);
    // A region the process does not own is refused before touching the database.
    let mut elsewhere = other.clone();
    elsewhere.region_id = "se".into();
    let refused = second
        .create_order(&elsewhere, &other_placed)
        .await
        .unwrap_err();
    assert!(matches!(refused, StoreError::LeaseLost(_)), "{refused:?}");
}

/// A journal write in flight holds its region's lease row against a takeover but not against a
/// renewal: the renewal (expiry only) goes through at once, the takeover waits until the write
/// committed, and the write, first, lands. The write is held mid-statement by a lock on its
/// order's row, taken after the lease rows (PostgreSQL; SQLite has one writer at a time).
#[actix_web::test]
async fn a_journal_write_in_flight_holds_off_a_takeover_but_not_a_renewal() {
    const PROMPTLY: Duration = Duration::from_secs(2);
    const WAITING: Duration = Duration::from_millis(300);
    let db = TestDb::create(Db::Postgres).await;
    let first = migrated_store(&db).await;
    let second = migrated_store(&db).await;
    let regions = vec!["ne".to_owned()];
    let ttl = Duration::from_secs(60);
    let Claim::Granted(leases) = first.claim_regions("a", &regions, ttl).await.unwrap() else {
        panic!("a free region is granted");
    };
    first.fence("a", &leases);
    let (order, placed) = placed_order(&first).await;
    first.create_order(&order, &placed).await.unwrap();

    let mut holder = sqlx::PgConnection::connect(&db.url).await.unwrap();
    let mut held = holder.begin().await.unwrap();
    sqlx::query("SELECT 1 FROM orders WHERE id = $1 FOR UPDATE")
        .bind(order.id.0)
        .execute(&mut *held)
        .await
        .unwrap();
    let (accepted, entry) = next(&order, Change::MerchantAccepted { prep_minutes: 5 });
    let writer = first.clone();
    let write = tokio::spawn(async move { writer.append(&accepted, &[entry]).await });
    tokio::time::sleep(WAITING).await;
    assert!(!write.is_finished(), "the write waits for its order's row");

    let renewed = tokio::time::timeout(PROMPTLY, first.renew_regions("a", ttl)).await;
    assert!(
        matches!(&renewed, Ok(Ok(held)) if held.len() == 1),
        "a renewal does not wait for a journal write: {renewed:?}"
    );
    first.release_regions("a").await.unwrap();
    let claimer = second.clone();
    let regions_again = regions.clone();
    let takeover =
        tokio::spawn(async move { claimer.claim_regions("b", &regions_again, ttl).await });
    tokio::time::sleep(WAITING).await;
    assert!(
        !takeover.is_finished(),
        "a takeover waits for the journal write in flight"
    );

    held.commit().await.unwrap();
    write.await.unwrap().expect("the write was first: it lands");
    let taken = tokio::time::timeout(PROMPTLY, takeover)
        .await
        .expect("the takeover goes on once the write committed")
        .unwrap()
        .unwrap();
    assert!(
        matches!(&taken, Claim::Granted(leases) if leases[0].epoch == 2),
        "{taken:?}"
    );
    assert_eq!(
        first.load_order(order.id).await.unwrap().unwrap().version,
        2
    );
}

async fn ready_body(client: &reqwest::Client, address: &str) -> (u16, Value) {
    let reply = client.get(format!("{address}/ready")).send().await.unwrap();
    let status = reply.status().as_u16();
    (status, reply.json().await.unwrap_or(Value::Null))
}

/// A standby takes the regions over within this of a graceful stop of their owner (whose lease
/// TTL is 30 s).
const TAKEOVER_WITHIN: Duration = Duration::from_secs(5);

#[actix_web::test]
async fn a_standby_replica_takes_over_at_once_when_the_owner_stops_gracefully() {
    let db = TestDb::create(Db::Postgres).await;
    let url = db.database_url();
    let owner = spawn_app_with(db, {
        let mut config = config_for(url.clone());
        config.dispatch.lease_ttl = Duration::from_secs(30);
        config
    })
    .await;
    let standby = start_without_db({
        let mut config = config_for(url);
        config.dispatch.lease_ttl = Duration::from_secs(30);
        config
    })
    .await;
    let client = reqwest::Client::new();
    // The standby serves HTTP but is not ready: it names the owner.
    let deadline = Instant::now() + Duration::from_secs(10);
    let (status, body) = loop {
        let (status, body) = ready_body(&client, &standby.address).await;
        if body["checks"]["dispatch"]
            .as_str()
            .is_some_and(|d| d.starts_with("standby"))
            || Instant::now() > deadline
        {
            break (status, body);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(status, 503, "{body}");
    assert!(
        body["checks"]["dispatch"]
            .as_str()
            .unwrap()
            .contains("leased to"),
        "{body}"
    );

    let customer = owner.user_id("customer").await;
    let order = owner
        .place_at(customer, MerchantId::new(), at(5_000.0, 5_000.0))
        .await;
    owner.stop_gracefully().await;

    // With the leases released, the standby does not wait for the 30 s TTL. If it does, the
    // failure says what the database held then.
    let stopped = Instant::now();
    while !standby.engine.is_ready() {
        if stopped.elapsed() > TAKEOVER_WITHIN {
            let store = migrated_store(&owner.db).await;
            panic!(
                "the standby did not take over within {TAKEOVER_WITHIN:?} of the owner's stop: \
                 leases {:?}, live members {:?}, the standby's /ready {}",
                store.region_leases().await,
                store.live_members().await,
                ready_body(&client, &standby.address).await.1
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let took = stopped.elapsed();
    eprintln!(
        "handover: standby ready {} ms after the owner stopped",
        took.as_millis()
    );
    let recovered = standby.engine.order(order.id).await.unwrap();
    assert_eq!(recovered.id, order.id);
    assert_eq!(ready_body(&client, &standby.address).await.0, 200);
    standby.handle.stop(true).await;
}

#[actix_web::test]
async fn a_replica_whose_lease_was_taken_over_writes_nothing_steps_down_and_stays_up() {
    let db = TestDb::create(Db::Postgres).await;
    let mut config = test_config(&db);
    config.dispatch.lease_ttl = Duration::from_secs(3);
    let app = spawn_app_with(db, config).await;
    let customer = app.user_id("customer").await;
    let merchant = MerchantId::new();
    let order = app.place_at(customer, merchant, at(5_000.0, 5_000.0)).await;

    // Another replica takes the regions over (as if this one had been paused past its lease),
    // in one statement, as a claim of expired leases does: new owner, next epoch.
    let mut raw = sqlx::PgConnection::connect(&app.db.url).await.unwrap();
    let taken = sqlx::query(
        "UPDATE region_leases SET owner = 'intruder', epoch = epoch + 1, expires_at_ms = $1",
    )
    .bind(mealkitz::store::unix_ms() + 60_000)
    .execute(&mut raw)
    .await
    .unwrap()
    .rows_affected();
    assert_eq!(taken, 4);

    let refused = app
        .engine
        .execute(MerchantAccept {
            merchant_id: merchant,
            order_id: order.id,
            prep_minutes: 10,
        })
        .await;
    assert!(refused.is_err(), "a fenced replica journaled: {refused:?}");

    // Its next renewal finds the leases gone: it steps down to standby, says so, and stays up.
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    let (status, body) = loop {
        let (status, body) = ready_body(&client, &app.address).await;
        if body["checks"]["dispatch"]
            .as_str()
            .is_some_and(|d| d.starts_with("standby"))
        {
            break (status, body);
        }
        assert!(
            Instant::now() < deadline,
            "not standing by 10 s after losing its lease: {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(status, 503, "{body}");
    assert!(
        body["checks"]["dispatch"]
            .as_str()
            .unwrap()
            .contains("intruder"),
        "{body}"
    );
    assert!(
        body["checks"]["leases"]
            .as_str()
            .is_some_and(|l| l.starts_with("stepped down")),
        "{body}"
    );
    assert!(!app.engine.is_ready());
    let refused = app
        .engine
        .execute(MerchantAccept {
            merchant_id: merchant,
            order_id: order.id,
            prep_minutes: 10,
        })
        .await;
    assert!(refused.is_err(), "a standby journaled: {refused:?}");
    let events: Vec<(String,)> =
        sqlx::query_as("SELECT event FROM order_events WHERE order_id = $1 ORDER BY seq")
            .bind(order.id.as_uuid())
            .fetch_all(&mut raw)
            .await
            .unwrap();
    assert_eq!(events, [("placed".to_owned(),)]);
    // Still serving a lease TTL later.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let health = app.get("/health").await;
    assert_eq!(health.status, 200, "{}", health.text);
}

/// `(region, owner)` of every lease held now.
pub(crate) async fn held_leases(url: &str) -> Vec<(String, String)> {
    let mut raw = sqlx::PgConnection::connect(url).await.unwrap();
    sqlx::query_as(
        "SELECT region_id, owner FROM region_leases \
         WHERE expires_at_ms > (EXTRACT(EPOCH FROM now()) * 1000)::bigint ORDER BY region_id",
    )
    .fetch_all(&mut raw)
    .await
    .unwrap()
}

/// Where to place an order in each demo region.
pub(crate) fn centre_of(region: &str) -> Position {
    match region {
        "nw" => at(5_000.0, -5_000.0),
        "ne" => at(5_000.0, 5_000.0),
        "sw" => at(-5_000.0, -5_000.0),
        _ => at(-5_000.0, 5_000.0),
    }
}

/// Waits until replicas `first` and `second` hold two regions each; their leases.
pub(crate) async fn shared_two_and_two(db_url: &str) -> Vec<(String, String)> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let leases = held_leases(db_url).await;
        let count = |node: &str| leases.iter().filter(|(_, o)| o.starts_with(node)).count();
        if count("first") == 2 && count("second") == 2 {
            return leases;
        }
        assert!(Instant::now() < deadline, "regions not shared: {leases:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Two replicas on one database and one Redis key prefix, the second reaching Redis at
/// `second_redis`; returns them once they share the four regions two and two, with the regions
/// each holds.
async fn two_replicas(
    second_redis: &str,
    tune: impl Fn(&mut mealkitz::config::Config),
) -> (
    crate::helpers::TestApp,
    crate::helpers::Running,
    String,
    String,
) {
    let db = TestDb::create(Db::Postgres).await;
    let url = db.database_url();
    let mut first = with_redis(config_for(url.clone()), &crate::helpers::redis_url());
    first.dispatch.node_id = "first".into();
    tune(&mut first);
    let mut second = config_for(url);
    second.dispatch.node_id = "second".into();
    second.redis = first.redis.clone().map(|mut redis| {
        redis.url = mealkitz::config::Secret::new(second_redis);
        redis
    });
    tune(&mut second);
    let first = spawn_app_with(db, first).await;
    let second = start_without_db(second).await;
    second.wait_until_ready().await;
    let leases = shared_two_and_two(&first.db.url).await;
    let region_of = |node: &str| {
        leases
            .iter()
            .find(|(_, owner)| owner.starts_with(node))
            .map(|(region, _)| region.clone())
            .unwrap()
    };
    let (of_first, of_second) = (region_of("first"), region_of("second"));
    (first, second, of_first, of_second)
}

#[actix_web::test]
async fn a_replica_that_loses_redis_keeps_its_own_regions_and_refuses_others_with_a_clear_error() {
    let relay = Relay::to_redis().await;
    let (first, second, others, own) =
        two_replicas(&format!("redis://127.0.0.1:{}", relay.port), |_| {}).await;
    let customer = first.user_id("customer").await;
    let order =
        |region: &str| crate::journal::new_order(customer, centre_of(region), centre_of(region));

    // With Redis, the second replica places orders in its own region and in the first's.
    let routed = second
        .engine
        .execute(PlaceOrder {
            order: order(&others),
        })
        .await
        .unwrap();
    assert_eq!(first.engine.order(routed.id).await.unwrap().id, routed.id);
    second
        .engine
        .execute(PlaceOrder { order: order(&own) })
        .await
        .unwrap();

    relay.cut();
    // Its own region keeps working; the other's fails at once, saying why.
    let local = second
        .engine
        .execute(PlaceOrder { order: order(&own) })
        .await
        .unwrap();
    assert_eq!(local.status, mealkitz::domain::OrderStatus::Placed);
    let started = Instant::now();
    let refused = second
        .engine
        .execute(PlaceOrder {
            order: order(&others),
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), "dispatch_unavailable", "{refused}");
    assert!(
        refused.to_string().contains("cannot reach other replicas"),
        "{refused}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "refused after {:?}",
        started.elapsed()
    );
    // It stays ready, and says what is degraded.
    let (status, body) = ready_body(&reqwest::Client::new(), &second.address).await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body["checks"]["redis"]
            .as_str()
            .unwrap()
            .starts_with("degraded"),
        "{body}"
    );
    second.handle.stop(true).await;
}

#[actix_web::test]
async fn a_driver_served_by_another_replica_goes_offline_after_its_socket_closes() {
    let (first, second, _, theirs) = two_replicas(&crate::helpers::redis_url(), |config| {
        config.dispatch.driver_grace = Duration::from_secs(1);
    })
    .await;
    let region = mealkitz::geo::RegionId::from(theirs.as_str());
    let driver = first.user_id("driver").await;
    let spot = centre_of(&theirs);

    // The driver's app talks to the first replica; the driver is in the second's region, so
    // its actor runs there and its feed is forwarded.
    first
        .engine
        .execute(DriverLocation {
            driver,
            lat: spot.lat,
            lon: spot.lon,
            ts_ms: None,
        })
        .await
        .unwrap();
    let (_, _, feed) = first
        .engine
        .subscribe(SubscribeDriver::new(driver))
        .await
        .map(|(snapshot, feed)| (snapshot.status, snapshot.active, feed))
        .unwrap();
    first
        .engine
        .execute(DriverAvailability {
            driver,
            available: true,
        })
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while second
        .engine
        .execute(IndexedDrivers {
            region: region.clone(),
        })
        .await
        .unwrap()
        != 1
    {
        assert!(Instant::now() < deadline, "the driver was never matchable");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        first
            .engine
            .execute(ReadDriverStatus { driver })
            .await
            .unwrap()
            .online
    );

    // The socket closes: its session drops the feed and says so.
    drop(feed);
    first.engine.driver_disconnected(driver);
    // After the grace period the driver is out of the index: no forwarder keeps it online.
    let deadline = Instant::now() + Duration::from_secs(10);
    while second
        .engine
        .execute(IndexedDrivers {
            region: region.clone(),
        })
        .await
        .unwrap()
        != 0
    {
        assert!(
            Instant::now() < deadline,
            "the driver is still matchable 10 s after its socket closed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    second.handle.stop(true).await;
}
