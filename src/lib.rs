//! MealKitz Dispatch: a real-time delivery dispatch engine for a food and meal-kit marketplace.
//!
//! Customers check out over REST, merchants run a live order board, drivers stream locations
//! and take offers over WebSockets; every order is journaled before it is acknowledged.
//!
//! # Layout
//! Layers, lowest first; a file imports only its own layer or lower ones, and no two files
//! import each other in a circle (`tests/api/architecture.rs` checks it).
//! - [`domain`]: pure core — order lifecycle, money, ids, users. No I/O.
//! - [`geo`]: regions, distances, the driver R-tree index, ETAs. No I/O.
//! - [`error`]: the one error table — every code with its HTTP status, message, client retry and
//!   router resend — that the engine, the router, REST and the sockets all map into.
//! - [`config`]: settings by component, each a clap `Args` struct, validated into one
//!   [`config::Config`].
//! - [`store`]: PostgreSQL and SQLite behind one interface.
//! - [`maps`]: travel times and routes (OSRM or the straight line), geocoding and streets (an
//!   offline OpenStreetMap extract).
//! - [`bus`]: the Redis link between replicas.
//! - [`tasks`]: background tasks under one cancellation token and task tracker.
//! - [`actors`]: the dispatch engine — every operation a [`actors::Command`] (one struct each,
//!   in `actors/commands/`) run by [`actors::Engine::execute`] where its entity lives; region
//!   supervisors, order/driver/merchant actors and the messages between them
//!   (`actors/protocol/`), supervision, snapshots.
//! - [`cluster`]: region leases and ownership, and the router that carries commands, answers,
//!   feeds and casts between replicas; it serves the engine's `Routing` trait and calls back
//!   through its own `Executor` trait.
//! - [`api`]: REST routes, auth and extractors, rendering the error table.
//! - [`gateway`]: the WebSockets — their HTTP upgrade (the HTTP server is built there, so that an
//!   upgraded connection leaves the HTTP dispatcher), frames on the bare stream, one session
//!   actor per socket, and the socket core the sessions share; it reaches dispatch through
//!   [`actors::Engine`] only.
//! - [`notify`]: the notification service — the outbox fanned out into WhatsApp messages to
//!   customers and signed webhooks to merchants, sent at least once by one replica at a time.
//! - [`chat`]: ordering over WhatsApp — a worker per replica moving each phone's conversation
//!   (the pure machine in `domain::conversation`) one inbound message at a time and sending the
//!   bot's replies; the webhook and the pay endpoint (`api`) only fill its inbox.
//! - [`payments`]: the payment gateway (sandbox, its books in the store), webhook signatures,
//!   settlement with back-off, and the reconciler of holds no order will use.
//! - [`sim`]: the fleet simulator (`mealkitz simulate`, `mealkitz demo`) and its arguments.
//! - [`startup`]: [`startup::Application`], one running engine built from a config.
//! - [`cli`]: the `mealkitz` commands (`serve`, `migrate`, `admin create`, `simulate`, `demo`).
//! - [`shutdown`]: the signal that starts a graceful stop.
//! - [`telemetry`]: logs and the Prometheus recorder.
//!
//! Data flows one way: `domain`, `geo`, `error`, `config` → `store`, `bus`, `tasks`, `maps` → `actors` →
//! `cluster` → `api`, `gateway`, `payments`, `notify`, `chat` → `startup`, `cli`.

pub mod actors;
pub mod api;
pub mod bus;
pub mod chat;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod domain;
pub mod error;
pub mod gateway;
pub mod geo;
pub mod maps;
pub mod notify;
pub mod payments;
pub mod shutdown;
pub mod sim;
pub mod startup;
pub mod store;
pub mod tasks;
pub mod telemetry;
