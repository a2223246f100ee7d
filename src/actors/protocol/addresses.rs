//! The address of each kind of actor, as every other part of the engine holds it: it names the
//! messages the kind is sent, so that a sender depends on the messages it sends and never on
//! the type of the actor that answers (actix's chat example holds its server as a `Recipient`
//! for the same reason). This is what lets the actor files import this protocol
//! instead of each other.
//!
//! An address is built once, when its actor starts (one small allocation), and cloned cheaply
//! after that: it is an `Arc` of the actor's `Addr`, behind a trait with a method per message.

use std::any::Any;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use actix::prelude::*;

use super::driver::{
    AnswerOffer, CrashDriver, GetDriverStatus, GoOffline, OrderChanged, PublishOffer, Reannounce,
    ReportProgress, ReserveOffer, RestoreWork, RouteChanged, SessionClosed, SetAvailability,
    SubscribeDriver, UpdateLocation, WithdrawOffer,
};
use super::handoff::Retire;
use super::merchant::{BoardUpdate, CrashMerchant, SubscribeBoard};
use super::order::{
    AcceptOffer, CancelOrder, ConfirmDelivery, ConfirmPickup, CrashOrder, DeclineOffer,
    DriverMoved, GetOrder, MarkReady, MerchantAccept, MerchantReject, SubscribeOrder,
};
use super::region::{
    CrashRegion, FindCandidates, IndexSize, ReloadOrder, RemoveDriver, RequestMatch, UpsertDriver,
};
use crate::actors::supervision::ChildCrashed;

/// The answer to a request, as an address's `send` returns it.
pub type Reply<M> =
    Pin<Box<dyn Future<Output = Result<<M as Message>::Result, MailboxError>> + Send>>;

/// An address that reaches an actor which handles `M`.
pub trait Accepts<M>
where
    M: Message + Send,
    M::Result: Send,
{
    /// Queues `msg`; with `reply`, returns the answer to wait for.
    fn deliver(&self, msg: M, reply: bool) -> Option<Reply<M>>;
}

/// What the registry needs of any address.
pub trait Address: Clone + PartialEq {
    /// Whether the actor still runs (its mailbox is open).
    fn connected(&self) -> bool;
}

/// Sends `msg` to `addr`, waiting for the answer or not.
fn deliver<A, M>(addr: &Addr<A>, msg: M, reply: bool) -> Option<Reply<M>>
where
    A: Actor<Context = Context<A>> + Handler<M>,
    M: Message + Send + 'static,
    M::Result: Send,
{
    if reply {
        Some(Box::pin(addr.send(msg)))
    } else {
        addr.do_send(msg);
        None
    }
}

/// Declares the address of one kind of actor: an `Arc` of the actor's one `Addr`, behind a
/// trait with a method per message it is sent. (A `Recipient` per message, as before, cost an
/// allocated sender for each: ~1.8 KiB for a driver, whose actor is sent 17 kinds.)
macro_rules! address {
    (
        $(#[$doc:meta])*
        $name:ident via $inbox:ident {
            $($field:ident: $msg:ty),+ $(,)?
        }
    ) => {
        $(#[$doc])*
        #[derive(Clone)]
        pub struct $name(Arc<dyn $inbox>);

        /// The messages, one method each, so that any actor type can stand behind the address.
        trait $inbox: Send + Sync {
            fn connected(&self) -> bool;
            fn as_any(&self) -> &dyn Any;
            fn same(&self, other: &dyn $inbox) -> bool;
            $(fn $field(&self, msg: $msg, reply: bool) -> Option<Reply<$msg>>;)+
        }

        impl<A> $inbox for Addr<A>
        where
            A: Actor<Context = Context<A>> $(+ Handler<$msg>)+,
        {
            fn connected(&self) -> bool {
                Addr::connected(self)
            }

            fn as_any(&self) -> &dyn Any {
                self
            }

            fn same(&self, other: &dyn $inbox) -> bool {
                other.as_any().downcast_ref::<Addr<A>>() == Some(self)
            }

            $(
                fn $field(&self, msg: $msg, reply: bool) -> Option<Reply<$msg>> {
                    deliver(self, msg, reply)
                }
            )+
        }

        impl<A> From<Addr<A>> for $name
        where
            A: Actor<Context = Context<A>> $(+ Handler<$msg>)+,
        {
            fn from(addr: Addr<A>) -> Self {
                $name(Arc::new(addr))
            }
        }

        impl $name {
            /// Sends `msg` and waits for the answer (an error if the actor stopped first).
            pub fn send<M>(&self, msg: M) -> Reply<M>
            where
                Self: Accepts<M>,
                M: Message + Send + 'static,
                M::Result: Send,
            {
                self.deliver(msg, true)
                    .unwrap_or_else(|| Box::pin(std::future::ready(Err(MailboxError::Closed))))
            }

            /// Queues `msg` without waiting; dropped if the actor has stopped.
            pub fn do_send<M>(&self, msg: M)
            where
                Self: Accepts<M>,
                M: Message + Send,
                M::Result: Send,
            {
                self.deliver(msg, false);
            }
        }

        impl Address for $name {
            fn connected(&self) -> bool {
                self.0.connected()
            }
        }

        impl PartialEq for $name {
            fn eq(&self, other: &Self) -> bool {
                self.0.same(&*other.0)
            }
        }

        $(
            impl Accepts<$msg> for $name {
                fn deliver(&self, msg: $msg, reply: bool) -> Option<Reply<$msg>> {
                    self.0.$field(msg, reply)
                }
            }
        )+
    };
}

address! {
    /// An order's actor: the engine's commands and the driver's answers to its offer.
    OrderAddr via OrderInbox {
        retire: Retire,
        merchant_accept: MerchantAccept,
        merchant_reject: MerchantReject,
        mark_ready: MarkReady,
        cancel: CancelOrder,
        accept_offer: AcceptOffer,
        decline_offer: DeclineOffer,
        confirm_pickup: ConfirmPickup,
        confirm_delivery: ConfirmDelivery,
        driver_moved: DriverMoved,
        subscribe: SubscribeOrder,
        get: GetOrder,
        crash: CrashOrder,
    }
}

address! {
    /// A driver's actor: the app's commands, and the orders' offers and updates.
    DriverAddr via DriverInbox {
        retire: Retire,
        update_location: UpdateLocation,
        set_availability: SetAvailability,
        go_offline: GoOffline,
        session_closed: SessionClosed,
        subscribe: SubscribeDriver,
        get_status: GetDriverStatus,
        reserve_offer: ReserveOffer,
        publish_offer: PublishOffer,
        withdraw_offer: WithdrawOffer,
        answer_offer: AnswerOffer,
        report_progress: ReportProgress,
        order_changed: OrderChanged,
        route_changed: RouteChanged,
        restore_work: RestoreWork,
        reannounce: Reannounce,
        crash: CrashDriver,
    }
}

address! {
    /// A merchant's actor: its orders' changes and its board's subscribers.
    MerchantAddr via MerchantInbox {
        retire: Retire,
        board_update: BoardUpdate,
        subscribe: SubscribeBoard,
        crash: CrashMerchant,
    }
}

address! {
    /// A region's supervisor: its index, its orders' searches, and its children's crashes.
    RegionAddr via RegionInbox {
        retire: Retire,
        upsert_driver: UpsertDriver,
        remove_driver: RemoveDriver,
        find_candidates: FindCandidates,
        request_match: RequestMatch,
        reload_order: ReloadOrder,
        child_crashed: ChildCrashed,
        index_size: IndexSize,
        crash: CrashRegion,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;
    use crate::geo::RegionId;

    /// Stands in for a merchant actor: counts what it is sent.
    #[derive(Default)]
    struct Counter {
        crashes: u32,
    }

    impl Actor for Counter {
        type Context = Context<Self>;
    }

    impl Handler<Retire> for Counter {
        type Result = bool;
        fn handle(&mut self, msg: Retire, ctx: &mut Context<Self>) -> bool {
            if msg.all {
                ctx.stop();
            }
            self.crashes > 0
        }
    }

    impl Handler<CrashMerchant> for Counter {
        type Result = ();
        fn handle(&mut self, _: CrashMerchant, _: &mut Context<Self>) {
            self.crashes += 1;
        }
    }

    impl Handler<BoardUpdate> for Counter {
        type Result = ();
        fn handle(&mut self, _: BoardUpdate, _: &mut Context<Self>) {}
    }

    impl Handler<SubscribeBoard> for Counter {
        type Result = MessageResult<SubscribeBoard>;
        fn handle(&mut self, _: SubscribeBoard, _: &mut Context<Self>) -> Self::Result {
            MessageResult((Vec::new(), tokio::sync::mpsc::channel(1).1))
        }
    }

    fn retire(all: bool) -> Retire {
        Retire {
            region: RegionId::from("r"),
            orders: Arc::new(HashSet::new()),
            all,
        }
    }

    #[actix_web::test]
    async fn an_address_queues_and_asks_in_order_and_compares_by_actor() {
        let first = MerchantAddr::from(Counter::default().start());
        let same = first.clone();
        let other = MerchantAddr::from(Counter::default().start());
        assert!(first == same);
        assert!(first != other);
        first.do_send(CrashMerchant);
        // Asked after the queued message, answered after it was handled.
        assert_eq!(first.send(retire(false)).await.ok(), Some(true));
        assert_eq!(other.send(retire(false)).await.ok(), Some(false));
        assert!(first.connected());
        assert_eq!(first.send(retire(true)).await.ok(), Some(true));
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(!first.connected());
        assert!(first.send(retire(false)).await.is_err());
    }
}
