//! Who owns which region, as this replica last read the lease table: kept by the lease rounds,
//! read by the router and the engine's routing.

use std::collections::HashMap;
use std::sync::RwLock;

use crate::store::unix_ms;

/// The lease view: region → owner and expiry.
#[derive(Default)]
pub struct Ownership {
    /// Region → (owner, lease expiry in Unix ms).
    owners: RwLock<HashMap<String, (String, i64)>>,
}

impl Ownership {
    /// Replaces the view with `leases` (`(region, owner, epoch, expires_at_ms)` rows).
    pub fn update(&self, leases: &[(String, String, i64, i64)]) {
        let owners = leases
            .iter()
            .map(|(region, owner, _, expires)| (region.clone(), (owner.clone(), *expires)))
            .collect();
        *self.owners.write().unwrap_or_else(|e| e.into_inner()) = owners;
    }

    /// Notes a change of owner this replica made itself (it claimed `region`, or released it
    /// with `owner` `None`), before the next read of the lease table.
    pub fn set(&self, region: &str, owner: Option<&str>, expires_at_ms: i64) {
        let mut owners = self.owners.write().unwrap_or_else(|e| e.into_inner());
        match owner {
            Some(owner) => owners.insert(region.to_owned(), (owner.to_owned(), expires_at_ms)),
            None => owners.remove(region),
        };
    }

    /// The replica holding `region` now, if any.
    pub fn owner(&self, region: &str) -> Option<String> {
        let now_ms = unix_ms();
        self.owners
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(region)
            .filter(|(_, expires)| *expires > now_ms)
            .map(|(owner, _)| owner.clone())
    }

    /// Whether `node` holds some region now.
    pub fn is_owner(&self, node: &str) -> bool {
        let now_ms = unix_ms();
        self.owners
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .any(|(owner, expires)| owner == node && *expires > now_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ownership_ignores_expired_leases() {
        let ownership = Ownership::default();
        let future = unix_ms() + 10_000;
        ownership.update(&[
            ("ne".into(), "pod-a".into(), 1, future),
            ("nw".into(), "pod-b".into(), 1, 0),
        ]);
        assert_eq!(ownership.owner("ne").as_deref(), Some("pod-a"));
        assert_eq!(ownership.owner("nw"), None);
        assert!(!ownership.is_owner("pod-b"));
    }
}
