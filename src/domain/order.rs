//! The order lifecycle as a pure state machine: (state, event) → new state or a typed error.
//!
//! Two axes move independently. The *order status* is the business lifecycle:
//!
//! ```text
//! placed ──accept──▶ accepted ──ready──▶ ready ──pick up──▶ picked_up ──deliver──▶ delivered
//!   │ └─reject──▶ rejected
//!   └─customer cancel──▶ cancelled   (an admin may also cancel from accepted or ready)
//! ```
//!
//! The *dispatch status* tracks finding a driver: `unassigned → searching → offered → assigned`,
//! with `offered → searching` when an offer is declined or expires and `assigned → searching`
//! when a driver is released. Dispatch moves only while the order is `accepted` or `ready`;
//! `picked_up` needs an assigned driver.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Where an order is in its business lifecycle.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderStatus {
    Placed,
    Accepted,
    Ready,
    PickedUp,
    Delivered,
    Rejected,
    Cancelled,
}

impl OrderStatus {
    pub const ALL: [OrderStatus; 7] = [
        OrderStatus::Placed,
        OrderStatus::Accepted,
        OrderStatus::Ready,
        OrderStatus::PickedUp,
        OrderStatus::Delivered,
        OrderStatus::Rejected,
        OrderStatus::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            OrderStatus::Placed => "placed",
            OrderStatus::Accepted => "accepted",
            OrderStatus::Ready => "ready",
            OrderStatus::PickedUp => "picked_up",
            OrderStatus::Delivered => "delivered",
            OrderStatus::Rejected => "rejected",
            OrderStatus::Cancelled => "cancelled",
        }
    }

    /// A final order never changes again.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            OrderStatus::Delivered | OrderStatus::Rejected | OrderStatus::Cancelled
        )
    }

    /// Whether a driver may be searched for, offered or assigned in this status.
    pub fn is_dispatchable(self) -> bool {
        matches!(self, OrderStatus::Accepted | OrderStatus::Ready)
    }
}

impl fmt::Display for OrderStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where an order is in finding a driver.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DispatchStatus {
    Unassigned,
    Searching,
    Offered,
    Assigned,
}

impl DispatchStatus {
    pub const ALL: [DispatchStatus; 4] = [
        DispatchStatus::Unassigned,
        DispatchStatus::Searching,
        DispatchStatus::Offered,
        DispatchStatus::Assigned,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DispatchStatus::Unassigned => "unassigned",
            DispatchStatus::Searching => "searching",
            DispatchStatus::Offered => "offered",
            DispatchStatus::Assigned => "assigned",
        }
    }
}

impl fmt::Display for DispatchStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Something that happens to an order. Payloads (prep time, driver, reason) live with the
/// caller; the state machine only needs to know which kind of thing happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderEvent {
    /// The merchant takes the order and starts preparing it.
    MerchantAccepted,
    /// The merchant declines the order.
    MerchantRejected,
    /// The merchant has the order packed and waiting.
    MarkedReady,
    /// The assigned driver collected the order.
    PickedUp,
    /// The driver handed the order over.
    Delivered,
    /// The customer cancels before the merchant accepted.
    CancelledByCustomer,
    /// An admin cancels before pickup.
    CancelledByAdmin,
    /// Dispatch begins looking for a driver.
    SearchStarted,
    /// An offer went out to one driver.
    Offered,
    /// The open offer was declined or expired; the search goes on.
    OfferLapsed,
    /// The offered driver accepted.
    DriverAssigned,
    /// The assigned driver was released (went away, or an admin reassigns); search again.
    DriverReleased,
}

impl OrderEvent {
    pub const ALL: [OrderEvent; 12] = [
        OrderEvent::MerchantAccepted,
        OrderEvent::MerchantRejected,
        OrderEvent::MarkedReady,
        OrderEvent::PickedUp,
        OrderEvent::Delivered,
        OrderEvent::CancelledByCustomer,
        OrderEvent::CancelledByAdmin,
        OrderEvent::SearchStarted,
        OrderEvent::Offered,
        OrderEvent::OfferLapsed,
        OrderEvent::DriverAssigned,
        OrderEvent::DriverReleased,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            OrderEvent::MerchantAccepted => "merchant_accepted",
            OrderEvent::MerchantRejected => "merchant_rejected",
            OrderEvent::MarkedReady => "marked_ready",
            OrderEvent::PickedUp => "picked_up",
            OrderEvent::Delivered => "delivered",
            OrderEvent::CancelledByCustomer => "cancelled_by_customer",
            OrderEvent::CancelledByAdmin => "cancelled_by_admin",
            OrderEvent::SearchStarted => "search_started",
            OrderEvent::Offered => "offered",
            OrderEvent::OfferLapsed => "offer_lapsed",
            OrderEvent::DriverAssigned => "driver_assigned",
            OrderEvent::DriverReleased => "driver_released",
        }
    }
}

impl fmt::Display for OrderEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The two status axes of one order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct OrderState {
    pub status: OrderStatus,
    pub dispatch: DispatchStatus,
}

/// Why an event cannot happen to an order in its current state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TransitionError {
    #[error("the order is already {status}; it cannot be {event}")]
    AlreadyFinal {
        status: OrderStatus,
        event: OrderEvent,
    },
    #[error("{event} is not possible while the order is {} (dispatch {})", from.status, from.dispatch)]
    InvalidTransition { from: OrderState, event: OrderEvent },
    #[error("the order has no assigned driver to pick it up")]
    DriverNotAssigned,
}

impl OrderState {
    /// A freshly checked-out order.
    pub const PLACED: OrderState = OrderState {
        status: OrderStatus::Placed,
        dispatch: DispatchStatus::Unassigned,
    };

    pub fn new(status: OrderStatus, dispatch: DispatchStatus) -> Self {
        OrderState { status, dispatch }
    }

    /// The state after `event`, or why `event` cannot happen now.
    pub fn apply(self, event: OrderEvent) -> Result<OrderState, TransitionError> {
        use DispatchStatus as D;
        use OrderEvent as E;
        use OrderStatus as S;

        if self.status.is_final() {
            return Err(TransitionError::AlreadyFinal {
                status: self.status,
                event,
            });
        }
        let status = |status| Ok(OrderState { status, ..self });
        let dispatch = |dispatch| Ok(OrderState { dispatch, ..self });
        let dispatchable = self.status.is_dispatchable();
        match (self.status, self.dispatch, event) {
            (S::Placed, _, E::MerchantAccepted) => status(S::Accepted),
            (S::Placed, _, E::MerchantRejected) => status(S::Rejected),
            (S::Accepted, _, E::MarkedReady) => status(S::Ready),
            (S::Ready, D::Assigned, E::PickedUp) => status(S::PickedUp),
            (S::Ready, _, E::PickedUp) => Err(TransitionError::DriverNotAssigned),
            (S::PickedUp, _, E::Delivered) => status(S::Delivered),
            (S::Placed, _, E::CancelledByCustomer) => status(S::Cancelled),
            (S::Placed | S::Accepted | S::Ready, _, E::CancelledByAdmin) => status(S::Cancelled),
            (_, D::Unassigned, E::SearchStarted) if dispatchable => dispatch(D::Searching),
            (_, D::Searching, E::Offered) if dispatchable => dispatch(D::Offered),
            (_, D::Offered, E::OfferLapsed) if dispatchable => dispatch(D::Searching),
            (_, D::Offered, E::DriverAssigned) if dispatchable => dispatch(D::Assigned),
            (_, D::Assigned, E::DriverReleased) if dispatchable => dispatch(D::Searching),
            _ => Err(TransitionError::InvalidTransition { from: self, event }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use DispatchStatus as D;
    use OrderEvent as E;
    use OrderStatus as S;

    /// Every legal move, written out by hand from the lifecycle in the module docs. A dispatch
    /// set of `ANY` means the event does not look at dispatch (and leaves it as it was).
    const ANY: &[DispatchStatus] = &DispatchStatus::ALL;
    /// (from status, from dispatch statuses, event, to status, to dispatch if it changes)
    type Move = (
        OrderStatus,
        &'static [DispatchStatus],
        OrderEvent,
        OrderStatus,
        Option<DispatchStatus>,
    );
    const LEGAL: &[Move] = &[
        (S::Placed, ANY, E::MerchantAccepted, S::Accepted, None),
        (S::Placed, ANY, E::MerchantRejected, S::Rejected, None),
        (S::Placed, ANY, E::CancelledByCustomer, S::Cancelled, None),
        (S::Placed, ANY, E::CancelledByAdmin, S::Cancelled, None),
        (S::Accepted, ANY, E::MarkedReady, S::Ready, None),
        (S::Accepted, ANY, E::CancelledByAdmin, S::Cancelled, None),
        (S::Ready, ANY, E::CancelledByAdmin, S::Cancelled, None),
        (S::Ready, &[D::Assigned], E::PickedUp, S::PickedUp, None),
        (S::PickedUp, ANY, E::Delivered, S::Delivered, None),
        (
            S::Accepted,
            &[D::Unassigned],
            E::SearchStarted,
            S::Accepted,
            Some(D::Searching),
        ),
        (
            S::Ready,
            &[D::Unassigned],
            E::SearchStarted,
            S::Ready,
            Some(D::Searching),
        ),
        (
            S::Accepted,
            &[D::Searching],
            E::Offered,
            S::Accepted,
            Some(D::Offered),
        ),
        (
            S::Ready,
            &[D::Searching],
            E::Offered,
            S::Ready,
            Some(D::Offered),
        ),
        (
            S::Accepted,
            &[D::Offered],
            E::OfferLapsed,
            S::Accepted,
            Some(D::Searching),
        ),
        (
            S::Ready,
            &[D::Offered],
            E::OfferLapsed,
            S::Ready,
            Some(D::Searching),
        ),
        (
            S::Accepted,
            &[D::Offered],
            E::DriverAssigned,
            S::Accepted,
            Some(D::Assigned),
        ),
        (
            S::Ready,
            &[D::Offered],
            E::DriverAssigned,
            S::Ready,
            Some(D::Assigned),
        ),
        (
            S::Accepted,
            &[D::Assigned],
            E::DriverReleased,
            S::Accepted,
            Some(D::Searching),
        ),
        (
            S::Ready,
            &[D::Assigned],
            E::DriverReleased,
            S::Ready,
            Some(D::Searching),
        ),
    ];

    fn expected(from: OrderState, event: OrderEvent) -> Result<OrderState, TransitionError> {
        for &(status, dispatches, ev, to_status, to_dispatch) in LEGAL {
            if status == from.status && ev == event && dispatches.contains(&from.dispatch) {
                return Ok(OrderState::new(
                    to_status,
                    to_dispatch.unwrap_or(from.dispatch),
                ));
            }
        }
        if from.status.is_final() {
            Err(TransitionError::AlreadyFinal {
                status: from.status,
                event,
            })
        } else if from.status == S::Ready && event == E::PickedUp {
            Err(TransitionError::DriverNotAssigned)
        } else {
            Err(TransitionError::InvalidTransition { from, event })
        }
    }

    #[test]
    fn every_state_and_event_pair_has_the_documented_outcome() {
        let mut pairs = 0;
        for status in OrderStatus::ALL {
            for dispatch in DispatchStatus::ALL {
                let from = OrderState::new(status, dispatch);
                for event in OrderEvent::ALL {
                    pairs += 1;
                    assert_eq!(
                        from.apply(event),
                        expected(from, event),
                        "case: {status} / {dispatch} + {event}"
                    );
                }
            }
        }
        assert_eq!(pairs, 7 * 4 * 12);
    }

    #[test]
    fn a_full_delivery_walks_both_axes_to_delivered() {
        let path = [
            E::MerchantAccepted,
            E::SearchStarted,
            E::Offered,
            E::OfferLapsed,
            E::Offered,
            E::DriverAssigned,
            E::MarkedReady,
            E::PickedUp,
            E::Delivered,
        ];
        let end = path
            .into_iter()
            .try_fold(OrderState::PLACED, OrderState::apply)
            .unwrap();
        assert_eq!(end, OrderState::new(S::Delivered, D::Assigned));
    }

    #[test]
    fn pickup_without_a_driver_is_refused_with_its_own_error() {
        let ready = OrderState::new(S::Ready, D::Searching);
        assert_eq!(
            ready.apply(E::PickedUp),
            Err(TransitionError::DriverNotAssigned)
        );
    }

    #[test]
    fn customer_cannot_cancel_after_acceptance_but_admin_can_until_pickup() {
        let accepted = OrderState::new(S::Accepted, D::Assigned);
        assert!(matches!(
            accepted.apply(E::CancelledByCustomer),
            Err(TransitionError::InvalidTransition { .. })
        ));
        assert_eq!(
            accepted.apply(E::CancelledByAdmin).unwrap().status,
            S::Cancelled
        );
        let picked = OrderState::new(S::PickedUp, D::Assigned);
        assert!(picked.apply(E::CancelledByAdmin).is_err());
    }

    #[test]
    fn statuses_serialize_as_snake_case() {
        assert_eq!(
            serde_json::to_string(&S::PickedUp).unwrap(),
            "\"picked_up\""
        );
        assert_eq!(
            serde_json::to_string(&D::Unassigned).unwrap(),
            "\"unassigned\""
        );
        for status in OrderStatus::ALL {
            assert_eq!(serde_json::to_value(status).unwrap(), status.as_str());
        }
        for event in OrderEvent::ALL {
            assert_eq!(serde_json::to_value(event).unwrap(), event.as_str());
        }
    }
}
