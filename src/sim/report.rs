//! What the simulation measured, and the report it prints.

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use serde::Serialize;

use super::args::SimConfig;
use super::city::City;

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
        setup_secs: f64,
        demand_secs: f64,
        total_secs: f64,
    ) -> Report {
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
        Report {
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
            ws_messages_per_sec: (self.ws_in + self.ws_out) as f64 / total_secs.max(1e-9),
            errors: self.errors,
        }
    }
}

/// Mean and percentiles of one measure.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub count: usize,
    pub mean: f64,
    pub p50: f64,
    pub p90: f64,
    pub p95: f64,
    pub p99: f64,
    pub max: f64,
}

impl Summary {
    fn of(mut values: Vec<f64>) -> Summary {
        values.retain(|v| v.is_finite());
        values.sort_by(f64::total_cmp);
        let at = |q: f64| {
            if values.is_empty() {
                0.0
            } else {
                values[((values.len() - 1) as f64 * q).round() as usize]
            }
        };
        Summary {
            count: values.len(),
            mean: if values.is_empty() {
                0.0
            } else {
                values.iter().sum::<f64>() / values.len() as f64
            },
            p50: at(0.50),
            p90: at(0.90),
            p95: at(0.95),
            p99: at(0.99),
            max: values.last().copied().unwrap_or(0.0),
        }
    }
}

/// The end-of-run report (`--json` prints it as JSON).
#[derive(Debug, Clone, Serialize)]
pub struct Report {
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
    pub ws_messages_per_sec: f64,
    /// Error codes seen (HTTP and WebSocket), with counts.
    pub errors: BTreeMap<String, u64>,
}

impl Report {
    /// Whether the run met "delivered end to end with no errors".
    pub fn clean(&self) -> bool {
        self.errors.is_empty() && self.checkouts_failed == 0 && self.orders_still_open == 0
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
        out += &format!("  websocket messages: {:.0}/s\n", self.ws_messages_per_sec);
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
