//! Region leases: which replica runs each region's dispatch, until when, and under which fencing
//! epoch; and the fence every journal write passes (see the `region_leases` migration; the
//! fence itself, which the store holds, is [`super::fence`]).

use std::sync::Arc;
use std::time::Duration;

use super::fence::Fence;
use super::{Backend, Store, StoreError, on_pool, on_writer};

/// A region held by this process, and the epoch its journal writes carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub region_id: String,
    pub epoch: i64,
}

/// The outcome of claiming regions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// Every region is ours, each under a new epoch.
    Granted(Vec<Lease>),
    /// A region is leased to another replica.
    Held {
        region_id: String,
        owner: String,
        expires_at_ms: i64,
    },
}

/// A replica whose membership expired this long ago is deleted by the next graceful leave.
const MEMBER_FORGOTTEN_AFTER: Duration = Duration::from_secs(24 * 3_600);

/// Milliseconds since the Unix epoch, by this machine's clock. Replicas compare lease expiries
/// by their own clocks: skew shortens or lengthens a takeover by as much, but never lets two
/// replicas write, because writes are fenced by epoch, not by time.
pub fn unix_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl Store {
    /// Claims every region in `regions` for `node`, all or none, for `ttl`. Granted when each is
    /// free (never leased, expired, or released); each epoch then grows by one. Regions are
    /// claimed in sorted order, so two replicas claiming at once cannot deadlock: one wins.
    pub async fn claim_regions(
        &self,
        node: &str,
        regions: &[String],
        ttl: Duration,
    ) -> Result<Claim, StoreError> {
        let mut regions = regions.to_vec();
        regions.sort();
        // Journal writes key-share-lock the lease rows they are fenced by (see `fence_check`),
        // which a plain UPDATE of non-key columns would not wait for: a takeover locks the row
        // for update first, so it waits for the writes in flight and later ones see its epoch.
        // (SQLite runs one writer at a time.)
        let lock_for_takeover = match self.backend() {
            Backend::Postgres => {
                Some("SELECT 1 FROM region_leases WHERE region_id = $1 FOR UPDATE")
            }
            Backend::Sqlite => None,
        };
        on_writer!(self, |pool| {
            let mut tx = pool.begin().await?;
            // Read the clock once connected: waiting for a connection (up to the pool's acquire
            // timeout, while the database comes back) must not shorten the lease granted.
            let now_ms = unix_ms();
            let expires_at_ms = now_ms + ttl.as_millis() as i64;
            let mut leases = Vec::with_capacity(regions.len());
            for region in &regions {
                sqlx::query(
                    "INSERT INTO region_leases (region_id, owner, epoch, expires_at_ms) \
                     VALUES ($1, '', 0, 0) ON CONFLICT (region_id) DO NOTHING",
                )
                .bind(region)
                .execute(&mut *tx)
                .await?;
                if let Some(lock) = lock_for_takeover {
                    sqlx::query(lock).bind(region).execute(&mut *tx).await?;
                }
                let taken: Option<(i64,)> = sqlx::query_as(
                    "UPDATE region_leases SET owner = $1, epoch = epoch + 1, expires_at_ms = $2 \
                     WHERE region_id = $3 AND expires_at_ms <= $4 RETURNING epoch",
                )
                .bind(node)
                .bind(expires_at_ms)
                .bind(region)
                .bind(now_ms)
                .fetch_optional(&mut *tx)
                .await?;
                match taken {
                    Some((epoch,)) => leases.push(Lease {
                        region_id: region.clone(),
                        epoch,
                    }),
                    None => {
                        let (owner, expires_at_ms): (String, i64) = sqlx::query_as(
                            "SELECT owner, expires_at_ms FROM region_leases WHERE region_id = $1",
                        )
                        .bind(region)
                        .fetch_one(&mut *tx)
                        .await?;
                        tx.rollback().await?;
                        return Ok(Claim::Held {
                            region_id: region.clone(),
                            owner,
                            expires_at_ms,
                        });
                    }
                }
            }
            tx.commit().await?;
            Ok(Claim::Granted(leases))
        })
    }

    /// Extends every lease `node` holds to `ttl` from now; returns the regions it still holds
    /// (fewer than it claimed: another replica took some over).
    pub async fn renew_regions(
        &self,
        node: &str,
        ttl: Duration,
    ) -> Result<Vec<String>, StoreError> {
        on_writer!(self, |pool| {
            // The clock is read once connected: a renewal that waited for a connection while the
            // database came back must not write an expiry already (nearly) past.
            let mut connection = pool.acquire().await?;
            let expires_at_ms = unix_ms() + ttl.as_millis() as i64;
            let held: Vec<(String,)> = sqlx::query_as(
                "UPDATE region_leases SET expires_at_ms = $1 WHERE owner = $2 AND expires_at_ms > 0 \
                 RETURNING region_id",
            )
            .bind(expires_at_ms)
            .bind(node)
            .fetch_all(&mut *connection)
            .await?;
            Ok(held.into_iter().map(|(region,)| region).collect())
        })
    }

    /// Gives up one region `node` holds (a rebalance hand-off, after its actors stopped and
    /// their snapshots were written): another replica may claim it at once.
    pub async fn release_region(&self, node: &str, region: &str) -> Result<(), StoreError> {
        on_writer!(self, |pool| {
            sqlx::query(
                "UPDATE region_leases SET expires_at_ms = 0 WHERE owner = $1 AND region_id = $2",
            )
            .bind(node)
            .bind(region)
            .execute(pool)
            .await?;
            Ok(())
        })
    }

    /// Records that `node` is alive for `ttl` from now (see the `cluster_members` migration).
    pub async fn heartbeat_member(&self, node: &str, ttl: Duration) -> Result<(), StoreError> {
        on_writer!(self, |pool| {
            // As for a renewal: the clock is read once connected.
            let mut connection = pool.acquire().await?;
            let expires_at_ms = unix_ms() + ttl.as_millis() as i64;
            sqlx::query(
                "INSERT INTO cluster_members (node, expires_at_ms) VALUES ($1, $2) \
                 ON CONFLICT (node) DO UPDATE SET expires_at_ms = excluded.expires_at_ms",
            )
            .bind(node)
            .bind(expires_at_ms)
            .execute(&mut *connection)
            .await?;
            Ok(())
        })
    }

    /// Removes `node` from the live replicas (a graceful stop), and forgets replicas long dead.
    pub async fn leave_cluster(&self, node: &str) -> Result<(), StoreError> {
        on_writer!(self, |pool| {
            sqlx::query("DELETE FROM cluster_members WHERE node = $1 OR expires_at_ms < $2")
                .bind(node)
                .bind(unix_ms() - MEMBER_FORGOTTEN_AFTER.as_millis() as i64)
                .execute(pool)
                .await?;
            Ok(())
        })
    }

    /// The replicas alive now, sorted by node id.
    pub async fn live_members(&self) -> Result<Vec<String>, StoreError> {
        on_pool!(self, |pool| {
            let rows: Vec<(String,)> = sqlx::query_as(
                "SELECT node FROM cluster_members WHERE expires_at_ms > $1 ORDER BY node",
            )
            .bind(unix_ms())
            .fetch_all(pool)
            .await?;
            Ok(rows.into_iter().map(|(node,)| node).collect())
        })
    }

    /// Gives up every lease `node` holds, at once (a graceful stop): the next claim need not
    /// wait for them to expire.
    pub async fn release_regions(&self, node: &str) -> Result<(), StoreError> {
        on_writer!(self, |pool| {
            sqlx::query("UPDATE region_leases SET expires_at_ms = 0 WHERE owner = $1")
                .bind(node)
                .execute(pool)
                .await?;
            Ok(())
        })
    }

    /// Every lease, for operators and tests: `(region, owner, epoch, expires_at_ms)`.
    pub async fn region_leases(&self) -> Result<Vec<(String, String, i64, i64)>, StoreError> {
        on_pool!(self, |pool| {
            Ok(sqlx::query_as(
                "SELECT region_id, owner, epoch, expires_at_ms FROM region_leases ORDER BY region_id",
            )
            .fetch_all(pool)
            .await?)
        })
    }

    /// From now on, journal writes for an order of a region in `leases` commit only while
    /// `node` still holds that region under that epoch, and writes for any other region are
    /// refused. Before this is called (and in tools that write directly) writes are not fenced.
    pub fn fence(&self, node: &str, leases: &[Lease]) {
        let fence = Fence {
            node: node.to_owned(),
            epochs: leases
                .iter()
                .map(|lease| (lease.region_id.clone(), lease.epoch))
                .collect(),
        };
        *self.inner.fence.write().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(fence));
    }

    /// Adds (`Some` epoch) or removes (`None`) one region of the fence of `node`, creating the
    /// fence if there is none yet: the regions of a replica change as replicas come and go.
    pub fn refence(&self, node: &str, region: &str, epoch: Option<i64>) {
        let mut slot = self.inner.fence.write().unwrap_or_else(|e| e.into_inner());
        let mut epochs = slot
            .as_ref()
            .map(|fence| fence.epochs.clone())
            .unwrap_or_default();
        match epoch {
            Some(epoch) => epochs.insert(region.to_owned(), epoch),
            None => epochs.remove(region),
        };
        *slot = Some(Arc::new(Fence {
            node: node.to_owned(),
            epochs,
        }));
    }

    /// The fence, shared: journal writes take it on every transition, so no copy of its map.
    fn current_fence(&self) -> Option<Arc<Fence>> {
        self.inner
            .fence
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// What a journal write for an order of `region` must check inside its transaction (see
    /// [`FenceCheck`]); `None` when writes are not fenced. Refused at once when this process
    /// does not own `region` at all.
    pub(crate) fn fence_check(&self, region: &str) -> Result<Option<FenceCheck>, StoreError> {
        let Some(fence) = self.current_fence() else {
            return Ok(None);
        };
        let Some(&epoch) = fence.epochs.get(region) else {
            return Err(StoreError::LeaseLost(format!(
                "this replica does not own region {region}"
            )));
        };
        // On PostgreSQL the lease row is key-share-locked until the transaction ends: a takeover
        // (which locks the row for update before changing owner and epoch) waits for this write
        // to commit, so its recovery reads it, and a check that meets a takeover waits for it
        // and re-reads the row (READ COMMITTED), so it sees the new epoch. A renewal, which
        // changes only the expiry, neither waits for journal writes nor makes them wait: with a
        // share lock, a steady stream of overlapping writes starved renewals (166 ms each at
        // 100 orders/s, unbounded as writes overlap more). SQLite runs one writer at a time,
        // which gives the same order.
        Ok(Some(FenceCheck {
            sql: match self.backend() {
                Backend::Postgres => {
                    "SELECT epoch FROM region_leases WHERE region_id = $1 AND owner = $2 FOR KEY SHARE"
                }
                Backend::Sqlite => {
                    "SELECT epoch FROM region_leases WHERE region_id = $1 AND owner = $2"
                }
            },
            region: region.to_owned(),
            node: fence.node.clone(),
            epoch,
        }))
    }
}

/// Runs the [`FenceCheck`] `$fence` (an `Option`) in the transaction `$tx`; returns the
/// refusal from the enclosing function.
macro_rules! check_fence {
    ($fence:expr, $tx:ident) => {
        if let Some(fence) = &$fence {
            let held = sqlx::query_as(fence.sql)
                .bind(&fence.region)
                .bind(&fence.node)
                .fetch_optional(&mut *$tx)
                .await?;
            fence.verify(held)?;
        }
    };
}
pub(crate) use check_fence;

/// A lease check for one journal transaction: run [`FenceCheck::sql`] in it, bound to `region`
/// and `node`, and hand the row to [`FenceCheck::verify`].
pub(crate) struct FenceCheck {
    pub sql: &'static str,
    pub region: String,
    pub node: String,
    epoch: i64,
}

impl FenceCheck {
    /// Refuses the write unless the lease row still shows this process's epoch.
    pub fn verify(&self, held: Option<(i64,)>) -> Result<(), StoreError> {
        match held {
            Some((current,)) if current == self.epoch => Ok(()),
            _ => Err(self.refusal()),
        }
    }

    /// The epoch this process holds the region under.
    pub fn epoch(&self) -> i64 {
        self.epoch
    }

    /// The error for a write the lease no longer covers.
    pub fn refusal(&self) -> StoreError {
        StoreError::LeaseLost(format!(
            "region {} is no longer leased to this replica under epoch {}",
            self.region, self.epoch
        ))
    }
}
