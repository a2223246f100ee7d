//! The Redis link between replicas. Redis is optional; when it is configured, readiness
//! depends on reaching it.

use std::time::Duration;

use crate::config::RedisConfig;

/// Time allowed for connecting to Redis and answering a PING.
const REDIS_PING_TIMEOUT_MS: u64 = 2_000;

/// A configured Redis server.
pub struct Bus {
    client: redis::Client,
}

impl Bus {
    pub fn new(config: &RedisConfig) -> Result<Bus, redis::RedisError> {
        Ok(Bus {
            client: redis::Client::open(config.url.expose())?,
        })
    }

    /// Connects and sends PING, for readiness probes.
    pub async fn ping(&self) -> Result<(), String> {
        let attempt = async {
            let mut connection = self.client.get_multiplexed_async_connection().await?;
            redis::cmd("PING")
                .query_async::<String>(&mut connection)
                .await
        };
        match tokio::time::timeout(Duration::from_millis(REDIS_PING_TIMEOUT_MS), attempt).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(error)) => Err(error.to_string()),
            Err(_) => Err(format!("no answer within {REDIS_PING_TIMEOUT_MS} ms")),
        }
    }
}
