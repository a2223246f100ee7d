//! The Redis link between replicas: one reconnecting connection with deadlines on every call,
//! the key prefix, and a breaker that stops waiting on a Redis that just failed. Redis is
//! optional; when it is configured, replicas share regions through it and `/ready` reports it.

pub mod events;

use std::sync::Mutex;
use std::time::{Duration, Instant};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use crate::config::RedisConfig;

/// Time allowed for connecting to Redis and answering a PING.
const REDIS_PING_TIMEOUT: Duration = Duration::from_millis(2_000);
/// Time allowed to open a connection, and for any one reply.
const REDIS_CONNECT_TIMEOUT: Duration = Duration::from_millis(1_000);
const REDIS_RESPONSE_TIMEOUT: Duration = Duration::from_millis(1_000);
/// After a failed call, callers that can do without Redis skip it for this long.
const REDIS_BREAKER_OPEN: Duration = Duration::from_millis(5_000);

/// Why a Redis call did not answer. Displays without the URL (it may hold a password).
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("Redis failed a moment ago; not tried again yet")]
    Unavailable,
    #[error("Redis did not answer within {0} ms")]
    Timeout(u64),
    #[error("Redis: {0}")]
    Redis(#[from] redis::RedisError),
}

/// A configured Redis server.
pub struct Bus {
    client: redis::Client,
    connection: ConnectionManager,
    prefix: String,
    /// Until when callers that can do without Redis should not wait on it.
    skip_until: Mutex<Option<Instant>>,
}

impl Bus {
    /// Connects lazily: nothing is sent until the first call, so a Redis that is down at start
    /// does not stop the engine from starting.
    pub fn new(config: &RedisConfig) -> Result<Bus, redis::RedisError> {
        let client = redis::Client::open(config.url.expose())?;
        let manager_config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(REDIS_CONNECT_TIMEOUT))
            .set_response_timeout(Some(REDIS_RESPONSE_TIMEOUT))
            .set_number_of_retries(1)
            .set_max_delay(REDIS_BREAKER_OPEN);
        let connection = ConnectionManager::new_lazy_with_config(client.clone(), manager_config)?;
        Ok(Bus {
            client,
            connection,
            prefix: config.key_prefix.clone(),
            skip_until: Mutex::new(None),
        })
    }

    /// The client, for connections of their own (a pub/sub subscription).
    pub fn client(&self) -> &redis::Client {
        &self.client
    }

    /// The full name of the key `name`, with the configured prefix.
    pub fn key(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    /// Connects afresh and sends PING, for readiness probes (so that the probe tells the truth
    /// even while the shared connection is reconnecting).
    pub async fn ping(&self) -> Result<(), String> {
        let attempt = async {
            let mut connection = self.client.get_multiplexed_async_connection().await?;
            redis::cmd("PING")
                .query_async::<String>(&mut connection)
                .await
        };
        match tokio::time::timeout(REDIS_PING_TIMEOUT, attempt).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(error)) => Err(error.to_string()),
            Err(_) => Err(format!(
                "no answer within {} ms",
                REDIS_PING_TIMEOUT.as_millis()
            )),
        }
    }

    /// Whether Redis failed within the last few seconds: callers with a fallback use it
    /// instead of waiting on Redis again.
    pub fn recently_failed(&self) -> bool {
        let skip_until = self.skip_until.lock().unwrap_or_else(|e| e.into_inner());
        skip_until.is_some_and(|until| Instant::now() < until)
    }

    /// Counts an event under `key` in the current fixed window of `window_secs` (when
    /// `increment`), and returns the window's count and the seconds until it ends. Windows are
    /// aligned to the Unix epoch, so every replica counts into the same one.
    pub async fn count_in_window(
        &self,
        key: &str,
        window_secs: u64,
        increment: bool,
        deadline_ms: u64,
    ) -> Result<(u64, u64), BusError> {
        let now_secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let window = now_secs / window_secs;
        let ends_in_secs = (window + 1) * window_secs - now_secs;
        let key = self.key(&format!("rate:{key}:{window}"));
        let mut pipeline = redis::pipe();
        if increment {
            pipeline
                .incr(&key, 1u64)
                .expire(&key, (2 * window_secs) as i64)
                .ignore();
        } else {
            pipeline.get(&key);
        }
        let (count,): (Option<u64>,) = self
            .run(&pipeline, Duration::from_millis(deadline_ms))
            .await?;
        Ok((count.unwrap_or(0), ends_in_secs))
    }

    /// Runs `pipeline` (one or more commands) within `deadline`. A failure opens the
    /// breaker that [`Bus::recently_failed`] reports.
    pub async fn run<T: redis::FromRedisValue>(
        &self,
        pipeline: &redis::Pipeline,
        deadline: Duration,
    ) -> Result<T, BusError> {
        let mut connection = self.connection.clone();
        let outcome =
            tokio::time::timeout(deadline, pipeline.query_async::<T>(&mut connection)).await;
        let result = match outcome {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(error)) => Err(BusError::Redis(error)),
            Err(_) => Err(BusError::Timeout(deadline.as_millis() as u64)),
        };
        let mut skip_until = self.skip_until.lock().unwrap_or_else(|e| e.into_inner());
        *skip_until = match result {
            Ok(_) => None,
            Err(_) => Some(Instant::now() + REDIS_BREAKER_OPEN),
        };
        result
    }
}
