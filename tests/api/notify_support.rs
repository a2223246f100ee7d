//! Local stand-ins for the services notifications go to, on loopback ports the test owns: a
//! WhatsApp Business Cloud API (Graph API) that records every request and answers from a script —
//! success with a fresh `wamid`, the error codes WhatsApp sends with their HTTP statuses, or no
//! answer for a while — and a merchant's webhook receiver that checks every delivery with the
//! `standardwebhooks` crate (an implementation independent of ours) and answers from a script of
//! statuses and `Retry-After` headers. Both speak HTTP/1.1 on a raw TCP listener and close each
//! connection after one answer, so a client never reuses a connection the stand-in dropped.
#![allow(dead_code)]

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::AbortHandle;

/// How long a test waits for something the notifier should do. Generous: it bounds a wait,
/// it is never a claim about speed.
pub const ARRIVES_WITHIN: Duration = Duration::from_secs(30);
/// Pause between two looks at what a stand-in received.
const POLL: Duration = Duration::from_millis(50);
/// Largest request a stand-in reads.
const MAX_REQUEST_BYTES: usize = 1 << 20;

// ---- A tiny HTTP/1.1 server. ----

/// One request as a stand-in read it.
#[derive(Clone, Debug)]
pub struct HttpRequest {
    pub method: String,
    /// The request target (`/v23.0/1234567890/messages`).
    pub path: String,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
    /// When its last byte arrived.
    pub at: Instant,
}

/// What a stand-in answers, after waiting `delay`.
#[derive(Clone, Debug)]
struct HttpAnswer {
    delay: Duration,
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: String,
}

type Handler = Arc<dyn Fn(HttpRequest) -> HttpAnswer + Send + Sync>;

/// A listener on a loopback port and the connections it is serving, all stopped when dropped.
struct Server {
    port: u16,
    accept: AbortHandle,
    connections: Arc<Mutex<Vec<AbortHandle>>>,
}

impl Server {
    async fn start(handler: Handler) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let connections = Arc::new(Mutex::new(Vec::<AbortHandle>::new()));
        let shared = connections.clone();
        let accept = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let handler = handler.clone();
                let connection = tokio::spawn(async move {
                    let _ = serve_one(stream, handler).await;
                });
                let mut connections = shared.lock().unwrap();
                connections.retain(|c| !c.is_finished());
                connections.push(connection.abort_handle());
            }
        });
        Server {
            port,
            accept: accept.abort_handle(),
            connections,
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.accept.abort();
        for connection in self.connections.lock().unwrap().drain(..) {
            connection.abort();
        }
    }
}

/// Reads one request, answers it and closes the connection.
async fn serve_one(stream: TcpStream, handler: Handler) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).await?;
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_owned();
    let path = parts.next().unwrap_or_default().to_owned();
    let mut headers = HeaderMap::new();
    loop {
        line.clear();
        if reader.read_line(&mut line).await? == 0 {
            return Ok(());
        }
        let header = line.trim_end_matches(['\r', '\n']);
        if header.is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':')
            && let (Ok(name), Ok(value)) = (
                HeaderName::from_bytes(name.trim().as_bytes()),
                HeaderValue::from_str(value.trim()),
            )
        {
            headers.append(name, value);
        }
    }
    let text = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_ascii_lowercase)
    };
    let mut body = Vec::new();
    if text("transfer-encoding").is_some_and(|t| t.contains("chunked")) {
        loop {
            line.clear();
            reader.read_line(&mut line).await?;
            let size = usize::from_str_radix(line.trim().split(';').next().unwrap_or("0"), 16)
                .unwrap_or(0);
            if size == 0 || body.len() + size > MAX_REQUEST_BYTES {
                break;
            }
            let start = body.len();
            body.resize(start + size, 0);
            reader.read_exact(&mut body[start..]).await?;
            line.clear();
            reader.read_line(&mut line).await?;
        }
    } else if let Some(length) = text("content-length").and_then(|l| l.parse::<usize>().ok()) {
        body.resize(length.min(MAX_REQUEST_BYTES), 0);
        reader.read_exact(&mut body).await?;
    }
    let answer = handler(HttpRequest {
        method,
        path,
        headers,
        body,
        at: Instant::now(),
    });
    tokio::time::sleep(answer.delay).await;
    let mut head = format!(
        "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n",
        answer.status,
        reason(answer.status),
        answer.body.len()
    );
    for (name, value) in &answer.headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    let mut stream = reader.into_inner();
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(answer.body.as_bytes()).await?;
    stream.shutdown().await
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        204 => "No Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        410 => "Gone",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

/// Polls `look` until it gives something, for at most `within`; panics with `what` and the
/// last thing `describe` says otherwise.
async fn wait_until<T>(
    within: Duration,
    what: &str,
    mut look: impl FnMut() -> Option<T>,
    describe: impl Fn() -> String,
) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(found) = look() {
            return found;
        }
        assert!(
            Instant::now() < deadline,
            "{what} not seen within {within:?}; seen so far:\n{}",
            describe()
        );
        tokio::time::sleep(POLL).await;
    }
}

// ---- The WhatsApp Business Cloud API. ----

/// The phone number id the tests configure.
pub const PHONE_NUMBER_ID: &str = "1234567890";
/// The access token the tests configure.
pub const ACCESS_TOKEN: &str = "EAAG-test-token-0123456789";
/// The Graph API version the tests configure.
pub const API_VERSION: &str = "v23.0";

/// How the Graph API stand-in answers one request.
#[derive(Clone, Debug, PartialEq)]
pub enum GraphAnswer {
    /// 200 with a fresh `wamid`.
    Success,
    /// WhatsApp's error `code` with the HTTP status WhatsApp sends it with.
    Error(i64),
    /// No answer for this long, then 200 (a request in flight, for a kill to interrupt).
    Hang(Duration),
}

/// One request the Graph API stand-in received.
#[derive(Clone, Debug)]
pub struct GraphRequest {
    pub path: String,
    pub authorization: Option<String>,
    pub body: Value,
    pub at: Instant,
    /// The HTTP status it was (or is being) answered with.
    pub status: u16,
    /// Whether the answer was held back ([`GraphAnswer::Hang`]): a kill may have cut it off.
    pub hung: bool,
    /// The `wamid` it was answered with, on success.
    pub wamid: Option<String>,
}

impl GraphRequest {
    /// `biz_opaque_callback_data`: our message id.
    pub fn message_id(&self) -> &str {
        self.body["biz_opaque_callback_data"]
            .as_str()
            .unwrap_or_default()
    }

    /// `text` or `template`.
    pub fn kind(&self) -> &str {
        self.body["type"].as_str().unwrap_or_default()
    }

    /// The template's name, for a template.
    pub fn template(&self) -> &str {
        self.body["template"]["name"].as_str().unwrap_or_default()
    }

    /// The template's body parameters, in order.
    pub fn parameters(&self) -> Vec<String> {
        self.body["template"]["components"][0]["parameters"]
            .as_array()
            .map(|ps| {
                ps.iter()
                    .map(|p| p["text"].as_str().unwrap_or_default().to_owned())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The text's body, for a text.
    pub fn text(&self) -> &str {
        self.body["text"]["body"].as_str().unwrap_or_default()
    }

    /// The recipient's digits.
    pub fn to(&self) -> &str {
        self.body["to"].as_str().unwrap_or_default()
    }

    /// One line for a failure message.
    pub fn summary(&self) -> String {
        let what = match self.kind() {
            "template" => format!("template {} {:?}", self.template(), self.parameters()),
            "text" => format!("text {:?}", self.text()),
            other => format!("type {other:?}"),
        };
        format!(
            "{} {} to {} → {}: {what}",
            self.path,
            self.message_id(),
            self.to(),
            self.status
        )
    }
}

#[derive(Default)]
struct GraphState {
    script: VecDeque<GraphAnswer>,
    requests: Vec<GraphRequest>,
}

/// The WhatsApp Business Cloud API's messages endpoint, standing in on a loopback port.
pub struct GraphApi {
    /// The base URL (`MEALKITZ_WHATSAPP_API_URL`), without a trailing slash.
    pub url: String,
    state: Arc<Mutex<GraphState>>,
    _server: Server,
}

impl GraphApi {
    pub async fn start() -> GraphApi {
        let state = Arc::new(Mutex::new(GraphState::default()));
        let shared = state.clone();
        let server = Server::start(Arc::new(move |request: HttpRequest| {
            let mut state = shared.lock().unwrap();
            let answer = state.script.pop_front().unwrap_or(GraphAnswer::Success);
            let body: Value = serde_json::from_slice(&request.body).unwrap_or(Value::Null);
            let to = body["to"].as_str().unwrap_or_default().to_owned();
            let (http, wamid) = graph_answer(&answer, &to);
            state.requests.push(GraphRequest {
                path: request.path,
                authorization: request
                    .headers
                    .get("authorization")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned),
                body,
                at: request.at,
                status: http.status,
                hung: matches!(answer, GraphAnswer::Hang(_)),
                wamid,
            });
            http
        }))
        .await;
        GraphApi {
            url: server.url(),
            state,
            _server: server,
        }
    }

    /// Answers the next requests with `answers`, in order (then with success again).
    pub fn script(&self, answers: impl IntoIterator<Item = GraphAnswer>) {
        self.state.lock().unwrap().script.extend(answers);
    }

    /// Forgets what is left of the script: success from now on.
    pub fn clear_script(&self) {
        self.state.lock().unwrap().script.clear();
    }

    /// Every request so far, in arrival order.
    pub fn requests(&self) -> Vec<GraphRequest> {
        self.state.lock().unwrap().requests.clone()
    }

    pub fn describe(&self) -> String {
        let lines: Vec<String> = self.requests().iter().map(GraphRequest::summary).collect();
        if lines.is_empty() {
            "(no requests)".to_owned()
        } else {
            lines.join("\n")
        }
    }

    /// Waits until at least `count` requests arrived; all requests so far.
    pub async fn wait_for(&self, count: usize) -> Vec<GraphRequest> {
        self.wait_for_matching(&format!("{count} WhatsApp requests"), |all| {
            all.len() >= count
        })
        .await
    }

    /// Waits until the requests so far satisfy `done`; all requests so far.
    pub async fn wait_for_matching(
        &self,
        what: &str,
        done: impl Fn(&[GraphRequest]) -> bool,
    ) -> Vec<GraphRequest> {
        wait_until(
            ARRIVES_WITHIN,
            what,
            || {
                let all = self.requests();
                done(&all).then_some(all)
            },
            || self.describe(),
        )
        .await
    }
}

/// The HTTP answer for `answer`, and the `wamid` given on success.
fn graph_answer(answer: &GraphAnswer, to: &str) -> (HttpAnswer, Option<String>) {
    let success = |delay| {
        let wamid = format!(
            "wamid.HBgL{}",
            uuid::Uuid::new_v4()
                .simple()
                .to_string()
                .to_ascii_uppercase()
        );
        let body = json!({
            "messaging_product": "whatsapp",
            "contacts": [{"input": format!("+{to}"), "wa_id": to}],
            "messages": [{"id": wamid}],
        });
        (
            HttpAnswer {
                delay,
                status: 200,
                headers: Vec::new(),
                body: body.to_string(),
            },
            Some(wamid),
        )
    };
    match answer {
        GraphAnswer::Success => success(Duration::ZERO),
        GraphAnswer::Hang(how_long) => success(*how_long),
        GraphAnswer::Error(code) => {
            let (status, kind, message, details) = graph_error(*code);
            let body = json!({"error": {
                "message": message,
                "type": kind,
                "code": code,
                "error_data": {"messaging_product": "whatsapp", "details": details},
                "fbtrace_id": format!("A{}", uuid::Uuid::new_v4().simple()),
            }});
            (
                HttpAnswer {
                    delay: Duration::ZERO,
                    status,
                    headers: Vec::new(),
                    body: body.to_string(),
                },
                None,
            )
        }
    }
}

/// HTTP status, error type, message and details of a WhatsApp error code, as WhatsApp sends them.
fn graph_error(code: i64) -> (u16, &'static str, &'static str, &'static str) {
    match code {
        131_047 => (
            400,
            "OAuthException",
            "(#131047) Re-engagement message",
            "Message failed to send because more than 24 hours have passed since the customer last replied to this number.",
        ),
        130_429 => (
            429,
            "OAuthException",
            "(#130429) Rate limit hit",
            "Cloud API message throughput has been reached.",
        ),
        131_056 => (
            400,
            "OAuthException",
            "(#131056) (Business Account, Consumer Account) pair rate limit hit",
            "Too many messages sent from the sender phone number to the same recipient phone number in a short period of time.",
        ),
        190 => (
            401,
            "OAuthException",
            "Error validating access token: Session has expired.",
            "The access token has expired.",
        ),
        _ => (
            400,
            "OAuthException",
            "(#131026) Message undeliverable",
            "Unable to deliver message.",
        ),
    }
}

// ---- A merchant's webhook receiver. ----

/// How the receiver answers one delivery.
#[derive(Clone, Debug, PartialEq)]
pub struct HookAnswer {
    pub status: u16,
    /// `Retry-After`, in seconds.
    pub retry_after_secs: Option<u64>,
    /// Wait this long before answering (a delivery in flight, for a kill to interrupt).
    pub delay: Duration,
}

impl HookAnswer {
    pub fn status(status: u16) -> HookAnswer {
        HookAnswer {
            status,
            retry_after_secs: None,
            delay: Duration::ZERO,
        }
    }

    pub fn retry_after(status: u16, secs: u64) -> HookAnswer {
        HookAnswer {
            status,
            retry_after_secs: Some(secs),
            delay: Duration::ZERO,
        }
    }

    /// No answer for `how_long`, then 200.
    pub fn hang(how_long: Duration) -> HookAnswer {
        HookAnswer {
            status: 200,
            retry_after_secs: None,
            delay: how_long,
        }
    }
}

/// One delivery the receiver got.
#[derive(Clone, Debug)]
pub struct Hook {
    /// `webhook-id`.
    pub id: String,
    /// `webhook-timestamp`.
    pub timestamp: String,
    /// `webhook-signature`.
    pub signature: String,
    /// The body's `type` (`order.accepted`).
    pub event: String,
    /// The body's `data.order.id`.
    pub order_id: String,
    pub body: Value,
    pub raw: Vec<u8>,
    pub headers: HeaderMap,
    /// Whether it verified, with the `standardwebhooks` crate, under a secret the receiver held
    /// when it arrived.
    pub verified: bool,
    /// The status it was answered with.
    pub status: u16,
    pub at: Instant,
}

impl Hook {
    /// Whether it verifies under `secret` with the `standardwebhooks` crate.
    pub fn verifies_with(&self, secret: &str) -> bool {
        standardwebhooks::Webhook::new(secret)
            .and_then(|webhook| webhook.verify(&self.raw, &self.headers))
            .is_ok()
    }

    pub fn summary(&self) -> String {
        format!(
            "{} {} order {} → {} (verified: {})",
            self.id, self.event, self.order_id, self.status, self.verified
        )
    }
}

#[derive(Default)]
struct ReceiverState {
    secrets: Vec<String>,
    script: VecDeque<HookAnswer>,
    hooks: Vec<Hook>,
}

/// A merchant's system receiving webhooks, standing in on a loopback port.
pub struct WebhookReceiver {
    /// The URL to register (`http://127.0.0.1:PORT/hooks`).
    pub url: String,
    state: Arc<Mutex<ReceiverState>>,
    _server: Server,
}

impl WebhookReceiver {
    pub async fn start() -> WebhookReceiver {
        let state = Arc::new(Mutex::new(ReceiverState::default()));
        let shared = state.clone();
        let server = Server::start(Arc::new(move |request: HttpRequest| {
            let mut state = shared.lock().unwrap();
            let answer = state
                .script
                .pop_front()
                .unwrap_or_else(|| HookAnswer::status(200));
            let header = |name: &str| {
                request
                    .headers
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned()
            };
            let body: Value = serde_json::from_slice(&request.body).unwrap_or(Value::Null);
            let verified = state.secrets.iter().any(|secret| {
                standardwebhooks::Webhook::new(secret)
                    .and_then(|webhook| webhook.verify(&request.body, &request.headers))
                    .is_ok()
            });
            state.hooks.push(Hook {
                id: header("webhook-id"),
                timestamp: header("webhook-timestamp"),
                signature: header("webhook-signature"),
                event: body["type"].as_str().unwrap_or_default().to_owned(),
                order_id: body["data"]["order"]["id"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                body,
                raw: request.body,
                headers: request.headers,
                verified,
                status: answer.status,
                at: request.at,
            });
            HttpAnswer {
                delay: answer.delay,
                status: answer.status,
                headers: answer
                    .retry_after_secs
                    .map(|secs| ("retry-after", secs.to_string()))
                    .into_iter()
                    .collect(),
                body: if answer.status < 300 {
                    r#"{"ok":true}"#.to_owned()
                } else {
                    r#"{"ok":false}"#.to_owned()
                },
            }
        }))
        .await;
        WebhookReceiver {
            url: format!("{}/hooks", server.url()),
            state,
            _server: server,
        }
    }

    /// The secrets deliveries are verified with from now on (the endpoint's, once registered).
    pub fn trust(&self, secrets: &[&str]) {
        self.state.lock().unwrap().secrets = secrets.iter().map(|s| (*s).to_owned()).collect();
    }

    /// Answers the next deliveries with `answers`, in order (then with 200 again).
    pub fn script(&self, answers: impl IntoIterator<Item = HookAnswer>) {
        self.state.lock().unwrap().script.extend(answers);
    }

    /// Forgets what is left of the script: 200 from now on.
    pub fn clear_script(&self) {
        self.state.lock().unwrap().script.clear();
    }

    /// Every delivery so far, in arrival order.
    pub fn hooks(&self) -> Vec<Hook> {
        self.state.lock().unwrap().hooks.clone()
    }

    pub fn describe(&self) -> String {
        let lines: Vec<String> = self.hooks().iter().map(Hook::summary).collect();
        if lines.is_empty() {
            "(no deliveries)".to_owned()
        } else {
            lines.join("\n")
        }
    }

    /// Waits until at least `count` deliveries arrived; all so far.
    pub async fn wait_for(&self, count: usize) -> Vec<Hook> {
        self.wait_for_matching(&format!("{count} webhook deliveries"), |all| {
            all.len() >= count
        })
        .await
    }

    /// Waits until the deliveries so far satisfy `done`; all so far.
    pub async fn wait_for_matching(&self, what: &str, done: impl Fn(&[Hook]) -> bool) -> Vec<Hook> {
        wait_until(
            ARRIVES_WITHIN,
            what,
            || {
                let all = self.hooks();
                done(&all).then_some(all)
            },
            || self.describe(),
        )
        .await
    }
}
