//! Actor snapshots: state written behind the journal in batches, read back at recovery.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde::de::DeserializeOwned;
use sqlx::types::Json;
use uuid::Uuid;

use super::{Store, StoreError, on_pool, on_writer};

/// Rows per multi-row upsert; keeps each statement well under both backends' bind limits.
const SNAPSHOT_ROWS_PER_STATEMENT: usize = 500;

/// Which kind of actor a snapshot belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SnapshotKind {
    Order,
    Driver,
    Merchant,
}

impl SnapshotKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SnapshotKind::Order => "order",
            SnapshotKind::Driver => "driver",
            SnapshotKind::Merchant => "merchant",
        }
    }
}

/// One snapshot to write.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub kind: SnapshotKind,
    pub id: Uuid,
    /// Grows with every change; a write never replaces a newer snapshot with an older one.
    pub version: i64,
    pub state: serde_json::Value,
    pub at: DateTime<Utc>,
}

impl Snapshot {
    pub fn of<T: Serialize>(
        kind: SnapshotKind,
        id: Uuid,
        version: i64,
        state: &T,
    ) -> Result<Snapshot, StoreError> {
        Ok(Snapshot {
            kind,
            id,
            version,
            state: serde_json::to_value(state).map_err(|e| StoreError::Corrupt(e.to_string()))?,
            at: Utc::now(),
        })
    }
}

impl Store {
    /// Upserts a batch of snapshots in one transaction, keeping the newer version of each.
    pub async fn save_snapshots(&self, batch: &[Snapshot]) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        on_writer!(self, |pool| {
            let mut tx = pool.begin().await?;
            for chunk in batch.chunks(SNAPSHOT_ROWS_PER_STATEMENT) {
                let mut query = sqlx::QueryBuilder::new(
                    "INSERT INTO actor_snapshots (kind, id, version, state, updated_at) ",
                );
                query.push_values(chunk, |mut row, snapshot| {
                    row.push_bind(snapshot.kind.as_str())
                        .push_bind(snapshot.id)
                        .push_bind(snapshot.version)
                        .push_bind(Json(&snapshot.state))
                        .push_bind(snapshot.at);
                });
                query.push(
                    " ON CONFLICT (kind, id) DO UPDATE SET version = excluded.version, \
                     state = excluded.state, updated_at = excluded.updated_at \
                     WHERE actor_snapshots.version <= excluded.version",
                );
                query.build().execute(&mut *tx).await?;
            }
            tx.commit().await?;
        });
        Ok(())
    }

    /// The newest snapshot of one actor, decoded.
    pub async fn snapshot_state<T: DeserializeOwned>(
        &self,
        kind: SnapshotKind,
        id: Uuid,
    ) -> Result<Option<T>, StoreError> {
        let row: Option<(Json<serde_json::Value>,)> = on_pool!(self, |pool| {
            sqlx::query_as("SELECT state FROM actor_snapshots WHERE kind = $1 AND id = $2")
                .bind(kind.as_str())
                .bind(id)
                .fetch_optional(pool)
                .await?
        });
        row.map(|(Json(value),)| {
            serde_json::from_value(value)
                .map_err(|e| StoreError::Corrupt(format!("{} snapshot {id}: {e}", kind.as_str())))
        })
        .transpose()
    }
}
