//! The conversation worker: one loop per replica, woken by the inbox signal and every half
//! second. It finds phones with work, claims each one's conversation (one replica at a time),
//! reads its waiting messages oldest first — each one's move saved with its replies and the
//! message marked processed in one transaction, so a message acts once even if the process dies
//! mid-way (it is read again, and a payment link issued again replaces the unsent one) — resets
//! conversations idle for 30 minutes, and sends the replies in order.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{FutureExt, StreamExt};

use super::Chat;
use super::effects::{Party, run};
use crate::domain::chat::{Input, PAID_ID_PREFIX, PAID_KIND};
use crate::domain::conversation::{Conversation, Found};
use crate::domain::notification::message_id;
use crate::domain::{OrderId, Phone, UserId};
use crate::geo::{LatLon, haversine_m};
use crate::notify::Outcome;
use crate::notify::whatsapp::TOKEN_PAUSE;
use crate::store::{
    ConversationRecord, ConversationSave, PendingInbound, ReplyOutcome, StoreError,
};
use crate::tasks::Tasks;

/// How often the worker looks for work when nothing woke it.
const POLL_INTERVAL: Duration = Duration::from_millis(500);
/// Phones taken per round.
const PHONES_PER_ROUND: i64 = 64;
/// Conversations moved at once.
const CONVERSATIONS_IN_FLIGHT: usize = 8;
/// Effects one input may chain (an address looked up, then kitchens found, …).
const EFFECTS_PER_INPUT: usize = 4;
/// Messages, replies, spent links and codes are kept this long, then pruned (messages are
/// personal data).
pub const WHATSAPP_RETENTION_DAYS: i64 = 30;
/// How often the prune runs.
const PRUNE_INTERVAL: Duration = Duration::from_secs(3_600);

impl Chat {
    /// Starts the loop; returns the service for `/ready`.
    pub fn spawn(self, tasks: &Tasks) -> Arc<Chat> {
        let chat = Arc::new(self);
        if chat.whatsapp.is_none() {
            // Nothing could be answered: messages wait in the inbox (`/ready` says `off`).
            return chat;
        }
        let running = chat.clone();
        let signal = chat.parts.store.inbox_signal();
        tasks.spawn_watching(|stop| async move {
            let mut pruned: Option<std::time::Instant> = None;
            loop {
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = signal.notified() => {}
                    () = tokio::time::sleep(POLL_INTERVAL) => {}
                }
                if !running.parts.store.is_migrated() {
                    continue;
                }
                while running.round().await > 0 && !stop.is_cancelled() {}
                if pruned.is_none_or(|at| at.elapsed() >= PRUNE_INTERVAL) {
                    pruned = Some(std::time::Instant::now());
                    running.prune().await;
                }
            }
        });
        chat
    }

    /// Deletes what is older than [`WHATSAPP_RETENTION_DAYS`] and no longer needed.
    async fn prune(&self) {
        let before = crate::store::now() - chrono::Duration::days(WHATSAPP_RETENTION_DAYS);
        match self.parts.store.prune_whatsapp(before).await {
            Ok(0) => {}
            Ok(count) => tracing::info!(
                count,
                "pruned WhatsApp messages, links and codes older than 30 days"
            ),
            Err(error) => tracing::debug!(error = %error, "cannot prune WhatsApp rows"),
        }
    }

    /// One round: every phone with work, a few at once. Returns how much was done (messages
    /// read, conversations reset, replies sent or given up): the loop goes round again at once
    /// only after a round that did something.
    async fn round(&self) -> usize {
        let now = crate::store::now();
        let phones = match self
            .parts
            .store
            .whatsapp_phones_with_work(now, PHONES_PER_ROUND)
            .await
        {
            Ok(phones) => phones,
            Err(error) => {
                tracing::debug!(error = %error, "cannot look for WhatsApp work");
                return 0;
            }
        };
        futures_util::stream::iter(phones)
            .map(|phone| async move { self.work_on(&phone).await })
            .buffer_unordered(CONVERSATIONS_IN_FLIGHT)
            .fold(0, |done, more| async move { done + more })
            .await
    }

    /// Moves one phone's conversation and sends its replies; how much was done.
    async fn work_on(&self, phone: &str) -> usize {
        let store = &self.parts.store;
        let now = crate::store::now();
        let until = now + chrono::Duration::from_std(self.claim).unwrap_or(chrono::Duration::MAX);
        let record = match store
            .claim_conversation(phone, &self.parts.node, now, until)
            .await
        {
            Ok(Some(record)) => record,
            Ok(None) => return 0,
            Err(error) => {
                tracing::debug!(error = %error, "cannot claim a WhatsApp conversation");
                return 0;
            }
        };
        let Ok(phone) = Phone::parse(phone) else {
            return 0;
        };
        let mut done = 0;
        // A bug must not stop every conversation: a panic is caught here, counted against the
        // message being read (set aside after a few), and the phone released.
        match AssertUnwindSafe(self.converse(&phone, record))
            .catch_unwind()
            .await
        {
            Ok(Ok(taken)) => done += taken,
            Ok(Err(error)) => {
                tracing::warn!(error = %error, phone = %phone.masked(), "a WhatsApp conversation stopped for now");
            }
            Err(_) => {
                metrics::counter!("whatsapp_conversation_panics_total").increment(1);
                tracing::error!(phone = %phone.masked(), "a WhatsApp conversation panicked; its message is retried, then set aside");
                if let Ok(waiting) = store.pending_inbound(phone.as_str()).await
                    && let Some(first) = waiting.first()
                {
                    let _ = store.inbound_failed(&first.id, crate::store::now()).await;
                }
            }
        }
        match self.send_replies(&phone).await {
            Ok(sent) => done += sent,
            Err(error) => {
                tracing::warn!(error = %error, phone = %phone.masked(), "cannot send WhatsApp replies for now");
            }
        }
        if let Err(error) = store
            .release_conversation(phone.as_str(), &self.parts.node)
            .await
        {
            tracing::debug!(error = %error, "cannot release a WhatsApp conversation (its claim lapses)");
        }
        done
    }

    /// Reads the phone's waiting messages, then resets it if it went idle; how many inputs it took.
    async fn converse(
        &self,
        phone: &Phone,
        record: ConversationRecord,
    ) -> Result<usize, StoreError> {
        let store = &self.parts.store;
        let mut conversation: Conversation = record
            .state
            .and_then(|state| serde_json::from_value(state).ok())
            .unwrap_or_default();
        let mut version = record.version;
        let mut customer = record.user_id;
        let mut taken = 0;
        for message in store.pending_inbound(phone.as_str()).await? {
            let input = self.labelled(input_of(&message));
            let customer_id = match customer {
                Some(id) => id,
                None => {
                    let name = message.message.0["profile"]["name"].as_str();
                    let user = store.whatsapp_customer(phone, name).await?;
                    if conversation.name.is_none() {
                        conversation.name = first_name(&user.name);
                    }
                    user.id
                }
            };
            let lag = (crate::store::now() - message.received_at).as_seconds_f64();
            metrics::histogram!("whatsapp_processing_lag_seconds").record(lag.max(0.0));
            let moved = self
                .take(
                    phone,
                    customer_id,
                    &mut conversation,
                    version,
                    &input,
                    Some(&message.id),
                )
                .await;
            match moved {
                Ok(Some(now_as)) => {
                    version += 1;
                    taken += 1;
                    customer = Some(now_as);
                }
                // The claim was lost: the message is its new owner's.
                Ok(None) => return Ok(taken),
                Err(error) => {
                    if store
                        .inbound_failed(&message.id, crate::store::now())
                        .await
                        .unwrap_or(false)
                    {
                        metrics::counter!("whatsapp_inbound_set_aside_total").increment(1);
                        tracing::error!(message = %message.id, error = %error, "a WhatsApp message failed repeatedly and was set aside");
                    }
                    return Err(error);
                }
            }
        }
        let now = crate::store::now();
        if let Some(customer) = customer
            && conversation.expires_at().is_some_and(|at| at <= now)
        {
            let reset = self
                .take(
                    phone,
                    customer,
                    &mut conversation,
                    version,
                    &Input::Idle,
                    None,
                )
                .await?;
            if reset.is_some() {
                taken += 1;
                metrics::counter!("whatsapp_conversations_expired_total").increment(1);
            }
        }
        Ok(taken)
    }

    /// One input: the conversation moved, its effects done, everything saved at once. The
    /// account it now orders as (another after a link code), or `None` when the claim was lost.
    async fn take(
        &self,
        phone: &Phone,
        customer: UserId,
        conversation: &mut Conversation,
        version: i64,
        input: &Input,
        inbound_id: Option<&str>,
    ) -> Result<Option<UserId>, StoreError> {
        let mut customer = customer;
        let now = crate::store::now();
        let mut moved = conversation.clone();
        let sessions = moved.session;
        let mut step = moved.handle(input, now);
        let mut replies = std::mem::take(&mut step.replies);
        for _ in 0..EFFECTS_PER_INPUT {
            let Some(effect) = step.effect.take() else {
                break;
            };
            let party = Party {
                phone,
                customer,
                conversation: &moved,
            };
            let found = run(&self.parts, &party, effect).await;
            if let Found::Linked {
                customer: linked, ..
            } = &found
            {
                customer = *linked;
            }
            step = moved.resume(found);
            replies.append(&mut step.replies);
        }
        let bodies: Vec<(String, serde_json::Value)> = replies
            .iter()
            .map(|reply| {
                (
                    message_id(uuid::Uuid::new_v4()),
                    reply.to_whatsapp(phone.digits()),
                )
            })
            .collect();
        let state = serde_json::to_value(&moved).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let saved = self
            .parts
            .store
            .save_conversation(&ConversationSave {
                phone: phone.as_str(),
                node: &self.parts.node,
                version,
                user_id: customer,
                state: &state,
                last_active_at: moved.last_active_at,
                expires_at: moved.expires_at(),
                inbound_id,
                replies: &bodies,
                at: now,
            })
            .await?;
        if saved {
            if moved.session > sessions {
                metrics::counter!("whatsapp_conversations_started_total").increment(1);
            }
            if matches!(input, Input::Paid { .. }) {
                metrics::counter!("whatsapp_orders_total").increment(1);
            }
            *conversation = moved;
        }
        Ok(saved.then_some(customer))
    }

    /// Sends the phone's waiting replies in order; stops at the first that must wait. How many
    /// it finished (sent or gave up).
    async fn send_replies(&self, phone: &Phone) -> Result<usize, StoreError> {
        let Some(whatsapp) = &self.whatsapp else {
            return Ok(0);
        };
        let store = &self.parts.store;
        let mut finished = 0;
        for reply in store.pending_replies(phone.as_str()).await? {
            let now = crate::store::now();
            if whatsapp.is_paused() {
                // Looked at again when a paused channel tries its token again.
                let until = now + chrono::Duration::from_std(TOKEN_PAUSE).unwrap_or_default();
                store.defer_replies(phone.as_str(), until).await?;
                return Ok(finished);
            }
            if reply.next_attempt_at > now {
                return Ok(finished);
            }
            let outcome = match whatsapp
                .send_reply(&reply.body.0, &reply.id, reply.attempts)
                .await
            {
                Outcome::Sent(sent) => ReplyOutcome::Sent {
                    provider_id: sent.provider_id,
                },
                Outcome::Retry { after, error, .. } => ReplyOutcome::Retry {
                    at: now + chrono::Duration::from_std(after).unwrap_or_default(),
                    error,
                },
                Outcome::Paused { error, .. } => ReplyOutcome::Retry {
                    at: now + chrono::Duration::from_std(TOKEN_PAUSE).unwrap_or_default(),
                    error,
                },
                Outcome::Failed { error, .. } => ReplyOutcome::Failed { error },
                Outcome::Cancelled { reason, .. } => ReplyOutcome::Failed { error: reason },
            };
            let label = match &outcome {
                ReplyOutcome::Sent { .. } => "sent",
                ReplyOutcome::Retry { .. } => "retry",
                ReplyOutcome::Failed { .. } => "failed",
            };
            metrics::counter!("whatsapp_replies_total", "outcome" => label).increment(1);
            store.record_reply(&reply.id, &outcome, now).await?;
            if matches!(outcome, ReplyOutcome::Retry { .. }) {
                return Ok(finished);
            }
            finished += 1;
        }
        Ok(finished)
    }
}

/// A pin shared without a name is named after the nearest known address, when one is this
/// close (the customer reads it back in the basket and on the receipt).
const PIN_ADDRESS_WITHIN_M: f64 = 75.0;

impl Chat {
    /// The input with a shared pin named by the offline map when WhatsApp sent no name.
    fn labelled(&self, input: Input) -> Input {
        match input {
            Input::Location {
                lat,
                lon,
                label: None,
            } => {
                let label = LatLon::new(lat, lon).ok().and_then(|at| {
                    let place = self.parts.maps.reverse(at).ok()?;
                    let there = LatLon::new(place.lat, place.lon).ok()?;
                    (haversine_m(at, there) <= PIN_ADDRESS_WITHIN_M).then_some(place.label)
                });
                Input::Location { lat, lon, label }
            }
            other => other,
        }
    }
}

/// What a stored inbound message says: a payment made (written by the pay endpoint only), or
/// one of Meta's message objects.
fn input_of(message: &PendingInbound) -> Input {
    if message.kind == PAID_KIND && message.id.starts_with(PAID_ID_PREFIX) {
        return match message.message.0["order_id"]
            .as_str()
            .and_then(|id| id.parse::<OrderId>().ok())
        {
            Some(order_id) => Input::Paid { order_id },
            None => Input::Unsupported {
                kind: "payment".to_owned(),
            },
        };
    }
    Input::from_whatsapp(&message.message.0)
}

/// The first word of a profile name, for greetings.
fn first_name(name: &str) -> Option<String> {
    name.split_whitespace()
        .next()
        .filter(|n| *n != "WhatsApp")
        .map(|n| n.chars().take(30).collect())
}
