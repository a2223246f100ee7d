//! Where a command runs: here when regions are not shared or this replica holds the region of
//! the command's entity, else on the region's owner — resolved from the route caches, the
//! lease view and, when unknown, the store.

use super::engine::Engine;
use super::error::EngineError;
use super::router::{RouteKey, Routing};
use super::routes::{forget, recall, remember};
use crate::domain::{MerchantId, UserId};
use crate::geo::{LatLon, RegionId};

/// Where a command runs.
pub enum Target {
    Here,
    Replica(String),
    /// Nobody holds the region now (its owner died and its lease has not expired or been
    /// claimed yet): the command waits for the next owner.
    Unowned,
}

impl Engine {
    /// Where a command about `key` runs.
    pub(crate) async fn target(&self, key: &RouteKey) -> Result<Target, EngineError> {
        let Some(router) = self.router() else {
            return Ok(Target::Here);
        };
        let region = match key {
            RouteKey::Driver(driver) => return self.driver_target(router, *driver).await,
            RouteKey::Region(region) => region.clone(),
            RouteKey::Order(id) => match recall(&self.routes.orders, id) {
                Some(region) => region,
                None => {
                    let region = self
                        .services
                        .store
                        .order_region(*id)
                        .await?
                        .ok_or(EngineError::OrderNotFound)?;
                    let region = RegionId::from(region);
                    remember(&self.routes.orders, *id, region.clone());
                    region
                }
            },
            RouteKey::Merchant(id) => match self.merchant_region(*id).await? {
                Some(region) => region,
                // An unknown merchant has an empty board, served here.
                None => return Ok(Target::Here),
            },
        };
        Ok(self.region_target(router, &region))
    }

    fn region_target(&self, router: &dyn Routing, region: &RegionId) -> Target {
        if self.registry.is_active(region) {
            return Target::Here;
        }
        match router.owner(region.as_str()) {
            Some(owner) if owner != router.node() => Target::Replica(owner),
            // Ours, still recovering: answered here (`recovering`).
            Some(_) => Target::Here,
            None => Target::Unowned,
        }
    }

    /// The region of a merchant's location (cached; read from the store once).
    pub(crate) async fn merchant_region(
        &self,
        id: MerchantId,
    ) -> Result<Option<RegionId>, EngineError> {
        if let Some(region) = recall(&self.routes.merchants, &id) {
            return Ok(Some(region));
        }
        let Some(merchant) = self.services.store.merchant(id).await? else {
            return Ok(None);
        };
        let region = LatLon::new(merchant.location.lat, merchant.location.lon)
            .ok()
            .and_then(|point| self.regions().locate(point))
            .map(|region| region.id().clone());
        if let Some(region) = &region {
            remember(&self.routes.merchants, id, region.clone());
        }
        Ok(region)
    }

    /// A driver is served where its actor is: here if it runs here, else where its live
    /// subscription is; otherwise by the owner of its active order's region (a driver works
    /// next to its order), else of the region of its last fix or stored location; a driver
    /// known nowhere is served here.
    async fn driver_target(
        &self,
        router: &dyn Routing,
        driver: UserId,
    ) -> Result<Target, EngineError> {
        if let Some(target) = self.driver_bound(router, driver) {
            return Ok(target);
        }
        let store = &self.services.store;
        let region = match store.active_order_of_driver(driver).await? {
            Some(order) => store.order_region(order).await?.map(RegionId::from),
            None => match recall(&self.routes.driver_regions, &driver) {
                Some(region) => Some(region),
                None => super::driver::last_known_location(store, driver)
                    .await
                    .and_then(|point| self.regions().locate(point))
                    .map(|region| region.id().clone()),
            },
        };
        Ok(match region {
            Some(region) => self.region_target(router, &region),
            None => Target::Here,
        })
    }

    /// Where the driver's actor is known to run: here, or at the replica serving its live
    /// subscription.
    pub(crate) fn driver_bound(&self, router: &dyn Routing, driver: UserId) -> Option<Target> {
        if self.registry.drivers.get(&driver).is_some() {
            return Some(Target::Here);
        }
        let (node, sub) = recall(&self.routes.driver_nodes, &driver)?;
        if router.has_feed(sub) {
            return Some(Target::Replica(node));
        }
        forget(&self.routes.driver_nodes, &driver);
        None
    }

    /// The replica a resent command goes to.
    pub(crate) async fn resolve(&self, key: RouteKey) -> Result<Option<String>, EngineError> {
        Ok(match self.target(&key).await? {
            Target::Replica(node) => Some(node),
            Target::Here => Some(self.node()),
            Target::Unowned => None,
        })
    }

    fn node(&self) -> String {
        self.router()
            .map(|router| router.node().to_owned())
            .unwrap_or_default()
    }
}
