//! A command is the engine's unit of work: one struct per operation, defined once, with its
//! typed output, whether repeating it changes state, where it routes and how it runs here.
//! [`Engine::execute`] runs any command where its entity lives (here, or on the replica that
//! owns the region) and hands back its output type: a reply of the wrong shape does not compile.
//! A [`Subscription`] is the same for feeds. Commands travel between replicas as their own JSON
//! plus `"op"`; the table in `commands/` finds a command by its op when one arrives.

use std::future::Future;

use futures_util::StreamExt;
use futures_util::future::BoxFuture;

use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::mpsc;
use uuid::Uuid;

use super::engine::Engine;
use super::error::EngineError;
use super::feed::FEED_CAPACITY;
use super::router::{FeedSink, RouteKey};
use super::target::Target;
use super::wire::{self, Answer, Item};

/// One operation of the engine.
pub trait Command: Serialize + DeserializeOwned + Clone + Send + Sync + 'static {
    /// Its name on the wire (`"op"`).
    const OP: &'static str;
    /// Whether running it twice could change state twice: a repeat that reaches its owner is
    /// then answered from the table of recent answers, not run again.
    const CHANGES_STATE: bool;
    /// What it answers.
    type Output: Answer;
    /// The entity whose replica runs it (checking what can be checked before it travels).
    fn route(&self, engine: &Engine) -> Result<RouteKey, EngineError>;
    /// Runs it on this replica.
    fn run(self, engine: &Engine)
    -> impl Future<Output = Result<Self::Output, EngineError>> + Send;
    /// Runs it here best-effort, without an answer, when another replica cast it. Only
    /// commands that are cast override this; `false` means it was not taken.
    fn run_cast(self, _engine: &Engine) -> bool {
        false
    }
}

/// A feed of one entity's changes: its state now, then its updates.
pub trait Subscription: Serialize + DeserializeOwned + Clone + Send + Sync + 'static {
    const OP: &'static str;
    /// The state at subscription.
    type Answer: Answer;
    /// One update.
    type Item: Item;
    /// The subscription's id (chosen by the subscriber; updates are addressed by it).
    fn sub(&self) -> Uuid;
    fn route(&self, engine: &Engine) -> Result<RouteKey, EngineError>;
    /// The region a feed served elsewhere depends on (it ends when its owner loses it).
    fn region(&self, _engine: &Engine) -> Option<String> {
        None
    }
    /// Opens the feed on this replica.
    fn open(
        self,
        engine: &Engine,
    ) -> impl Future<Output = Result<(Self::Answer, mpsc::Receiver<Self::Item>), EngineError>> + Send;
    /// Notes that the feed is served by replica `node`.
    fn routed(&self, _engine: &Engine, _node: String) {}
    /// What the serving replica runs (as a cast) when the subscriber goes away.
    fn on_unsubscribe(&self) -> Option<serde_json::Value> {
        None
    }
}

/// Delivers a feed served elsewhere into the session's channel.
struct TypedSink<T>(mpsc::Sender<T>);

impl<T: Item> FeedSink for TypedSink<T> {
    fn deliver(&self, item: serde_json::Value) -> bool {
        wire::decode_item::<T>(item).is_some_and(|item| self.0.try_send(item).is_ok())
    }
    fn is_closed(&self) -> bool {
        self.0.is_closed()
    }
}

impl Engine {
    /// Runs `command` where its entity lives and returns its output.
    pub async fn execute<C: Command>(&self, command: C) -> Result<C::Output, EngineError> {
        self.ensure_ready()?;
        let key = command.route(self)?;
        let Some(router) = self.router() else {
            return command.run(self).await;
        };
        let call = match self.target(&key).await? {
            Target::Here => match command.clone().run(self).await {
                // Ours by the lease table but not taken on yet, or just handed off: resent
                // until the region settles, as a command from another replica would be.
                Err(EngineError::NotOwner(_)) => command,
                outcome => return outcome,
            },
            Target::Replica(_) | Target::Unowned => command,
        };
        let call = wire::encode_call(C::OP, &call)?;
        let resolve = Box::new(move || {
            let key = key.clone();
            Box::pin(async move { self.resolve(key).await }) as _
        });
        wire::decode_answer(router.call(call, resolve).await?)
    }

    /// Opens `subscription` where its entity lives: the state now and a feed of changes.
    pub async fn subscribe<S: Subscription>(
        &self,
        subscription: S,
    ) -> Result<(S::Answer, mpsc::Receiver<S::Item>), EngineError> {
        self.ensure_ready()?;
        let key = subscription.route(self)?;
        let target = self.target(&key).await?;
        let Some(router) = self.router() else {
            return subscription.open(self).await;
        };
        if let Target::Here = target {
            // Not ours after all (the region is being handed over): through the router.
            match subscription.clone().open(self).await {
                Err(EngineError::NotOwner(_)) => {}
                outcome => return outcome,
            }
        }
        let (tx, rx) = mpsc::channel(FEED_CAPACITY);
        let call = wire::encode_call(S::OP, &subscription)?;
        let resolve = Box::new(move || {
            let key = key.clone();
            Box::pin(async move { self.resolve(key).await }) as _
        });
        let (answer, node) = router
            .subscribe(
                call,
                subscription.sub(),
                subscription.region(self),
                Box::new(TypedSink(tx)),
                resolve,
            )
            .await?;
        subscription.routed(self, node);
        Ok((wire::decode_answer(answer)?, rx))
    }
}

/// A subscription opened here for another replica: the answer, the updates (each a `FeedItem`
/// as JSON), and the cast to run when its subscriber goes away.
pub struct Served {
    pub answer: serde_json::Value,
    pub items: futures_util::stream::BoxStream<'static, serde_json::Value>,
    pub on_unsubscribe: Option<serde_json::Value>,
}

/// Runs a command that arrived as JSON.
pub type RunJson =
    fn(serde_json::Value, Engine) -> BoxFuture<'static, Result<serde_json::Value, EngineError>>;
/// Runs a cast that arrived as JSON; `false` when it was not taken here.
pub type CastJson = fn(serde_json::Value, &Engine) -> bool;
/// Opens a subscription that arrived as JSON.
pub type OpenJson =
    fn(serde_json::Value, Engine) -> BoxFuture<'static, Result<Served, EngineError>>;

/// How an op that arrives from another replica is run.
pub enum Run {
    Command { run: RunJson, cast: CastJson },
    Subscription { open: OpenJson },
}

/// One row of the op table: a command's or subscription's name and how to run it.
pub struct Op {
    pub name: &'static str,
    /// Whether a repeat is answered from the table of recent answers. (A repeated
    /// subscription replaces the first: its updates must flow from wherever it was answered
    /// last.)
    pub changes_state: bool,
    pub run: Run,
}

/// The op-table row of command `C`.
pub const fn command<C: Command>() -> Op {
    Op {
        name: C::OP,
        changes_state: C::CHANGES_STATE,
        run: Run::Command {
            run: run_json::<C>,
            cast: cast_json::<C>,
        },
    }
}

/// The op-table row of subscription `S`.
pub const fn subscription<S: Subscription>() -> Op {
    Op {
        name: S::OP,
        changes_state: false,
        run: Run::Subscription {
            open: open_json::<S>,
        },
    }
}

fn read<T: DeserializeOwned>(call: serde_json::Value) -> Result<T, EngineError> {
    serde_json::from_value(call).map_err(|e| {
        EngineError::Unavailable(format!("another replica's command is unreadable: {e}"))
    })
}

fn run_json<C: Command>(
    call: serde_json::Value,
    engine: Engine,
) -> BoxFuture<'static, Result<serde_json::Value, EngineError>> {
    Box::pin(async move {
        let command: C = read(call)?;
        wire::encode_answer(command.run(&engine).await?)
    })
}

fn cast_json<C: Command>(call: serde_json::Value, engine: &Engine) -> bool {
    read::<C>(call).is_ok_and(|command| command.run_cast(engine))
}

fn open_json<S: Subscription>(
    call: serde_json::Value,
    engine: Engine,
) -> BoxFuture<'static, Result<Served, EngineError>> {
    Box::pin(async move {
        let subscription: S = read(call)?;
        let on_unsubscribe = subscription.on_unsubscribe();
        let (answer, feed) = subscription.open(&engine).await?;
        let items = futures_util::stream::unfold(feed, |mut feed| async move {
            let item = feed.recv().await?;
            Some((wire::encode_item(item), feed))
        })
        .filter_map(std::future::ready)
        .boxed();
        Ok(Served {
            answer: wire::encode_answer(answer)?,
            items,
            on_unsubscribe,
        })
    })
}
