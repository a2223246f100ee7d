//! The simulated people: a driver app, a merchant board, and customers checking out — each a
//! real client of the engine's WebSockets and REST API.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message;

use super::city::{AREA_MARGIN_M, Area, MENU, PlannedOrder};
use super::report::Stats;
use super::socket::connect_client;
use super::walk::{Walk, point, step};
use crate::domain::Position;
use crate::geo::haversine_m;
use crate::maps::{Maps, Place};

/// How often a simulated driver moves and its app reports the location.
const DRIVER_TICK: Duration = Duration::from_millis(250);
const LOCATION_EVERY_TICKS: u32 = 4;
/// Close enough to an idle driver's wander spot to pick another.
const ARRIVED_M: f64 = 15.0;
/// Reconnect pause after a dropped socket.
const RECONNECT: Duration = Duration::from_millis(500);

type Shared = Arc<Mutex<Stats>>;

fn lock(stats: &Shared) -> std::sync::MutexGuard<'_, Stats> {
    stats.lock().unwrap_or_else(|e| e.into_inner())
}

fn position(value: &Value) -> Option<Position> {
    Some(Position {
        lat: value["lat"].as_f64()?,
        lon: value["lon"].as_f64()?,
    })
}

/// The address map data gives for `p`, when there is map data and the address is in the
/// city (or in the margin around it, still on the map): merchants and dropoffs move to it, so
/// that the point and its label agree.
pub fn addressed(maps: &Maps, area: &Area, p: Position) -> Option<Place> {
    if !maps.has_map() {
        return None;
    }
    let place = maps.reverse(point(p)).ok()?;
    let at = Position {
        lat: place.lat,
        lon: place.lon,
    };
    area.contains_within(at, AREA_MARGIN_M).then_some(place)
}

struct Delivery {
    id: String,
    pickup: Position,
    dropoff: Position,
    status: String,
    sent_pickup: bool,
    sent_delivery: bool,
}

/// An answer to an offer, sent when `due`.
struct Answer {
    due: Instant,
    offer_id: String,
    order_id: String,
    accept: bool,
    /// The offer's pickup ETA, simulated seconds.
    pickup_eta_secs: Option<f64>,
}

/// One simulated driver.
pub struct DriverPlan {
    /// The driver WebSocket, e.g. ws://127.0.0.1:8000/ws/driver.
    pub url: String,
    pub token: String,
    pub start: Position,
    pub speed_kmh: f64,
    pub seed: u64,
    /// Share of offers accepted.
    pub accept_rate: f64,
    pub time_scale: f64,
    /// Where an idle driver may drift.
    pub area: Area,
    /// Routes to follow to each stop (straight lines when it has no router).
    pub maps: Arc<Maps>,
}

/// A driver: online, wandering while idle, answering offers (accepting `accept_rate` of them
/// after a moment's thought), driving along the route to the pickup, waiting for the food,
/// driving along the route to the door. Its app reports the location on every new leg (so
/// the engine routes the leg from where it starts) and every second in between.
pub async fn driver(plan: DriverPlan, stats: Shared, mut stop: watch::Receiver<bool>) {
    let DriverPlan {
        url,
        token,
        start,
        speed_kmh,
        seed,
        accept_rate,
        time_scale,
        area,
        maps,
    } = plan;
    let mut rng = StdRng::seed_from_u64(seed);
    let mut at = start;
    let mut wander = start;
    let mut delivery: Option<Delivery> = None;
    let mut answer: Option<Answer> = None;
    // Orders this driver accepted and is waiting to be assigned: (accepted at, pickup ETA).
    let mut accepted: HashMap<String, (Instant, Option<f64>)> = HashMap::new();
    // The way to the current stop, and when the driver set off on it.
    let mut walk: Option<Walk> = None;
    let mut leg_started = Instant::now();
    // Driving is by the clock, not by the tick: each tick covers the time since this instant
    // (a new leg starts it afresh), so arrivals do not depend on the tick's length.
    let mut moving_since = Instant::now();
    let metres_per_sec = (speed_kmh / 3.6 * time_scale).max(f64::MIN_POSITIVE);
    while !*stop.borrow() {
        let Ok(socket) = connect_client(&url, &token).await else {
            tokio::time::sleep(RECONNECT).await;
            continue;
        };
        let (mut write, mut read) = socket.split();
        let hello = [
            json!({"type": "availability", "available": true}),
            json!({"type": "location", "lat": at.lat, "lon": at.lon}),
        ];
        for message in hello {
            let _ = write.send(Message::text(message.to_string())).await;
            lock(&stats).ws_out += 1;
        }
        let mut tick = tokio::time::interval(DRIVER_TICK);
        let mut ticks: u32 = 0;
        loop {
            let mut outgoing: Vec<Value> = Vec::new();
            tokio::select! {
                _ = stop.changed() => return,
                incoming = read.next() => {
                    let Some(Ok(Message::Text(text))) = incoming else {
                        if matches!(incoming, Some(Ok(_))) { continue; }
                        break;
                    };
                    let Ok(message) = serde_json::from_str::<Value>(&text) else { continue };
                    lock(&stats).ws_in += 1;
                    match message["type"].as_str() {
                        Some("offer") => {
                            let order = message["order_id"].as_str().unwrap_or_default().to_owned();
                            {
                                let mut stats = lock(&stats);
                                let trace = stats.trace(&order);
                                trace.first_offer_at.get_or_insert_with(Instant::now);
                            }
                            let think = Duration::from_millis(rng.random_range(200..1_200));
                            let accept = rng.random_bool(accept_rate.clamp(0.0, 1.0));
                            answer = Some(Answer {
                                due: Instant::now() + think,
                                offer_id: message["offer_id"].as_str().unwrap_or_default().to_owned(),
                                order_id: order,
                                accept,
                                pickup_eta_secs: message["pickup_eta_seconds"].as_f64(),
                            });
                        }
                        Some("assigned") => {
                            let order = &message["order"];
                            let id = order["id"].as_str().unwrap_or_default().to_owned();
                            let (Some(pickup), Some(dropoff)) = (position(&order["pickup"]), position(&order["dropoff"])) else { continue };
                            {
                                let mut stats = lock(&stats);
                                let trace = stats.trace(&id);
                                if trace.assigned_at.is_none() {
                                    trace.assigned_at = Some(Instant::now());
                                    trace.pickup_distance_m = Some(haversine_m(point(at), point(pickup)));
                                }
                                if let Some((accepted_at, eta)) = accepted.remove(&id) {
                                    trace.offer_accepted_at.get_or_insert(accepted_at);
                                    if let Some(eta) = eta {
                                        trace.predicted_pickup_secs.get_or_insert(eta);
                                    }
                                }
                            }
                            let status = order["status"].as_str().unwrap_or_default().to_owned();
                            // Every message is the latest state (replace, don't merge): an
                            // `assigned` sent again after a reconnect or a resubscription may
                            // carry a status whose `order_update` this app never saw.
                            match delivery.as_mut().filter(|d| d.id == id) {
                                Some(d) => d.status = status,
                                None => {
                                    delivery = Some(Delivery { id, pickup, dropoff, status, sent_pickup: false, sent_delivery: false });
                                    // A new leg: set off now, and say where from.
                                    leg_started = Instant::now();
                                    moving_since = leg_started;
                                    outgoing.push(json!({"type": "location", "lat": at.lat, "lon": at.lon}));
                                }
                            }
                        }
                        Some("order_update") => {
                            let order = &message["order"];
                            let status = order["status"].as_str().unwrap_or_default();
                            if let Some(d) = delivery.as_mut().filter(|d| Some(d.id.as_str()) == order["id"].as_str()) {
                                if status == "picked_up" && d.status != "picked_up" {
                                    // The leg to the door starts here.
                                    leg_started = Instant::now();
                                    moving_since = leg_started;
                                    outgoing.push(json!({"type": "location", "lat": at.lat, "lon": at.lon}));
                                }
                                d.status = status.to_owned();
                                if status == "picked_up" {
                                    lock(&stats).trace(&d.id).picked_up_at.get_or_insert_with(Instant::now);
                                }
                                if matches!(status, "delivered" | "cancelled" | "rejected") {
                                    let mut stats = lock(&stats);
                                    let trace = stats.trace(&d.id);
                                    if status == "delivered" {
                                        trace.delivered_at.get_or_insert_with(Instant::now);
                                    } else {
                                        trace.closed_otherwise = true;
                                    }
                                    delivery = None;
                                }
                            }
                        }
                        Some("route") if message["leg"] == "to_dropoff" => {
                            // Routed from where the driver just reported itself: the prediction
                            // is timed from now.
                            if let (Some(order), Some(secs)) = (message["order_id"].as_str(), message["duration_secs"].as_f64()) {
                                let mut stats = lock(&stats);
                                let trace = stats.trace(order);
                                if trace.predicted_delivery_secs.is_none() {
                                    trace.predicted_delivery_secs = Some(secs);
                                    trace.delivery_routed_at = Some(Instant::now());
                                }
                            }
                        }
                        Some("offer_expired")
                            if answer.as_ref().is_some_and(|a| Some(a.offer_id.as_str()) == message["offer_id"].as_str()) =>
                        {
                            answer = None;
                        }
                        Some("error") => {
                            let code = message["code"].as_str().unwrap_or("unknown");
                            lock(&stats).error(code);
                            // A passing failure: send the step again, as a real app would.
                            if matches!(code, "store_unavailable" | "dispatch_unavailable")
                                && let Some(d) = delivery.as_mut()
                            {
                                d.sent_pickup = false;
                                d.sent_delivery = false;
                            }
                        }
                        _ => {}
                    }
                }
                _ = tick.tick() => {
                    ticks = ticks.wrapping_add(1);
                    if let Some(a) = answer.take() {
                        if Instant::now() >= a.due {
                            let kind = if a.accept { "accept_offer" } else { "decline_offer" };
                            outgoing.push(json!({"type": kind, "offer_id": a.offer_id}));
                            if a.accept {
                                accepted.insert(a.order_id, (Instant::now(), a.pickup_eta_secs));
                            }
                        } else {
                            answer = Some(a);
                        }
                    }
                    match delivery.as_mut() {
                        Some(d) => {
                            let to_door = d.status == "picked_up";
                            let target = if to_door { d.dropoff } else { d.pickup };
                            if walk.as_ref().is_none_or(|w| w.target() != target) {
                                // A new stop: ask for the way (the straight line without a
                                // router, or when it fails).
                                let route = maps.route(&[point(at), point(target)]).await;
                                walk = Some(Walk::new(&route.geometry, target));
                            }
                            let now = Instant::now();
                            let metres = metres_per_sec * now.saturating_duration_since(moving_since).as_secs_f64();
                            moving_since = now;
                            if let Some(way) = walk.as_mut() {
                                let (next, spare_m) = way.advance(at, metres);
                                at = next;
                                if way.arrived() {
                                    // Arrived part-way through the tick: back-date by what was spare.
                                    let early = Duration::try_from_secs_f64(spare_m / metres_per_sec).unwrap_or_default();
                                    let arrived_at = now.checked_sub(early).unwrap_or(leg_started).max(leg_started);
                                    let mut stats = lock(&stats);
                                    let trace = stats.trace(&d.id);
                                    if to_door {
                                        trace.at_dropoff_at.get_or_insert(arrived_at);
                                        if !d.sent_delivery {
                                            d.sent_delivery = true;
                                            outgoing.push(json!({"type": "delivered", "order_id": d.id}));
                                        }
                                    } else {
                                        trace.at_pickup_at.get_or_insert(arrived_at);
                                        if d.status == "ready" && !d.sent_pickup {
                                            d.sent_pickup = true;
                                            outgoing.push(json!({"type": "picked_up", "order_id": d.id}));
                                        }
                                    }
                                }
                            }
                        }
                        None => {
                            walk = None;
                            let now = Instant::now();
                            let metres = metres_per_sec * now.saturating_duration_since(moving_since).as_secs_f64();
                            moving_since = now;
                            // Idle: drift towards a spot nearby, like a driver waiting for work;
                            // stopped while reading an offer, so its pickup ETA still holds.
                            if haversine_m(point(at), point(wander)) < ARRIVED_M {
                                wander = area.wander_spot(start, &mut rng);
                            }
                            if answer.is_none() {
                                at = step(at, wander, metres / 3.0);
                            }
                        }
                    }
                    if ticks.is_multiple_of(LOCATION_EVERY_TICKS) {
                        outgoing.push(json!({"type": "location", "lat": at.lat, "lon": at.lon}));
                    }
                }
            }
            let mut failed = false;
            for message in outgoing {
                if write
                    .send(Message::text(message.to_string()))
                    .await
                    .is_err()
                {
                    failed = true;
                    break;
                }
                lock(&stats).ws_out += 1;
            }
            if failed {
                break;
            }
        }
        // The socket dropped: clear resend flags so the next connection can finish the job.
        if let Some(d) = delivery.as_mut() {
            d.sent_pickup = false;
            d.sent_delivery = false;
        }
        tokio::time::sleep(RECONNECT).await;
    }
}

/// A merchant's board: accepts each new order after a moment with a preparation time, and
/// marks it ready when that time (scaled) has passed.
pub async fn merchant(
    url: String,
    token: String,
    seed: u64,
    time_scale: f64,
    stats: Shared,
    mut stop: watch::Receiver<bool>,
) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut seen = std::collections::HashSet::new();
    // (due, message) to send.
    let mut pending: Vec<(Instant, Value)> = Vec::new();
    while !*stop.borrow() {
        let Ok(socket) = connect_client(&url, &token).await else {
            tokio::time::sleep(RECONNECT).await;
            continue;
        };
        let (mut write, mut read) = socket.split();
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        loop {
            tokio::select! {
                _ = stop.changed() => return,
                incoming = read.next() => {
                    let Some(Ok(Message::Text(text))) = incoming else {
                        if matches!(incoming, Some(Ok(_))) { continue; }
                        break;
                    };
                    let Ok(message) = serde_json::from_str::<Value>(&text) else { continue };
                    lock(&stats).ws_in += 1;
                    let orders: Vec<&Value> = match message["type"].as_str() {
                        Some("board") => message["orders"].as_array().map(|o| o.iter().collect()).unwrap_or_default(),
                        Some("order_update") => vec![&message["order"]],
                        Some("error") => {
                            lock(&stats).error(message["code"].as_str().unwrap_or("unknown"));
                            Vec::new()
                        }
                        _ => Vec::new(),
                    };
                    for order in orders {
                        let Some(id) = order["id"].as_str() else { continue };
                        if order["status"] == "placed" && seen.insert(id.to_owned()) {
                            let prep_minutes: u32 = rng.random_range(5..=15);
                            let accept_at = Instant::now() + Duration::from_millis(rng.random_range(300..1_500));
                            pending.push((accept_at, json!({"type": "accept_order", "order_id": id, "prep_minutes": prep_minutes})));
                            let ready_after = Duration::from_secs_f64(f64::from(prep_minutes) * 60.0 / time_scale);
                            pending.push((accept_at + ready_after, json!({"type": "order_ready", "order_id": id})));
                        }
                    }
                }
                _ = tick.tick() => {
                    let now = Instant::now();
                    let (due, later): (Vec<_>, Vec<_>) = pending.drain(..).partition(|(at, _)| *at <= now);
                    pending = later;
                    let mut failed = false;
                    for (_, message) in due {
                        if message["type"] == "accept_order" {
                            let id = message["order_id"].as_str().unwrap_or_default().to_owned();
                            lock(&stats).trace(&id).accepted_at.get_or_insert_with(Instant::now);
                        }
                        if write.send(Message::text(message.to_string())).await.is_err() {
                            failed = true;
                            break;
                        }
                        lock(&stats).ws_out += 1;
                    }
                    if failed {
                        break;
                    }
                }
            }
        }
        tokio::time::sleep(RECONNECT).await;
    }
}

/// The customers: each planned order is checked out at its time.
#[derive(Clone)]
pub struct Customers {
    pub api_base: String,
    pub http: reqwest::Client,
    pub tokens: Vec<String>,
    /// (merchant id, menu item ids) per merchant.
    pub merchants: Vec<(String, Vec<String>)>,
    pub stats: Shared,
    /// Addresses for the dropoffs, when it has map data.
    pub maps: Arc<Maps>,
    pub area: Area,
}

impl Customers {
    /// Checks out order `n`; its id when placed.
    pub async fn place(&self, n: usize, planned: &PlannedOrder) -> Option<String> {
        let (merchant_id, items) = &self.merchants[planned.merchant];
        let lines: Vec<Value> = planned
            .lines
            .iter()
            .filter(|(line, _)| *line < items.len().min(MENU.len()))
            .map(|(line, quantity)| json!({"menu_item_id": items[*line], "quantity": quantity}))
            .collect();
        let dropoff = match addressed(&self.maps, &self.area, planned.dropoff) {
            Some(place) => json!({"lat": place.lat, "lon": place.lon, "address": place.label}),
            None => {
                json!({"lat": planned.dropoff.lat, "lon": planned.dropoff.lon, "address": format!("{n} Sim Street")})
            }
        };
        let body = json!({
            "merchant_id": merchant_id,
            "items": lines,
            "dropoff": dropoff,
            "payment_method": "pm_card_visa",
        });
        let sent = Instant::now();
        let response = self
            .http
            .post(format!("{}/api/v1/orders", self.api_base))
            .bearer_auth(&self.tokens[planned.customer])
            .header("Idempotency-Key", uuid::Uuid::new_v4().to_string())
            .json(&body)
            .send()
            .await;
        match response {
            Ok(response) if response.status().as_u16() == 201 => {
                let order: Value = response.json().await.unwrap_or(Value::Null);
                let id = order["id"].as_str()?.to_owned();
                lock(&self.stats).trace(&id).placed_at.get_or_insert(sent);
                Some(id)
            }
            Ok(response) => {
                let status = response.status().as_u16();
                let body: Value = response.json().await.unwrap_or(Value::Null);
                let code = body["error"]["code"]
                    .as_str()
                    .map_or_else(|| format!("http_{status}"), str::to_owned);
                let mut stats = lock(&self.stats);
                stats.failed_checkouts += 1;
                stats.error(&code);
                None
            }
            Err(_) => {
                let mut stats = lock(&self.stats);
                stats.failed_checkouts += 1;
                stats.error("network");
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::maps::offline::OfflineMap;
    use crate::sim::city::{City, CityKind};

    #[test]
    fn helsinki_merchants_and_dropoffs_get_real_addresses_in_the_city() {
        let map = OfflineMap::read(crate::sim::helsinki::MAP_DATA).expect("the extract reads");
        let maps = Maps::straight_line(25.0).with_map(Arc::new(map));
        let city = City::new(CityKind::Helsinki, 7, 20, 10, 10, 120.0, 60.0);
        let spots: Vec<Position> = city
            .merchants
            .iter()
            .copied()
            .chain(city.orders.iter().map(|o| o.dropoff))
            .collect();
        let placed: Vec<Place> = spots
            .iter()
            .filter_map(|p| addressed(&maps, &city.area, *p))
            .collect();
        // Nearly every point of central Helsinki has an address nearby.
        assert!(
            placed.len() * 100 >= spots.len() * 95,
            "{} of {}",
            placed.len(),
            spots.len()
        );
        for place in &placed {
            let at = Position {
                lat: place.lat,
                lon: place.lon,
            };
            assert!(city.area.contains_within(at, AREA_MARGIN_M), "{place:?}");
            assert!(!place.label.trim().is_empty());
        }
        // Mostly house addresses, with numbers (near the parks, a street or a place's name).
        let numbered = placed
            .iter()
            .filter(|p| p.label.chars().any(|c| c.is_ascii_digit()))
            .count();
        assert!(
            numbered * 5 >= placed.len() * 4,
            "{numbered} of {}: {placed:?}",
            placed.len()
        );
    }

    #[test]
    fn without_map_data_nothing_is_addressed() {
        let maps = Maps::straight_line(25.0);
        let city = City::new(CityKind::Helsinki, 7, 3, 1, 1, 1.0, 1.0);
        assert!(addressed(&maps, &city.area, city.merchants[0]).is_none());
    }
}
