//! What a merchant's actor is sent: its orders' changes (from the order actors) and the board
//! subscriptions of its sessions (through the engine).

use actix::prelude::*;
use tokio::sync::mpsc;

use crate::domain::OrderView;

/// An order of this merchant changed; `version` orders updates that race.
#[derive(Message)]
#[rtype(result = "()")]
pub struct BoardUpdate {
    pub version: i64,
    pub view: OrderView,
}

/// The board (every open order) and a feed of changes to it.
#[derive(Message)]
#[rtype(result = "(Vec<OrderView>, mpsc::Receiver<OrderView>)")]
pub struct SubscribeBoard;

/// Test hook: the actor panics on receipt (fault injection must be enabled).
#[derive(Message)]
#[rtype(result = "()")]
pub struct CrashMerchant;
