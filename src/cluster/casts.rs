//! Best-effort commands (location fixes, closed sockets) to other replicas: they wait in a
//! bounded queue and are published many per round trip, dropped (and counted) when the queue
//! is full, so they never pile up behind a slow Redis.

use std::sync::Arc;

use serde_json::Value;
use tokio::sync::mpsc;

use super::router::{PUBLISH_DEADLINE, Router};
use super::wire::Envelope;

/// Casts published in one pipeline.
const LOCATION_BATCH: usize = 256;

impl Router {
    /// Sends `call` to `node` without waiting (location fixes): queued, dropped when the queue
    /// is full.
    pub fn cast(&self, node: &str, call: Value) {
        let Ok(payload) = serde_json::to_string(&Envelope::Cast { call }) else {
            return;
        };
        if self
            .locations
            .try_send((self.channel(node), payload))
            .is_err()
        {
            metrics::counter!("route_casts_dropped_total", "reason" => "queue_full").increment(1);
        }
    }

    /// Publishes queued casts, many per round trip.
    pub(super) async fn publish_locations(
        self: Arc<Self>,
        mut queue: mpsc::Receiver<(String, String)>,
    ) {
        let mut batch = Vec::with_capacity(LOCATION_BATCH);
        while queue.recv_many(&mut batch, LOCATION_BATCH).await > 0 {
            let count = batch.len() as u64;
            let mut pipeline = redis::pipe();
            for (channel, payload) in batch.drain(..) {
                pipeline.publish(channel, payload).ignore();
            }
            if self
                .bus
                .run::<()>(&pipeline, PUBLISH_DEADLINE)
                .await
                .is_err()
            {
                metrics::counter!("route_casts_dropped_total", "reason" => "redis")
                    .increment(count);
            }
        }
    }
}
