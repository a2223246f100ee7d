//! The shapes a command's answer and a subscription's updates take between replicas: the
//! `Reply` and `FeedItem` vocabularies (their JSON is a contract with replicas of other versions,
//! checked against golden files), and [`Answer`], which ties each command's typed output to one
//! of them. Inside the process outputs stay typed; only an answer read off the wire is checked
//! at run time.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::error::EngineError;
use super::protocol::{DriverFeed, DriverStatus, OrderFeed};
use crate::domain::OrderView;

/// What a command answers, as it travels.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Reply {
    Done,
    Order {
        order: OrderView,
    },
    /// No command answers it now; kept so that every reply an earlier version could send
    /// still reads.
    MaybeOrder {
        order: Option<OrderView>,
    },
    Driver {
        status: DriverStatus,
    },
    DriverFeed {
        /// Boxed: a status and an order side by side are the largest reply by far (the JSON is
        /// the same).
        status: Box<DriverStatus>,
        active: Option<OrderView>,
    },
    Board {
        orders: Vec<OrderView>,
    },
    Count {
        count: usize,
    },
}

impl Reply {
    /// Its `kind` on the wire, for an error about it (without printing what it carries).
    fn kind(&self) -> &'static str {
        match self {
            Reply::Done => "done",
            Reply::Order { .. } => "order",
            Reply::MaybeOrder { .. } => "maybe_order",
            Reply::Driver { .. } => "driver",
            Reply::DriverFeed { .. } => "driver_feed",
            Reply::Board { .. } => "board",
            Reply::Count { .. } => "count",
        }
    }
}

/// One update of a subscription served by another replica.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "feed", rename_all = "snake_case")]
pub enum FeedItem {
    Order { item: OrderFeed },
    Board { order: Box<OrderView> },
    Driver { item: DriverFeed },
}

/// A command's output, as one [`Reply`].
pub trait Answer: Sized + Send + 'static {
    fn into_reply(self) -> Reply;
    /// The output a reply from another replica carries, or `None` for a reply of another shape
    /// (a replica of an incompatible version).
    fn from_reply(reply: Reply) -> Option<Self>;
}

/// A feed's update, as one [`FeedItem`].
pub trait Item: Sized + Send + 'static {
    fn into_item(self) -> FeedItem;
    fn from_item(item: FeedItem) -> Option<Self>;
}

impl Answer for () {
    fn into_reply(self) -> Reply {
        Reply::Done
    }
    fn from_reply(reply: Reply) -> Option<Self> {
        matches!(reply, Reply::Done).then_some(())
    }
}

impl Answer for OrderView {
    fn into_reply(self) -> Reply {
        Reply::Order { order: self }
    }
    fn from_reply(reply: Reply) -> Option<Self> {
        match reply {
            Reply::Order { order } => Some(order),
            _ => None,
        }
    }
}

/// An order, or nothing (a declined offer answers `done`).
impl Answer for Option<OrderView> {
    fn into_reply(self) -> Reply {
        match self {
            Some(order) => Reply::Order { order },
            None => Reply::Done,
        }
    }
    fn from_reply(reply: Reply) -> Option<Self> {
        match reply {
            Reply::Order { order } => Some(Some(order)),
            Reply::Done => Some(None),
            _ => None,
        }
    }
}

impl Answer for DriverStatus {
    fn into_reply(self) -> Reply {
        Reply::Driver { status: self }
    }
    fn from_reply(reply: Reply) -> Option<Self> {
        match reply {
            Reply::Driver { status } => Some(status),
            _ => None,
        }
    }
}

impl Answer for usize {
    fn into_reply(self) -> Reply {
        Reply::Count { count: self }
    }
    fn from_reply(reply: Reply) -> Option<Self> {
        match reply {
            Reply::Count { count } => Some(count),
            _ => None,
        }
    }
}

/// A merchant's board: every open order.
impl Answer for Vec<OrderView> {
    fn into_reply(self) -> Reply {
        Reply::Board { orders: self }
    }
    fn from_reply(reply: Reply) -> Option<Self> {
        match reply {
            Reply::Board { orders } => Some(orders),
            _ => None,
        }
    }
}

/// What a driver's app is told when it subscribes: its state and its active order.
#[derive(Clone, Debug)]
pub struct DriverSnapshot {
    pub status: DriverStatus,
    pub active: Option<OrderView>,
}

impl Answer for DriverSnapshot {
    fn into_reply(self) -> Reply {
        Reply::DriverFeed {
            status: Box::new(self.status),
            active: self.active,
        }
    }
    fn from_reply(reply: Reply) -> Option<Self> {
        match reply {
            Reply::DriverFeed { status, active } => Some(DriverSnapshot {
                status: *status,
                active,
            }),
            _ => None,
        }
    }
}

impl Item for OrderFeed {
    fn into_item(self) -> FeedItem {
        FeedItem::Order { item: self }
    }
    fn from_item(item: FeedItem) -> Option<Self> {
        match item {
            FeedItem::Order { item } => Some(item),
            _ => None,
        }
    }
}

/// A board's update: the order as it is now.
impl Item for OrderView {
    fn into_item(self) -> FeedItem {
        FeedItem::Board {
            order: Box::new(self),
        }
    }
    fn from_item(item: FeedItem) -> Option<Self> {
        match item {
            FeedItem::Board { order } => Some(*order),
            _ => None,
        }
    }
}

impl Item for DriverFeed {
    fn into_item(self) -> FeedItem {
        FeedItem::Driver { item: self }
    }
    fn from_item(item: FeedItem) -> Option<Self> {
        match item {
            FeedItem::Driver { item } => Some(item),
            _ => None,
        }
    }
}

/// An answer as JSON.
pub fn encode_answer<A: Answer>(answer: A) -> Result<Value, EngineError> {
    serde_json::to_value(answer.into_reply()).map_err(|e| protocol(format!("cannot encode: {e}")))
}

/// The typed output in a JSON answer from another replica.
pub fn decode_answer<A: Answer>(value: Value) -> Result<A, EngineError> {
    let reply: Reply =
        serde_json::from_value(value).map_err(|e| protocol(format!("unreadable answer: {e}")))?;
    let kind = reply.kind();
    A::from_reply(reply).ok_or_else(|| protocol(format!("unexpected answer of kind {kind}")))
}

/// An update as JSON.
pub fn encode_item<I: Item>(item: I) -> Option<Value> {
    serde_json::to_value(item.into_item()).ok()
}

/// The typed update in a JSON update from another replica.
pub fn decode_item<I: Item>(value: Value) -> Option<I> {
    I::from_item(serde_json::from_value(value).ok()?)
}

/// A command as JSON: its fields and `"op"`.
pub fn encode_call<C: Serialize>(op: &str, call: &C) -> Result<Value, EngineError> {
    match serde_json::to_value(call) {
        Ok(Value::Object(mut fields)) => {
            fields.insert("op".to_owned(), Value::String(op.to_owned()));
            Ok(Value::Object(fields))
        }
        Ok(_) => Err(protocol(format!("{op} is not an object"))),
        Err(e) => Err(protocol(format!("cannot encode {op}: {e}"))),
    }
}

/// The `"op"` of a JSON command.
pub fn op_of(call: &Value) -> Option<&str> {
    call.get("op").and_then(Value::as_str)
}

/// Another replica spoke a shape this one cannot read (a version mismatch).
fn protocol(message: String) -> EngineError {
    EngineError::Unavailable(format!("another replica's message: {message}"))
}
