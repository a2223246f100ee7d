//! The pure core of the marketplace: order lifecycle, money, identifiers, users and what notifies
//! whom. No I/O.

pub mod assignment;
pub mod chat;
pub mod conversation;
pub mod delivery;
pub mod ids;
pub mod money;
pub mod notification;
pub mod order;
pub mod pricing;
pub mod scope;
pub mod user;

pub use delivery::{
    Change, HistoryEntry, JournalEntry, LapseReason, NewOrder, OpenOffer, Order, OrderItem,
    OrderView, Position, ReleaseReason,
};
pub use ids::{MerchantId, OrderId, UserId};
pub use money::Cents;
pub use notification::{NotifyEvent, Phone};
pub use order::{DispatchStatus, OrderEvent, OrderState, OrderStatus, TransitionError};
pub use scope::{Scope, Scopes};
pub use user::{Email, Role};
