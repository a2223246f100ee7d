//! Commands about an order as a whole: placing it, cancelling it, reading it.

use std::collections::HashSet;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::actors::command::{Command, Op, command};
use crate::actors::engine::Engine;
use crate::actors::error::EngineError;
use crate::actors::merchant::MerchantActor;
use crate::actors::order::OrderActor;
use crate::actors::protocol::Retire;
use crate::actors::protocol::{self, BoardUpdate, Canceller};
use crate::actors::router::RouteKey;
use crate::actors::routes::remember;
use crate::domain::{NewOrder, Order, OrderId, OrderView};
use crate::geo::LatLon;
use crate::store::StoreError;

/// This subject's rows of the op table.
pub const OPS: &[Op] = &[
    command::<PlaceOrder>(),
    command::<CancelOrder>(),
    command::<GetOrder>(),
];

/// Hands a checked-out order to dispatch: journals it as `placed`, starts its actor and puts it
/// on the merchant's board. Placing the same order id again returns the order as it is.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PlaceOrder {
    pub order: NewOrder,
}

impl Command for PlaceOrder {
    const OP: &'static str = "place_order";
    const CHANGES_STATE: bool = true;
    type Output = OrderView;

    fn route(&self, engine: &Engine) -> Result<RouteKey, EngineError> {
        let pickup = LatLon::new(self.order.pickup.lat, self.order.pickup.lon)?;
        let region = engine
            .regions()
            .locate(pickup)
            .ok_or(EngineError::OutsideServiceArea)?
            .id()
            .clone();
        if engine.router().is_some() {
            remember(&engine.routes.orders, self.order.id, region.clone());
        }
        Ok(RouteKey::Region(region))
    }

    async fn run(self, engine: &Engine) -> Result<OrderView, EngineError> {
        engine.ensure_ready()?;
        let new = self.order;
        let services = &engine.services;
        let registry = &engine.registry;
        let pickup = LatLon::new(new.pickup.lat, new.pickup.lon)?;
        let dropoff = LatLon::new(new.dropoff.lat, new.dropoff.lon)?;
        let regions = &services.config.regions;
        let region = regions
            .locate(pickup)
            .ok_or(EngineError::OutsideServiceArea)?;
        regions
            .locate(dropoff)
            .ok_or(EngineError::OutsideServiceArea)?;
        let id = new.id;
        if !registry.is_active(region.id()) {
            return Err(EngineError::NotOwner(format!("region {}", region.id())));
        }
        if registry.orders.get(&id).is_some() {
            return engine.order(id).await;
        }
        let (order, entry) = Order::place(new, region.id().to_string(), crate::store::now());
        let order = match services.store.create_order(&order, &entry).await {
            Ok(()) => {
                if let Some(events) = &services.hooks.order_events {
                    events.publish(&order, std::slice::from_ref(&entry));
                }
                order
            }
            Err(StoreError::Duplicate(_)) => match services.store.load_order(id).await? {
                // An earlier attempt's write committed but its answer was lost (the database
                // went away at the commit): no actor runs the order and no board knows it.
                // Adopt it now, as if it had just been placed.
                Some(stored) if stored.is_open() && registry.orders.get(&id).is_none() => {
                    tracing::info!(order_id = %id, "order found written by an earlier attempt; adopted");
                    stored
                }
                _ => return engine.order(id).await,
            },
            Err(error) => return Err(EngineError::Store(error)),
        };
        let view = order.view();
        if !registry.is_active(region.id()) {
            // Handed off while it was written: journaled under our lease, so the next owner
            // recovers it; no actor of ours may outlive the hand-off.
            return Ok(view);
        }
        let merchant_id = order.merchant_id;
        let order_version = order.version;
        let started = registry.clone();
        let actor = registry
            .orders
            .get_or_start(id, move || OrderActor::start(order, started));
        if !registry.is_active(region.id()) {
            // The hand-off's sweep may have run between the check above and the start.
            actor.do_send(Retire {
                region: region.id().clone(),
                orders: Arc::new(HashSet::new()),
                all: true,
            });
            return Ok(view);
        }
        let started = registry.clone();
        registry
            .merchants
            .get_or_start(merchant_id, || MerchantActor::start(merchant_id, started))
            .do_send(BoardUpdate {
                version: order_version,
                view: view.clone(),
            });
        metrics::counter!("orders_placed_total").increment(1);
        Ok(view)
    }
}

/// Cancels the order (the customer before acceptance; an admin before pickup).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CancelOrder {
    pub order_id: OrderId,
    pub by: Canceller,
    pub reason: String,
}

impl Command for CancelOrder {
    const OP: &'static str = "cancel_order";
    const CHANGES_STATE: bool = true;
    type Output = OrderView;

    fn route(&self, _: &Engine) -> Result<RouteKey, EngineError> {
        Ok(RouteKey::Order(self.order_id))
    }

    async fn run(self, engine: &Engine) -> Result<OrderView, EngineError> {
        let message = protocol::CancelOrder {
            by: self.by,
            reason: self.reason,
        };
        engine.call_order(self.order_id, message).await
    }
}

/// The order now, where it runs.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct GetOrder {
    pub order_id: OrderId,
}

impl Command for GetOrder {
    const OP: &'static str = "get_order";
    const CHANGES_STATE: bool = false;
    type Output = OrderView;

    fn route(&self, _: &Engine) -> Result<RouteKey, EngineError> {
        Ok(RouteKey::Order(self.order_id))
    }

    async fn run(self, engine: &Engine) -> Result<OrderView, EngineError> {
        engine.order(self.order_id).await
    }
}
