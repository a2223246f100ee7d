//! The order-event stream for other services (notifications, analytics): every journaled order
//! transition, appended behind the journal to a capped Redis Stream, `<prefix>order-events`.
//!
//! The journal stays the source of truth. Appends are queued in memory and written in batches;
//! while Redis fails they wait (the queue is bounded: past it, events are dropped and counted)
//! and are retried, so an event may be appended twice. Consumers deduplicate on
//! (`order_id`, `seq`): `seq` numbers one order's transitions 1, 2, 3… without gaps, so a
//! consumer can also tell when it missed one and read the order from the REST API.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use super::Bus;
use crate::domain::{JournalEntry, Order};
use crate::tasks::Tasks;

/// The stream's key, after the configured prefix.
pub const ORDER_EVENTS_STREAM: &str = "order-events";
/// Events waiting for Redis at most; past that, new ones are dropped (and counted).
const ORDER_EVENTS_QUEUE_ENTRIES: usize = 20_000;
/// Events appended in one round trip at most.
const ORDER_EVENTS_BATCH_ENTRIES: usize = 256;
/// Time allowed for one batch.
const ORDER_EVENTS_DEADLINE: Duration = Duration::from_millis(2_000);
/// Pause after a failed batch, doubling up to the maximum.
const ORDER_EVENTS_RETRY_MIN_MS: u64 = 250;
const ORDER_EVENTS_RETRY_MAX_MS: u64 = 5_000;

/// One stream entry: field names and values, as consumers read them.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamEntry {
    fields: Vec<(&'static str, String)>,
}

impl StreamEntry {
    /// The entry for `entry`, one transition of `order`.
    pub fn new(order: &Order, entry: &JournalEntry) -> StreamEntry {
        let detail = serde_json::to_string(&entry.change).unwrap_or_else(|_| "{}".to_owned());
        StreamEntry {
            fields: vec![
                ("order_id", order.id.to_string()),
                ("seq", entry.seq.to_string()),
                ("event", entry.change.name().to_owned()),
                (
                    "at",
                    entry
                        .at
                        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                ),
                ("region_id", order.region_id.clone()),
                ("merchant_id", order.merchant_id.to_string()),
                ("customer_id", order.customer_id.to_string()),
                ("detail", detail),
            ],
        }
    }

    /// The value of `field`.
    pub fn get(&self, field: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(name, _)| *name == field)
            .map(|(_, value)| value.as_str())
    }
}

/// Where the engine hands journaled transitions for the stream. Never blocks.
#[derive(Clone)]
pub struct OrderEventSink {
    queue: mpsc::Sender<StreamEntry>,
}

impl OrderEventSink {
    /// Queues `entries`, just journaled for `order` (`order` as it stands after them).
    pub fn publish(&self, order: &Order, entries: &[JournalEntry]) {
        for entry in entries {
            if self.queue.try_send(StreamEntry::new(order, entry)).is_err() {
                metrics::counter!("order_events_dropped_total").increment(1);
            }
        }
    }
}

/// Starts the task that appends queued events to the stream, trimmed to about `maxlen`
/// entries.
pub fn spawn(tasks: &Tasks, bus: Arc<Bus>, maxlen: usize) -> OrderEventSink {
    let (queue, events) = mpsc::channel(ORDER_EVENTS_QUEUE_ENTRIES);
    tasks.spawn(append_forever(bus, maxlen, events));
    OrderEventSink { queue }
}

async fn append_forever(bus: Arc<Bus>, maxlen: usize, mut events: mpsc::Receiver<StreamEntry>) {
    let stream = bus.key(ORDER_EVENTS_STREAM);
    let mut batch: Vec<StreamEntry> = Vec::with_capacity(ORDER_EVENTS_BATCH_ENTRIES);
    let mut retry_ms = ORDER_EVENTS_RETRY_MIN_MS;
    let mut failing = false;
    loop {
        if batch.is_empty() {
            match events.recv().await {
                Some(event) => batch.push(event),
                None => return,
            }
        }
        while batch.len() < ORDER_EVENTS_BATCH_ENTRIES {
            match events.try_recv() {
                Ok(event) => batch.push(event),
                Err(_) => break,
            }
        }
        let mut pipeline = redis::pipe();
        for event in &batch {
            let command = pipeline
                .cmd("XADD")
                .arg(&stream)
                .arg("MAXLEN")
                .arg("~")
                .arg(maxlen)
                .arg("*");
            for (name, value) in &event.fields {
                command.arg(*name).arg(value);
            }
            command.ignore();
        }
        match bus.run::<()>(&pipeline, ORDER_EVENTS_DEADLINE).await {
            Ok(()) => {
                metrics::counter!("order_events_appended_total").increment(batch.len() as u64);
                batch.clear();
                retry_ms = ORDER_EVENTS_RETRY_MIN_MS;
                if failing {
                    failing = false;
                    tracing::info!("order-event stream appends resumed");
                }
            }
            Err(error) => {
                metrics::counter!("order_events_append_failures_total").increment(1);
                if !failing {
                    failing = true;
                    tracing::warn!(error = %error, waiting = batch.len(), "cannot append to the order-event stream; retrying");
                }
                tokio::time::sleep(Duration::from_millis(retry_ms)).await;
                retry_ms = (retry_ms * 2).min(ORDER_EVENTS_RETRY_MAX_MS);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Cents, Change, MerchantId, NewOrder, OrderId, Position, UserId};

    #[test]
    fn an_entry_names_the_order_its_sequence_and_the_change() {
        let new = NewOrder {
            id: OrderId::new(),
            merchant_id: MerchantId::new(),
            customer_id: UserId::new(),
            items: Vec::new(),
            delivery_fee_cents: Cents(490),
            total_cents: Cents(490),
            pickup: Position {
                lat: 40.75,
                lon: -73.98,
            },
            dropoff: Position {
                lat: 40.76,
                lon: -73.97,
            },
            dropoff_address: "1 Main St".to_owned(),
            pickup_address: "2 Kitchen Rd".to_owned(),
        };
        let (order, placed) = Order::place(new, "r1".to_owned(), crate::store::now());
        let entry = StreamEntry::new(&order, &placed);
        assert_eq!(entry.get("order_id"), Some(order.id.to_string().as_str()));
        assert_eq!(entry.get("seq"), Some("1"));
        assert_eq!(entry.get("event"), Some("placed"));
        assert_eq!(entry.get("region_id"), Some("r1"));
        let accepted = JournalEntry {
            seq: 2,
            change: Change::MerchantAccepted { prep_minutes: 12 },
            at: crate::store::now(),
        };
        let entry = StreamEntry::new(&order, &accepted);
        assert_eq!(entry.get("event"), Some("merchant_accepted"));
        let detail: serde_json::Value =
            serde_json::from_str(entry.get("detail").expect("detail")).expect("JSON");
        assert_eq!(detail["prep_minutes"], 12);
    }
}
