//! The fleet simulator against a running engine: every order delivered without errors, the
//! same seed asks for the same demand, the Helsinki city runs on an engine serving the
//! Helsinki regions, with the engine's ETAs scored against what the drivers did, a run with
//! the notification stand-ins sees every customer message arrive, in order, on both channels,
//! and customers ordering over WhatsApp all get to a placed order, each message acting once
//! however often it is delivered.

use std::collections::HashMap;
use std::time::Duration;

use mealkitz::config::{Config, MapsConfig};
use mealkitz::sim::{CityKind, SimConfig, StandIns, ThinkTime, WebhookArrival, WhatsAppPlan};

use crate::helpers::{Db, TestDb, spawn_app, spawn_app_with, test_config};

fn quick_run(url: String, city: CityKind) -> SimConfig {
    SimConfig {
        url,
        drivers: 40,
        merchants: 2,
        customers: 3,
        orders_per_minute: 40.0,
        duration: Duration::from_secs(8),
        seed: 11,
        accept_rate: 0.8,
        // Fast enough that every delivery ends within seconds.
        time_scale: 400.0,
        progress: false,
        city,
        maps: MapsConfig::default(),
        notify: None,
        whatsapp: WhatsAppPlan::default(),
    }
}

#[actix_web::test]
async fn the_simulator_delivers_every_order_and_a_seed_repeats_its_demand() {
    let app = spawn_app(Db::Sqlite).await;
    let config = quick_run(app.address.clone(), CityKind::Synthetic);
    let first = mealkitz::sim::run(config.clone(), |_| {})
        .await
        .expect("first run");
    assert!(first.orders_placed > 0, "{}", first.table());
    assert!(first.clean(), "{}", first.table());
    assert_eq!(
        first.orders_delivered,
        first.orders_placed,
        "{}",
        first.table()
    );
    assert_eq!(first.dispatch_latency_ms.count, first.orders_placed);
    assert!(first.pickup_distance_m.mean > 0.0);

    // A second run with the same seed reuses the accounts and asks for the same orders.
    let second = mealkitz::sim::run(config, |_| {})
        .await
        .expect("second run");
    assert_eq!(second.demand_fingerprint, first.demand_fingerprint);
    assert_eq!(second.orders_planned, first.orders_planned);
    assert!(second.clean(), "{}", second.table());
}

#[actix_web::test]
async fn a_helsinki_run_delivers_on_the_helsinki_regions_and_scores_every_eta() {
    let db = TestDb::create(Db::Sqlite).await;
    let mut config = test_config(&db);
    let regions = format!(
        "--regions={}/data/helsinki/regions.geojson",
        env!("CARGO_MANIFEST_DIR")
    );
    config.dispatch.regions = Config::from_args([regions])
        .expect("the Helsinki regions are valid")
        .dispatch
        .regions;
    let app = spawn_app_with(db, config).await;
    let report = mealkitz::sim::run(quick_run(app.address.clone(), CityKind::Helsinki), |_| {})
        .await
        .expect("Helsinki run");
    let table = report.table();
    assert!(report.orders_placed > 0, "{table}");
    assert!(report.clean(), "{table}");
    assert_eq!(report.orders_delivered, report.orders_placed, "{table}");
    assert_eq!(report.city, CityKind::Helsinki);
    assert_eq!(report.routing, "straight_line");
    // Every delivery is scored against its offer's pickup ETA. (Its last leg's route frame
    // comes only when the engine is not holding back re-routing, which at this time scale it
    // mostly is: the delivery figure has its own unit test.)
    assert_eq!(
        report.pickup_eta_error.count, report.orders_delivered,
        "{table}"
    );
    assert!(report.pickup_eta_error.mean_abs_secs.is_finite(), "{table}");
    assert!(report.delivery_eta_error.count <= report.orders_delivered);

    // The synthetic city against this engine is refused up front, saying why.
    let wrong = mealkitz::sim::run(quick_run(app.address.clone(), CityKind::Synthetic), |_| {})
        .await
        .expect_err("the synthetic city is not served here");
    assert!(
        wrong
            .to_string()
            .contains("does not serve the synthetic city"),
        "{wrong}"
    );
}

#[actix_web::test]
async fn a_notified_run_brings_each_customer_message_once_in_the_order_of_the_transitions() {
    let stand_ins = StandIns::start().await.expect("the stand-ins start");
    let db = TestDb::create(Db::Sqlite).await;
    let mut config = test_config(&db);
    stand_ins.configure(&mut config.notify);
    let app = spawn_app_with(db, config).await;
    let mut sim = quick_run(app.address.clone(), CityKind::Synthetic);
    sim.duration = Duration::from_secs(5);
    sim.notify = Some(stand_ins.clone());
    let report = mealkitz::sim::run(sim, |_| {}).await.expect("notified run");
    let table = report.table();
    assert!(report.orders_delivered > 0, "{table}");
    assert!(report.clean(), "{table}");
    let figures = report
        .notifications
        .as_ref()
        .expect("the run measured notifications");
    assert!(table.contains("notifier lag, WhatsApp"), "{table}");
    assert_eq!(figures.signature_failures, 0, "{table}");
    assert_eq!(figures.whatsapp_auth_failures, 0, "{table}");
    assert_eq!(figures.delivered_without_message, 0, "{table}");
    assert_eq!(figures.whatsapp.orders_out_of_order, 0, "{table}");
    assert_eq!(figures.webhook.orders_out_of_order, 0, "{table}");
    assert_eq!(figures.whatsapp_untimed, 0, "{table}");
    assert_eq!(figures.whatsapp.lag_ms.count, figures.whatsapp.messages);
    assert!(figures.whatsapp.lag_ms.p50 > 0.0, "{table}");

    // Read from the stand-ins' own records: each order's customer messages, matched to their
    // journal entries through the webhook of the same message id, are one per transition in
    // the order the transitions happened; its webhooks are every event, placed first.
    let webhooks = stand_ins.webhook_arrivals();
    let entries: HashMap<&str, &WebhookArrival> = webhooks
        .iter()
        .map(|hook| (hook.webhook_id.as_str(), hook))
        .collect();
    let mut told: HashMap<&str, Vec<&str>> = HashMap::new();
    for message in stand_ins.whatsapp_arrivals() {
        let id = message.message_id.as_deref().expect("a message id");
        let entry = entries[id];
        assert_eq!(message.kind, "template", "outside the 24-hour window");
        assert_eq!(message.to.len(), 12, "{}", message.to);
        told.entry(entry.order_id.as_str())
            .or_default()
            .push(entry.event.as_str());
    }
    assert_eq!(told.len(), report.orders_delivered, "{table}");
    for (order, events) in &told {
        assert_eq!(
            events,
            &[
                "order.accepted",
                "order.driver_assigned",
                "order.picked_up",
                "order.delivered"
            ],
            "order {order}"
        );
    }
    let mut hooked: HashMap<&str, Vec<&str>> = HashMap::new();
    for hook in &webhooks {
        hooked
            .entry(hook.order_id.as_str())
            .or_default()
            .push(hook.event.as_str());
    }
    for (order, events) in &hooked {
        assert_eq!(events.len(), 6, "order {order}: {events:?}");
        assert_eq!(events.first(), Some(&"order.placed"), "order {order}");
        assert_eq!(events.last(), Some(&"order.delivered"), "order {order}");
    }

    // The receiver does check: a delivery signed with another secret is refused and counted.
    let forged = reqwest::Client::new()
        .post(stand_ins.webhook_url(0))
        .header("webhook-id", "msg_forged")
        .header(
            "webhook-timestamp",
            chrono::Utc::now().timestamp().to_string(),
        )
        .header(
            "webhook-signature",
            mealkitz::notify::signing::signature(
                &mealkitz::notify::signing::new_secret(),
                "msg_forged",
                chrono::Utc::now().timestamp(),
                b"{}",
            ),
        )
        .body("{}")
        .send()
        .await
        .expect("the receiver answers");
    assert_eq!(forged.status(), 401);
    assert_eq!(stand_ins.signature_failures(), 1);
    stand_ins.stop().await;
}

/// A short run where two of the three customers order over WhatsApp, a third of their webhook
/// calls delivered twice, nobody trying a declined card.
async fn whatsapp_run(kind: Db) {
    let stand_ins = StandIns::start().await.expect("the stand-ins start");
    let db = TestDb::create(kind).await;
    let mut config = test_config(&db);
    stand_ins.configure(&mut config.notify);
    let app = spawn_app_with(db, config).await;
    let mut sim = quick_run(app.address.clone(), CityKind::Synthetic);
    sim.duration = Duration::from_secs(6);
    sim.whatsapp = WhatsAppPlan {
        share: 0.67,
        think: ThinkTime {
            min: Duration::from_millis(20),
            max: Duration::from_millis(80),
        },
        redeliver_share: 0.3,
        decline_share: 0.0,
        stand_ins: Some(stand_ins.clone()),
    };
    let report = mealkitz::sim::run(sim, |_| {}).await.expect("WhatsApp run");
    let table = report.table();
    let whatsapp = report.whatsapp.as_ref().expect("the run measured WhatsApp");
    assert_eq!(whatsapp.customers, 2, "{table}");
    assert!(whatsapp.conversations > 0, "{table}");
    assert!(whatsapp.failures.is_empty(), "{table}");
    assert_eq!(whatsapp.orders, whatsapp.conversations, "{table}");
    assert_eq!(whatsapp.conversion, 1.0, "{table}");
    assert_eq!(
        whatsapp.time_to_order_secs.count, whatsapp.orders,
        "{table}"
    );
    assert_eq!(whatsapp.declined_first, 0, "{table}");
    // Redelivered messages were answered once.
    assert!(whatsapp.redeliveries > 0, "{table}");
    assert_eq!(whatsapp.duplicate_actions, 0, "{table}");
    // Hi, location, kitchen, dish, quantity and checkout each got their reply, timed.
    assert!(
        whatsapp.reply_latency_ms.count >= 6 * whatsapp.conversations,
        "{table}"
    );
    assert!(whatsapp.reply_latency_ms.p50 > 0.0, "{table}");
    assert!(table.contains("WhatsApp ordering"), "{table}");
    // The third customer checked out over REST; every order, either way, was delivered.
    assert!(report.orders_placed > whatsapp.orders, "{table}");
    assert_eq!(report.orders_delivered, report.orders_placed, "{table}");
    assert!(report.clean(), "{table}");
    stand_ins.stop().await;
}

#[actix_web::test]
async fn whatsapp_customers_all_order_and_a_redelivered_message_acts_once_on_sqlite() {
    whatsapp_run(Db::Sqlite).await;
}

#[actix_web::test]
async fn whatsapp_customers_all_order_and_a_redelivered_message_acts_once_on_postgres() {
    whatsapp_run(Db::Postgres).await;
}
