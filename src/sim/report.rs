//! What the simulation measured, and the report it prints.
//!
//! ETA error: for each delivery, the engine's predictions against what the simulated driver
//! did, both in simulated seconds (real seconds × time scale). Pickup: the offer's
//! `pickup_eta_seconds` (road seconds, the engine's learned correction applied) against
//! accepting the offer → arriving at the pickup (the driver stands still while it reads the
//! offer). Delivery: the first `to_dropoff` route frame's `duration_secs` (the router's,
//! uncorrected) against the frame's arrival → arriving at the door. The engine routes that leg
//! from the driver's location fix sent on leaving the pickup — or from a later fix when it is
//! still holding back re-routing, so timing from the frame keeps both ends at the same point.
//! Orders whose frame came only after the driver was at the door are not scored.
//!
//! Time scale and the engine's learned corrections: the engine learns its per-region, per-hour
//! factor from wall-clock durations, which a time scale shrinks. So during a scaled run each
//! trip is either discarded as an outlier or pulls the factor toward its floor (a pickup leg
//! that also holds a long wait for the food often stays inside the accepted ratio), and the
//! factor, being persisted, stays skewed for later runs on the same store; the offer's pickup
//! ETA carries it (a 60 s Helsinki run at ×30 left it at 0.5, the floor). The figures
//! here are in simulated time throughout, so they measure the engine's predictions as told,
//! skewed factor included: run against a fresh store and compare the delivery figure (the
//! router's own duration) for the router's accuracy.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Instant;

use serde::Serialize;

use super::args::SimConfig;
use super::city::{City, CityKind};
use super::notify::{ChannelFigures, NotifyFigures};
use super::summary::Summary;
use super::whatsapp_figures::WhatsAppFigures;

/// One order's life, as the simulated clients saw it.
#[derive(Debug, Default, Clone)]
pub struct Trace {
    pub placed_at: Option<Instant>,
    /// When the merchant sent `accept_order`.
    pub accepted_at: Option<Instant>,
    /// When the first offer for it reached a driver's socket.
    pub first_offer_at: Option<Instant>,
    pub assigned_at: Option<Instant>,
    /// How far the driver was from the pickup when assigned.
    pub pickup_distance_m: Option<f64>,
    /// When the driver reached the pickup (it may then wait for the food).
    pub at_pickup_at: Option<Instant>,
    pub picked_up_at: Option<Instant>,
    pub delivered_at: Option<Instant>,
    pub closed_otherwise: bool,
    /// The assigned driver's offer: its pickup ETA (simulated seconds) and when it accepted.
    pub predicted_pickup_secs: Option<f64>,
    pub offer_accepted_at: Option<Instant>,
    /// The first `to_dropoff` route's duration (simulated seconds), and when it came.
    pub predicted_delivery_secs: Option<f64>,
    pub delivery_routed_at: Option<Instant>,
    /// When the driver reached the door.
    pub at_dropoff_at: Option<Instant>,
}

/// Everything counted during a run.
#[derive(Debug, Default)]
pub struct Stats {
    pub orders: HashMap<String, Trace>,
    pub failed_checkouts: u64,
    pub errors: BTreeMap<String, u64>,
    pub ws_in: u64,
    pub ws_out: u64,
}

impl Stats {
    pub fn trace(&mut self, order: &str) -> &mut Trace {
        self.orders.entry(order.to_owned()).or_default()
    }

    pub fn error(&mut self, code: &str) {
        *self.errors.entry(code.to_owned()).or_default() += 1;
    }

    /// The ids of the orders delivered.
    pub fn delivered_orders(&self) -> HashSet<String> {
        self.orders
            .iter()
            .filter(|(_, t)| t.delivered_at.is_some())
            .map(|(id, _)| id.clone())
            .collect()
    }

    pub fn delivered(&self) -> usize {
        self.orders
            .values()
            .filter(|t| t.delivered_at.is_some())
            .count()
    }

    /// Placed orders neither delivered nor otherwise closed.
    pub fn open(&self) -> usize {
        self.orders
            .values()
            .filter(|t| t.placed_at.is_some() && t.delivered_at.is_none() && !t.closed_otherwise)
            .count()
    }

    pub fn report(
        self,
        config: &SimConfig,
        city: &City,
        maps: MapsUsed,
        times: RunTimes,
    ) -> Report {
        let RunTimes {
            setup_secs,
            demand_secs,
            total_secs,
        } = times;
        let placed: Vec<&Trace> = self
            .orders
            .values()
            .filter(|t| t.placed_at.is_some())
            .collect();
        let ms = |a: Option<Instant>, b: Option<Instant>| {
            Some(b?.checked_duration_since(a?)?.as_secs_f64() * 1e3)
        };
        let sim_min = |a: Option<Instant>, b: Option<Instant>| {
            Some(b?.checked_duration_since(a?)?.as_secs_f64() * config.time_scale / 60.0)
        };
        let dispatch: Vec<f64> = placed
            .iter()
            .filter_map(|t| ms(t.accepted_at, t.first_offer_at))
            .collect();
        let to_assignment: Vec<f64> = placed
            .iter()
            .filter_map(|t| ms(t.accepted_at, t.assigned_at))
            .map(|v| v / 1e3)
            .collect();
        let pickup_distance: Vec<f64> = placed.iter().filter_map(|t| t.pickup_distance_m).collect();
        let pickup_time: Vec<f64> = placed
            .iter()
            .filter_map(|t| sim_min(t.assigned_at, t.at_pickup_at))
            .collect();
        let wait_at_pickup: Vec<f64> = placed
            .iter()
            .filter_map(|t| sim_min(t.at_pickup_at, t.picked_up_at))
            .collect();
        let delivery_time: Vec<f64> = placed
            .iter()
            .filter_map(|t| sim_min(t.placed_at, t.delivered_at))
            .collect();
        let sim_secs = |a: Option<Instant>, b: Option<Instant>| sim_min(a, b).map(|m| m * 60.0);
        let pickup_eta = placed.iter().filter_map(|t| {
            Some((
                t.predicted_pickup_secs?,
                sim_secs(t.offer_accepted_at, t.at_pickup_at)?,
            ))
        });
        let delivery_eta = placed.iter().filter_map(|t| {
            Some((
                t.predicted_delivery_secs?,
                sim_secs(t.delivery_routed_at, t.at_dropoff_at)?,
            ))
        });
        Report {
            city: config.city,
            routing: maps.routing,
            addresses_from_map: maps.addresses,
            seed: config.seed,
            demand_fingerprint: city.demand_fingerprint(),
            drivers: config.drivers,
            merchants: config.merchants,
            customers: config.customers,
            orders_per_minute: config.orders_per_minute,
            time_scale: config.time_scale,
            setup_secs,
            demand_secs,
            run_secs: total_secs,
            orders_planned: city.orders.len(),
            orders_placed: placed.len(),
            orders_delivered: placed.iter().filter(|t| t.delivered_at.is_some()).count(),
            orders_closed_otherwise: placed.iter().filter(|t| t.closed_otherwise).count(),
            orders_still_open: placed
                .iter()
                .filter(|t| t.delivered_at.is_none() && !t.closed_otherwise)
                .count(),
            checkouts_failed: self.failed_checkouts,
            dispatch_latency_ms: Summary::of(dispatch),
            time_to_assignment_secs: Summary::of(to_assignment),
            pickup_distance_m: Summary::of(pickup_distance),
            pickup_time_sim_min: Summary::of(pickup_time),
            wait_at_pickup_sim_min: Summary::of(wait_at_pickup),
            delivery_time_sim_min: Summary::of(delivery_time),
            pickup_eta_error: EtaError::of(pickup_eta),
            delivery_eta_error: EtaError::of(delivery_eta),
            ws_messages_per_sec: (self.ws_in + self.ws_out) as f64 / total_secs.max(1e-9),
            errors: self.errors,
            notifications: None,
            whatsapp: None,
        }
    }
}

/// How long the run's phases took, real seconds.
#[derive(Debug, Clone, Copy)]
pub struct RunTimes {
    pub setup_secs: f64,
    pub demand_secs: f64,
    pub total_secs: f64,
}

/// What the simulator's own maps could do.
#[derive(Debug, Clone, Copy)]
pub struct MapsUsed {
    /// `osrm` or `straight_line`: how the drivers found their way.
    pub routing: &'static str,
    /// Whether merchants and dropoffs got real addresses from map data.
    pub addresses: bool,
}

/// Predicted against observed durations, simulated seconds.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EtaError {
    /// Deliveries with both a prediction and an observation.
    pub count: usize,
    /// Mean of |observed − predicted|.
    pub mean_abs_secs: f64,
    /// 90th percentile of |observed − predicted|.
    pub p90_abs_secs: f64,
    /// Mean of observed − predicted: positive when the trips took longer than predicted.
    pub bias_secs: f64,
}

impl EtaError {
    /// Over `(predicted, observed)` pairs; pairs with a non-finite value are left out.
    pub fn of(pairs: impl IntoIterator<Item = (f64, f64)>) -> EtaError {
        let errors: Vec<f64> = pairs
            .into_iter()
            .map(|(predicted, observed)| observed - predicted)
            .filter(|e| e.is_finite())
            .collect();
        let bias_secs = if errors.is_empty() {
            0.0
        } else {
            errors.iter().sum::<f64>() / errors.len() as f64
        };
        let absolute = Summary::of(errors.into_iter().map(f64::abs).collect());
        EtaError {
            count: absolute.count,
            mean_abs_secs: absolute.mean,
            p90_abs_secs: absolute.p90,
            bias_secs,
        }
    }
}

/// The end-of-run report (`--json` prints it as JSON).
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub city: CityKind,
    /// How the simulated drivers found their way: `osrm` or `straight_line`.
    pub routing: &'static str,
    /// Whether merchants and dropoffs had real addresses (from map data).
    pub addresses_from_map: bool,
    pub seed: u64,
    /// Same seed, same demand: compare this between runs.
    pub demand_fingerprint: String,
    pub drivers: usize,
    pub merchants: usize,
    pub customers: usize,
    pub orders_per_minute: f64,
    pub time_scale: f64,
    pub setup_secs: f64,
    pub demand_secs: f64,
    pub run_secs: f64,
    pub orders_planned: usize,
    pub orders_placed: usize,
    pub orders_delivered: usize,
    pub orders_closed_otherwise: usize,
    pub orders_still_open: usize,
    pub checkouts_failed: u64,
    /// Merchant accept → offer on a driver's socket, real milliseconds.
    pub dispatch_latency_ms: Summary,
    /// Merchant accept → driver assigned, real seconds.
    pub time_to_assignment_secs: Summary,
    /// Driver to pickup when assigned, metres.
    pub pickup_distance_m: Summary,
    /// Assignment → the driver at the pickup (driving time), simulated minutes.
    pub pickup_time_sim_min: Summary,
    /// The driver at the pickup → picked up (waiting for the food), simulated minutes.
    pub wait_at_pickup_sim_min: Summary,
    /// Checkout → delivery, simulated minutes.
    pub delivery_time_sim_min: Summary,
    /// The offer's pickup ETA against accepting → at the pickup (see the module's notes).
    pub pickup_eta_error: EtaError,
    /// The `to_dropoff` route's duration against its frame's arrival → at the door.
    pub delivery_eta_error: EtaError,
    pub ws_messages_per_sec: f64,
    /// Error codes seen (HTTP and WebSocket), with counts.
    pub errors: BTreeMap<String, u64>,
    /// What the notification stand-ins measured, in a `--notify` run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub notifications: Option<NotifyFigures>,
    /// What the WhatsApp customers measured, in a `--whatsapp-share` run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub whatsapp: Option<WhatsAppFigures>,
}

impl Report {
    /// Whether the run met "delivered end to end with no errors".
    pub fn clean(&self) -> bool {
        self.errors.is_empty()
            && self.checkouts_failed == 0
            && self.orders_still_open == 0
            && self.notifications.as_ref().is_none_or(NotifyFigures::clean)
            && self.whatsapp.as_ref().is_none_or(WhatsAppFigures::clean)
    }

    /// The report as a table.
    pub fn table(&self) -> String {
        let row = |name: &str, s: &Summary, unit: &str| {
            format!(
                "  {name:<28} mean {:>8.1}  p50 {:>8.1}  p90 {:>8.1}  p95 {:>8.1}  p99 {:>8.1}  {unit} ({} samples)\n",
                s.mean, s.p50, s.p90, s.p95, s.p99, s.count
            )
        };
        let mut out = String::new();
        out += &format!(
            "MealKitz simulation · seed {} · demand {} · {} drivers, {} merchants, {} customers, {} orders/min, time ×{}\n",
            self.seed,
            self.demand_fingerprint,
            self.drivers,
            self.merchants,
            self.customers,
            self.orders_per_minute,
            self.time_scale
        );
        out += &format!(
            "  city {} · drivers routed by {} · addresses {}\n",
            self.city.as_str(),
            self.routing,
            if self.addresses_from_map {
                "from map data"
            } else {
                "made up"
            }
        );
        out += &format!(
            "  setup {:.1} s · demand {:.1} s · run {:.1} s (with drain)\n",
            self.setup_secs, self.demand_secs, self.run_secs
        );
        out += &format!(
            "  orders: {} planned, {} placed, {} delivered, {} cancelled/rejected, {} still open, {} checkouts failed\n",
            self.orders_planned,
            self.orders_placed,
            self.orders_delivered,
            self.orders_closed_otherwise,
            self.orders_still_open,
            self.checkouts_failed
        );
        out += &row("dispatch latency", &self.dispatch_latency_ms, "ms");
        out += &row("time to assignment", &self.time_to_assignment_secs, "s");
        out += &row("pickup distance", &self.pickup_distance_m, "m");
        out += &row("pickup time (simulated)", &self.pickup_time_sim_min, "min");
        out += &row(
            "wait at pickup (simulated)",
            &self.wait_at_pickup_sim_min,
            "min",
        );
        out += &row(
            "delivery time (simulated)",
            &self.delivery_time_sim_min,
            "min",
        );
        let eta = |name: &str, e: &EtaError| {
            format!(
                "  {name:<28} mean |err| {:>7.1}  p90 |err| {:>7.1}  bias {:>+7.1}  s ({} deliveries)\n",
                e.mean_abs_secs, e.p90_abs_secs, e.bias_secs, e.count
            )
        };
        out += &eta("pickup ETA error (sim.)", &self.pickup_eta_error);
        out += &eta("delivery ETA error (sim.)", &self.delivery_eta_error);
        out += &format!("  websocket messages: {:.0}/s\n", self.ws_messages_per_sec);
        if let Some(n) = &self.notifications {
            out += &notifications_table(n);
        }
        if let Some(whatsapp) = &self.whatsapp {
            out += &whatsapp.table();
        }
        if self.errors.is_empty() {
            out += "  errors: none\n";
        } else {
            out += "  errors by code:";
            for (code, count) in &self.errors {
                out += &format!(" {code}={count}");
            }
            out += "\n";
        }
        out
    }
}

/// The `--notify` lines of the report.
fn notifications_table(n: &NotifyFigures) -> String {
    let lag = |name: &str, channel: &ChannelFigures| {
        let s = &channel.lag_ms;
        format!(
            "  {name:<28} p50 {:>7.1}  p90 {:>7.1}  p99 {:>7.1}  max {:>7.1}  ms ({} timed)\n",
            s.p50, s.p90, s.p99, s.max, s.count
        )
    };
    let rate = |name: &str, channel: &ChannelFigures| {
        format!(
            "  {name:<28} {} messages, {:.1}/s (peak {}/s), {} duplicates, {} orders out of order\n",
            channel.messages,
            channel.per_sec,
            channel.peak_per_sec,
            channel.duplicates,
            channel.orders_out_of_order
        )
    };
    let mut out = String::new();
    out += &rate("WhatsApp (stand-in)", &n.whatsapp);
    out += &rate("webhooks (receiver)", &n.webhook);
    out += &lag("notifier lag, WhatsApp", &n.whatsapp);
    out += &lag("notifier lag, webhooks", &n.webhook);
    out += &format!(
        "  {:<28} {} templates, {} untimed ({} conversation replies apart) · {} signature failures · {} Graph API auth failures · {} delivered orders without their message\n",
        "notification checks",
        n.whatsapp_templates,
        n.whatsapp_untimed,
        n.conversation_replies,
        n.signature_failures,
        n.whatsapp_auth_failures,
        n.delivered_without_message
    );
    out
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn eta_error_is_the_mean_and_p90_of_the_absolute_misses() {
        // Misses of -10, +20, ... : observed - predicted.
        let pairs: Vec<(f64, f64)> = (1..=10)
            .map(|i| {
                let miss = if i % 2 == 0 { 10.0 * i as f64 } else { -10.0 };
                (100.0, 100.0 + miss)
            })
            .collect();
        let e = EtaError::of(pairs);
        assert_eq!(e.count, 10);
        // |misses|: 10 ×5, 20, 40, 60, 80, 100 → mean 35.
        assert!((e.mean_abs_secs - 35.0).abs() < 1e-9, "{e:?}");
        // Sorted: 10,10,10,10,10,20,40,60,80,100; nearest rank of 0.9 × 9 = 8.1 → 80.
        assert_eq!(e.p90_abs_secs, 80.0);
        // Signed: 5 × -10 + (20+40+60+80+100) = 250 → +25.
        assert!((e.bias_secs - 25.0).abs() < 1e-9, "{e:?}");
    }

    #[test]
    fn no_deliveries_and_bad_values_give_an_empty_eta_error() {
        let empty = EtaError::of(Vec::new());
        assert_eq!(
            (
                empty.count,
                empty.mean_abs_secs,
                empty.p90_abs_secs,
                empty.bias_secs
            ),
            (0, 0.0, 0.0, 0.0)
        );
        let e = EtaError::of([(f64::NAN, 10.0), (60.0, f64::INFINITY), (60.0, 90.0)]);
        assert_eq!(e.count, 1);
        assert_eq!((e.mean_abs_secs, e.bias_secs), (30.0, 30.0));
    }

    #[test]
    fn the_report_compares_predictions_with_simulated_durations() {
        let config = SimConfig {
            url: "http://127.0.0.1:1".to_owned(),
            drivers: 1,
            merchants: 1,
            customers: 1,
            orders_per_minute: 1.0,
            duration: Duration::from_secs(1),
            seed: 1,
            accept_rate: 1.0,
            time_scale: 30.0,
            progress: false,
            city: CityKind::Helsinki,
            maps: crate::config::MapsConfig::default(),
            notify: None,
            whatsapp: crate::sim::WhatsAppPlan::default(),
        };
        let city = City::new(CityKind::Helsinki, 1, 1, 1, 1, 1.0, 1.0);
        let t0 = Instant::now();
        let at = |ms: u64| Some(t0 + Duration::from_millis(ms));
        let mut stats = Stats::default();
        *stats.trace("a") = Trace {
            placed_at: at(0),
            // 4 real seconds × 30 = 120 simulated seconds to the pickup; 100 predicted.
            offer_accepted_at: at(1_000),
            predicted_pickup_secs: Some(100.0),
            at_pickup_at: at(5_000),
            // 2 real seconds × 30 = 60 to the door; 90 predicted.
            delivery_routed_at: at(6_000),
            at_dropoff_at: at(8_000),
            predicted_delivery_secs: Some(90.0),
            delivered_at: at(8_100),
            ..Trace::default()
        };
        // No route frame came for this one: no delivery prediction to score.
        *stats.trace("b") = Trace {
            placed_at: at(0),
            offer_accepted_at: at(0),
            predicted_pickup_secs: Some(30.0),
            at_pickup_at: at(1_000),
            delivery_routed_at: at(1_000),
            at_dropoff_at: at(2_000),
            delivered_at: at(2_000),
            ..Trace::default()
        };
        let report = stats.report(
            &config,
            &city,
            MapsUsed {
                routing: "osrm",
                addresses: true,
            },
            RunTimes {
                setup_secs: 1.0,
                demand_secs: 1.0,
                total_secs: 10.0,
            },
        );
        assert_eq!(report.pickup_eta_error.count, 2);
        // Misses +20 and 0.
        assert!((report.pickup_eta_error.mean_abs_secs - 10.0).abs() < 1e-6);
        assert!((report.pickup_eta_error.bias_secs - 10.0).abs() < 1e-6);
        assert_eq!(report.delivery_eta_error.count, 1);
        assert!((report.delivery_eta_error.bias_secs + 30.0).abs() < 1e-6);
        let table = report.table();
        assert!(table.contains("pickup ETA error"), "{table}");
        assert!(
            table.contains("city helsinki · drivers routed by osrm"),
            "{table}"
        );
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["city"], "helsinki");
        assert_eq!(json["delivery_eta_error"]["count"], 1);
        assert!(json["pickup_eta_error"]["p90_abs_secs"].as_f64().unwrap() > 19.9);
    }
}
