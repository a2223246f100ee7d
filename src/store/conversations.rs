//! WhatsApp conversations in the store: which phones have work (inbound messages, replies due,
//! an idle conversation to reset), the claim that lets one worker on one replica move a phone's
//! conversation at a time, the conversation's state saved in one transaction with the replies it
//! produced and the inbound message marked processed, the replies' sending, and the account a
//! WhatsApp number orders as.

use chrono::{DateTime, Utc};
use sqlx::types::Json;
use uuid::Uuid;

use super::{Store, StoreError, User, on_pool, on_writer};
use crate::domain::{Phone, Role, UserId};

/// Inbound messages of one phone read per claim.
const INBOUND_BATCH: i64 = 20;
/// A message that failed this many times is set aside as ignored (it would block its phone).
pub const INBOUND_MAX_ATTEMPTS: i32 = 5;

/// A claimed conversation as stored: `state` is `None` before its first message was read.
#[derive(Debug, Clone)]
pub struct ConversationRecord {
    pub phone: String,
    pub user_id: Option<UserId>,
    pub state: Option<serde_json::Value>,
    pub version: i64,
}

/// An inbound message waiting for its conversation.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct PendingInbound {
    pub id: String,
    pub kind: String,
    pub message: Json<serde_json::Value>,
    pub received_at: DateTime<Utc>,
    pub attempts: i32,
}

/// A reply waiting to be sent.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct PendingReply {
    pub id: String,
    pub seq: i64,
    pub body: Json<serde_json::Value>,
    pub attempts: i32,
    pub created_at: DateTime<Utc>,
    pub next_attempt_at: DateTime<Utc>,
}

/// A conversation's move, saved at once: its new state, the replies, the message it read.
#[derive(Debug, Clone)]
pub struct ConversationSave<'a> {
    pub phone: &'a str,
    pub node: &'a str,
    /// The version read at the claim: the save fails if anyone saved since.
    pub version: i64,
    pub user_id: UserId,
    pub state: &'a serde_json::Value,
    pub last_active_at: Option<DateTime<Utc>>,
    pub expires_at: Option<DateTime<Utc>>,
    /// The inbound message read (none for the idle sweep).
    pub inbound_id: Option<&'a str>,
    /// Reply ids and Graph API bodies, in order.
    pub replies: &'a [(String, serde_json::Value)],
    pub at: DateTime<Utc>,
}

/// How a reply's sending ended.
#[derive(Debug, Clone, PartialEq)]
pub enum ReplyOutcome {
    Sent { provider_id: Option<String> },
    Retry { at: DateTime<Utc>, error: String },
    Failed { error: String },
}

#[derive(sqlx::FromRow)]
struct ClaimedRow {
    phone: String,
    user_id: Option<Uuid>,
    state: Option<Json<serde_json::Value>>,
    version: i64,
}

impl Store {
    /// Phones with something to do at `now` that no live claim holds: inbound messages waiting,
    /// replies due, or a conversation to reset for idleness.
    pub async fn whatsapp_phones_with_work(
        &self,
        now: DateTime<Utc>,
        limit: i64,
    ) -> Result<Vec<String>, StoreError> {
        let phones: Vec<(String,)> = on_pool!(self, |pool| {
            sqlx::query_as(
                "SELECT w.phone FROM ( \
                   SELECT phone FROM whatsapp_inbox WHERE state = 'received' AND phone <> '' \
                   UNION SELECT phone FROM whatsapp_outbound WHERE state = 'pending' AND next_attempt_at <= $1 \
                   UNION SELECT phone FROM whatsapp_conversations WHERE expires_at <= $1 \
                 ) w LEFT JOIN whatsapp_conversations c ON c.phone = w.phone \
                 WHERE c.claimed_until IS NULL OR c.claimed_until < $1 \
                 LIMIT $2",
            )
            .bind(now)
            .bind(limit)
            .fetch_all(pool)
            .await
        })?;
        Ok(phones.into_iter().map(|(p,)| p).collect())
    }

    /// Claims `phone`'s conversation for `node` until `until` (making its row on first
    /// contact); `None` while another live claim holds it.
    pub async fn claim_conversation(
        &self,
        phone: &str,
        node: &str,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<Option<ConversationRecord>, StoreError> {
        let row: Option<ClaimedRow> = on_writer!(self, |pool| {
            sqlx::query_as(
                "INSERT INTO whatsapp_conversations \
                   (phone, version, created_at, last_active_at, claimed_by, claimed_until) \
                 VALUES ($1, 0, $3, $3, $2, $4) \
                 ON CONFLICT (phone) DO UPDATE SET claimed_by = excluded.claimed_by, \
                   claimed_until = excluded.claimed_until \
                 WHERE whatsapp_conversations.claimed_until IS NULL \
                    OR whatsapp_conversations.claimed_until < $3 \
                    OR whatsapp_conversations.claimed_by = $2 \
                 RETURNING phone, user_id, state, version",
            )
            .bind(phone)
            .bind(node)
            .bind(now)
            .bind(until)
            .fetch_optional(pool)
            .await
        })?;
        Ok(row.map(|row| ConversationRecord {
            phone: row.phone,
            user_id: row.user_id.map(UserId),
            state: row.state.map(|s| s.0),
            version: row.version,
        }))
    }

    /// Gives the claim up.
    pub async fn release_conversation(&self, phone: &str, node: &str) -> Result<(), StoreError> {
        on_writer!(self, |pool| {
            sqlx::query(
                "UPDATE whatsapp_conversations SET claimed_by = NULL, claimed_until = NULL \
                 WHERE phone = $1 AND claimed_by = $2",
            )
            .bind(phone)
            .bind(node)
            .execute(pool)
            .await
            .map(|done| done.rows_affected())
        })?;
        Ok(())
    }

    /// `phone`'s inbound messages waiting, oldest first.
    pub async fn pending_inbound(&self, phone: &str) -> Result<Vec<PendingInbound>, StoreError> {
        Ok(on_pool!(self, |pool| {
            sqlx::query_as(
                "SELECT id, kind, message, received_at, attempts FROM whatsapp_inbox \
                 WHERE phone = $1 AND state = 'received' ORDER BY received_at, id LIMIT $2",
            )
            .bind(phone)
            .bind(INBOUND_BATCH)
            .fetch_all(pool)
            .await
        })?)
    }

    /// Counts a failed reading of an inbound message; after [`INBOUND_MAX_ATTEMPTS`] it is
    /// set aside as ignored. Returns whether it was set aside.
    pub async fn inbound_failed(&self, id: &str, at: DateTime<Utc>) -> Result<bool, StoreError> {
        let set_aside: Option<(String,)> = on_writer!(self, |pool| {
            sqlx::query_as(
                "UPDATE whatsapp_inbox SET attempts = attempts + 1, \
                   state = CASE WHEN attempts + 1 >= $2 THEN 'ignored' ELSE state END, \
                   processed_at = CASE WHEN attempts + 1 >= $2 THEN $3 ELSE processed_at END \
                 WHERE id = $1 AND state = 'received' RETURNING state",
            )
            .bind(id)
            .bind(INBOUND_MAX_ATTEMPTS)
            .bind(at)
            .fetch_optional(pool)
            .await
        })?;
        Ok(set_aside.is_some_and(|(state,)| state == "ignored"))
    }

    /// Saves a conversation's move in one transaction: the state (only if still claimed by
    /// this node at the version read), the replies, the inbound message marked processed.
    /// `false` when the claim was lost (nothing saved; the message stays for its new owner).
    pub async fn save_conversation(&self, save: &ConversationSave<'_>) -> Result<bool, StoreError> {
        on_writer!(self, |pool| {
            let mut tx = pool.begin().await?;
            let moved = sqlx::query(
                "UPDATE whatsapp_conversations SET user_id = $1, state = $2, version = version + 1, \
                   last_active_at = COALESCE($3, last_active_at), expires_at = $4 \
                 WHERE phone = $5 AND claimed_by = $6 AND version = $7",
            )
            .bind(save.user_id.as_uuid())
            .bind(Json(save.state))
            .bind(save.last_active_at)
            .bind(save.expires_at)
            .bind(save.phone)
            .bind(save.node)
            .bind(save.version)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if moved == 0 {
                return Ok(false);
            }
            for (i, (id, body)) in save.replies.iter().enumerate() {
                // Replies of one move follow those of the moves before it.
                let seq = (save.version + 1) * 1_000 + i64::try_from(i).unwrap_or(999);
                sqlx::query(
                    "INSERT INTO whatsapp_outbound \
                       (id, phone, seq, body, state, attempts, next_attempt_at, created_at) \
                     VALUES ($1, $2, $3, $4, 'pending', 0, $5, $5)",
                )
                .bind(id)
                .bind(save.phone)
                .bind(seq)
                .bind(Json(body))
                .bind(save.at)
                .execute(&mut *tx)
                .await?;
            }
            if let Some(id) = save.inbound_id {
                sqlx::query(
                    "UPDATE whatsapp_inbox SET state = 'processed', processed_at = $2 \
                     WHERE id = $1 AND state = 'received'",
                )
                .bind(id)
                .bind(save.at)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
            Ok(true)
        })
    }

    /// `phone`'s replies not sent yet, in order (due or not: a later one waits for an earlier).
    pub async fn pending_replies(&self, phone: &str) -> Result<Vec<PendingReply>, StoreError> {
        Ok(on_pool!(self, |pool| {
            sqlx::query_as(
                "SELECT id, seq, body, attempts, created_at, next_attempt_at FROM whatsapp_outbound \
                 WHERE phone = $1 AND state = 'pending' ORDER BY seq",
            )
            .bind(phone)
            .fetch_all(pool)
            .await
        })?)
    }

    /// Puts `phone`'s waiting replies off until `until` (the channel cannot send now), without
    /// counting an attempt.
    pub async fn defer_replies(&self, phone: &str, until: DateTime<Utc>) -> Result<(), StoreError> {
        on_writer!(self, |pool| {
            sqlx::query(
                "UPDATE whatsapp_outbound SET next_attempt_at = $2 \
                 WHERE phone = $1 AND state = 'pending' AND next_attempt_at < $2",
            )
            .bind(phone)
            .bind(until)
            .execute(pool)
            .await
            .map(|done| done.rows_affected())
        })?;
        Ok(())
    }

    /// Records how sending a reply went, unless the reply is no longer pending: a sender whose
    /// claim lapsed mid-send must not turn another replica's `sent` back into a retry.
    pub async fn record_reply(
        &self,
        id: &str,
        outcome: &ReplyOutcome,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let (state, provider_id, next, error) = match outcome {
            ReplyOutcome::Sent { provider_id } => ("sent", provider_id.as_deref(), at, None),
            ReplyOutcome::Retry { at: next, error } => {
                ("pending", None, *next, Some(error.as_str()))
            }
            ReplyOutcome::Failed { error } => ("failed", None, at, Some(error.as_str())),
        };
        on_writer!(self, |pool| {
            sqlx::query(
                "UPDATE whatsapp_outbound SET state = $2, attempts = attempts + 1, \
                   provider_id = COALESCE($3, provider_id), next_attempt_at = $4, error = $5, \
                   sent_at = CASE WHEN $2 = 'sent' THEN $6 ELSE sent_at END \
                 WHERE id = $1 AND state = 'pending'",
            )
            .bind(id)
            .bind(state)
            .bind(provider_id)
            .bind(next)
            .bind(error)
            .bind(at)
            .execute(pool)
            .await
            .map(|done| done.rows_affected())
        })?;
        Ok(())
    }

    /// The account a WhatsApp number orders as: the oldest account whose phone is this number
    /// *and verified*, or a new customer account (no password, the profile's name, the phone
    /// verified by WhatsApp itself and consenting to order updates there).
    pub async fn whatsapp_customer(
        &self,
        phone: &Phone,
        profile_name: Option<&str>,
    ) -> Result<User, StoreError> {
        let found: Option<(Uuid,)> = on_pool!(self, |pool| {
            sqlx::query_as(
                "SELECT id FROM users WHERE phone = $1 AND phone_verified_at IS NOT NULL \
                 ORDER BY created_at, id LIMIT 1",
            )
            .bind(phone.as_str())
            .fetch_optional(pool)
            .await
        })?;
        if let Some((id,)) = found
            && let Some(user) = self.user_by_id(UserId(id)).await?
        {
            return Ok(user);
        }
        let id = UserId::new();
        let name = profile_name
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .map_or_else(
                || "WhatsApp customer".to_owned(),
                |n| n.chars().take(100).collect(),
            );
        let now = super::now();
        // No email and no password: an address on the reserved `.invalid` domain nobody can
        // receive mail at, and a hash no password matches (it is not a PHC string).
        let email = format!("whatsapp-{}@whatsapp.invalid", id.as_uuid().simple());
        on_writer!(self, |pool| {
            sqlx::query(
                "INSERT INTO users (id, email, name, role, password_hash, created_at, phone, \
                   notify_whatsapp, phone_verified_at) \
                 VALUES ($1, $2, $3, $4, '!', $5, $6, TRUE, $5)",
            )
            .bind(id.as_uuid())
            .bind(&email)
            .bind(&name)
            .bind(Role::Customer.as_str())
            .bind(now)
            .bind(phone.as_str())
            .execute(pool)
            .await
            .map(|done| done.rows_affected())
        })?;
        metrics::counter!("whatsapp_accounts_created_total").increment(1);
        self.user_by_id(id)
            .await?
            .ok_or_else(|| StoreError::Corrupt(format!("user {} vanished after insert", id)))
    }

    /// Keeps a code (its hash) that links a WhatsApp number to `user` until `expires_at`.
    pub async fn create_whatsapp_link_code(
        &self,
        user: UserId,
        code_hash: &str,
        at: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        on_writer!(self, |pool| {
            sqlx::query(
                "INSERT INTO whatsapp_link_codes (code_hash, user_id, created_at, expires_at) \
                 VALUES ($1, $2, $3, $4)",
            )
            .bind(code_hash)
            .bind(user.as_uuid())
            .bind(at)
            .bind(expires_at)
            .execute(pool)
            .await
            .map(|done| done.rows_affected())
        })?;
        Ok(())
    }

    /// Spends a link code sent from `phone`: the account it was made for gets the number,
    /// verified, with WhatsApp updates on. `None` for an unknown, used or expired code.
    pub async fn redeem_whatsapp_link_code(
        &self,
        code_hash: &str,
        phone: &Phone,
        at: DateTime<Utc>,
    ) -> Result<Option<User>, StoreError> {
        let user: Option<(Uuid,)> = on_writer!(self, |pool| {
            let mut tx = pool.begin().await?;
            let user: Option<(Uuid,)> = sqlx::query_as(
                "UPDATE whatsapp_link_codes SET used_at = $2 \
                 WHERE code_hash = $1 AND used_at IS NULL AND expires_at > $2 RETURNING user_id",
            )
            .bind(code_hash)
            .bind(at)
            .fetch_optional(&mut *tx)
            .await?;
            if let Some((id,)) = user {
                // The number is this account's now: no other account is linked by it.
                sqlx::query(
                    "UPDATE users SET phone_verified_at = NULL WHERE phone = $1 AND id <> $2",
                )
                .bind(phone.as_str())
                .bind(id)
                .execute(&mut *tx)
                .await?;
                sqlx::query(
                    "UPDATE users SET phone = $1, phone_verified_at = $2, notify_whatsapp = TRUE \
                     WHERE id = $3",
                )
                .bind(phone.as_str())
                .bind(at)
                .bind(id)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
            Ok::<_, StoreError>(user)
        })?;
        match user {
            Some((id,)) => self.user_by_id(UserId(id)).await,
            None => Ok(None),
        }
    }

    /// Deletes what WhatsApp ordering no longer needs from before `before`: read or ignored
    /// inbound messages, replies sent or given up, payment links spent or expired, link codes
    /// expired. Messages are personal data: they are not kept longer than needed. How many rows.
    pub async fn prune_whatsapp(&self, before: DateTime<Utc>) -> Result<u64, StoreError> {
        const PRUNES: [&str; 4] = [
            "DELETE FROM whatsapp_inbox WHERE state <> 'received' AND received_at < $1",
            "DELETE FROM whatsapp_outbound WHERE state <> 'pending' AND created_at < $1",
            "DELETE FROM pay_links WHERE expires_at < $1",
            "DELETE FROM whatsapp_link_codes WHERE expires_at < $1",
        ];
        let mut deleted = 0;
        for sql in PRUNES {
            deleted += on_writer!(self, |pool| {
                sqlx::query(sql)
                    .bind(before)
                    .execute(pool)
                    .await
                    .map(|done| done.rows_affected())
            })?;
        }
        Ok(deleted)
    }
}
