//! Where this replica last saw entities, for routing: an order's and a merchant's region never
//! change; a driver's is where its last fix was, and a driver served by another replica keeps
//! going there while that subscription lives. Caches only: they refill from the store.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;

use uuid::Uuid;

use crate::domain::{MerchantId, OrderId, UserId};
use crate::geo::RegionId;

/// Route caches are kept below this many entries (cleared when full).
const ROUTE_CACHE_ENTRIES: usize = 100_000;

/// A driver's fix: latitude, longitude, and the app's timestamp (Unix ms).
pub type Fix = (f64, f64, Option<i64>);

#[derive(Default)]
pub struct Routes {
    pub orders: Mutex<HashMap<OrderId, RegionId>>,
    pub merchants: Mutex<HashMap<MerchantId, RegionId>>,
    pub driver_regions: Mutex<HashMap<UserId, RegionId>>,
    /// Driver → (replica serving it, the subscription that binds it there).
    pub driver_nodes: Mutex<HashMap<UserId, (String, Uuid)>>,
    /// Drivers whose fix is being routed the slow way (not bound anywhere yet), one at a time,
    /// with the newest fix that came meanwhile.
    pub drivers_resolving: Mutex<HashMap<UserId, Option<Fix>>>,
}

pub fn remember<K: Hash + Eq, V>(map: &Mutex<HashMap<K, V>>, key: K, value: V) {
    let mut map = map.lock().unwrap_or_else(|e| e.into_inner());
    if map.len() >= ROUTE_CACHE_ENTRIES {
        map.clear();
    }
    map.insert(key, value);
}

pub fn recall<K: Hash + Eq, V: Clone>(map: &Mutex<HashMap<K, V>>, key: &K) -> Option<V> {
    map.lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(key)
        .cloned()
}

pub fn forget<K: Hash + Eq, V>(map: &Mutex<HashMap<K, V>>, key: &K) {
    map.lock().unwrap_or_else(|e| e.into_inner()).remove(key);
}
