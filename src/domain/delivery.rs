//! The order aggregate: everything the engine knows about one order, rebuilt by folding its
//! journal. [`Order::decide`] checks a change against the state machine and yields the journal
//! entry to write; [`Order::apply`] folds a written entry in. Live handling and crash recovery
//! use the same fold, so a recovered order is exactly the order that was running.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::ids::{MerchantId, OrderId, UserId};
use super::money::Cents;
use super::order::{DispatchStatus, OrderEvent, OrderState, OrderStatus, TransitionError};

/// A point on the map, in degrees (WGS 84). Plain data: validation belongs to the caller.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Position {
    pub lat: f64,
    pub lon: f64,
}

/// One line of an order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct OrderItem {
    /// The menu item ordered, when the order came through checkout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub menu_item_id: Option<Uuid>,
    pub name: String,
    pub quantity: u32,
    #[schema(value_type = i64)]
    pub unit_price_cents: Cents,
}

/// Why an offer ended without an assignment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LapseReason {
    Declined,
    Expired,
    /// The driver could not be reached (went offline) or took other work.
    Unavailable,
}

/// Why an assigned driver was released.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReleaseReason {
    /// The driver stayed offline past the grace period.
    DriverOffline,
    /// An admin reassigned the order.
    Reassigned,
}

/// One change to an order, with what the state machine alone does not carry. This is what the
/// journal stores (as JSON, tagged by `event`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Change {
    /// The order was checked out. Always the first entry (sequence 1).
    Placed,
    MerchantAccepted {
        prep_minutes: u32,
    },
    MerchantRejected {
        reason: String,
    },
    MarkedReady,
    PickedUp,
    Delivered,
    CancelledByCustomer,
    CancelledByAdmin {
        reason: String,
    },
    SearchStarted,
    Offered {
        offer_id: Uuid,
        driver_id: UserId,
        expires_at: DateTime<Utc>,
    },
    OfferLapsed {
        offer_id: Uuid,
        driver_id: UserId,
        reason: LapseReason,
    },
    DriverAssigned {
        offer_id: Uuid,
        driver_id: UserId,
    },
    DriverReleased {
        driver_id: UserId,
        reason: ReleaseReason,
    },
}

impl Change {
    /// The state-machine event, or `None` for [`Change::Placed`].
    pub fn event(&self) -> Option<OrderEvent> {
        Some(match self {
            Change::Placed => return None,
            Change::MerchantAccepted { .. } => OrderEvent::MerchantAccepted,
            Change::MerchantRejected { .. } => OrderEvent::MerchantRejected,
            Change::MarkedReady => OrderEvent::MarkedReady,
            Change::PickedUp => OrderEvent::PickedUp,
            Change::Delivered => OrderEvent::Delivered,
            Change::CancelledByCustomer => OrderEvent::CancelledByCustomer,
            Change::CancelledByAdmin { .. } => OrderEvent::CancelledByAdmin,
            Change::SearchStarted => OrderEvent::SearchStarted,
            Change::Offered { .. } => OrderEvent::Offered,
            Change::OfferLapsed { .. } => OrderEvent::OfferLapsed,
            Change::DriverAssigned { .. } => OrderEvent::DriverAssigned,
            Change::DriverReleased { .. } => OrderEvent::DriverReleased,
        })
    }

    /// The journal's `event` column.
    pub fn name(&self) -> &'static str {
        self.event().map_or("placed", OrderEvent::as_str)
    }
}

/// A journaled change: the order's `seq`-th.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JournalEntry {
    pub seq: i64,
    pub change: Change,
    pub at: DateTime<Utc>,
}

/// An offer waiting for one driver's answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpenOffer {
    pub offer_id: Uuid,
    pub driver_id: UserId,
    pub expires_at: DateTime<Utc>,
}

/// One step of the visible timeline: a status or a dispatch status, and when.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct HistoryEntry {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub status: Option<OrderStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub dispatch_status: Option<DispatchStatus>,
    pub at: DateTime<Utc>,
}

/// What checkout hands to the engine.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NewOrder {
    pub id: OrderId,
    pub merchant_id: MerchantId,
    pub customer_id: UserId,
    pub items: Vec<OrderItem>,
    /// Part of the total: the delivery fee.
    pub delivery_fee_cents: Cents,
    pub total_cents: Cents,
    pub pickup: Position,
    pub dropoff: Position,
    pub dropoff_address: String,
    /// The merchant's address, where the driver picks up.
    pub pickup_address: String,
}

/// Everything known about one order.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Order {
    pub id: OrderId,
    pub region_id: String,
    pub merchant_id: MerchantId,
    pub customer_id: UserId,
    pub items: Vec<OrderItem>,
    #[serde(default)]
    pub delivery_fee_cents: Cents,
    pub total_cents: Cents,
    pub pickup: Position,
    pub dropoff: Position,
    pub dropoff_address: String,
    /// The merchant's address (orders journaled before it was kept have none).
    #[serde(default)]
    pub pickup_address: String,
    pub state: OrderState,
    /// The assigned driver.
    pub driver_id: Option<UserId>,
    /// The offer waiting for an answer, while dispatch is `offered`.
    pub offer: Option<OpenOffer>,
    pub prep_minutes: Option<u32>,
    /// Drivers who declined, let an offer expire or were released: not offered this order again.
    pub passed_over: Vec<UserId>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Sequence number of the last journal entry folded in.
    pub version: i64,
    pub history: Vec<HistoryEntry>,
}

impl Order {
    /// The placement that made this order (its fields as placed): placing it again is how an
    /// order that exists is handed to dispatch again.
    pub fn placement(&self) -> NewOrder {
        NewOrder {
            id: self.id,
            merchant_id: self.merchant_id,
            customer_id: self.customer_id,
            items: self.items.clone(),
            delivery_fee_cents: self.delivery_fee_cents,
            total_cents: self.total_cents,
            pickup: self.pickup,
            dropoff: self.dropoff,
            dropoff_address: self.dropoff_address.clone(),
            pickup_address: self.pickup_address.clone(),
        }
    }

    /// A new order and its first journal entry.
    pub fn place(new: NewOrder, region_id: String, at: DateTime<Utc>) -> (Order, JournalEntry) {
        let order = Order {
            id: new.id,
            region_id,
            merchant_id: new.merchant_id,
            customer_id: new.customer_id,
            items: new.items,
            delivery_fee_cents: new.delivery_fee_cents,
            total_cents: new.total_cents,
            pickup: new.pickup,
            dropoff: new.dropoff,
            dropoff_address: new.dropoff_address,
            pickup_address: new.pickup_address,
            state: OrderState::PLACED,
            driver_id: None,
            offer: None,
            prep_minutes: None,
            passed_over: Vec::new(),
            created_at: at,
            updated_at: at,
            version: 1,
            history: vec![HistoryEntry {
                status: Some(OrderStatus::Placed),
                dispatch_status: None,
                at,
            }],
        };
        let entry = JournalEntry {
            seq: 1,
            change: Change::Placed,
            at,
        };
        (order, entry)
    }

    pub fn status(&self) -> OrderStatus {
        self.state.status
    }

    pub fn dispatch_status(&self) -> DispatchStatus {
        self.state.dispatch
    }

    pub fn is_open(&self) -> bool {
        !self.state.status.is_final()
    }

    /// Checks `change` against the current state and returns the entry to journal, without
    /// changing anything. Payload consistency is checked too: an answer about an offer must name
    /// the open offer and its driver.
    pub fn decide(
        &self,
        change: Change,
        at: DateTime<Utc>,
    ) -> Result<JournalEntry, TransitionError> {
        let Some(event) = change.event() else {
            return Err(TransitionError::InvalidTransition {
                from: self.state,
                event: OrderEvent::MerchantAccepted,
            });
        };
        self.state.apply(event)?;
        let offer_matches = |offer_id: &Uuid, driver_id: &UserId| {
            self.offer
                .is_some_and(|open| open.offer_id == *offer_id && open.driver_id == *driver_id)
        };
        let consistent = match &change {
            Change::OfferLapsed {
                offer_id,
                driver_id,
                ..
            }
            | Change::DriverAssigned {
                offer_id,
                driver_id,
            } => offer_matches(offer_id, driver_id),
            Change::DriverReleased { driver_id, .. } => self.driver_id == Some(*driver_id),
            _ => true,
        };
        if !consistent {
            return Err(TransitionError::InvalidTransition {
                from: self.state,
                event,
            });
        }
        Ok(JournalEntry {
            seq: self.version + 1,
            change,
            at,
        })
    }

    /// Folds a journaled entry into the order. Entries must come in sequence.
    pub fn apply(&mut self, entry: &JournalEntry) -> Result<(), TransitionError> {
        let before = self.state;
        if let Some(event) = entry.change.event() {
            self.state = self.state.apply(event)?;
        }
        match &entry.change {
            Change::MerchantAccepted { prep_minutes } => self.prep_minutes = Some(*prep_minutes),
            Change::Offered {
                offer_id,
                driver_id,
                expires_at,
            } => {
                self.offer = Some(OpenOffer {
                    offer_id: *offer_id,
                    driver_id: *driver_id,
                    expires_at: *expires_at,
                });
            }
            Change::OfferLapsed { driver_id, .. } => {
                self.offer = None;
                self.passed_over.push(*driver_id);
            }
            Change::DriverAssigned { driver_id, .. } => {
                self.offer = None;
                self.driver_id = Some(*driver_id);
            }
            Change::DriverReleased { driver_id, .. } => {
                self.driver_id = None;
                self.passed_over.push(*driver_id);
            }
            Change::MerchantRejected { .. }
            | Change::CancelledByCustomer
            | Change::CancelledByAdmin { .. } => self.offer = None,
            Change::Placed
            | Change::MarkedReady
            | Change::PickedUp
            | Change::Delivered
            | Change::SearchStarted => {}
        }
        if self.state.status != before.status {
            self.history.push(HistoryEntry {
                status: Some(self.state.status),
                dispatch_status: None,
                at: entry.at,
            });
        }
        if self.state.dispatch != before.dispatch {
            self.history.push(HistoryEntry {
                status: None,
                dispatch_status: Some(self.state.dispatch),
                at: entry.at,
            });
        }
        self.version = entry.seq;
        self.updated_at = entry.at;
        Ok(())
    }

    /// The order as every client sees it.
    pub fn view(&self) -> OrderView {
        OrderView {
            id: self.id,
            status: self.state.status,
            dispatch_status: self.state.dispatch,
            merchant_id: self.merchant_id,
            customer_id: self.customer_id,
            driver_id: self.driver_id,
            items: self.items.clone(),
            delivery_fee_cents: self.delivery_fee_cents,
            total_cents: self.total_cents,
            pickup: self.pickup,
            dropoff: self.dropoff,
            dropoff_address: self.dropoff_address.clone(),
            pickup_address: self.pickup_address.clone(),
            prep_minutes: self.prep_minutes,
            created_at: self.created_at,
            updated_at: self.updated_at,
            events: self.history.clone(),
        }
    }
}

/// The order object, identical in REST and on every WebSocket.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct OrderView {
    #[schema(value_type = String, format = Uuid)]
    pub id: OrderId,
    #[schema(value_type = String, example = "placed")]
    pub status: OrderStatus,
    #[schema(value_type = String, example = "unassigned")]
    pub dispatch_status: DispatchStatus,
    #[schema(value_type = String, format = Uuid)]
    pub merchant_id: MerchantId,
    #[schema(value_type = String, format = Uuid)]
    pub customer_id: UserId,
    #[schema(value_type = Option<String>, format = Uuid)]
    pub driver_id: Option<UserId>,
    pub items: Vec<OrderItem>,
    /// Part of `total_cents`.
    #[schema(value_type = i64)]
    pub delivery_fee_cents: Cents,
    /// Items plus the delivery fee.
    #[schema(value_type = i64)]
    pub total_cents: Cents,
    pub pickup: Position,
    pub dropoff: Position,
    pub dropoff_address: String,
    /// The merchant's address, where the driver picks up.
    #[serde(default)]
    pub pickup_address: String,
    pub prep_minutes: Option<u32>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// The timeline: each status and dispatch status the order went through, in order.
    pub events: Vec<HistoryEntry>,
}

#[cfg(test)]
mod tests {
    use chrono::Duration;

    use super::*;

    fn placed() -> Order {
        let new = NewOrder {
            id: OrderId::new(),
            merchant_id: MerchantId::new(),
            customer_id: UserId::new(),
            items: vec![OrderItem {
                menu_item_id: None,
                name: "Ramen kit".into(),
                quantity: 2,
                unit_price_cents: Cents(1250),
            }],
            delivery_fee_cents: Cents(490),
            total_cents: Cents(2990),
            pickup: Position {
                lat: 40.75,
                lon: -73.98,
            },
            dropoff: Position {
                lat: 40.76,
                lon: -73.97,
            },
            dropoff_address: "1 Main St".into(),
            pickup_address: "2 Kitchen Rd".into(),
        };
        Order::place(new, "nw".into(), Utc::now()).0
    }

    fn step(order: &mut Order, change: Change) -> JournalEntry {
        let entry = order.decide(change, Utc::now()).expect("legal change");
        order.apply(&entry).expect("applies");
        entry
    }

    #[test]
    fn a_delivery_folds_into_the_expected_order_and_timeline() {
        let mut order = placed();
        let driver = UserId::new();
        let offer_id = Uuid::now_v7();
        let expires_at = Utc::now() + Duration::seconds(30);
        step(&mut order, Change::MerchantAccepted { prep_minutes: 12 });
        step(&mut order, Change::SearchStarted);
        step(
            &mut order,
            Change::Offered {
                offer_id,
                driver_id: driver,
                expires_at,
            },
        );
        assert_eq!(order.offer.unwrap().driver_id, driver);
        step(
            &mut order,
            Change::DriverAssigned {
                offer_id,
                driver_id: driver,
            },
        );
        step(&mut order, Change::MarkedReady);
        step(&mut order, Change::PickedUp);
        step(&mut order, Change::Delivered);
        assert_eq!(order.status(), OrderStatus::Delivered);
        assert_eq!(order.driver_id, Some(driver));
        assert_eq!(order.prep_minutes, Some(12));
        assert_eq!(order.version, 8);
        let timeline: Vec<String> = order
            .history
            .iter()
            .map(|h| match (h.status, h.dispatch_status) {
                (Some(s), _) => s.to_string(),
                (_, Some(d)) => format!("dispatch:{d}"),
                _ => unreachable!(),
            })
            .collect();
        assert_eq!(
            timeline,
            [
                "placed",
                "accepted",
                "dispatch:searching",
                "dispatch:offered",
                "dispatch:assigned",
                "ready",
                "picked_up",
                "delivered"
            ]
        );
    }

    #[test]
    fn replaying_the_journal_rebuilds_the_same_order() {
        let mut live = placed();
        let genesis = live.clone();
        let driver = UserId::new();
        let offer_id = Uuid::now_v7();
        let mut journal = vec![
            step(&mut live, Change::MerchantAccepted { prep_minutes: 5 }),
            step(&mut live, Change::SearchStarted),
        ];
        journal.push(step(
            &mut live,
            Change::Offered {
                offer_id,
                driver_id: driver,
                expires_at: Utc::now(),
            },
        ));
        journal.push(step(
            &mut live,
            Change::OfferLapsed {
                offer_id,
                driver_id: driver,
                reason: LapseReason::Declined,
            },
        ));
        let mut replayed = genesis;
        for entry in &journal {
            replayed.apply(entry).unwrap();
        }
        assert_eq!(replayed, live);
        assert_eq!(replayed.passed_over, vec![driver]);
    }

    #[test]
    fn answers_about_another_offer_or_driver_are_refused() {
        let mut order = placed();
        let driver = UserId::new();
        let offer_id = Uuid::now_v7();
        step(&mut order, Change::MerchantAccepted { prep_minutes: 5 });
        step(&mut order, Change::SearchStarted);
        step(
            &mut order,
            Change::Offered {
                offer_id,
                driver_id: driver,
                expires_at: Utc::now(),
            },
        );
        let stale_offer = Change::DriverAssigned {
            offer_id: Uuid::now_v7(),
            driver_id: driver,
        };
        assert!(order.decide(stale_offer, Utc::now()).is_err());
        let other_driver = Change::DriverAssigned {
            offer_id,
            driver_id: UserId::new(),
        };
        assert!(order.decide(other_driver, Utc::now()).is_err());
        let placed_again = order.decide(Change::Placed, Utc::now());
        assert!(placed_again.is_err());
    }

    #[test]
    fn journal_entries_serialise_tagged_by_event() {
        let entry = JournalEntry {
            seq: 2,
            change: Change::MerchantAccepted { prep_minutes: 9 },
            at: Utc::now(),
        };
        let json = serde_json::to_value(&entry.change).unwrap();
        assert_eq!(json["event"], "merchant_accepted");
        assert_eq!(json["prep_minutes"], 9);
        let back: Change = serde_json::from_value(json).unwrap();
        assert_eq!(back, entry.change);
        assert_eq!(entry.change.name(), "merchant_accepted");
        assert_eq!(Change::Placed.name(), "placed");
    }
}
