//! The order's road ETA: the leg its driver is on (to the pickup, then to the dropoff) is routed
//! once through the maps service, and every location fix is projected onto that line instead of
//! asking the router again; a driver who strays is re-routed (at most every
//! [`REROUTE_MIN_INTERVAL`]). Each routed leg goes to the tracking page and the driver as a
//! `route` frame. When a leg ends, its prediction is compared with how long it took, which
//! feeds the learned per-region, per-hour correction.

use std::time::{Duration, Instant};

use actix::prelude::*;

use super::OrderActor;
use super::legs::RoutedLeg;
use crate::actors::eta::Leg;
use crate::actors::protocol::{DriverMoved, LegKind, OrderFeed, RouteChanged, RouteView};
use crate::domain::{OrderStatus, Position};
use crate::geo::{LatLon, haversine_m, travel_secs};
use crate::maps::Route;
use crate::maps::progress::LegProgress;

/// A driver off the route is re-routed at most this often.
pub const REROUTE_MIN_INTERVAL: Duration = Duration::from_secs(10);
/// A driver this close to the leg's end has arrived: the leg's travel time is measured then,
/// not at the pickup (which includes waiting for the food) or the delivery (the doorstep).
pub const ARRIVED_M: f64 = 50.0;

fn point(p: Position) -> LatLon {
    LatLon {
        lat: p.lat,
        lon: p.lon,
    }
}

/// A route computed for this order (self-sent).
#[derive(Message)]
#[rtype(result = "()")]
struct LegRouted {
    kind: LegKind,
    leg: Route,
    delivery: Option<Route>,
}

impl OrderActor {
    /// The leg the driver is on now, if any.
    fn leg_kind(&self) -> Option<LegKind> {
        self.order.driver_id?;
        match self.order.state.status {
            OrderStatus::Accepted | OrderStatus::Ready => Some(LegKind::ToPickup),
            OrderStatus::PickedUp => Some(LegKind::ToDropoff),
            _ => None,
        }
    }

    /// After a journaled change: a leg that ended is learned from (if its arrival was not
    /// seen) and dropped, and the next leg may be routed at once.
    pub(super) fn legs_after_change(&mut self) {
        let now = self.leg_kind();
        let Some(leg) = self.legs.current.as_ref() else {
            return;
        };
        if now == Some(leg.kind) {
            return;
        }
        let finished = matches!(
            (leg.kind, self.order.state.status),
            (LegKind::ToPickup, OrderStatus::PickedUp)
                | (LegKind::ToDropoff, OrderStatus::Delivered)
        );
        if finished && !leg.learned {
            self.learn_leg();
        }
        self.legs.current = None;
        self.legs.last_frame = None;
        self.legs.last_request = None;
    }

    /// Compares the current leg's prediction with how long it took until now.
    fn learn_leg(&mut self) {
        let Some(leg) = self.legs.current.as_mut() else {
            return;
        };
        leg.learned = true;
        let kind = match leg.kind {
            LegKind::ToPickup => Leg::Pickup,
            LegKind::ToDropoff => Leg::Delivery,
        };
        let (predicted, factor, taken) = (
            leg.progress.duration_secs(),
            leg.factor,
            leg.routed_at.elapsed().as_secs_f64(),
        );
        self.services
            .eta
            .observe(&self.order.region_id, kind, predicted, factor, taken);
    }

    /// The ETA to the customer from a fix of the order's driver, asking for a route when the
    /// leg has none or the driver left it.
    fn eta_from(&mut self, at: LatLon, ctx: &mut Context<Self>) -> Option<f64> {
        let kind = self.leg_kind()?;
        let (pickup, dropoff) = (point(self.order.pickup), point(self.order.dropoff));
        let end = match kind {
            LegKind::ToPickup => pickup,
            LegKind::ToDropoff => dropoff,
        };
        if self
            .legs
            .current
            .as_ref()
            .is_some_and(|leg| leg.kind == kind && !leg.learned)
            && haversine_m(at, end) <= ARRIVED_M
        {
            self.learn_leg();
        }
        let routed = self
            .legs
            .current
            .as_ref()
            .filter(|leg| leg.kind == kind)
            .and_then(|leg| Some((leg.progress.remaining_secs(at)?, leg.factor)));
        let eta = match routed {
            Some((left, factor)) => {
                let after = match kind {
                    LegKind::ToPickup => self.legs.delivery.as_ref().map(|r| r.duration_secs),
                    LegKind::ToDropoff => Some(0.0),
                };
                let speed = self.services.config.average_speed_kmh;
                let after =
                    after.unwrap_or_else(|| travel_secs(haversine_m(pickup, dropoff), speed));
                (left + after) * factor
            }
            None => {
                self.request_route(kind, at, ctx);
                let speed = self.services.config.average_speed_kmh;
                let remaining_m = match kind {
                    LegKind::ToPickup => haversine_m(at, pickup) + haversine_m(pickup, dropoff),
                    LegKind::ToDropoff => haversine_m(at, dropoff),
                };
                travel_secs(remaining_m, speed)
            }
        };
        Some(eta)
    }

    fn request_route(&mut self, kind: LegKind, from: LatLon, ctx: &mut Context<Self>) {
        if self.legs.routing
            || self
                .legs
                .last_request
                .is_some_and(|at| at.elapsed() < REROUTE_MIN_INTERVAL)
        {
            return;
        }
        self.legs.routing = true;
        self.legs.last_request = Some(Instant::now());
        let maps = self.services.maps.clone();
        let (pickup, dropoff) = (point(self.order.pickup), point(self.order.dropoff));
        let target = match kind {
            LegKind::ToPickup => pickup,
            LegKind::ToDropoff => dropoff,
        };
        let need_delivery = kind == LegKind::ToPickup && self.legs.delivery.is_none();
        let me = ctx.address();
        actix::spawn(async move {
            let delivery = async {
                if need_delivery {
                    Some(maps.route(&[pickup, dropoff]).await)
                } else {
                    None
                }
            };
            let leg_points = [from, target];
            let (leg, delivery) = futures_util::join!(maps.route(&leg_points), delivery);
            me.do_send(LegRouted {
                kind,
                leg,
                delivery,
            });
        });
    }
}

impl Handler<LegRouted> for OrderActor {
    type Result = ();

    fn handle(&mut self, msg: LegRouted, _: &mut Self::Context) {
        self.legs.routing = false;
        if msg.delivery.is_some() {
            self.legs.delivery = msg.delivery;
        }
        if self.leg_kind() != Some(msg.kind) {
            return;
        }
        let view = RouteView {
            order_id: self.order.id,
            leg: msg.kind,
            points: msg
                .leg
                .geometry
                .iter()
                .map(|p| [round5(p.lat), round5(p.lon)])
                .collect(),
            duration_secs: msg.leg.duration_secs,
            distance_m: msg.leg.distance_m,
            by_road: msg.leg.by_road,
        };
        self.legs.current = Some(RoutedLeg {
            kind: msg.kind,
            progress: LegProgress::new(&msg.leg),
            routed_at: Instant::now(),
            factor: self.services.eta.factor(&self.order.region_id),
            learned: false,
        });
        let frame = OrderFeed::Route(Box::new(view.clone()));
        self.feed.publish(&frame);
        self.legs.last_frame = Some(frame);
        if let Some(driver_id) = self.order.driver_id
            && let Some(driver) = self.registry.drivers.get(&driver_id)
        {
            driver.do_send(RouteChanged { route: view });
        }
    }
}

fn round5(x: f64) -> f64 {
    (x * 1e5).round() / 1e5
}

impl Handler<DriverMoved> for OrderActor {
    type Result = ();

    fn handle(&mut self, msg: DriverMoved, ctx: &mut Self::Context) {
        if self.order.driver_id != Some(msg.driver_id) || !self.order.is_open() {
            return;
        }
        let Some(eta) = self.eta_from(msg.location, ctx) else {
            return;
        };
        let update = OrderFeed::DriverLocation {
            lat: msg.location.lat,
            lon: msg.location.lon,
            eta_seconds: eta.round(),
        };
        self.feed.publish(&update);
        self.last_driver_location = Some(update);
    }
}
