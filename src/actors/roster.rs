//! The roster: the one file that names every kind of actor, to tell the registry how to start
//! each. The registry is imported by the actors, so it cannot import them back; it is handed
//! this table instead.

use super::driver::DriverActor;
use super::merchant::MerchantActor;
use super::order::OrderActor;
use super::region::RegionActor;
use super::registry::Starters;

/// How the registry starts each kind of actor.
pub const STARTERS: Starters = Starters {
    recovered_order: OrderActor::start_recovered,
    driver: DriverActor::start,
    merchant: MerchantActor::start,
    region: RegionActor::start,
};
