//! MealKitz Dispatch: a real-time delivery dispatch engine for a food and meal-kit marketplace.
//!
//! Customers check out over REST, merchants run a live order board, drivers stream locations
//! and take offers over WebSockets; every order is journaled before it is acknowledged.
//!
//! # Layout
//! - [`config`]: settings from flags and environment, validated into one [`config::Config`].
//! - [`cli`]: the `mealkitz` commands (`serve`, `migrate`, `admin create`).
//! - [`startup`]: [`startup::Application`], one running engine built from a config.
//! - [`shutdown`]: the signal that starts a graceful stop.
//! - [`telemetry`]: logs and the Prometheus recorder.
//! - [`domain`]: pure core — order lifecycle, money, ids, users. No I/O.
//! - [`geo`]: regions, distances, the driver R-tree index, ETAs. No I/O.
//! - [`actors`]: the dispatch engine — region supervisors, order/driver/merchant actors,
//!   supervision, snapshots — behind the [`actors::Engine`] handle.
//! - [`api`]: REST routes, auth, extractors and the error table.
//! - [`gateway`]: the WebSockets — their HTTP upgrade, one session actor per socket, and the
//!   socket core the sessions share; it reaches dispatch through [`actors::Engine`] only.
//! - [`payments`]: the payment gateway (sandbox, its books in the store), webhook signatures,
//!   settlement with back-off, and the reconciler of holds no order will use.
//! - [`sim`]: the fleet simulator (`mealkitz simulate`, `mealkitz demo`).
//! - [`store`]: PostgreSQL and SQLite behind one interface.
//! - [`bus`]: the Redis link between replicas.
//!
//! Data flows one way: `api` → `store`; `domain` depends on nothing of ours.

pub mod actors;
pub mod api;
pub mod bus;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod domain;
pub mod error;
pub mod gateway;
pub mod geo;
pub mod payments;
pub mod shutdown;
pub mod sim;
pub mod startup;
pub mod store;
pub mod tasks;
pub mod telemetry;
