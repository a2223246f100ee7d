//! What the router needs of the engine to answer other replicas, as a trait: run a command
//! that arrived as JSON, open a subscription, take a cast, and spread work over the engine's
//! event loops. The engine implements it here; the router's tests use a fake.

use futures_util::future::BoxFuture;
use serde_json::Value;

use crate::actors::command::Run;
use crate::actors::{Engine, EngineError, Served, commands, wire};

/// How a command that arrived is handled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A command; `changes_state` says whether a repeat is answered from the answer table.
    Command { changes_state: bool },
    /// A subscription: its updates are forwarded to the caller.
    Subscription,
}

pub trait Executor: Send + Sync + 'static {
    /// How `call` is handled, or `None` for an op this version does not know.
    fn kind(&self, call: &Value) -> Option<Kind>;
    /// Runs a command here; its answer as JSON.
    fn run(&self, call: Value) -> BoxFuture<'static, Result<Value, EngineError>>;
    /// Opens a subscription here.
    fn open(&self, call: Value) -> BoxFuture<'static, Result<Served, EngineError>>;
    /// Runs a best-effort command here; `false` when it was not taken.
    fn cast(&self, call: Value) -> bool;
    /// Runs `work` on one of the engine's event loops, chosen by `key`.
    fn spawn_spread(&self, key: u64, work: BoxFuture<'static, ()>);
}

fn unknown(call: &Value) -> EngineError {
    EngineError::Unavailable(format!(
        "another replica sent an unknown command {:?}",
        wire::op_of(call).unwrap_or("(none)")
    ))
}

impl Executor for Engine {
    fn kind(&self, call: &Value) -> Option<Kind> {
        let op = commands::find(wire::op_of(call)?)?;
        Some(match op.run {
            Run::Command { .. } => Kind::Command {
                changes_state: op.changes_state,
            },
            Run::Subscription { .. } => Kind::Subscription,
        })
    }

    fn run(&self, call: Value) -> BoxFuture<'static, Result<Value, EngineError>> {
        match wire::op_of(&call)
            .and_then(commands::find)
            .map(|op| &op.run)
        {
            Some(Run::Command { run, .. }) => run(call, self.clone()),
            _ => {
                let error = unknown(&call);
                Box::pin(async move { Err(error) })
            }
        }
    }

    fn open(&self, call: Value) -> BoxFuture<'static, Result<Served, EngineError>> {
        match wire::op_of(&call)
            .and_then(commands::find)
            .map(|op| &op.run)
        {
            Some(Run::Subscription { open }) => open(call, self.clone()),
            _ => {
                let error = unknown(&call);
                Box::pin(async move { Err(error) })
            }
        }
    }

    fn cast(&self, call: Value) -> bool {
        match wire::op_of(&call)
            .and_then(commands::find)
            .map(|op| &op.run)
        {
            Some(Run::Command { cast, .. }) => cast(call, self),
            _ => false,
        }
    }

    fn spawn_spread(&self, key: u64, work: BoxFuture<'static, ()>) {
        Engine::spawn_spread(self, key, work);
    }
}
