//! The simulator's stand-ins for the notification service's far ends, and what they measured: a
//! WhatsApp Graph API that takes `POST /{version}/{phone_number_id}/messages` and answers as
//! WhatsApp does, and a merchants' webhook receiver that checks each delivery's Standard Webhooks
//! signature — each on 127.0.0.1, port 0, recording when every message arrived. From those
//! records: messages per second on each channel, the notifier's lag (arrival minus the time of
//! the journal entry that raised the message), duplicates, signature failures, and whether each
//! order's messages arrived in the order of its transitions.
//!
//! The Graph API stand-in also hands each message to the simulated WhatsApp customer it is for
//! (by the `to` digits, when one [`StandIns::listen`]s), and the engine is given the app secret
//! those customers sign their webhook calls with; their conversation's replies are no
//! notifications, and the figures leave them out.
//!
//! Timing a WhatsApp message: the webhook body carries the journal entry's time (`timestamp`), and
//! a WhatsApp message carries the same message id (`biz_opaque_callback_data` = `webhook-id`,
//! one id per journal entry), so each WhatsApp message is timed by the webhook of its entry.
//! Both ends read the same clock: the engine runs on this machine.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::dev::ServerHandle;
use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use anyhow::Context;
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Value, json};

use super::summary::Summary;
use crate::config::NotifyConfig;
use crate::config::Secret;
use crate::config::notify::WhatsAppAccount;
use crate::domain::NotifyEvent;
use crate::notify::signing::verify;

/// The business phone number id the engine is given.
pub const STAND_IN_PHONE_NUMBER_ID: &str = "1234567890";
/// The access token the engine is given, and the only one the Graph API stand-in takes.
pub const STAND_IN_TOKEN: &str = "sim-token-0123456789abcdef";
/// The Meta app secret the engine is given: simulated WhatsApp customers sign with it.
pub const STAND_IN_APP_SECRET: &str = "sim-app-secret-0123456789abcdef";
/// Where the receiver takes merchant `n`'s deliveries: `/sim-hooks/{n}`.
pub const WEBHOOK_PATH_PREFIX: &str = "/sim-hooks/";
/// How far a delivery's `webhook-timestamp` may be from the receiver's clock (Standard Webhooks'
/// replay tolerance).
const TIMESTAMP_TOLERANCE_SECS: i64 = 300;

/// One message at the Graph API stand-in.
#[derive(Debug, Clone)]
pub struct WhatsAppArrival {
    pub at: DateTime<Utc>,
    /// `biz_opaque_callback_data`: the notifier's message id.
    pub message_id: Option<String>,
    /// `text` or `template`.
    pub kind: String,
    /// The recipient's digits.
    pub to: String,
}

/// One delivery at the webhook receiver whose signature checked out.
#[derive(Debug, Clone)]
pub struct WebhookArrival {
    pub at: DateTime<Utc>,
    /// The merchant (by its place in the simulation) whose endpoint it reached.
    pub merchant: usize,
    pub webhook_id: String,
    /// `type`, e.g. `order.accepted`.
    pub event: String,
    /// `timestamp`: when the journal entry that raised it was written.
    pub journal_at: Option<DateTime<Utc>>,
    pub order_id: String,
    /// How many entries the order's timeline had right after that journal entry: with
    /// `journal_at`, the entry's place among the order's transitions.
    pub timeline_len: usize,
}

impl WebhookArrival {
    /// The raising journal entry's place among its order's transitions.
    fn rank(&self) -> (Option<DateTime<Utc>>, usize) {
        (self.journal_at, self.timeline_len)
    }
}

/// A message at the Graph API stand-in, handed to the WhatsApp customer it is for.
#[derive(Debug, Clone)]
pub struct BotArrival {
    pub at: Instant,
    /// The Cloud API message as the engine sent it.
    pub body: Value,
}

#[derive(Debug, Default)]
struct Records {
    whatsapp: Vec<WhatsAppArrival>,
    webhooks: Vec<WebhookArrival>,
    /// Deliveries refused: no secret for the path, a stale timestamp or a bad signature.
    signature_failures: u64,
    /// Graph API calls with the wrong token or phone number id.
    auth_failures: u64,
    /// Merchant → its endpoint's secret.
    secrets: HashMap<usize, String>,
    /// Digits of a simulated WhatsApp customer → where its messages go.
    chats: HashMap<String, tokio::sync::mpsc::UnboundedSender<BotArrival>>,
}

struct Inner {
    records: Arc<Mutex<Records>>,
    whatsapp_url: String,
    webhook_base: String,
    servers: Vec<ServerHandle>,
}

/// The two stand-ins, running; clones share them.
#[derive(Clone)]
pub struct StandIns {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for StandIns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StandIns")
            .field("whatsapp_url", &self.inner.whatsapp_url)
            .field("webhook_base", &self.inner.webhook_base)
            .finish()
    }
}

type Shared = web::Data<Mutex<Records>>;

fn lock(records: &Mutex<Records>) -> std::sync::MutexGuard<'_, Records> {
    records.lock().unwrap_or_else(|e| e.into_inner())
}

/// One small HTTP server on 127.0.0.1, port 0: its base URL and handle.
fn serve(
    records: Shared,
    routes: fn(&mut web::ServiceConfig),
) -> anyhow::Result<(String, ServerHandle)> {
    let listener = TcpListener::bind("127.0.0.1:0").context("cannot bind a stand-in")?;
    let url = format!("http://{}", listener.local_addr()?);
    let server = HttpServer::new(move || App::new().app_data(records.clone()).configure(routes))
        .workers(1)
        .disable_signals()
        .shutdown_timeout(1)
        .listen(listener)?
        .run();
    let handle = server.handle();
    actix_web::rt::spawn(server);
    Ok((url, handle))
}

/// Customer `i`'s phone number: Finnish mobile, one per customer.
pub fn customer_phone(i: usize) -> String {
    format!("+3584{:08}", i % 100_000_000)
}

impl StandIns {
    /// Starts both stand-ins (on an actix runtime).
    pub async fn start() -> anyhow::Result<StandIns> {
        let records = Arc::new(Mutex::new(Records::default()));
        let (whatsapp_url, graph) = serve(web::Data::from(records.clone()), |routes| {
            routes.route(
                "/{version}/{phone_number_id}/messages",
                web::post().to(whatsapp_message),
            );
        })?;
        let (webhook_base, receiver) = serve(web::Data::from(records.clone()), |routes| {
            routes.route("/sim-hooks/{merchant}", web::post().to(webhook_delivery));
        })?;
        Ok(StandIns {
            inner: Arc::new(Inner {
                records,
                whatsapp_url,
                webhook_base,
                servers: vec![graph, receiver],
            }),
        })
    }

    /// Points an engine's notification settings at the stand-ins: the Graph API's address, an
    /// account, and webhooks allowed to a loopback address.
    pub fn configure(&self, notify: &mut NotifyConfig) {
        notify.whatsapp_api_url = self.inner.whatsapp_url.clone();
        notify.whatsapp = Some(WhatsAppAccount {
            phone_number_id: STAND_IN_PHONE_NUMBER_ID.to_owned(),
            token: Secret::new(STAND_IN_TOKEN),
        });
        notify.webhook_allow_private = true;
        notify.whatsapp_app_secret = Some(Secret::new(STAND_IN_APP_SECRET));
    }

    /// Every message the Graph API stand-in takes for `digits` from now on, as it arrives; a
    /// second call for the same digits takes them over.
    pub fn listen(&self, digits: &str) -> tokio::sync::mpsc::UnboundedReceiver<BotArrival> {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        lock(&self.inner.records)
            .chats
            .insert(digits.to_owned(), tx);
        rx
    }

    /// The Graph API stand-in's base URL.
    pub fn whatsapp_url(&self) -> &str {
        &self.inner.whatsapp_url
    }

    /// Where merchant `merchant` (its place in the simulation) registers its endpoint.
    pub fn webhook_url(&self, merchant: usize) -> String {
        format!("{}{WEBHOOK_PATH_PREFIX}{merchant}", self.inner.webhook_base)
    }

    /// The secret the engine gave merchant `merchant`'s endpoint: its deliveries are checked
    /// with it.
    pub fn register_secret(&self, merchant: usize, secret: String) {
        lock(&self.inner.records).secrets.insert(merchant, secret);
    }

    /// Every message at the Graph API stand-in, in the order they arrived.
    pub fn whatsapp_arrivals(&self) -> Vec<WhatsAppArrival> {
        lock(&self.inner.records).whatsapp.clone()
    }

    /// Every verified delivery at the webhook receiver, in the order they arrived.
    pub fn webhook_arrivals(&self) -> Vec<WebhookArrival> {
        lock(&self.inner.records).webhooks.clone()
    }

    /// Deliveries the receiver refused.
    pub fn signature_failures(&self) -> u64 {
        lock(&self.inner.records).signature_failures
    }

    /// Requests either stand-in took, refused or not.
    fn requests(&self) -> u64 {
        let records = lock(&self.inner.records);
        (records.whatsapp.len() + records.webhooks.len()) as u64
            + records.signature_failures
            + records.auth_failures
    }

    /// Waits for the notifier to finish: until every order in `delivered` was announced on both
    /// channels and nothing arrived for a moment, or nothing arrived for a while, or `limit`.
    pub async fn settle(&self, delivered: &HashSet<String>, limit: Duration) {
        const POLL: Duration = Duration::from_millis(200);
        const QUIET_WHEN_COMPLETE: Duration = Duration::from_secs(1);
        const QUIET_OTHERWISE: Duration = Duration::from_secs(5);
        let started = Instant::now();
        let mut last = (self.requests(), Instant::now());
        while started.elapsed() < limit {
            tokio::time::sleep(POLL).await;
            let requests = self.requests();
            if requests != last.0 {
                last = (requests, Instant::now());
                continue;
            }
            let quiet = last.1.elapsed();
            if quiet >= QUIET_OTHERWISE
                || (quiet >= QUIET_WHEN_COMPLETE
                    && self.figures(delivered).delivered_without_message == 0)
            {
                return;
            }
        }
    }

    /// Stops both servers.
    pub async fn stop(&self) {
        for server in &self.inner.servers {
            server.stop(false).await;
        }
    }

    /// What the stand-ins measured; `delivered` are the orders the simulated drivers delivered.
    pub fn figures(&self, delivered: &HashSet<String>) -> NotifyFigures {
        let records = lock(&self.inner.records);
        figures(&records, delivered)
    }
}

/// `POST /{version}/{phone_number_id}/messages`: recorded, and answered as WhatsApp does.
async fn whatsapp_message(
    request: HttpRequest,
    path: web::Path<(String, String)>,
    body: web::Bytes,
    records: Shared,
) -> HttpResponse {
    let at = Utc::now();
    let arrived = Instant::now();
    let (_version, phone_number_id) = path.into_inner();
    let expected = format!("Bearer {STAND_IN_TOKEN}");
    let token = request
        .headers()
        .get("authorization")
        .and_then(|value| value.to_str().ok());
    if token != Some(expected.as_str()) || phone_number_id != STAND_IN_PHONE_NUMBER_ID {
        lock(&records).auth_failures += 1;
        return HttpResponse::Unauthorized().json(json!({"error": {
            "message": "Invalid OAuth access token - Cannot parse access token",
            "type": "OAuthException", "code": 190, "fbtrace_id": "sim"}}));
    }
    let Ok(message) = serde_json::from_slice::<Value>(&body) else {
        return HttpResponse::BadRequest().json(json!({"error": {
            "message": "(#100) Invalid parameter", "type": "OAuthException", "code": 100,
            "fbtrace_id": "sim"}}));
    };
    let to = message["to"].as_str().unwrap_or_default().to_owned();
    let mut records = lock(&records);
    records.whatsapp.push(WhatsAppArrival {
        at,
        message_id: message["biz_opaque_callback_data"]
            .as_str()
            .map(str::to_owned),
        kind: message["type"].as_str().unwrap_or_default().to_owned(),
        to: to.clone(),
    });
    if let Some(chat) = records.chats.get(&to) {
        // A customer that stopped listening misses nothing it waits for.
        let _ = chat.send(BotArrival {
            at: arrived,
            body: message,
        });
    }
    drop(records);
    HttpResponse::Ok().json(json!({
        "messaging_product": "whatsapp",
        "contacts": [{"input": to, "wa_id": to}],
        "messages": [{"id": format!("wamid.{}", uuid::Uuid::new_v4().simple())}],
    }))
}

/// `POST /sim-hooks/{merchant}`: the signature checked with the merchant's secret (and the
/// timestamp against the clock), then recorded; 401 when either fails.
async fn webhook_delivery(
    request: HttpRequest,
    path: web::Path<usize>,
    body: web::Bytes,
    records: Shared,
) -> HttpResponse {
    let at = Utc::now();
    let merchant = path.into_inner();
    let header = |name: &str| {
        request
            .headers()
            .get(name)
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let (id, timestamp, signature) = (
        header("webhook-id"),
        header("webhook-timestamp"),
        header("webhook-signature"),
    );
    let secret = lock(&records).secrets.get(&merchant).cloned();
    let verified = match (secret, timestamp.parse::<i64>()) {
        (Some(secret), Ok(timestamp)) => {
            (at.timestamp() - timestamp).abs() <= TIMESTAMP_TOLERANCE_SECS
                && verify(&secret, &id, timestamp, &body, &signature)
        }
        _ => false,
    };
    if !verified {
        lock(&records).signature_failures += 1;
        return HttpResponse::Unauthorized().finish();
    }
    let payload: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let order = &payload["data"]["order"];
    lock(&records).webhooks.push(WebhookArrival {
        at,
        merchant,
        webhook_id: id,
        event: payload["type"].as_str().unwrap_or_default().to_owned(),
        journal_at: payload["timestamp"]
            .as_str()
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.with_timezone(&Utc)),
        order_id: order["id"].as_str().unwrap_or_default().to_owned(),
        timeline_len: order["events"].as_array().map_or(0, Vec::len),
    });
    HttpResponse::NoContent().finish()
}

/// One channel's figures.
#[derive(Debug, Clone, Serialize)]
pub struct ChannelFigures {
    /// Messages that arrived, each id counted once.
    pub messages: usize,
    /// Arrivals of an id already seen at the same destination.
    pub duplicates: usize,
    /// Messages per second between the channel's first and last arrival.
    pub per_sec: f64,
    /// Most messages arriving within one second.
    pub peak_per_sec: usize,
    /// Notifier lag: arrival minus the time of the journal entry that raised the message,
    /// milliseconds.
    pub lag_ms: Summary,
    /// Orders whose messages on this channel did not arrive in the order of their transitions.
    pub orders_out_of_order: usize,
}

/// What the stand-ins measured (`--notify`).
#[derive(Debug, Clone, Serialize)]
pub struct NotifyFigures {
    /// Customer messages at the Graph API stand-in.
    pub whatsapp: ChannelFigures,
    /// Deliveries at merchants' webhook endpoints.
    pub webhook: ChannelFigures,
    /// WhatsApp messages sent as templates (the simulated customers never write, so their
    /// 24-hour window is closed and every message is a template).
    pub whatsapp_templates: usize,
    /// WhatsApp messages with no webhook of the same id to time them by (a simulated WhatsApp
    /// customer's conversation left out).
    pub whatsapp_untimed: usize,
    /// The bot's replies in simulated WhatsApp conversations: no notifications, not counted
    /// above.
    pub conversation_replies: usize,
    /// Deliveries the receiver refused: a bad signature or a stale timestamp. Must be 0.
    pub signature_failures: u64,
    /// Graph API calls with the wrong token or phone number id. Must be 0.
    pub whatsapp_auth_failures: u64,
    /// Delivered orders without their `order.delivered` webhook or WhatsApp message.
    pub delivered_without_message: usize,
}

impl NotifyFigures {
    /// Every message verified, none out of order, every delivery announced on both channels.
    pub fn clean(&self) -> bool {
        self.signature_failures == 0
            && self.whatsapp_auth_failures == 0
            && self.whatsapp.orders_out_of_order == 0
            && self.webhook.orders_out_of_order == 0
            && self.delivered_without_message == 0
    }
}

/// A message's first arrival, as the figures read it.
struct Timed<'a> {
    at: DateTime<Utc>,
    /// Arrival minus its journal entry's time, when known.
    lag_ms: Option<f64>,
    /// Its order and the entry's place among the order's transitions, when known.
    order: Option<(&'a str, Rank)>,
}

/// A channel's figures from its first arrivals, in the order they arrived.
fn channel(arrivals: &[Timed<'_>], duplicates: usize) -> ChannelFigures {
    let span_secs = match (arrivals.first(), arrivals.last()) {
        (Some(first), Some(last)) => (last.at - first.at).num_milliseconds() as f64 / 1_000.0,
        _ => 0.0,
    };
    let mut per_second: BTreeMap<i64, usize> = BTreeMap::new();
    let mut by_order: HashMap<&str, Vec<Rank>> = HashMap::new();
    for arrival in arrivals {
        *per_second.entry(arrival.at.timestamp()).or_default() += 1;
        if let Some((order, rank)) = arrival.order {
            by_order.entry(order).or_default().push(rank);
        }
    }
    ChannelFigures {
        messages: arrivals.len(),
        duplicates,
        per_sec: arrivals.len() as f64 / span_secs.max(1.0),
        peak_per_sec: per_second.values().copied().max().unwrap_or(0),
        lag_ms: Summary::of(arrivals.iter().filter_map(|a| a.lag_ms).collect()),
        orders_out_of_order: by_order
            .values()
            .filter(|ranks| ranks.windows(2).any(|pair| pair[0] >= pair[1]))
            .count(),
    }
}

/// A journal entry's place among its order's transitions.
type Rank = (Option<DateTime<Utc>>, usize);

fn lag_ms(at: DateTime<Utc>, journal_at: Option<DateTime<Utc>>) -> Option<f64> {
    journal_at
        .map(|journal_at| (at - journal_at).num_microseconds().unwrap_or(i64::MAX) as f64 / 1e3)
}

fn figures(records: &Records, delivered: &HashSet<String>) -> NotifyFigures {
    let delivered_event = NotifyEvent::Delivered.as_str();
    // Webhooks: the first arrival of each id at each endpoint.
    let mut seen = HashSet::new();
    let mut webhooks = Vec::new();
    // Message id → its webhook, to time and place the WhatsApp message of the same entry.
    let mut entries: HashMap<&str, &WebhookArrival> = HashMap::new();
    let mut announced_by_webhook = HashSet::new();
    for arrival in &records.webhooks {
        if !seen.insert((arrival.merchant, arrival.webhook_id.as_str())) {
            continue;
        }
        entries
            .entry(arrival.webhook_id.as_str())
            .or_insert(arrival);
        if arrival.event == delivered_event {
            announced_by_webhook.insert(arrival.order_id.as_str());
        }
        webhooks.push(Timed {
            at: arrival.at,
            lag_ms: lag_ms(arrival.at, arrival.journal_at),
            order: Some((arrival.order_id.as_str(), arrival.rank())),
        });
    }
    let webhook_duplicates = records.webhooks.len() - webhooks.len();
    let mut seen = HashSet::new();
    let mut whatsapp = Vec::new();
    let mut whatsapp_duplicates = 0;
    let mut untimed = 0;
    let mut announced_on_whatsapp = HashSet::new();
    let mut conversation_replies = 0;
    for arrival in &records.whatsapp {
        let entry = arrival.message_id.as_deref().and_then(|id| entries.get(id));
        if entry.is_none() && records.chats.contains_key(&arrival.to) {
            conversation_replies += 1;
            continue;
        }
        if let Some(id) = &arrival.message_id
            && !seen.insert((arrival.to.as_str(), id.as_str()))
        {
            whatsapp_duplicates += 1;
            continue;
        }
        match entry {
            Some(entry) => {
                if entry.event == delivered_event {
                    announced_on_whatsapp.insert(entry.order_id.as_str());
                }
                whatsapp.push(Timed {
                    at: arrival.at,
                    lag_ms: lag_ms(arrival.at, entry.journal_at),
                    order: Some((entry.order_id.as_str(), entry.rank())),
                });
            }
            None => {
                untimed += 1;
                whatsapp.push(Timed {
                    at: arrival.at,
                    lag_ms: None,
                    order: None,
                });
            }
        }
    }
    NotifyFigures {
        whatsapp: channel(&whatsapp, whatsapp_duplicates),
        webhook: channel(&webhooks, webhook_duplicates),
        whatsapp_templates: records
            .whatsapp
            .iter()
            .filter(|a| a.kind == "template")
            .count(),
        whatsapp_untimed: untimed,
        conversation_replies,
        signature_failures: records.signature_failures,
        whatsapp_auth_failures: records.auth_failures,
        delivered_without_message: delivered
            .iter()
            .filter(|order| {
                !announced_by_webhook.contains(order.as_str())
                    || !announced_on_whatsapp.contains(order.as_str())
            })
            .count(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hook(ms: i64, id: &str, order: &str, event: &str, timeline: usize) -> WebhookArrival {
        let t0 = DateTime::from_timestamp(1_800_000_000, 0).expect("a time");
        WebhookArrival {
            at: t0 + chrono::Duration::milliseconds(ms + 20),
            merchant: 0,
            webhook_id: id.to_owned(),
            event: event.to_owned(),
            journal_at: Some(t0 + chrono::Duration::milliseconds(ms)),
            order_id: order.to_owned(),
            timeline_len: timeline,
        }
    }

    fn text(ms: i64, id: &str) -> WhatsAppArrival {
        let t0 = DateTime::from_timestamp(1_800_000_000, 0).expect("a time");
        WhatsAppArrival {
            at: t0 + chrono::Duration::milliseconds(ms + 50),
            message_id: Some(id.to_owned()),
            kind: "template".to_owned(),
            to: "358400000001".to_owned(),
        }
    }

    #[test]
    fn figures_time_whatsapp_by_the_webhook_of_its_entry_and_catch_duplicates_and_disorder() {
        let records = Records {
            webhooks: vec![
                hook(0, "msg_a1", "a", "order.accepted", 3),
                hook(100, "msg_a2", "a", "order.delivered", 9),
                hook(100, "msg_a2", "a", "order.delivered", 9),
                hook(200, "msg_b1", "b", "order.accepted", 3),
            ],
            // Order a's messages arrive the wrong way round; b's once, then again.
            whatsapp: vec![
                text(100, "msg_a2"),
                text(0, "msg_a1"),
                text(200, "msg_b1"),
                text(300, "msg_b1"),
                text(400, "msg_unknown"),
            ],
            ..Records::default()
        };
        let delivered: HashSet<String> = ["a".to_owned(), "b".to_owned()].into();
        let figures = figures(&records, &delivered);
        assert_eq!(figures.webhook.messages, 3);
        assert_eq!(figures.webhook.duplicates, 1);
        assert_eq!(figures.webhook.orders_out_of_order, 0);
        assert_eq!(figures.webhook.lag_ms.max, 20.0);
        assert_eq!(figures.whatsapp.messages, 4);
        assert_eq!(figures.whatsapp.duplicates, 1);
        assert_eq!(figures.whatsapp.orders_out_of_order, 1);
        assert_eq!(figures.whatsapp_untimed, 1);
        assert_eq!(figures.whatsapp.lag_ms.count, 3);
        assert_eq!(figures.whatsapp.lag_ms.p50, 50.0);
        // b was delivered without an order.delivered message on either channel.
        assert_eq!(figures.delivered_without_message, 1);
        assert!(!figures.clean());
    }

    #[test]
    fn a_whatsapp_customers_conversation_is_no_notification_but_its_order_updates_are() {
        let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
        let chatting = "358450000001";
        let mut reply = text(10, "msg_reply");
        reply.to = chatting.to_owned();
        reply.kind = "interactive".to_owned();
        let mut update = text(0, "msg_a1");
        update.to = chatting.to_owned();
        update.kind = "text".to_owned();
        let records = Records {
            webhooks: vec![hook(0, "msg_a1", "a", "order.accepted", 3)],
            whatsapp: vec![reply, update, text(400, "msg_unknown")],
            chats: [(chatting.to_owned(), tx)].into(),
            ..Records::default()
        };
        let figures = figures(&records, &HashSet::new());
        assert_eq!(figures.conversation_replies, 1);
        // The order update to the chatting customer is timed; the unknown one to another is not.
        assert_eq!(figures.whatsapp.messages, 2);
        assert_eq!(figures.whatsapp.lag_ms.count, 1);
        assert_eq!(figures.whatsapp_untimed, 1);
    }
}
