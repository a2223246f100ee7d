//! The simulator's command lines, `mealkitz simulate` and `mealkitz demo`: typed arguments, each
//! checked as clap reads it, and the [`SimConfig`] they describe. `SimConfig` is defined here,
//! below the runner, so that the report can read it without importing the runner back.

use std::time::Duration;

use clap::Args;

use super::city::CityKind;
use super::notify::StandIns;
use crate::config::MapsConfig;
use crate::config::values::{positive, whole};

/// The engine `simulate` loads by default: one started locally with the default settings.
pub const DEFAULT_ENGINE_URL: &str = "http://127.0.0.1:8000";
pub const DEFAULT_DRIVERS: usize = 200;
pub const DEFAULT_MERCHANTS: usize = 20;
pub const DEFAULT_ORDERS_PER_MINUTE: f64 = 60.0;
/// How long customers keep ordering, by default.
pub const DEFAULT_DURATION: Duration = Duration::from_secs(60);
pub const DEFAULT_SEED: u64 = 7;
pub const DEFAULT_ACCEPT_RATE: f64 = 0.9;
pub const DEFAULT_TIME_SCALE: f64 = 30.0;
/// Longest simulation: a week.
pub const MAX_DURATION: Duration = Duration::from_secs(7 * 86_400);
/// Without `--customers`, one customer per this many orders a minute…
pub const ORDERS_PER_MINUTE_PER_CUSTOMER: f64 = 5.0;
/// …or, when some order over WhatsApp, per this many: a conversation takes 6 to 12 messages and
/// the webhook reads 20 a minute from one number.
pub const ORDERS_PER_MINUTE_PER_CUSTOMER_WITH_WHATSAPP: f64 = 1.0;
/// …and at least this many.
pub const MIN_CUSTOMERS: usize = 10;
/// A WhatsApp customer's pause before each message, by default.
pub const DEFAULT_THINK: ThinkTime = ThinkTime {
    min: Duration::from_millis(200),
    max: Duration::from_millis(1_500),
};
/// Longest think time.
pub const MAX_THINK: Duration = Duration::from_secs(60);
/// Share of webhook calls the simulated Meta delivers twice, by default.
pub const DEFAULT_REDELIVER_SHARE: f64 = 0.05;
/// Share of WhatsApp customers who try a declined card first, by default.
pub const DEFAULT_DECLINE_SHARE: f64 = 0.05;

pub const DEMO_DRIVERS: usize = 40;
pub const DEMO_MERCHANTS: usize = 6;
pub const DEMO_CUSTOMERS: usize = 5;
pub const DEMO_ORDERS_PER_MINUTE: f64 = 6.0;
pub const DEMO_TIME_SCALE: f64 = 10.0;
/// The demo runs until stopped; its demand lasts as long as a simulation may.
pub const DEMO_DURATION: Duration = MAX_DURATION;
pub const DEMO_SEED: u64 = 1;

/// What to simulate: built from [`SimulateArgs`] or [`DemoArgs`], or directly by a test.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// The engine, e.g. http://127.0.0.1:8000.
    pub url: String,
    pub drivers: usize,
    pub merchants: usize,
    pub customers: usize,
    pub orders_per_minute: f64,
    pub duration: Duration,
    pub seed: u64,
    /// Share of offers a driver accepts (the rest are declined).
    pub accept_rate: f64,
    /// Simulated seconds per real second, for driving and preparing food.
    pub time_scale: f64,
    /// Show a progress bar on stderr.
    pub progress: bool,
    /// Which city.
    pub city: CityKind,
    /// The simulator's own maps: drivers route with `osrm_url` (straight lines without it);
    /// Helsinki's addresses come from `map_data` (the built-in extract when unset).
    pub maps: MapsConfig,
    /// The notification stand-ins the engine sends to, when the run measures notifications:
    /// customers then give phone numbers and merchants register webhook endpoints.
    pub notify: Option<StandIns>,
    /// The customers who order over WhatsApp.
    pub whatsapp: WhatsAppPlan,
}

/// `mealkitz simulate`: a fleet and its customers as real clients of the engine at `--url`.
#[derive(Debug, Clone, Args)]
pub struct SimulateArgs {
    /// The engine to load.
    #[arg(long, value_parser = engine_url, default_value = DEFAULT_ENGINE_URL)]
    pub url: String,
    #[arg(long, value_parser = whole(1_000_000usize), default_value_t = DEFAULT_DRIVERS)]
    pub drivers: usize,
    #[arg(long, value_parser = whole(100_000usize), default_value_t = DEFAULT_MERCHANTS)]
    pub merchants: usize,
    /// Customers placing the orders (default: one per 5 orders a minute, at least 10; with
    /// `--whatsapp-share`, one per order a minute, as a number may send 20 messages a minute).
    #[arg(long, value_parser = whole(1_000_000usize))]
    pub customers: Option<usize>,
    #[arg(long, value_parser = positive(100_000.0), default_value_t = DEFAULT_ORDERS_PER_MINUTE)]
    pub orders_per_minute: f64,
    /// How long customers keep ordering, e.g. 120s, 5m; then open orders are finished.
    #[arg(long, value_parser = duration, default_value = duration_text(DEFAULT_DURATION))]
    pub duration: Duration,
    /// Same seed, same city and same demand.
    #[arg(long, value_parser = seed, default_value_t = DEFAULT_SEED)]
    pub seed: u64,
    /// Share of offers drivers accept, 0 to 1.
    #[arg(long, value_parser = share, default_value_t = DEFAULT_ACCEPT_RATE)]
    pub accept_rate: f64,
    /// Simulated seconds per real second, for driving and cooking.
    #[arg(long, value_parser = positive(10_000.0), default_value_t = DEFAULT_TIME_SCALE)]
    pub time_scale: f64,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// The city: `synthetic` (around New York coordinates, the engine's default regions) or
    /// `helsinki` (real streets and addresses; the engine needs
    /// `--regions data/helsinki/regions.geojson`). Drivers follow roads with `--osrm-url`.
    #[arg(long, value_enum, default_value_t = CityKind::Synthetic)]
    pub city: CityKind,
    /// Measure notifications: start the engine in this process, on the configured store
    /// (`--database-url`), with WhatsApp and webhooks sent to local stand-ins (a Graph API and
    /// a webhook receiver checking signatures); report messages per second and the notifier's
    /// lag. Replaces `--url`.
    #[arg(long, conflicts_with = "url")]
    pub notify: bool,
    /// Share of the customers (0 to 1) who order over WhatsApp: signed webhook calls to the
    /// engine, answering the bot like a person, paying the link, against a Graph API stand-in.
    /// Runs the engine in this process as `--notify` does (the notification figures only with
    /// `--notify`). Replaces `--url`.
    #[arg(long, value_parser = share, default_value_t = 0.0, conflicts_with = "url")]
    pub whatsapp_share: f64,
    /// A WhatsApp customer's pause before each message: `MIN..MAX` seconds.
    #[arg(long, value_parser = ThinkTime::parse, default_value = think_text(DEFAULT_THINK))]
    pub whatsapp_think: ThinkTime,
    /// Share of webhook calls delivered twice (same `wamid`), to show the bot acts once.
    #[arg(long, value_parser = share, default_value_t = DEFAULT_REDELIVER_SHARE)]
    pub whatsapp_redeliver: f64,
    /// Share of WhatsApp customers who first try a card that is declined, then Visa.
    #[arg(long, value_parser = share, default_value_t = DEFAULT_DECLINE_SHARE)]
    pub whatsapp_declines: f64,
}

/// `mealkitz demo`: the engine plus a small simulated fleet, in one process.
#[derive(Debug, Clone, Args)]
pub struct DemoArgs {
    #[arg(long, value_parser = whole(100_000usize), default_value_t = DEMO_DRIVERS)]
    pub drivers: usize,
    #[arg(long, value_parser = whole(10_000usize), default_value_t = DEMO_MERCHANTS)]
    pub merchants: usize,
    #[arg(long, value_parser = positive(10_000.0), default_value_t = DEMO_ORDERS_PER_MINUTE)]
    pub orders_per_minute: f64,
    #[arg(long, value_parser = positive(1_000.0), default_value_t = DEMO_TIME_SCALE)]
    pub time_scale: f64,
    /// The city: `synthetic`, or `helsinki` (real streets and addresses from the built-in
    /// OpenStreetMap extract, its two regions; drivers follow roads with `--osrm-url`).
    #[arg(long, value_enum, default_value_t = CityKind::Synthetic)]
    pub city: CityKind,
}

impl SimulateArgs {
    /// Whether the run needs the engine in this process, with the stand-ins.
    pub fn in_process(&self) -> bool {
        self.notify || self.whatsapp_share > 0.0
    }

    /// The simulation these arguments ask for; the simulator's maps from the global maps
    /// settings (`--osrm-url`, `--map-data`).
    pub fn to_sim(&self, maps: &MapsConfig) -> SimConfig {
        let per_customer = if self.whatsapp_share > 0.0 {
            ORDERS_PER_MINUTE_PER_CUSTOMER_WITH_WHATSAPP
        } else {
            ORDERS_PER_MINUTE_PER_CUSTOMER
        };
        let customers = self.customers.unwrap_or_else(|| {
            ((self.orders_per_minute / per_customer).ceil() as usize).max(MIN_CUSTOMERS)
        });
        SimConfig {
            url: self.url.clone(),
            drivers: self.drivers,
            merchants: self.merchants,
            customers,
            orders_per_minute: self.orders_per_minute,
            duration: self.duration,
            seed: self.seed,
            accept_rate: self.accept_rate,
            time_scale: self.time_scale,
            progress: !self.json,
            city: self.city,
            maps: maps.clone(),
            notify: None,
            whatsapp: WhatsAppPlan {
                share: self.whatsapp_share,
                think: self.whatsapp_think,
                redeliver_share: self.whatsapp_redeliver,
                decline_share: self.whatsapp_declines,
                stand_ins: None,
            },
        }
    }
}

impl DemoArgs {
    /// The demo's simulation, against the engine at `url` whose maps are `maps` (the drivers
    /// route with the same OSRM); it runs until stopped.
    pub fn to_sim(&self, url: String, maps: &MapsConfig) -> SimConfig {
        SimConfig {
            url,
            drivers: self.drivers,
            merchants: self.merchants,
            customers: DEMO_CUSTOMERS,
            orders_per_minute: self.orders_per_minute,
            duration: DEMO_DURATION,
            seed: DEMO_SEED,
            accept_rate: DEFAULT_ACCEPT_RATE,
            time_scale: self.time_scale,
            progress: false,
            city: self.city,
            maps: maps.clone(),
            notify: None,
            whatsapp: WhatsAppPlan::default(),
        }
    }
}

/// A duration such as `90`, `90s`, `5m` or `1h`, up to a week.
pub fn duration(raw: &str) -> Result<Duration, String> {
    let raw = raw.trim();
    let (number, unit_secs) = match raw.char_indices().last() {
        Some((i, 's')) => (&raw[..i], 1.0),
        Some((i, 'm')) => (&raw[..i], 60.0),
        Some((i, 'h')) => (&raw[..i], 3_600.0),
        _ => (raw, 1.0),
    };
    match number.trim().parse::<f64>() {
        Ok(n) if n.is_finite() && n > 0.0 && n * unit_secs <= MAX_DURATION.as_secs_f64() => {
            Ok(Duration::from_secs_f64(n * unit_secs))
        }
        _ => Err(format!("{raw:?} is not a duration such as 120s, 5m or 1h")),
    }
}

/// The pause a WhatsApp customer takes before each message, drawn evenly between two bounds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ThinkTime {
    pub min: Duration,
    pub max: Duration,
}

impl ThinkTime {
    /// Think time as `--whatsapp-think` reads it: `MIN..MAX` in seconds (`0.2..1.5`), each at
    /// most a minute, or one number for a fixed pause.
    pub fn parse(raw: &str) -> Result<ThinkTime, String> {
        let secs = |part: &str| {
            let part = part.trim().trim_end_matches('s');
            match part.trim().parse::<f64>() {
                Ok(s) if s.is_finite() && (0.0..=MAX_THINK.as_secs_f64()).contains(&s) => {
                    Ok(Duration::from_secs_f64(s))
                }
                _ => Err(format!(
                    "{raw:?} is not a think time such as 0.2..1.5 (seconds, at most {})",
                    MAX_THINK.as_secs()
                )),
            }
        };
        let (min, max) = match raw.split_once("..") {
            Some((min, max)) => (secs(min)?, secs(max)?),
            None => (secs(raw)?, secs(raw)?),
        };
        if min > max {
            return Err(format!(
                "{raw:?}: the shortest think time is above the longest"
            ));
        }
        Ok(ThinkTime { min, max })
    }
}

/// `--whatsapp-think` as shown in `--help`.
fn think_text(think: ThinkTime) -> String {
    format!("{}..{}", think.min.as_secs_f64(), think.max.as_secs_f64())
}

/// The WhatsApp customers of a run (`--whatsapp-share`).
#[derive(Debug, Clone)]
pub struct WhatsAppPlan {
    /// Share of the customers who order over WhatsApp, 0 to 1 (0: none).
    pub share: f64,
    /// Pause before each message.
    pub think: ThinkTime,
    /// Share of webhook calls delivered a second time (same body, same `wamid`).
    pub redeliver_share: f64,
    /// Share of the WhatsApp customers who first try a card that is declined.
    pub decline_share: f64,
    /// The Graph API stand-in the engine sends its replies to, with the app secret the
    /// customers sign with (the engine's settings from [`StandIns::configure`]). Required when
    /// `share` is above 0.
    pub stand_ins: Option<StandIns>,
}

impl Default for WhatsAppPlan {
    fn default() -> Self {
        WhatsAppPlan {
            share: 0.0,
            think: DEFAULT_THINK,
            redeliver_share: DEFAULT_REDELIVER_SHARE,
            decline_share: DEFAULT_DECLINE_SHARE,
            stand_ins: None,
        }
    }
}

impl WhatsAppPlan {
    /// How many of `customers` order over WhatsApp: the share, rounded, and at least one when
    /// the share is above 0.
    pub fn customers(&self, customers: usize) -> usize {
        if self.share <= 0.0 {
            return 0;
        }
        ((self.share * customers as f64).round() as usize).clamp(1, customers)
    }
}

/// `duration` as [`duration`] reads it, in seconds: the default shown in `--help`.
fn duration_text(duration: Duration) -> String {
    format!("{}s", duration.as_secs_f64())
}

fn engine_url(raw: &str) -> Result<String, String> {
    let url = raw.trim().trim_end_matches('/');
    if url.starts_with("http://") || url.starts_with("https://") {
        Ok(url.to_owned())
    } else {
        Err(format!("{url:?} is not an http:// or https:// URL"))
    }
}

fn seed(raw: &str) -> Result<u64, String> {
    raw.trim()
        .parse()
        .map_err(|_| format!("{raw:?} is not a whole number"))
}

fn share(raw: &str) -> Result<f64, String> {
    match raw.trim().parse::<f64>() {
        Ok(rate) if (0.0..=1.0).contains(&rate) => Ok(rate),
        _ => Err(format!("{raw:?} is not a number from 0 to 1")),
    }
}

#[cfg(test)]
mod tests {
    use clap::{Command, FromArgMatches};

    use super::*;

    /// [`duration`] under the name the test has always called it by.
    fn parse_duration(_setting: &str, raw: &str) -> Result<Duration, String> {
        duration(raw)
    }

    #[test]
    fn durations_take_seconds_minutes_and_hours() {
        assert_eq!(
            parse_duration("x", "120s").unwrap(),
            Duration::from_secs(120)
        );
        assert_eq!(parse_duration("x", "2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("x", "90").unwrap(), Duration::from_secs(90));
        assert_eq!(
            parse_duration("x", "1h").unwrap(),
            Duration::from_secs(3_600)
        );
        for bad in ["", "s", "-5s", "abc", "10d", "0"] {
            assert!(parse_duration("x", bad).is_err(), "case {bad:?}");
        }
    }

    #[test]
    fn without_arguments_the_simulation_is_the_documented_one() {
        let command = SimulateArgs::augment_args(Command::new("simulate"));
        let matches = command.try_get_matches_from(["simulate"]).unwrap();
        let sim = SimulateArgs::from_arg_matches(&matches)
            .unwrap()
            .to_sim(&MapsConfig::default());
        assert_eq!(sim.url, DEFAULT_ENGINE_URL);
        assert_eq!((sim.drivers, sim.merchants, sim.customers), (200, 20, 12));
        assert_eq!(sim.duration, Duration::from_secs(60));
        assert_eq!((sim.seed, sim.accept_rate, sim.time_scale), (7, 0.9, 30.0));
        assert!(sim.progress);
        assert_eq!(sim.city, CityKind::Synthetic);
        assert_eq!(sim.maps.osrm_url, None);
        assert_eq!(sim.whatsapp.share, 0.0);
        assert_eq!(sim.whatsapp.think, DEFAULT_THINK);
        assert_eq!(
            (sim.whatsapp.redeliver_share, sim.whatsapp.decline_share),
            (0.05, 0.05)
        );
    }

    #[test]
    fn the_city_is_chosen_by_name_and_the_maps_come_from_the_global_settings() {
        let command = SimulateArgs::augment_args(Command::new("simulate"));
        let matches = command
            .try_get_matches_from(["simulate", "--city", "helsinki"])
            .unwrap();
        let maps = MapsConfig {
            osrm_url: Some("http://127.0.0.1:5000".to_owned()),
            ..MapsConfig::default()
        };
        let sim = SimulateArgs::from_arg_matches(&matches)
            .unwrap()
            .to_sim(&maps);
        assert_eq!(sim.city, CityKind::Helsinki);
        assert_eq!(sim.maps, maps);
        let command = SimulateArgs::augment_args(Command::new("simulate"));
        assert!(
            command
                .try_get_matches_from(["simulate", "--city", "atlantis"])
                .is_err()
        );
    }

    #[test]
    fn notify_runs_its_own_engine_so_it_takes_no_url() {
        let command = SimulateArgs::augment_args(Command::new("simulate"));
        let matches = command
            .try_get_matches_from(["simulate", "--notify"])
            .unwrap();
        let args = SimulateArgs::from_arg_matches(&matches).unwrap();
        assert!(args.notify);
        // The stand-ins are started by the command, not by the arguments.
        assert!(args.to_sim(&MapsConfig::default()).notify.is_none());
        let command = SimulateArgs::augment_args(Command::new("simulate"));
        assert!(
            command
                .try_get_matches_from(["simulate", "--notify", "--url", "http://127.0.0.1:9"])
                .is_err()
        );
    }

    #[test]
    fn whatsapp_share_runs_its_own_engine_and_reads_its_think_time() {
        let parse = |argv: &[&str]| {
            let command = SimulateArgs::augment_args(Command::new("simulate"));
            command
                .try_get_matches_from(argv)
                .map(|m| SimulateArgs::from_arg_matches(&m).unwrap())
        };
        let args = parse(&["simulate", "--whatsapp-share", "0.3"]).unwrap();
        assert!(args.in_process() && !args.notify);
        let sim = args.to_sim(&MapsConfig::default());
        assert_eq!(sim.whatsapp.share, 0.3);
        // One customer per order a minute: 60 of them, 18 on WhatsApp.
        assert_eq!(sim.customers, 60);
        assert_eq!(sim.whatsapp.customers(sim.customers), 18);
        assert_eq!(sim.whatsapp.customers(12), 4);
        assert_eq!(sim.whatsapp.customers(1), 1);
        assert!(sim.whatsapp.stand_ins.is_none());
        let args = parse(&[
            "simulate",
            "--whatsapp-share",
            "1",
            "--whatsapp-think",
            "0.05..0.1s",
            "--whatsapp-redeliver",
            "0.5",
            "--whatsapp-declines",
            "0",
        ])
        .unwrap();
        let plan = args.to_sim(&MapsConfig::default()).whatsapp;
        assert_eq!(plan.think.min, Duration::from_millis(50));
        assert_eq!(plan.think.max, Duration::from_millis(100));
        assert_eq!((plan.redeliver_share, plan.decline_share), (0.5, 0.0));
        assert_eq!(plan.customers(3), 3);
        // Without the flag, the client-only run as before.
        assert!(!parse(&["simulate"]).unwrap().in_process());
        assert!(parse(&["simulate", "--url", "http://127.0.0.1:9"]).is_ok());
        assert_eq!(WhatsAppPlan::default().customers(100), 0);
        for bad in [
            vec!["simulate", "--whatsapp-share", "1.5"],
            vec![
                "simulate",
                "--whatsapp-share",
                "0.3",
                "--url",
                "http://127.0.0.1:9",
            ],
            vec!["simulate", "--whatsapp-think", "2..1"],
            vec!["simulate", "--whatsapp-think", "0.1..61"],
            vec!["simulate", "--whatsapp-think", "soon"],
        ] {
            assert!(parse(&bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            ThinkTime::parse("0.5").unwrap(),
            ThinkTime {
                min: Duration::from_millis(500),
                max: Duration::from_millis(500)
            }
        );
        assert_eq!(
            ThinkTime::parse(&think_text(DEFAULT_THINK)),
            Ok(DEFAULT_THINK)
        );
    }
}
