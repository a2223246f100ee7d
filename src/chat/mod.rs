//! Ordering over WhatsApp: the worker that moves each phone's conversation
//! ([`crate::domain::conversation`]) one inbound message at a time, on one replica at a time,
//! and sends the bot's replies in order.
//!
//! - [`worker`]: the loop — find phones with work, claim one, read its messages, save the
//!   conversation with its replies and the message marked processed in one transaction, send.
//! - [`effects`]: what the conversation asks of the world (addresses, kitchens, menus, payment
//!   links, an order's status, a cancellation), done against the store, maps and engine.
//!
//! The webhook (`api::whatsapp`) only keeps messages in the inbox; the pay endpoint
//! (`api::pay`) puts a `paid` message there. Both wake the worker through the store's inbox
//! signal; another replica's messages are found by polling.

pub mod effects;
pub mod worker;

use std::sync::Arc;
use std::time::Duration;

use crate::actors::Engine;
use crate::config::{CheckoutConfig, NotifyConfig};
use crate::domain::UserId;
use crate::maps::Maps;
use crate::notify::whatsapp::{TOKEN_PAUSE, WhatsApp};
use crate::store::Store;

/// Issues a sign-in token for a customer (the tracking link carries one): the token and when it
/// expires. Given by startup, which holds the keys.
pub type TokenIssuer = Arc<dyn Fn(UserId) -> Option<String> + Send + Sync>;

/// What the conversation service needs.
pub struct ChatParts {
    pub store: Store,
    pub maps: Arc<Maps>,
    pub engine: Engine,
    pub notify: NotifyConfig,
    pub checkout: CheckoutConfig,
    pub node: String,
    pub issue_token: TokenIssuer,
}

/// The conversation service of this replica; `/ready` asks it how it is.
pub struct Chat {
    parts: ChatParts,
    whatsapp: Option<WhatsApp>,
    /// How long a claim on a conversation lasts.
    claim: Duration,
}

impl Chat {
    pub fn new(parts: ChatParts) -> Chat {
        let whatsapp = WhatsApp::new(&parts.notify);
        let claim = parts.notify.claim;
        Chat {
            parts,
            whatsapp,
            claim,
        }
    }

    /// For `/ready`: `ok`, `off` (no WhatsApp account or app secret), or what is degraded.
    pub fn health(&self) -> String {
        match &self.whatsapp {
            None => "off: no WhatsApp account configured".to_owned(),
            Some(_) if self.parts.notify.whatsapp_app_secret.is_none() => {
                "off: MEALKITZ_WHATSAPP_APP_SECRET is not set, so no message comes in".to_owned()
            }
            Some(whatsapp) if whatsapp.is_paused() => format!(
                "degraded: WhatsApp refused the access token; replies wait (tried again every {} min)",
                TOKEN_PAUSE.as_secs() / 60
            ),
            Some(_) => "ok".to_owned(),
        }
    }
}
