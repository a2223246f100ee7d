//! Owns how an actor sends messages to itself: through its own mailbox, never as context items.
//!
//! actix delivers `ctx.notify`/`ctx.notify_later` messages as context items, and within one poll
//! of an actor's context it passes over the items right after the mailbox, before merging in a
//! wait that a mailbox handler has just started (`AtomicResponse`, `ctx.wait`). A self-notified
//! message that is due then runs its handler while the other handler's future is still pending,
//! and both decide from the same state: for an order, both journal on top of the same version
//! and one write is refused as a conflict (found by `benches/dispatch_load.rs`; the test
//! `ready_marked_while_the_accept_is_journaled_does_not_collide_with_the_first_offer` replays
//! it). The mailbox is not read while a wait is pending, so a message queued there keeps the
//! one-command-at-a-time rule the actors rely on.

use std::time::Duration;

use actix::dev::ToEnvelope;
use actix::prelude::*;

/// Messages an actor sends itself through its mailbox.
pub(crate) trait SelfMessages<A: Actor> {
    /// Queues `msg` behind the messages already waiting. `do_send` ignores the mailbox's
    /// capacity, so this never fails or blocks; an actor that is stopping drops it.
    fn enqueue<M>(&mut self, msg: M)
    where
        A: Handler<M>,
        A::Context: ToEnvelope<A, M>,
        M: Message + Send + 'static,
        M::Result: Send;

    /// Queues `msg` after `delay`; cancel with `ctx.cancel_future` before it is due.
    fn enqueue_later<M>(&mut self, msg: M, delay: Duration) -> SpawnHandle
    where
        A: Handler<M>,
        A::Context: ToEnvelope<A, M>,
        M: Message + Send + 'static,
        M::Result: Send;
}

impl<A: Actor<Context = Context<A>>> SelfMessages<A> for Context<A> {
    fn enqueue<M>(&mut self, msg: M)
    where
        A: Handler<M>,
        A::Context: ToEnvelope<A, M>,
        M: Message + Send + 'static,
        M::Result: Send,
    {
        self.address().do_send(msg);
    }

    fn enqueue_later<M>(&mut self, msg: M, delay: Duration) -> SpawnHandle
    where
        A: Handler<M>,
        A::Context: ToEnvelope<A, M>,
        M: Message + Send + 'static,
        M::Result: Send,
    {
        self.run_later(delay, move |_, ctx| ctx.enqueue(msg))
    }
}
