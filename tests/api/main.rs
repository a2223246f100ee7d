//! Integration tests: each test starts its own engine on port 0 against a fresh PostgreSQL
//! database or a fresh SQLite file, and talks to it over real HTTP.

mod helpers;

mod addresses;
mod api_keys;
mod architecture;
mod binary;
mod chaos;
mod checkout;
mod checkout_saga;
mod cluster;
mod db_crash;
mod db_outage;
mod dispatch;
mod errors;
mod health;
mod journal;
mod maps_api;
mod maps_dispatch;
mod merchants;
mod notifications;
mod notify_support;
mod oauth;
mod oidc;
mod openapi;
mod osrm_client;
mod osrm_support;
mod pages;
mod pay;
mod processes;
mod recovery;
mod redis_bus;
mod redis_outage;
mod relay;
mod replicas;
mod router;
mod simulator;
mod store_contract;
mod store_money;
mod supervision;
mod users;
mod webhooks_api;
mod whatsapp_conversation;
mod whatsapp_webhook;
mod wire;
mod ws;
