//! Process-wide settings kept in the database, shared by every replica.

use chrono::Utc;

use super::{Store, StoreError, on_pool, on_writer};

impl Store {
    /// The stored value of `key`; if there is none yet, stores `proposed` first. When several
    /// replicas race, the first insert wins and all of them read back the same value.
    pub async fn setting_or_insert(&self, key: &str, proposed: &str) -> Result<String, StoreError> {
        on_writer!(self, |pool| {
            sqlx::query(
                "INSERT INTO settings (key, value, created_at) VALUES ($1, $2, $3) \
                 ON CONFLICT (key) DO NOTHING",
            )
            .bind(key)
            .bind(proposed)
            .bind(Utc::now())
            .execute(pool)
            .await
            .map(|done| done.rows_affected())
        })?;
        let value: (String,) = on_pool!(self, |pool| {
            sqlx::query_as("SELECT value FROM settings WHERE key = $1")
                .bind(key)
                .fetch_one(pool)
                .await
        })?;
        Ok(value.0)
    }
}
