//! The learned ETA corrections ([`crate::maps::corrections`]): loaded at start, saved when they
//! change.

use chrono::Utc;

use super::{Store, StoreError, on_pool, on_writer};
use crate::maps::corrections::Correction;

impl Store {
    /// Every stored correction: (region, hour, correction).
    pub async fn eta_corrections(&self) -> Result<Vec<(String, usize, Correction)>, StoreError> {
        let rows: Vec<(String, i32, f64, i64)> = on_pool!(self, |pool| {
            sqlx::query_as("SELECT region_id, hour, factor, samples FROM eta_corrections")
                .fetch_all(pool)
                .await?
        });
        Ok(rows
            .into_iter()
            .filter_map(|(region, hour, factor, samples)| {
                let hour = usize::try_from(hour).ok()?;
                Some((region, hour, Correction { factor, samples }))
            })
            .collect())
    }

    /// Writes `corrections` over the stored ones, in one transaction.
    pub async fn save_eta_corrections(
        &self,
        corrections: &[(String, usize, Correction)],
    ) -> Result<(), StoreError> {
        if corrections.is_empty() {
            return Ok(());
        }
        let now = Utc::now();
        on_writer!(self, |pool| {
            let mut tx = pool.begin().await?;
            for (region, hour, correction) in corrections {
                sqlx::query(
                    "INSERT INTO eta_corrections (region_id, hour, factor, samples, updated_at) \
                     VALUES ($1, $2, $3, $4, $5) ON CONFLICT (region_id, hour) DO UPDATE SET \
                     factor = excluded.factor, samples = excluded.samples, \
                     updated_at = excluded.updated_at",
                )
                .bind(region)
                .bind(*hour as i32)
                .bind(correction.factor)
                .bind(correction.samples)
                .bind(now)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
        });
        Ok(())
    }
}
