//! The notifier: one background loop per replica that claims outbox entries and fans them out,
//! then claims due notifications (for each order and destination only the earliest) and sends
//! them, several at once, recording every attempt and what comes next. Woken by every journal
//! write that notifies, and every half second besides for work of other replicas and retries.
//! A claim is held for `MEALKITZ_NOTIFIER_CLAIM_SECS`: a replica that dies mid-send leaves its
//! messages to another once it lapses, and they go out with the same id.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;

use super::Outcome;
use super::fanout::{may_tell_customer, notifications_for};
use super::webhook::Webhooks;
use super::whatsapp::{TOKEN_PAUSE, WhatsApp};
use crate::config::NotifyConfig;
use crate::maps::Maps;
use crate::store::{AttemptRecord, Channel, NextStep, Notification, Store};
use crate::tasks::Tasks;

/// How often the notifier looks for work when nothing woke it.
const POLL_INTERVAL: Duration = Duration::from_millis(500);
/// A woken notifier starts its next round at least this long after the last one started: at
/// 200 orders a second the journal wakes it ~1,200 times a second, and a round per wake cost
/// PostgreSQL two claims each, mostly finding one entry. Ten milliseconds gather them.
const ROUND_MIN_GAP: Duration = Duration::from_millis(10);
/// Outbox entries fanned out per round.
const OUTBOX_BATCH: i64 = 100;
/// Notifications claimed per round.
const SEND_BATCH: i64 = 64;
/// Messages in flight at once.
const SENDS_IN_FLIGHT: usize = 16;
/// The lag gauge is refreshed at most this often.
const LAG_REFRESH: Duration = Duration::from_secs(1);
/// Finished messages (and their attempts) are kept this long for the deliveries list, then
/// pruned.
pub const NOTIFICATION_RETENTION_DAYS: i64 = 30;
/// How often the prune runs.
const PRUNE_INTERVAL: Duration = Duration::from_secs(3_600);

/// The notifier of this replica; `/ready` asks it how it is.
pub struct Notifier {
    store: Store,
    maps: Arc<Maps>,
    config: NotifyConfig,
    node: String,
    whatsapp: Option<WhatsApp>,
    webhooks: Webhooks,
}

impl Notifier {
    pub fn new(store: Store, maps: Arc<Maps>, config: NotifyConfig, node: String) -> Notifier {
        let whatsapp = WhatsApp::new(&config);
        let webhooks = Webhooks::new(config.webhook_allow_private);
        Notifier {
            store,
            maps,
            config,
            node,
            whatsapp,
            webhooks,
        }
    }

    /// For `/ready`: `ok`, or what is degraded (never failing readiness).
    pub fn health(&self) -> String {
        match &self.whatsapp {
            Some(whatsapp) if whatsapp.is_paused() => format!(
                "degraded: WhatsApp refused the access token; the channel is paused (tried again every {} min) and messages wait",
                TOKEN_PAUSE.as_secs() / 60
            ),
            _ => "ok".to_owned(),
        }
    }

    /// Starts the loop; returns the notifier for `/ready`.
    pub fn spawn(self, tasks: &Tasks) -> Arc<Notifier> {
        let notifier = Arc::new(self);
        let running = notifier.clone();
        let signal = notifier.store.outbox_signal();
        metrics::gauge!("whatsapp_channel_paused").set(0.0);
        tasks.spawn_watching(|stop| async move {
            let mut lag_refreshed: Option<Instant> = None;
            let mut pruned: Option<Instant> = None;
            let mut last_round = tokio::time::Instant::now();
            loop {
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = signal.notified() => {}
                    () = tokio::time::sleep(POLL_INTERVAL) => {}
                }
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep_until(last_round + ROUND_MIN_GAP) => {}
                }
                if !running.store.is_migrated() {
                    continue;
                }
                // Drain: a round that found work is followed by another at once; the lag is
                // measured and old messages pruned between rounds when due, busy or not.
                loop {
                    last_round = tokio::time::Instant::now();
                    let done = running.round().await;
                    if lag_refreshed.is_none_or(|at| at.elapsed() >= LAG_REFRESH) {
                        lag_refreshed = Some(Instant::now());
                        running.measure_lag().await;
                    }
                    if pruned.is_none_or(|at| at.elapsed() >= PRUNE_INTERVAL) {
                        pruned = Some(Instant::now());
                        running.prune().await;
                    }
                    if done == 0 || stop.is_cancelled() {
                        break;
                    }
                }
            }
        });
        notifier
    }

    async fn measure_lag(&self) {
        match self.store.notification_lag_seconds().await {
            Ok(lag) => metrics::gauge!("notifier_lag_seconds").set(lag),
            Err(error) => tracing::debug!(error = %error, "cannot measure the notifier's lag"),
        }
    }

    /// Deletes finished messages older than [`NOTIFICATION_RETENTION_DAYS`].
    async fn prune(&self) {
        let before = crate::store::now() - chrono::Duration::days(NOTIFICATION_RETENTION_DAYS);
        match self.store.prune_notifications(before).await {
            Ok(0) => {}
            Ok(count) => tracing::info!(count, "pruned finished notifications older than 30 days"),
            Err(error) => tracing::debug!(error = %error, "cannot prune notifications"),
        }
    }

    /// One round: fan out what the outbox holds, then send what is due. Returns how much it did.
    async fn round(&self) -> usize {
        let mut done = 0;
        match self
            .store
            .claim_outbox(&self.node, OUTBOX_BATCH, self.config.claim)
            .await
        {
            Ok(entries) => {
                // Entries that can make nothing (no endpoint at their merchant, nothing the
                // customer is told of) are marked done together; the rest one by one.
                let orders: Vec<_> = entries.iter().map(|e| e.order_id).collect();
                let entries = match self.store.orders_with_webhook_endpoints(&orders).await {
                    Ok(with_endpoints) => {
                        let (quiet, busy): (Vec<_>, Vec<_>) =
                            entries.into_iter().partition(|entry| {
                                !with_endpoints.contains(&entry.order_id)
                                    && !may_tell_customer(&self.config, entry)
                            });
                        let ids: Vec<_> = quiet.iter().map(|entry| entry.id).collect();
                        match self.store.mark_fanned_out(&ids).await {
                            Ok(()) => done += ids.len(),
                            Err(error) => {
                                tracing::warn!(error = %error, entries = ids.len(), "cannot mark outbox entries done; will retry")
                            }
                        }
                        busy
                    }
                    Err(error) => {
                        tracing::debug!(error = %error, "cannot look up webhook endpoints; fanning out one by one");
                        entries
                    }
                };
                for entry in entries {
                    let made = match notifications_for(
                        &self.store,
                        &self.maps,
                        &self.config,
                        &entry,
                    )
                    .await
                    {
                        Ok(made) => made,
                        Err(error) => {
                            tracing::warn!(error = %error, order_id = %entry.order_id, "cannot fan out an outbox entry; will retry");
                            continue;
                        }
                    };
                    match self.store.fan_out(&entry, &made).await {
                        Ok(()) => done += 1,
                        Err(error) => {
                            tracing::warn!(error = %error, order_id = %entry.order_id, "cannot store notifications; will retry")
                        }
                    }
                }
            }
            Err(error) => tracing::debug!(error = %error, "cannot claim outbox entries"),
        }
        let mut channels = vec![Channel::Webhook];
        if self.whatsapp.as_ref().is_some_and(|w| !w.is_paused()) {
            channels.push(Channel::WhatsApp);
        }
        let claimed = match self
            .store
            .claim_notifications(&self.node, &channels, SEND_BATCH, self.config.claim)
            .await
        {
            Ok(claimed) => claimed,
            Err(error) => {
                tracing::debug!(error = %error, "cannot claim notifications");
                return done;
            }
        };
        done += claimed.len();
        futures_util::stream::iter(claimed)
            .for_each_concurrent(SENDS_IN_FLIGHT, |notification| async move {
                self.deliver(&notification).await;
            })
            .await;
        done
    }

    /// Sends one notification and records the attempt and what comes next.
    async fn deliver(&self, notification: &Notification) {
        let started = Instant::now();
        let at = crate::store::now();
        let (attempt, next) = match notification.channel {
            Channel::WhatsApp => match &self.whatsapp {
                Some(channel) => step(channel.send(&self.store, notification).await),
                None => (
                    None,
                    NextStep::Deferred {
                        at: at + chrono::Duration::seconds(60),
                    },
                ),
            },
            Channel::Webhook => step(self.webhooks.send(&self.store, notification).await),
        };
        let latency_ms = started.elapsed().as_millis() as i64;
        let attempt = attempt.map(
            |(outcome, status, error): (&str, Option<u16>, Option<String>)| AttemptRecord {
                at,
                outcome: outcome.to_owned(),
                status_code: status.map(i32::from),
                latency_ms,
                error,
            },
        );
        let channel = notification.channel.as_str();
        if let Some(attempt) = &attempt {
            metrics::counter!("notifications_total", "channel" => channel, "outcome" => attempt.outcome.clone())
                .increment(1);
            metrics::histogram!("notification_attempt_seconds", "channel" => channel)
                .record(started.elapsed().as_secs_f64());
        }
        if let NextStep::Sent { .. } = next {
            let waited = (chrono::Utc::now() - notification.created_at)
                .num_milliseconds()
                .max(0);
            metrics::histogram!("notification_delivery_seconds", "channel" => channel)
                .record(waited as f64 / 1_000.0);
        }
        match self
            .store
            .record_notification(notification.id, &self.node, attempt.as_ref(), &next)
            .await
        {
            Ok(true) => {}
            Ok(false) => tracing::info!(
                notification_id = %notification.id,
                "a notification's claim lapsed while it was sent; another replica may send it again (same id)"
            ),
            Err(error) => tracing::warn!(
                error = %error,
                notification_id = %notification.id,
                "cannot record a notification attempt; it will be sent again (same id)"
            ),
        }
    }
}

type Attempt = Option<(&'static str, Option<u16>, Option<String>)>;

fn due_in(after: Duration) -> chrono::DateTime<chrono::Utc> {
    crate::store::now() + chrono::Duration::from_std(after).unwrap_or(chrono::TimeDelta::MAX)
}

fn step(outcome: Outcome) -> (Attempt, NextStep) {
    match outcome {
        Outcome::Sent(sent) => (
            Some(("sent", sent.status, sent.note)),
            NextStep::Sent {
                sent_as: sent.sent_as.to_owned(),
                provider_id: sent.provider_id,
            },
        ),
        Outcome::Retry {
            after,
            attempts,
            outcome,
            status,
            error,
        } => (
            Some((outcome, status, Some(error.clone()))),
            NextStep::Retry {
                at: due_in(after),
                attempts,
                error,
            },
        ),
        Outcome::Failed {
            attempts,
            outcome,
            status,
            error,
        } => (
            Some((outcome, status, Some(error.clone()))),
            NextStep::Failed { attempts, error },
        ),
        // A 410 (or the last failure before five days of them) is an attempt; an endpoint
        // removed or disabled before the attempt is none.
        Outcome::Cancelled { status, reason } => (
            status.map(|status| {
                let outcome = if status == 410 { "gone" } else { "disabled" };
                (outcome, Some(status), Some(reason.clone()))
            }),
            NextStep::Cancelled { reason },
        ),
        Outcome::Paused { status, error } => (
            Some(("token_expired", status, Some(error))),
            NextStep::Deferred {
                at: due_in(TOKEN_PAUSE),
            },
        ),
    }
}
