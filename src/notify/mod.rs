//! The notification service: drains the outbox the journal writes into, turning each order
//! transition into messages — to the customer on WhatsApp (Business Cloud API) and to the
//! merchant's webhook endpoints (Standard Webhooks) — sent at least once, in order per order and
//! destination, each with a stable id, by one replica at a time.
//!
//! - [`address`]: which webhook URLs may be called (no private addresses), and the resolver that
//!   keeps deliveries to public ones.
//! - [`signing`]: Standard Webhooks secrets and signatures.

pub mod address;
pub mod signing;
