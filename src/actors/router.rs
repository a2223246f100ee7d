//! What the engine needs from the replicas it shares regions with, as a trait: the cluster
//! layer implements it (over Redis), the engine holds it as `dyn Routing`, so the engine knows
//! nothing of how commands travel and imports nothing of the cluster.

use futures_util::future::BoxFuture;
use serde_json::Value;
use uuid::Uuid;

use super::error::EngineError;
use crate::domain::{MerchantId, OrderId, UserId};
use crate::geo::RegionId;

/// What a command is about, which decides the replica that runs it.
#[derive(Clone, Debug, PartialEq)]
pub enum RouteKey {
    Region(RegionId),
    Order(OrderId),
    Merchant(MerchantId),
    Driver(UserId),
}

/// Names the replica a command goes to now (asked again before every attempt); `None` while
/// nobody holds the region.
pub type Resolve<'a> =
    Box<dyn FnMut() -> BoxFuture<'a, Result<Option<String>, EngineError>> + Send + 'a>;

/// Where the updates of a subscription served by another replica are delivered.
pub trait FeedSink: Send + 'static {
    /// Hands one update (a `FeedItem` as JSON) to the session; `false` when it cannot take it
    /// (gone, a whole feed behind, or an update of another kind).
    fn deliver(&self, item: Value) -> bool;
    /// Whether the session reading it has gone.
    fn is_closed(&self) -> bool;
}

/// The engine's way to the other replicas.
pub trait Routing: Send + Sync + 'static {
    /// This replica's node id.
    fn node(&self) -> &str;
    /// The replica holding `region` now, if any.
    fn owner(&self, region: &str) -> Option<String>;
    /// Runs `call` (a command as JSON) on the replica `resolve` names, resending it until it
    /// is answered or the deadline passes; the answer as JSON.
    fn call<'a>(
        &'a self,
        call: Value,
        resolve: Resolve<'a>,
    ) -> BoxFuture<'a, Result<Value, EngineError>>;
    /// Sends `call` to `node` best-effort, without an answer.
    fn cast(&self, node: &str, call: Value);
    /// Subscribes with `call` (carrying subscription id `sub`) where `resolve` says; updates go
    /// to `sink` (`region` is what the feed depends on). Returns the answer and the replica
    /// that serves it.
    fn subscribe<'a>(
        &'a self,
        call: Value,
        sub: Uuid,
        region: Option<String>,
        sink: Box<dyn FeedSink>,
        resolve: Resolve<'a>,
    ) -> BoxFuture<'a, Result<(Value, String), EngineError>>;
    /// Whether subscription `sub` is still being served.
    fn has_feed(&self, sub: Uuid) -> bool;
}
