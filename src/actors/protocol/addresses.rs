//! The address of each kind of actor, as every other part of the engine holds it: one
//! `Recipient` per message the kind is sent, so that a sender depends on the messages it sends
//! and never on the type of the actor that answers (actix's chat example holds its server as a
//! `Recipient` for the same reason). This is what lets the actor files import this protocol
//! instead of each other.
//!
//! An address is built once, when its actor starts (a few small allocations), and cloned
//! cheaply after that: it is an `Arc` of its recipients.

use std::sync::Arc;

use actix::dev::RecipientRequest;
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

/// An address that reaches an actor which handles `M`.
pub trait Accepts<M>
where
    M: Message + Send,
    M::Result: Send,
{
    fn recipient(&self) -> &Recipient<M>;
}

/// What the registry needs of any address.
pub trait Address: Clone + PartialEq {
    /// Whether the actor still runs (its mailbox is open).
    fn connected(&self) -> bool;
}

/// Declares the address of one kind of actor. The first message names the actor when two
/// addresses are compared (both reach the same mailbox or neither does).
macro_rules! address {
    (
        $(#[$doc:meta])*
        $name:ident via $inbox:ident {
            $first:ident: $first_msg:ty
            $(, $field:ident: $msg:ty)* $(,)?
        }
    ) => {
        $(#[$doc])*
        #[derive(Clone)]
        pub struct $name(Arc<$inbox>);

        struct $inbox {
            $first: Recipient<$first_msg>,
            $($field: Recipient<$msg>,)*
        }

        impl<A> From<Addr<A>> for $name
        where
            A: Actor<Context = Context<A>> + Handler<$first_msg> $(+ Handler<$msg>)*,
        {
            fn from(addr: Addr<A>) -> Self {
                $name(Arc::new($inbox {
                    $($field: addr.clone().recipient(),)*
                    $first: addr.recipient(),
                }))
            }
        }

        impl $name {
            /// Sends `msg` and waits for the answer (an error if the actor stopped first).
            pub fn send<M>(&self, msg: M) -> RecipientRequest<M>
            where
                Self: Accepts<M>,
                M: Message + Send,
                M::Result: Send,
            {
                self.recipient().send(msg)
            }

            /// Queues `msg` without waiting; dropped if the actor has stopped.
            pub fn do_send<M>(&self, msg: M)
            where
                Self: Accepts<M>,
                M: Message + Send,
                M::Result: Send,
            {
                self.recipient().do_send(msg)
            }
        }

        impl Address for $name {
            fn connected(&self) -> bool {
                self.0.$first.connected()
            }
        }

        impl PartialEq for $name {
            fn eq(&self, other: &Self) -> bool {
                self.0.$first == other.0.$first
            }
        }

        impl Accepts<$first_msg> for $name {
            fn recipient(&self) -> &Recipient<$first_msg> {
                &self.0.$first
            }
        }

        $(
            impl Accepts<$msg> for $name {
                fn recipient(&self) -> &Recipient<$msg> {
                    &self.0.$field
                }
            }
        )*
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
