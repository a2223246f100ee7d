//! The fleet simulator: a city of merchants, drivers and customers as real clients of a running
//! engine, over HTTP and WebSockets. Merchants run their boards, drivers drive (faster than real
//! time, by `time_scale`) and answer offers, customers check out at a steady rate; at the end a
//! report of what happened. `mealkitz simulate` and `mealkitz demo` run it. Drivers follow
//! road routes when the simulator has an OSRM (`--osrm-url`); the Helsinki city takes its
//! addresses from map data ([`helsinki`]). With `--whatsapp-share`, that share of the customers
//! order over WhatsApp instead ([`whatsapp`]).

mod args;
mod city;
mod clients;
pub mod helsinki;
mod notify;
mod report;
mod socket;
mod summary;
mod walk;
mod whatsapp;
mod whatsapp_figures;
mod whatsapp_wire;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Value, json};

pub use args::{DemoArgs, SimConfig, SimulateArgs, ThinkTime, WhatsAppPlan};
pub use city::{City, CityKind};
pub use notify::{ChannelFigures, NotifyFigures, StandIns, WebhookArrival, WhatsAppArrival};
pub use report::{EtaError, Report};
pub use socket::{CLIENT_READ_BUFFER_BYTES, ClientSocket, connect_client};
pub use summary::Summary;
pub use whatsapp::whatsapp_phone;
pub use whatsapp_figures::WhatsAppFigures;

use self::clients::{Customers, DriverPlan, addressed, driver, merchant};
use self::notify::{WEBHOOK_PATH_PREFIX, customer_phone};
use self::report::{MapsUsed, RunTimes, Stats};
use self::whatsapp::Chatters;
use crate::config::MapsConfig;
use crate::config::dispatch::DEFAULT_AVERAGE_SPEED_KMH;
use crate::domain::NotifyEvent;
use crate::geo::{LatLon, RegionMap};
use crate::maps::Maps;
use crate::maps::offline::OfflineMap;

/// The password of every simulated account.
pub const SIM_PASSWORD: &str = "simulated-password";
/// How long the end of a run waits for the simulated clients to stop.
const CLIENTS_STOP_GRACE: Duration = Duration::from_secs(2);
/// Accounts set up at once (the server hashes at most a few passwords at a time).
const SETUP_CONCURRENCY: usize = 8;
/// Tries at a rate-limited or briefly unavailable account endpoint, a second apart.
const RATE_LIMIT_RETRIES: usize = 60;
/// After the demand ends, how long the run waits for open orders to be delivered.
const DRAIN_LIMIT: Duration = Duration::from_secs(300);
/// After the orders are done, how long a `--notify` run waits for the last messages.
const NOTIFY_SETTLE_LIMIT: Duration = Duration::from_secs(60);
/// After the demand ends, how long the run waits for WhatsApp conversations still going.
const CONVERSATIONS_LIMIT: Duration = Duration::from_secs(120);

/// Accounts and tokens of the simulated people, and the merchants they run.
struct Cast {
    merchants: Vec<(String, Vec<String>)>,
    merchant_tokens: Vec<String>,
    driver_tokens: Vec<String>,
    customer_tokens: Vec<String>,
    /// Credentials to show in the demo: (merchant email, customer email).
    first_merchant_email: String,
    first_customer_email: String,
}

struct Api {
    http: reqwest::Client,
    base: String,
}

impl Api {
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> anyhow::Result<(u16, Value)> {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request
            .send()
            .await
            .with_context(|| format!("cannot reach {}", self.base))?;
        let status = response.status().as_u16();
        let body = response.json().await.unwrap_or(Value::Null);
        Ok((status, body))
    }

    /// Registers the account (a rerun with the same seed finds it taken, which is fine), then
    /// logs in. Registering first means no failed logins, which the server would rate-limit.
    async fn account(&self, role: &str, email: &str) -> anyhow::Result<String> {
        let user = json!({"email": email, "password": SIM_PASSWORD, "name": email, "role": role});
        let credentials = json!({"email": email, "password": SIM_PASSWORD});
        for _ in 0..RATE_LIMIT_RETRIES {
            let (status, body) = self
                .call(reqwest::Method::POST, "/api/v1/users", None, Some(&user))
                .await?;
            match status {
                201 | 409 => break,
                429 | 503 => tokio::time::sleep(Duration::from_secs(1)).await,
                _ => bail!("cannot register {email}: {status} {body}"),
            }
        }
        for _ in 0..RATE_LIMIT_RETRIES {
            let (status, body) = self
                .call(
                    reqwest::Method::POST,
                    "/api/v1/sessions",
                    None,
                    Some(&credentials),
                )
                .await?;
            match status {
                200 => return Ok(body["token"].as_str().unwrap_or_default().to_owned()),
                429 | 503 => tokio::time::sleep(Duration::from_secs(1)).await,
                _ => bail!("cannot log in {email}: {status} {body}"),
            }
        }
        bail!("cannot log in {email}: still rate-limited")
    }
}

/// A simulated account's email. Helsinki's people are not the synthetic city's (whose
/// merchants are in New York), so a rerun against the same engine finds the right ones.
fn email(city: CityKind, seed: u64, role: &str, i: usize) -> String {
    match city {
        CityKind::Synthetic => format!("sim-{seed}-{role}-{i}@sim.mealkitz.test"),
        other => format!("sim-{}-{seed}-{role}-{i}@sim.mealkitz.test", other.as_str()),
    }
}

async fn cast(api: &Api, config: &SimConfig, city: &City, maps: &Maps) -> anyhow::Result<Cast> {
    use futures_util::{StreamExt, TryStreamExt};
    let logins = |role: &'static str, count: usize| {
        futures_util::stream::iter(0..count)
            .map(move |i| {
                let email = email(config.city, config.seed, role, i);
                async move { api.account(role, &email).await }
            })
            .buffered(SETUP_CONCURRENCY)
            .try_collect::<Vec<String>>()
    };
    let merchant_tokens = logins("merchant", config.merchants).await?;
    let mut merchants = Vec::new();
    for (i, token) in merchant_tokens.iter().enumerate() {
        let (_, mine) = api
            .call(
                reqwest::Method::GET,
                "/api/v1/me/merchants",
                Some(token),
                None,
            )
            .await?;
        let id = match mine["merchants"].as_array().and_then(|m| m.first()) {
            Some(existing) => existing["id"].as_str().unwrap_or_default().to_owned(),
            None => {
                let spot = city.merchants[i];
                let body = match addressed(maps, &city.area, spot) {
                    Some(place) => {
                        json!({"name": format!("Sim Kitchen {i}"), "address": place.label, "location": {"lat": place.lat, "lon": place.lon}})
                    }
                    None => {
                        json!({"name": format!("Sim Kitchen {i}"), "address": format!("{i} Simulation Ave"), "location": spot})
                    }
                };
                let (status, created) = api
                    .call(
                        reqwest::Method::POST,
                        "/api/v1/merchants",
                        Some(token),
                        Some(&body),
                    )
                    .await?;
                if status != 201 {
                    bail!("cannot create merchant {i}: {status} {created}");
                }
                created["id"].as_str().unwrap_or_default().to_owned()
            }
        };
        let items: Vec<Value> = city::MENU
            .iter()
            .map(|(name, price)| json!({"name": name, "price_cents": price}))
            .collect();
        let (status, menu) = api
            .call(
                reqwest::Method::PUT,
                &format!("/api/v1/merchants/{id}/menu"),
                Some(token),
                Some(&json!({"items": items})),
            )
            .await?;
        if status != 200 {
            bail!("cannot set the menu of merchant {i}: {status} {menu}");
        }
        let ids = menu["items"]
            .as_array()
            .map(|items| {
                items
                    .iter()
                    .map(|item| item["id"].as_str().unwrap_or_default().to_owned())
                    .collect()
            })
            .unwrap_or_default();
        merchants.push((id, ids));
    }
    let driver_tokens = logins("driver", config.drivers).await?;
    let customer_tokens = logins("customer", city.customers).await?;
    Ok(Cast {
        merchants,
        merchant_tokens,
        driver_tokens,
        customer_tokens,
        first_merchant_email: email(config.city, config.seed, "merchant", 0),
        first_customer_email: email(config.city, config.seed, "customer", 0),
    })
}

/// For a run with the notification stand-ins: every customer gives a phone number and agrees to
/// updates on WhatsApp, and every merchant registers one webhook endpoint at the receiver for
/// all eight events (after removing its endpoints of earlier runs, whose stand-ins are gone).
async fn subscribe(api: &Api, cast: &Cast, stand_ins: &StandIns) -> anyhow::Result<()> {
    use reqwest::Method;
    for (i, token) in cast.customer_tokens.iter().enumerate() {
        let body = json!({"phone": customer_phone(i), "notify_whatsapp": true});
        let (status, answer) = api
            .call(Method::PATCH, "/api/v1/me", Some(token), Some(&body))
            .await?;
        if status != 200 {
            bail!("cannot give customer {i} a phone number: {status} {answer}");
        }
    }
    let events: Vec<&str> = NotifyEvent::ALL.iter().map(|e| e.as_str()).collect();
    for (i, ((merchant, _), token)) in cast.merchants.iter().zip(&cast.merchant_tokens).enumerate()
    {
        let path = format!("/api/v1/merchants/{merchant}/webhooks");
        let (_, listed) = api.call(Method::GET, &path, Some(token), None).await?;
        for old in listed["webhooks"].as_array().into_iter().flatten() {
            if old["url"]
                .as_str()
                .is_some_and(|url| url.contains(WEBHOOK_PATH_PREFIX))
                && let Some(id) = old["id"].as_str()
            {
                api.call(Method::DELETE, &format!("{path}/{id}"), Some(token), None)
                    .await?;
            }
        }
        let body = json!({"url": stand_ins.webhook_url(i), "events": events});
        let (status, created) = api
            .call(Method::POST, &path, Some(token), Some(&body))
            .await?;
        let secret = created["secret"].as_str().filter(|_| status == 201);
        let Some(secret) = secret else {
            bail!("cannot register merchant {i}'s webhook endpoint: {status} {created}");
        };
        stand_ins.register_secret(i, secret.to_owned());
    }
    Ok(())
}

/// The simulator's own maps: OSRM for the drivers' routes when configured, and for Helsinki
/// the map data its addresses come from (the built-in extract unless `--map-data` names one).
/// Without usable map data the run goes on with made-up addresses.
async fn sim_maps(config: &SimConfig) -> anyhow::Result<(Arc<Maps>, MapsUsed)> {
    let routing = MapsConfig {
        map_data: None,
        map_tiles_url: None,
        ..config.maps.clone()
    };
    let mut maps = Maps::from_config(&routing, DEFAULT_AVERAGE_SPEED_KMH)
        .map_err(|e| anyhow::anyhow!("the simulator's maps: {e}"))?;
    if config.city == CityKind::Helsinki {
        let path = config.maps.map_data.clone();
        let read = tokio::task::spawn_blocking(move || match path {
            Some(path) => OfflineMap::load(&path),
            None => OfflineMap::read(helsinki::MAP_DATA),
        })
        .await
        .map_err(|e| e.to_string())
        .and_then(|read| read);
        match read {
            Ok(map) => maps = maps.with_map(Arc::new(map)),
            Err(error) => {
                tracing::warn!(%error, "cannot read the map data; addresses are made up");
            }
        }
    }
    let used = MapsUsed {
        routing: maps.provider(),
        addresses: maps.has_map(),
    };
    Ok((Arc::new(maps), used))
}

/// Fails early, and says how to fix it, when the engine's regions do not cover the city (a
/// Helsinki run against an engine serving the default regions, or the reverse).
async fn check_service_area(api: &Api, city: &City) -> anyhow::Result<()> {
    let response = api
        .http
        .get(format!("{}/api/v1/regions", api.base))
        .send()
        .await
        .with_context(|| format!("cannot reach {}", api.base))?;
    if !response.status().is_success() {
        return Ok(());
    }
    let Ok(regions) = RegionMap::from_geojson(&response.text().await.unwrap_or_default()) else {
        return Ok(());
    };
    let outside = city
        .merchants
        .iter()
        .filter(|p| LatLon::new(p.lat, p.lon).map_or(true, |at| regions.locate(at).is_none()))
        .count();
    if outside > 0 {
        let hint = match city.kind {
            CityKind::Helsinki => "start it with --regions data/helsinki/regions.geojson",
            CityKind::Synthetic => "start it without --regions (the default regions)",
        };
        bail!(
            "the engine at {} does not serve the {} city ({outside} of {} merchants are outside its regions): {hint}",
            api.base,
            city.kind.as_str(),
            city.merchants.len()
        );
    }
    Ok(())
}

/// What the demo prints once the fleet is running.
pub struct Started {
    pub merchant_email: String,
    pub customer_email: String,
    pub first_order: tokio::sync::watch::Receiver<Option<String>>,
}

/// Runs the simulation to the end and reports. `on_started` is told once the fleet is online.
pub async fn run(config: SimConfig, on_started: impl FnOnce(Started)) -> anyhow::Result<Report> {
    if config.merchants == 0 || config.drivers == 0 || config.customers == 0 {
        bail!("the simulation needs at least one merchant, driver and customer");
    }
    let whatsapp_stand_ins = match (&config.whatsapp.stand_ins, config.whatsapp.share > 0.0) {
        (Some(stand_ins), true) => Some(stand_ins.clone()),
        (None, true) => bail!(
            "--whatsapp-share needs the Graph API stand-in the engine sends its replies to (the engine run in this process)"
        ),
        (_, false) => None,
    };
    let base = config.url.trim_end_matches('/').to_owned();
    let api = Api {
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()?,
        base: base.clone(),
    };
    let (status, _) = api.call(reqwest::Method::GET, "/ready", None, None).await?;
    if status != 200 {
        bail!("{base} is not ready (GET /ready answered {status})");
    }
    let city = City::new(
        config.city,
        config.seed,
        config.merchants,
        config.drivers,
        config.customers,
        config.orders_per_minute,
        config.duration.as_secs_f64(),
    );
    check_service_area(&api, &city).await?;
    let setup_started = Instant::now();
    let (maps, maps_used) = sim_maps(&config).await?;
    let cast = cast(&api, &config, &city, &maps).await?;
    if let Some(stand_ins) = &config.notify {
        subscribe(&api, &cast, stand_ins).await?;
    }
    let setup_secs = setup_started.elapsed().as_secs_f64();
    let ws_base = base.replacen("http", "ws", 1);
    let stats = Arc::new(Mutex::new(Stats::default()));
    let stop = tokio::sync::watch::channel(false);
    let mut tasks = Vec::new();
    for (i, token) in cast.merchant_tokens.iter().enumerate() {
        tasks.push(tokio::spawn(merchant(
            format!("{ws_base}/ws/merchant"),
            token.clone(),
            config.seed ^ (i as u64).wrapping_mul(0x9e37_79b9),
            config.time_scale,
            stats.clone(),
            stop.1.clone(),
        )));
    }
    for (i, token) in cast.driver_tokens.iter().enumerate() {
        let plan = DriverPlan {
            url: format!("{ws_base}/ws/driver"),
            token: token.clone(),
            start: city.drivers[i],
            speed_kmh: city.driver_speeds_kmh[i],
            seed: config.seed ^ ((i as u64) << 20),
            accept_rate: config.accept_rate,
            time_scale: config.time_scale,
            area: city.area,
            maps: maps.clone(),
        };
        tasks.push(tokio::spawn(driver(plan, stats.clone(), stop.1.clone())));
    }
    let (first_order_tx, first_order_rx) = tokio::sync::watch::channel(None);
    on_started(Started {
        merchant_email: cast.first_merchant_email.clone(),
        customer_email: cast.first_customer_email.clone(),
        first_order: first_order_rx,
    });
    // Give the sockets a moment to connect and the drivers to go online.
    tokio::time::sleep(Duration::from_secs(2)).await;

    let progress = if config.progress {
        let bar = ProgressBar::new(city.orders.len() as u64);
        bar.set_style(
            ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} placed · {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar
    } else {
        ProgressBar::hidden()
    };
    let started = Instant::now();
    let customers = Customers {
        api_base: base.clone(),
        http: api.http.clone(),
        tokens: cast.customer_tokens.clone(),
        merchants: cast.merchants.clone(),
        stats: stats.clone(),
        maps: maps.clone(),
        area: city.area,
    };
    let chatters = whatsapp_stand_ins.map(|stand_ins| {
        Arc::new(Chatters::new(
            &customers,
            &config.whatsapp,
            &stand_ins,
            config.seed,
            city.customers,
        ))
    });
    let mut conversations = Vec::new();
    for (n, planned) in city.orders.iter().enumerate() {
        let due = started + Duration::from_secs_f64(planned.at_secs);
        tokio::time::sleep_until(due.into()).await;
        if let Some(chatters) = chatters.clone().filter(|c| c.takes(planned.customer)) {
            let planned = planned.clone();
            conversations.push(tokio::spawn(
                async move { chatters.order(n, &planned).await },
            ));
            progress.set_position(n as u64 + 1);
            continue;
        }
        let customers = customers.clone();
        let planned = planned.clone();
        let first = first_order_tx.clone();
        tokio::spawn(async move {
            if let Some(id) = customers.place(n, &planned).await {
                first.send_if_modified(|current| {
                    if current.is_none() {
                        *current = Some(id);
                        true
                    } else {
                        false
                    }
                });
            }
        });
        progress.set_position(n as u64 + 1);
        let delivered = stats.lock().unwrap_or_else(|e| e.into_inner()).delivered();
        progress.set_message(format!("{delivered} delivered"));
    }
    let demand_secs = started
        .elapsed()
        .as_secs_f64()
        .max(config.duration.as_secs_f64());
    // The WhatsApp customers still talking finish their conversations (their orders then drain
    // with the others).
    let conversations_end = tokio::time::Instant::now() + CONVERSATIONS_LIMIT;
    for mut conversation in conversations {
        progress.set_message("WhatsApp customers finishing their conversations");
        if tokio::time::timeout_at(conversations_end, &mut conversation)
            .await
            .is_err()
        {
            conversation.abort();
            if let Some(chatters) = &chatters {
                chatters.unfinished();
            }
        }
    }
    // Drain: wait for the orders placed to finish, while they still make progress.
    let drain_started = Instant::now();
    let mut last = (usize::MAX, Instant::now());
    loop {
        let open = stats.lock().unwrap_or_else(|e| e.into_inner()).open();
        progress.set_message(format!("draining: {open} orders still open"));
        if open == 0 || drain_started.elapsed() > DRAIN_LIMIT {
            break;
        }
        if open != last.0 {
            last = (open, Instant::now());
        } else if last.1.elapsed() > Duration::from_secs(60) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    progress.finish_and_clear();
    let _ = stop.0.send(true);
    let total_secs = started.elapsed().as_secs_f64();
    // Every client watches the stop signal; each finishes its step in hand and is waited for.
    let _ = tokio::time::timeout(CLIENTS_STOP_GRACE, futures_util::future::join_all(tasks)).await;
    let stats = std::mem::take(&mut *stats.lock().unwrap_or_else(|e| e.into_inner()));
    let notifications = match &config.notify {
        Some(stand_ins) => {
            let delivered = stats.delivered_orders();
            stand_ins.settle(&delivered, NOTIFY_SETTLE_LIMIT).await;
            Some(stand_ins.figures(&delivered))
        }
        None => None,
    };
    let mut report = stats.report(
        &config,
        &city,
        maps_used,
        RunTimes {
            setup_secs,
            demand_secs,
            total_secs,
        },
    );
    report.notifications = notifications;
    report.whatsapp = chatters.map(|chatters| chatters.figures());
    Ok(report)
}
