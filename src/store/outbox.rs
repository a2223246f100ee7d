//! The notification outbox and the messages it becomes: outbox rows written in the journal's own
//! transaction, claimed by one notifier at a time and fanned out into notifications (one per
//! destination), which are claimed in order per order and destination, attempted, recorded,
//! listed per order and pruned when old.

use chrono::{DateTime, Utc};
use sqlx::types::Json;
use uuid::Uuid;

use super::{Backend, Pool, Store, StoreError, on_pool, on_writer};
use crate::domain::{JournalEntry, NotifyEvent, Order, OrderId};

/// A journal entry that notifies, waiting to be fanned out.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxEntry {
    pub id: Uuid,
    pub order_id: OrderId,
    pub seq: i64,
    pub event: NotifyEvent,
    /// When the entry was journaled.
    pub at: DateTime<Utc>,
}

/// Where a notification goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Channel {
    WhatsApp,
    Webhook,
}

impl Channel {
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::WhatsApp => "whatsapp",
            Channel::Webhook => "webhook",
        }
    }

    fn parse(raw: &str) -> Result<Channel, StoreError> {
        match raw {
            "whatsapp" => Ok(Channel::WhatsApp),
            "webhook" => Ok(Channel::Webhook),
            other => Err(StoreError::Corrupt(format!("notification channel {other}"))),
        }
    }
}

/// A message to make from an outbox entry.
#[derive(Debug, Clone, PartialEq)]
pub struct NewNotification {
    pub channel: Channel,
    /// The phone (WhatsApp) or the endpoint id (webhook).
    pub destination: String,
    pub endpoint_id: Option<Uuid>,
    /// What every attempt sends: the webhook body, or the customer message's facts.
    pub payload: serde_json::Value,
}

/// A message claimed for sending.
#[derive(Debug, Clone, PartialEq)]
pub struct Notification {
    pub id: Uuid,
    pub outbox_id: Uuid,
    pub order_id: OrderId,
    pub seq: i64,
    pub event: NotifyEvent,
    pub channel: Channel,
    pub destination: String,
    pub endpoint_id: Option<Uuid>,
    pub payload: serde_json::Value,
    /// Attempts made so far in its schedule.
    pub attempts: i32,
    /// When the journal entry it tells of was written: its delivery time is measured from here.
    pub created_at: DateTime<Utc>,
}

/// One attempt to send, as recorded.
#[derive(Debug, Clone, PartialEq)]
pub struct AttemptRecord {
    pub at: DateTime<Utc>,
    /// `sent`, `failed`, `rate_limited`, `window_closed`, `refused`, …
    pub outcome: String,
    /// The HTTP status the receiver answered with, if it answered.
    pub status_code: Option<i32>,
    pub latency_ms: i64,
    pub error: Option<String>,
}

/// What becomes of a notification after an attempt.
#[derive(Debug, Clone, PartialEq)]
pub enum NextStep {
    /// Delivered. `sent_as` says how (`text`, `template`, `webhook`); `provider_id` is
    /// WhatsApp's message id (`wamid…`).
    Sent {
        sent_as: String,
        provider_id: Option<String>,
    },
    /// Try again at `at`; `attempts` is the new count of the schedule.
    Retry {
        at: DateTime<Utc>,
        attempts: i32,
        error: String,
    },
    /// Given up: the schedule is spent or the error is final.
    Failed { attempts: i32, error: String },
    /// Not to be sent any more (its endpoint was disabled or removed).
    Cancelled { reason: String },
    /// Put back untouched, due at `at` (the channel is paused): the attempt did not count.
    Deferred { at: DateTime<Utc> },
}

/// What a customer or merchant sees of a message sent about an order.
#[derive(Debug, Clone, PartialEq, serde::Serialize, utoipa::ToSchema)]
pub struct NotificationSummary {
    /// The message id the receiver sees (`msg_…`).
    pub message_id: String,
    #[schema(value_type = String, example = "whatsapp")]
    pub channel: &'static str,
    #[schema(value_type = String, example = "order.accepted")]
    pub event: NotifyEvent,
    /// `pending`, `sent`, `failed` or `cancelled`.
    pub state: String,
    /// WhatsApp's own status once it reports one: `sent`, `delivered`, `read`, `failed`.
    pub provider_status: Option<String>,
    pub sent_at: Option<DateTime<Utc>>,
}

#[derive(sqlx::FromRow)]
struct OutboxRecord {
    id: Uuid,
    order_id: Uuid,
    seq: i64,
    event: String,
    at: DateTime<Utc>,
}

impl TryFrom<OutboxRecord> for OutboxEntry {
    type Error = StoreError;
    fn try_from(row: OutboxRecord) -> Result<Self, StoreError> {
        Ok(OutboxEntry {
            id: row.id,
            order_id: OrderId(row.order_id),
            seq: row.seq,
            event: parse_event(&row.event)?,
            at: row.at,
        })
    }
}

fn parse_event(raw: &str) -> Result<NotifyEvent, StoreError> {
    NotifyEvent::parse(raw).ok_or_else(|| StoreError::Corrupt(format!("notification event {raw}")))
}

#[derive(sqlx::FromRow)]
struct NotificationRow {
    id: Uuid,
    outbox_id: Uuid,
    order_id: Uuid,
    seq: i64,
    event: String,
    channel: String,
    destination: String,
    endpoint_id: Option<Uuid>,
    payload: Json<serde_json::Value>,
    attempts: i32,
    created_at: DateTime<Utc>,
}

impl TryFrom<NotificationRow> for Notification {
    type Error = StoreError;
    fn try_from(row: NotificationRow) -> Result<Self, StoreError> {
        Ok(Notification {
            id: row.id,
            outbox_id: row.outbox_id,
            order_id: OrderId(row.order_id),
            seq: row.seq,
            event: parse_event(&row.event)?,
            channel: Channel::parse(&row.channel)?,
            destination: row.destination,
            endpoint_id: row.endpoint_id,
            payload: row.payload.0,
            attempts: row.attempts,
            created_at: row.created_at,
        })
    }
}

const NOTIFICATION_COLUMNS: &str = "id, outbox_id, order_id, seq, event, channel, destination, \
    endpoint_id, payload, attempts, created_at";

/// An outbox row to write with a journal entry.
pub(crate) struct OutboxRow {
    pub id: Uuid,
    /// The entry's seq.
    pub seq: i64,
    pub event: &'static str,
    /// When the entry was journaled.
    pub at: DateTime<Utc>,
    /// Whether the customer gets a message for the event.
    pub tells_customer: bool,
}

/// The outbox rows `entries` of an order make: one per entry that raises an event.
pub(crate) fn outbox_rows(entries: &[JournalEntry]) -> Vec<OutboxRow> {
    entries
        .iter()
        .filter_map(|entry| {
            NotifyEvent::of_change(&entry.change).map(|event| OutboxRow {
                id: Uuid::now_v7(),
                seq: entry.seq,
                event: event.as_str(),
                at: entry.at,
                tells_customer: event.tells_customer(),
            })
        })
        .collect()
}

/// The condition under which the journal writes an outbox row `x` (columns `order_id`,
/// `merchant_id`, `customer_id`, `tells_customer`): it may become a message — the order's
/// merchant has an enabled webhook endpoint, or the customer is told of the event and gave a
/// phone and consent (at checkout for this order, else on the account). Checked in the journal's
/// own transaction, so an endpoint or a consent counts from the first transition written after
/// it; the notifier decides the rest when it fans the row out (the endpoint's events, WhatsApp
/// set up, the phone valid). Rows that cannot make anything — most, for a marketplace whose
/// merchants use the board and whose customers use the tracking page — are never written,
/// claimed or marked. A macro so that both backends' statements can `concat!` it.
macro_rules! may_make_a_message {
    () => {
        "(EXISTS (SELECT 1 FROM webhook_endpoints w \
            WHERE w.merchant_id = x.merchant_id AND w.disabled_at IS NULL) \
         OR (x.tells_customer AND EXISTS (SELECT 1 FROM users u \
            LEFT JOIN order_contacts c ON c.order_id = x.order_id \
            WHERE u.id = x.customer_id AND COALESCE(c.notify_whatsapp, u.notify_whatsapp) \
            AND COALESCE(c.phone, u.phone) IS NOT NULL)))"
    };
}
pub(crate) use may_make_a_message;

/// SQLite: writes those of `order`'s outbox rows that may become a message (see
/// [`may_make_a_message`]) in the journal's transaction; how many it wrote.
pub(crate) async fn sqlite_insert_outbox(
    tx: &mut sqlx::SqliteConnection,
    order: &Order,
    rows: &[OutboxRow],
) -> Result<u64, StoreError> {
    let mut written = 0;
    for row in rows {
        written += sqlx::query(concat!(
            "INSERT INTO outbox (id, order_id, seq, event, at, created_at) \
             SELECT x.id, x.order_id, x.seq, x.event, x.at, x.at FROM (SELECT $1 AS id, \
                $2 AS order_id, $3 AS seq, $4 AS event, $5 AS at, $6 AS merchant_id, \
                $7 AS customer_id, $8 AS tells_customer) AS x WHERE ",
            may_make_a_message!()
        ))
        .bind(row.id)
        .bind(order.id.as_uuid())
        .bind(row.seq)
        .bind(row.event)
        .bind(row.at)
        .bind(order.merchant_id.as_uuid())
        .bind(order.customer_id.as_uuid())
        .bind(row.tells_customer)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    }
    Ok(written)
}

/// Now, and when a claim made now for `hold` lapses.
fn claim_window(hold: std::time::Duration) -> (DateTime<Utc>, DateTime<Utc>) {
    let now = super::now();
    (
        now,
        now + chrono::Duration::from_std(hold).unwrap_or(chrono::TimeDelta::MAX),
    )
}

impl Store {
    /// The clause that makes concurrent claims skip each other's rows: PostgreSQL locks the
    /// rows it picks (`of` names the table when the query joins); SQLite has one writer at a time
    /// and needs none.
    fn skip_locked(&self, of: &str) -> String {
        match self.backend() {
            Backend::Postgres => format!("FOR UPDATE {of} SKIP LOCKED"),
            Backend::Sqlite => String::new(),
        }
    }

    /// Claims up to `limit` outbox entries not yet fanned out and not held by another notifier,
    /// oldest first, for `hold`.
    pub async fn claim_outbox(
        &self,
        node: &str,
        limit: i64,
        hold: std::time::Duration,
    ) -> Result<Vec<OutboxEntry>, StoreError> {
        let (now, until) = claim_window(hold);
        let lock = self.skip_locked("");
        let rows: Vec<OutboxRecord> = on_writer!(self, |pool| {
            sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "UPDATE outbox SET claimed_by = $1, claimed_until = $2 WHERE id IN ( \
                   SELECT id FROM outbox WHERE fanned_out_at IS NULL \
                   AND (claimed_until IS NULL OR claimed_until < $3) \
                   ORDER BY created_at LIMIT $4 {lock}) \
                 RETURNING id, order_id, seq, event, at"
            )))
            .bind(node)
            .bind(until)
            .bind(now)
            .bind(limit)
            .fetch_all(pool)
            .await?
        });
        let mut entries = rows
            .into_iter()
            .map(OutboxEntry::try_from)
            .collect::<Result<Vec<_>, _>>()?;
        entries.sort_by_key(|e| (e.at, e.seq));
        Ok(entries)
    }

    /// Makes `entry`'s notifications and marks it fanned out, in one transaction. Running it
    /// twice (two notifiers, a crash in between) makes each notification once: one per
    /// destination.
    pub async fn fan_out(
        &self,
        entry: &OutboxEntry,
        notifications: &[NewNotification],
    ) -> Result<(), StoreError> {
        let now = super::now();
        const MARK_FANNED_OUT: &str = "UPDATE outbox SET fanned_out_at = $2, claimed_by = NULL, \
            claimed_until = NULL WHERE id = $1 AND fanned_out_at IS NULL";
        // Nothing to make (the usual case): one statement, no transaction needed.
        if notifications.is_empty() {
            return self.mark_fanned_out(&[entry.id]).await;
        }
        on_writer!(self, |pool| {
            let mut tx = pool.begin().await?;
            for new in notifications {
                sqlx::query(
                    "INSERT INTO notifications (id, outbox_id, order_id, seq, event, channel, \
                     destination, endpoint_id, payload, state, attempts, next_attempt_at, created_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 'pending', 0, $10, $11) \
                     ON CONFLICT (outbox_id, destination) DO NOTHING",
                )
                .bind(Uuid::now_v7())
                .bind(entry.id)
                .bind(entry.order_id.as_uuid())
                .bind(entry.seq)
                .bind(entry.event.as_str())
                .bind(new.channel.as_str())
                .bind(&new.destination)
                .bind(new.endpoint_id)
                .bind(Json(&new.payload))
                .bind(now)
                .bind(entry.at)
                .execute(&mut *tx)
                .await?;
            }
            sqlx::query(MARK_FANNED_OUT)
                .bind(entry.id)
                .bind(now)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
        });
        Ok(())
    }

    /// Marks outbox entries that make no notification fanned out, all in one statement
    /// (entries another notifier finished meanwhile are left as they are).
    pub async fn mark_fanned_out(&self, entries: &[Uuid]) -> Result<(), StoreError> {
        if entries.is_empty() {
            return Ok(());
        }
        let now = super::now();
        // PostgreSQL takes the ids as one array: one prepared statement whatever their number.
        if let Pool::Postgres(pool) = self.writer()? {
            sqlx::query(
                "UPDATE outbox SET fanned_out_at = $1, claimed_by = NULL, claimed_until = NULL \
                 WHERE fanned_out_at IS NULL AND id = ANY($2)",
            )
            .bind(now)
            .bind(entries)
            .execute(pool)
            .await?;
            return Ok(());
        }
        on_writer!(self, |pool| {
            let mut update = sqlx::QueryBuilder::new("UPDATE outbox SET fanned_out_at = ");
            update.push_bind(now).push(
                ", claimed_by = NULL, claimed_until = NULL WHERE fanned_out_at IS NULL AND id IN (",
            );
            let mut ids = update.separated(", ");
            for id in entries {
                ids.push_bind(*id);
            }
            update.push(")");
            update.build().execute(pool).await?;
        });
        Ok(())
    }

    /// Claims up to `limit` due notifications on `channels` for `hold`: for each order and
    /// destination only the earliest unsent one, and none while an earlier entry of its order
    /// waits in the outbox — so a destination gets an order's messages in order.
    pub async fn claim_notifications(
        &self,
        node: &str,
        channels: &[Channel],
        limit: i64,
        hold: std::time::Duration,
    ) -> Result<Vec<Notification>, StoreError> {
        if channels.is_empty() {
            return Ok(Vec::new());
        }
        let (now, until) = claim_window(hold);
        let channels = channels
            .iter()
            .map(|c| format!("'{}'", c.as_str()))
            .collect::<Vec<_>>()
            .join(", ");
        let lock = self.skip_locked("OF n");
        let rows: Vec<NotificationRow> = on_writer!(self, |pool| {
            sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "UPDATE notifications SET claimed_by = $1, claimed_until = $2 WHERE id IN ( \
                   SELECT n.id FROM notifications n \
                   WHERE n.state = 'pending' AND n.next_attempt_at <= $3 \
                   AND n.channel IN ({channels}) \
                   AND (n.claimed_until IS NULL OR n.claimed_until < $3) \
                   AND NOT EXISTS (SELECT 1 FROM notifications e WHERE e.order_id = n.order_id \
                       AND e.destination = n.destination AND e.seq < n.seq AND e.state = 'pending') \
                   AND NOT EXISTS (SELECT 1 FROM outbox o WHERE o.order_id = n.order_id \
                       AND o.seq < n.seq AND o.fanned_out_at IS NULL) \
                   ORDER BY n.next_attempt_at LIMIT $4 {lock}) \
                 RETURNING {NOTIFICATION_COLUMNS}"
            )))
            .bind(node)
            .bind(until)
            .bind(now)
            .bind(limit)
            .fetch_all(pool)
            .await?
        });
        let mut claimed = rows
            .into_iter()
            .map(Notification::try_from)
            .collect::<Result<Vec<_>, _>>()?;
        claimed.sort_by_key(|n| (n.created_at, n.seq));
        Ok(claimed)
    }

    /// Records an attempt (when one was made) and the notification's next step, releasing the
    /// claim. The step is applied only while `node` still holds the claim; returns whether it was.
    pub async fn record_notification(
        &self,
        id: Uuid,
        node: &str,
        attempt: Option<&AttemptRecord>,
        next: &NextStep,
    ) -> Result<bool, StoreError> {
        let now = super::now();
        let (state, attempts, due, error, sent_as, provider_id, sent_at) = match next {
            NextStep::Sent {
                sent_as,
                provider_id,
            } => (
                "sent",
                None,
                None,
                None,
                Some(sent_as.as_str()),
                provider_id.as_deref(),
                Some(now),
            ),
            NextStep::Retry {
                at,
                attempts,
                error,
            } => (
                "pending",
                Some(*attempts),
                Some(*at),
                Some(error.as_str()),
                None,
                None,
                None,
            ),
            NextStep::Failed { attempts, error } => (
                "failed",
                Some(*attempts),
                None,
                Some(error.as_str()),
                None,
                None,
                None,
            ),
            NextStep::Cancelled { reason } => (
                "cancelled",
                None,
                None,
                Some(reason.as_str()),
                None,
                None,
                None,
            ),
            NextStep::Deferred { at } => ("pending", None, Some(*at), None, None, None, None),
        };
        let applied = on_writer!(self, |pool| {
            let mut tx = pool.begin().await?;
            if let Some(attempt) = attempt {
                sqlx::query(
                    "INSERT INTO notification_attempts (id, notification_id, at, outcome, \
                     status_code, latency_ms, error) VALUES ($1, $2, $3, $4, $5, $6, $7)",
                )
                .bind(Uuid::now_v7())
                .bind(id)
                .bind(attempt.at)
                .bind(&attempt.outcome)
                .bind(attempt.status_code)
                .bind(attempt.latency_ms)
                .bind(attempt.error.as_deref())
                .execute(&mut *tx)
                .await?;
            }
            let moved = sqlx::query(
                "UPDATE notifications SET state = $3, \
                 attempts = COALESCE($4, attempts + $5), \
                 next_attempt_at = COALESCE($6, next_attempt_at), \
                 last_error = COALESCE($7, last_error), sent_as = COALESCE($8, sent_as), \
                 provider_id = COALESCE($9, provider_id), sent_at = COALESCE($10, sent_at), \
                 claimed_by = NULL, claimed_until = NULL \
                 WHERE id = $1 AND claimed_by = $2",
            )
            .bind(id)
            .bind(node)
            .bind(state)
            .bind(attempts)
            .bind(i32::from(attempt.is_some()))
            .bind(due)
            .bind(error)
            .bind(sent_as)
            .bind(provider_id)
            .bind(sent_at)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            tx.commit().await?;
            moved == 1
        });
        Ok(applied)
    }

    /// Seconds the oldest due, unsent work has waited: an outbox entry not fanned out, or a
    /// notification due and not sent. Zero when nothing waits.
    pub async fn notification_lag_seconds(&self) -> Result<f64, StoreError> {
        let now = super::now();
        let oldest: (Option<DateTime<Utc>>, Option<DateTime<Utc>>) = on_pool!(self, |pool| {
            sqlx::query_as(
                "SELECT (SELECT MIN(created_at) FROM outbox WHERE fanned_out_at IS NULL), \
                 (SELECT MIN(next_attempt_at) FROM notifications WHERE state = 'pending' \
                  AND next_attempt_at <= $1)",
            )
            .bind(now)
            .fetch_one(pool)
            .await?
        });
        let oldest = [oldest.0, oldest.1].into_iter().flatten().min();
        Ok(oldest.map_or(0.0, |at| {
            (now - at).num_milliseconds().max(0) as f64 / 1_000.0
        }))
    }

    /// Deletes what is done and older than `before`: finished notifications (sent, failed,
    /// cancelled) with their attempts, and fanned-out outbox rows nothing refers to any more.
    /// Returns how many notifications went.
    pub async fn prune_notifications(&self, before: DateTime<Utc>) -> Result<u64, StoreError> {
        let pruned = on_writer!(self, |pool| {
            let mut tx = pool.begin().await?;
            sqlx::query(
                "DELETE FROM notification_attempts WHERE notification_id IN (SELECT id FROM \
                 notifications WHERE state <> 'pending' AND created_at < $1)",
            )
            .bind(before)
            .execute(&mut *tx)
            .await?;
            let pruned = sqlx::query(
                "DELETE FROM notifications WHERE state <> 'pending' AND created_at < $1",
            )
            .bind(before)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            sqlx::query(
                "DELETE FROM outbox WHERE fanned_out_at IS NOT NULL AND fanned_out_at < $1 \
                 AND NOT EXISTS (SELECT 1 FROM notifications n WHERE n.outbox_id = outbox.id)",
            )
            .bind(before)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            pruned
        });
        Ok(pruned)
    }

    /// The messages sent, or to be sent, about an order, in the order they were made.
    pub async fn order_notifications(
        &self,
        order: OrderId,
    ) -> Result<Vec<NotificationSummary>, StoreError> {
        #[allow(clippy::type_complexity)]
        let rows: Vec<(
            Uuid,
            String,
            String,
            String,
            Option<String>,
            Option<DateTime<Utc>>,
        )> = on_pool!(self, |pool| {
            sqlx::query_as(
                "SELECT outbox_id, channel, event, state, provider_status, sent_at \
                     FROM notifications WHERE order_id = $1 ORDER BY seq, channel, created_at",
            )
            .bind(order.as_uuid())
            .fetch_all(pool)
            .await?
        });
        rows.into_iter()
            .map(
                |(outbox_id, channel, event, state, provider_status, sent_at)| {
                    Ok(NotificationSummary {
                        message_id: crate::domain::notification::message_id(outbox_id),
                        channel: Channel::parse(&channel)?.as_str(),
                        event: parse_event(&event)?,
                        state,
                        provider_status,
                        sent_at,
                    })
                },
            )
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::sqlite_store;
    use super::*;
    use crate::domain::{Cents, Change, NewOrder, Order, Phone, Position, Role};
    use crate::store::NewUser;

    /// An order placed at a merchant with a webhook endpoint for every event, so that each of
    /// its entries that raises an event gets an outbox row.
    async fn placed_order(store: &Store) -> (Order, JournalEntry) {
        let user = |email: &str, role| NewUser {
            email: crate::domain::Email::parse(email).unwrap(),
            name: "Cee".into(),
            role,
            password_hash: "x".into(),
        };
        let customer = store
            .create_user(user("c@example.com", Role::Customer))
            .await
            .unwrap();
        let owner = store
            .create_user(user("m@example.com", Role::Merchant))
            .await
            .unwrap();
        let at = crate::store::now();
        let here = Position {
            lat: 60.17,
            lon: 24.94,
        };
        let merchant = store
            .create_merchant(owner.id, "Kallio Kitchen", "Fleminginkatu 1", here)
            .await
            .unwrap();
        store
            .create_webhook_endpoint(crate::store::NewWebhookEndpoint {
                merchant_id: merchant.id,
                url: "https://pos.example.com/hook".into(),
                events: crate::domain::NotifyEvent::ALL.to_vec(),
                secret: "whsec_test".into(),
            })
            .await
            .unwrap();
        Order::place(
            NewOrder {
                id: OrderId::new(),
                merchant_id: merchant.id,
                customer_id: customer.id,
                items: vec![],
                delivery_fee_cents: Cents(0),
                total_cents: Cents(1_000),
                pickup: here,
                dropoff: here,
                dropoff_address: "Mannerheimintie 1".into(),
                pickup_address: String::new(),
            },
            "helsinki".into(),
            at,
        )
    }

    #[tokio::test]
    async fn the_outbox_is_written_with_the_journal_and_sends_in_order_per_destination() {
        let (store, dir) = sqlite_store();
        store.migrate().await.unwrap();
        let (order, first) = placed_order(&store).await;
        store.create_order(&order, &first).await.unwrap();
        let mut after = order.clone();
        let accepted = after
            .decide(
                Change::MerchantAccepted { prep_minutes: 5 },
                crate::store::now(),
            )
            .unwrap();
        after.apply(&accepted).unwrap();
        let search = after
            .decide(Change::SearchStarted, crate::store::now())
            .unwrap();
        after.apply(&search).unwrap();
        store.append(&after, &[accepted, search]).await.unwrap();

        let hold = std::time::Duration::from_secs(60);
        let claimed = store.claim_outbox("a", 10, hold).await.unwrap();
        let events: Vec<_> = claimed.iter().map(|e| e.event.as_str()).collect();
        assert_eq!(
            events,
            ["order.placed", "order.accepted"],
            "searching raises nothing"
        );
        assert!(
            store.claim_outbox("b", 10, hold).await.unwrap().is_empty(),
            "held by a"
        );
        for entry in &claimed {
            let to = |destination: &str| NewNotification {
                channel: Channel::Webhook,
                destination: destination.into(),
                endpoint_id: None,
                payload: serde_json::json!({"seq": entry.seq}),
            };
            store.fan_out(entry, &[to("x"), to("y")]).await.unwrap();
            store.fan_out(entry, &[to("x")]).await.unwrap();
        }
        assert!(
            store.claim_outbox("b", 10, hold).await.unwrap().is_empty(),
            "fanned out"
        );

        let first_round = store
            .claim_notifications("a", &[Channel::Webhook], 10, hold)
            .await
            .unwrap();
        let seen: Vec<_> = first_round
            .iter()
            .map(|n| (n.seq, n.destination.as_str()))
            .collect();
        assert_eq!(
            seen,
            [(1, "x"), (1, "y")],
            "one per destination, the earliest first"
        );
        let sent = NextStep::Sent {
            sent_as: "webhook".into(),
            provider_id: None,
        };
        assert!(
            store
                .record_notification(first_round[0].id, "a", None, &sent)
                .await
                .unwrap()
        );
        assert!(
            !store
                .record_notification(first_round[1].id, "b", None, &sent)
                .await
                .unwrap(),
            "not b's claim"
        );
        let second_round = store
            .claim_notifications("a", &[Channel::Webhook], 10, hold)
            .await
            .unwrap();
        let seen: Vec<_> = second_round
            .iter()
            .map(|n| (n.seq, n.destination.as_str()))
            .collect();
        assert_eq!(seen, [(2, "x")], "y waits for its first message");
        assert!(store.notification_lag_seconds().await.unwrap() >= 0.0);
        store.close().await;
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn whatsapp_statuses_never_move_back_and_the_window_opens_with_an_inbound_message() {
        let (store, dir) = sqlite_store();
        store.migrate().await.unwrap();
        let (order, first) = placed_order(&store).await;
        store.create_order(&order, &first).await.unwrap();
        let hold = std::time::Duration::from_secs(60);
        let entry = store.claim_outbox("a", 1, hold).await.unwrap().remove(0);
        let to_phone = NewNotification {
            channel: Channel::WhatsApp,
            destination: "+358401234567".into(),
            endpoint_id: None,
            payload: serde_json::json!({}),
        };
        store.fan_out(&entry, &[to_phone]).await.unwrap();
        let claimed = store
            .claim_notifications("a", &[Channel::WhatsApp], 1, hold)
            .await
            .unwrap();
        let sent = NextStep::Sent {
            sent_as: "template".into(),
            provider_id: Some("wamid.ABC".into()),
        };
        assert!(
            store
                .record_notification(claimed[0].id, "a", None, &sent)
                .await
                .unwrap()
        );
        let at = crate::store::now();
        assert!(
            store
                .record_whatsapp_status("wamid.ABC", "read", at, None)
                .await
                .unwrap()
        );
        assert!(
            store
                .record_whatsapp_status("wamid.ABC", "delivered", at, None)
                .await
                .unwrap()
        );
        assert!(
            !store
                .record_whatsapp_status("wamid.OTHER", "read", at, None)
                .await
                .unwrap()
        );
        let shown = store.order_notifications(order.id).await.unwrap();
        assert_eq!(shown.len(), 1);
        assert_eq!(
            shown[0].provider_status.as_deref(),
            Some("read"),
            "read is not undone by a late delivered"
        );
        assert_eq!(shown[0].state, "sent");
        assert!(
            store
                .record_whatsapp_status("wamid.ABC", "failed", at, Some("131026"))
                .await
                .unwrap()
        );
        let shown = store.order_notifications(order.id).await.unwrap();
        assert_eq!(shown[0].provider_status.as_deref(), Some("failed"));

        let phone = Phone::parse("+358401234567").unwrap();
        assert_eq!(store.whatsapp_last_inbound(&phone).await.unwrap(), None);
        let earlier = at - chrono::Duration::hours(1);
        store.record_whatsapp_inbound(&phone, at).await.unwrap();
        store
            .record_whatsapp_inbound(&phone, earlier)
            .await
            .unwrap();
        assert_eq!(
            store.whatsapp_last_inbound(&phone).await.unwrap(),
            Some(at),
            "a late redelivery does not move it back"
        );
        store.close().await;
        std::fs::remove_dir_all(dir).unwrap();
    }
}
