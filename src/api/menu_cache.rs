//! Merchants with their menus as checkout reads them, kept for a moment after a read: a busy
//! merchant's checkouts share one read of the same rows instead of each making its own (one
//! statement an order fewer on the database's core).
//!
//! A change made through this replica (opening, closing, a new menu) is seen by its next
//! checkout: the handler forgets the merchant after its write, and a read that began before the
//! write is not kept. A change made through another replica is seen here within
//! [`MENU_CACHE_TTL_MS`].

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use crate::domain::MerchantId;
use crate::store::{MenuItem, Merchant, Store, StoreError};

/// How long a read merchant and menu serve checkouts at most.
pub const MENU_CACHE_TTL_MS: u64 = 1_000;
/// Merchants kept at most; beyond it, expired entries are dropped before one more is kept.
const MENU_CACHE_MAX_MERCHANTS: usize = 10_000;

struct Entry {
    merchant: Merchant,
    menu: Vec<MenuItem>,
    read_at: Instant,
}

/// The cache (one per replica, in the application state).
#[derive(Default)]
pub struct MenuCache {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    entries: HashMap<MerchantId, Entry>,
    /// Counts the changes forgotten: a read that saw another count when it began may predate
    /// a change, and is not kept. (Under the same lock as the entries, so that a read's check
    /// and its insert cannot straddle a change being forgotten.)
    changes: u64,
}

impl MenuCache {
    /// The merchant `id` and its active menu, as the store has them or had them less than
    /// [`MENU_CACHE_TTL_MS`] ago; `None` when there is no such merchant (not kept).
    pub async fn merchant_with_menu(
        &self,
        store: &Store,
        id: MerchantId,
    ) -> Result<Option<(Merchant, Vec<MenuItem>)>, StoreError> {
        let changes = match self.lookup(id) {
            Ok(kept) => return Ok(Some(kept)),
            Err(changes) => changes,
        };
        let read_at = Instant::now();
        let read = store.merchant_with_menu(id).await?;
        if let Some((merchant, menu)) = &read {
            self.keep(id, changes, read_at, merchant, menu);
        }
        Ok(read)
    }

    /// The kept read of `id` if it is fresh; otherwise the count of changes a read beginning
    /// now starts from.
    fn lookup(&self, id: MerchantId) -> Result<(Merchant, Vec<MenuItem>), u64> {
        let inner = self.lock();
        match inner.entries.get(&id) {
            Some(entry) if entry.read_at.elapsed() < Duration::from_millis(MENU_CACHE_TTL_MS) => {
                Ok((entry.merchant.clone(), entry.menu.clone()))
            }
            _ => Err(inner.changes),
        }
    }

    /// Keeps a read that began at `changes` and `read_at` — unless a change was forgotten since.
    fn keep(
        &self,
        id: MerchantId,
        changes: u64,
        read_at: Instant,
        merchant: &Merchant,
        menu: &[MenuItem],
    ) {
        let ttl = Duration::from_millis(MENU_CACHE_TTL_MS);
        let mut inner = self.lock();
        if inner.changes != changes {
            return;
        }
        if inner.entries.len() >= MENU_CACHE_MAX_MERCHANTS {
            inner
                .entries
                .retain(|_, entry| entry.read_at.elapsed() < ttl);
        }
        if inner.entries.len() < MENU_CACHE_MAX_MERCHANTS {
            let entry = Entry {
                merchant: merchant.clone(),
                menu: menu.to_vec(),
                read_at,
            };
            inner.entries.insert(id, entry);
        }
    }

    /// Forgets merchant `id`, after a write that changed it or its menu.
    pub fn forget(&self, id: MerchantId) {
        let mut inner = self.lock();
        inner.changes += 1;
        inner.entries.remove(&id);
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // No code holding the lock can panic halfway through a change of it.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Cents, Email, Position, Role};
    use crate::store::NewUser;
    use crate::store::test_support::sqlite_store;

    /// A migrated SQLite store holding one merchant with a one-item menu, and an empty cache.
    struct Shop {
        store: Store,
        dir: std::path::PathBuf,
        id: MerchantId,
        cache: MenuCache,
    }

    impl Shop {
        async fn open() -> Shop {
            let (store, dir) = sqlite_store();
            store.migrate().await.unwrap();
            let owner = store
                .create_user(NewUser {
                    email: Email::parse("owner@example.com").unwrap(),
                    name: "Owner".into(),
                    role: Role::Merchant,
                    password_hash: "x".into(),
                })
                .await
                .unwrap();
            let at = Position {
                lat: 40.75,
                lon: -73.98,
            };
            let merchant = store
                .create_merchant(owner.id, "Noodles", "1 Street", at)
                .await
                .unwrap();
            let menu = [("Ramen".to_owned(), Cents(1_200))];
            store.replace_menu(merchant.id, &menu).await.unwrap();
            Shop {
                store,
                dir,
                id: merchant.id,
                cache: MenuCache::default(),
            }
        }

        async fn close(self) {
            self.store.close().await;
            let _ = std::fs::remove_dir_all(self.dir);
        }
    }

    fn prices(read: &Option<(Merchant, Vec<MenuItem>)>) -> Vec<i64> {
        let (_, menu) = read.as_ref().expect("the merchant exists");
        menu.iter().map(|item| item.price_cents.0).collect()
    }

    #[actix_web::test]
    async fn a_read_serves_until_its_merchant_is_forgotten_and_a_change_is_then_seen() {
        let shop = Shop::open().await;
        let (store, id, cache) = (&shop.store, shop.id, &shop.cache);
        assert_eq!(
            prices(&cache.merchant_with_menu(store, id).await.unwrap()),
            [1_200]
        );

        // Changed behind the cache's back (as through another replica): the kept read serves.
        store
            .replace_menu(id, &[("Ramen".to_owned(), Cents(1_500))])
            .await
            .unwrap();
        assert_eq!(
            prices(&cache.merchant_with_menu(store, id).await.unwrap()),
            [1_200]
        );

        // Changed through this replica, which forgets it: the next read sees the change.
        cache.forget(id);
        assert_eq!(
            prices(&cache.merchant_with_menu(store, id).await.unwrap()),
            [1_500]
        );
        shop.close().await;
    }

    #[actix_web::test]
    async fn a_kept_read_expires_after_the_ttl() {
        let shop = Shop::open().await;
        let (store, id, cache) = (&shop.store, shop.id, &shop.cache);
        cache.merchant_with_menu(store, id).await.unwrap();
        store.set_merchant_open(id, false).await.unwrap();
        let kept = cache.merchant_with_menu(store, id).await.unwrap().unwrap();
        assert!(kept.0.is_open, "within the TTL the read is kept");

        tokio::time::sleep(Duration::from_millis(MENU_CACHE_TTL_MS + 50)).await;
        let read = cache.merchant_with_menu(store, id).await.unwrap().unwrap();
        assert!(!read.0.is_open, "after the TTL the store is read again");
        shop.close().await;
    }

    #[actix_web::test]
    async fn a_read_that_began_before_a_change_was_forgotten_is_not_kept() {
        let shop = Shop::open().await;
        let (store, id, cache) = (&shop.store, shop.id, &shop.cache);
        // A read begins, the merchant changes through this replica meanwhile, the read ends.
        let Err(changes) = cache.lookup(id) else {
            panic!("nothing kept yet")
        };
        let read_at = Instant::now();
        let (merchant, menu) = store.merchant_with_menu(id).await.unwrap().unwrap();
        cache.forget(id);
        cache.keep(id, changes, read_at, &merchant, &menu);
        assert!(
            cache.lookup(id).is_err(),
            "a read that may predate the change is not kept"
        );

        // One that began after it is.
        let Err(changes) = cache.lookup(id) else {
            panic!("nothing kept yet")
        };
        cache.keep(id, changes, Instant::now(), &merchant, &menu);
        assert!(cache.lookup(id).is_ok());
        // And an unknown merchant is not kept.
        let unknown = MerchantId::new();
        assert!(
            cache
                .merchant_with_menu(store, unknown)
                .await
                .unwrap()
                .is_none()
        );
        assert!(cache.lookup(unknown).is_err());
        shop.close().await;
    }
}
