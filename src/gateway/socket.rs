//! What every WebSocket session shares: a bounded outbound queue with a coalescing slot for
//! locations, the writer that drains it into the socket, heartbeats, the per-socket rate limit,
//! frame checks, close codes and metrics. A session actor owns a [`SocketCore`] and implements
//! [`Socket`]; the default methods do the rest.

use crate::error::ErrorCode;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix::prelude::*;
use actix_http::ws::{CloseCode, CloseReason, Message, ProtocolError};
use serde::Serialize;
use tokio::sync::{Notify, watch};
use tokio_util::task::task_tracker::TaskTrackerToken;

use super::wire::{FrameReader, FrameWriter};
use crate::actors::{OfferView, RouteView};
use crate::config::GatewayConfig;
use crate::domain::OrderView;

/// Frames one socket may have waiting to be written. A client that lets this many pile up
/// cannot keep up and is closed with 1013 rather than allowed to grow memory.
pub const OUTBOX_CAPACITY: usize = 256;
/// How long closing waits for the close frame to be written before dropping the connection.
/// Nothing new is queued meanwhile, so waiting costs no memory; a slow client that reads
/// again within this time still learns why it was closed (1013).
const CLOSE_WRITE_TIMEOUT: Duration = Duration::from_millis(10_000);
/// After the server sends a close frame, how long it waits for the client's before stopping.
const CLOSE_HANDSHAKE_TIMEOUT: Duration = Duration::from_millis(2_000);

/// Every message the server sends, tagged by `type`.
#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Outbound<'a> {
    Offer(&'a OfferView),
    OfferExpired {
        offer_id: uuid::Uuid,
    },
    Assigned {
        order: &'a OrderView,
    },
    OrderUpdate {
        order: &'a OrderView,
    },
    DriverLocation {
        lat: f64,
        lon: f64,
        eta_seconds: f64,
    },
    Board {
        orders: &'a [OrderView],
    },
    Route(&'a RouteView),
    Error {
        code: ErrorCode,
        message: &'a str,
    },
}

impl Outbound<'_> {
    fn label(&self) -> &'static str {
        match self {
            Outbound::Offer(_) => "offer",
            Outbound::OfferExpired { .. } => "offer_expired",
            Outbound::Assigned { .. } => "assigned",
            Outbound::OrderUpdate { .. } => "order_update",
            Outbound::DriverLocation { .. } => "driver_location",
            Outbound::Board { .. } => "board",
            Outbound::Route(_) => "route",
            Outbound::Error { .. } => "error",
        }
    }
}

enum Frame {
    Text(String),
    Ping,
    Pong(bytes::Bytes),
    Close(CloseReason),
}

#[derive(Default)]
struct OutboxState {
    frames: VecDeque<Frame>,
    /// The newest location, not yet written; a newer one replaces it (latest wins).
    location: Option<String>,
    close: Option<CloseReason>,
}

/// The outbound queue between a session actor and its writer. Never awaited under the lock.
#[derive(Default)]
struct Outbox {
    state: Mutex<OutboxState>,
    wake: Notify,
    /// Rung when the writer must give up what it is writing (the client is too slow).
    abort: Notify,
}

impl Outbox {
    fn with<T>(&self, f: impl FnOnce(&mut OutboxState) -> T) -> T {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut state)
    }

    /// Queues a frame; false when the queue is full.
    fn push(&self, frame: Frame) -> bool {
        let queued = self.with(|s| {
            if s.close.is_some() {
                return true;
            }
            if s.frames.len() >= OUTBOX_CAPACITY {
                return false;
            }
            s.frames.push_back(frame);
            true
        });
        self.wake.notify_one();
        queued
    }

    /// Sets the pending location; true when it replaced one not yet written.
    fn replace_location(&self, text: String) -> bool {
        let replaced = self.with(|s| s.location.replace(text).is_some());
        self.wake.notify_one();
        replaced
    }

    fn close(&self, reason: CloseReason, urgent: bool) {
        self.with(|s| {
            if urgent {
                s.frames.clear();
                s.location = None;
            }
            s.close.get_or_insert(reason);
        });
        self.wake.notify_one();
        if urgent {
            self.abort.notify_one();
        }
    }

    fn next(&self) -> Option<Frame> {
        self.with(|s| {
            if let Some(frame) = s.frames.pop_front() {
                return Some(frame);
            }
            if let Some(location) = s.location.take() {
                return Some(Frame::Text(location));
            }
            s.close.clone().map(Frame::Close)
        })
    }
}

/// Frames written in one go at most: what is queued beyond waits for the next write.
const WRITE_BATCH_MAX_FRAMES: usize = 32;

/// Drains the outbox into the socket until it closes; frames queued together are written
/// together.
async fn write(outbox: Arc<Outbox>, mut socket: FrameWriter) {
    loop {
        let Some(first) = outbox.next() else {
            outbox.wake.notified().await;
            continue;
        };
        let mut close = None;
        let mut queued = 0;
        let mut next = Some(first);
        while let Some(frame) = next.take() {
            let message = match frame {
                Frame::Close(reason) => {
                    close = Some(reason);
                    break;
                }
                Frame::Text(text) => Message::Text(text.into()),
                Frame::Ping => Message::Ping(bytes::Bytes::new()),
                Frame::Pong(payload) => Message::Pong(payload),
            };
            if socket.queue(message).is_err() {
                return;
            }
            queued += 1;
            if queued < WRITE_BATCH_MAX_FRAMES {
                next = outbox.next();
            }
        }
        let written = tokio::select! {
            written = socket.flush() => written.is_ok(),
            () = outbox.abort.notified() => false,
        };
        // A client gone or too slow is closed (best effort: after the rest of the frame on its
        // way, which the writer never cuts) and its connection dropped.
        let close = close.or_else(|| {
            if written {
                None
            } else {
                outbox.with(|s| s.close.clone())
            }
        });
        if let Some(reason) = close {
            let _ = tokio::time::timeout(CLOSE_WRITE_TIMEOUT, socket.close(Some(reason))).await;
            return;
        }
        if !written {
            return;
        }
    }
}

/// A token bucket: `rate` messages per second, bursts up to `rate`.
struct RateLimit {
    rate: f64,
    tokens: f64,
    refilled: Instant,
}

impl RateLimit {
    fn new(rate: u32) -> Self {
        RateLimit {
            rate: f64::from(rate),
            tokens: f64::from(rate),
            refilled: Instant::now(),
        }
    }

    fn allow(&mut self) -> bool {
        let now = Instant::now();
        let elapsed = now.duration_since(self.refilled).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.rate);
        self.refilled = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// The state every socket session carries.
/// Answers whether the credential a socket was opened with still works.
pub type CredentialCheck = Box<dyn Fn() -> futures_util::future::LocalBoxFuture<'static, bool>>;

/// How often a socket opened with a revocable credential (an API key) asks whether it still
/// works: a revoked key's sockets close within about this (plus the key cache's half second).
const CREDENTIAL_CHECK_INTERVAL: Duration = Duration::from_secs(1);
/// The expiry timer of a credential that never expires (an API key without `expires_at`) is
/// set this far ahead instead: a year.
const NEVER_EXPIRES_CAP_SECS: i64 = 366 * 24 * 3_600;

pub struct SocketCore {
    /// `driver`, `merchant` or `tracker`, for metrics.
    kind: &'static str,
    outbox: Arc<Outbox>,
    /// The socket's writing half, until the actor starts its writer, and the token that counts
    /// the socket among those a stop waits for.
    writer: Option<(FrameWriter, TaskTrackerToken)>,
    /// The client's frames and the server's shutdown signal, until the actor starts.
    incoming: Option<(FrameReader, watch::Receiver<bool>)>,
    config: Arc<GatewayConfig>,
    last_heard: Instant,
    limit: RateLimit,
    /// When a `rate_limited` error was last sent: at most one a second, so a flood does not
    /// turn into a flood back.
    rate_notice_at: Option<Instant>,
    /// When the login token expires, unix seconds.
    token_expires_at: i64,
    /// Whether a revocable credential (an API key) still works.
    still_valid: Option<std::rc::Rc<CredentialCheck>>,
    closing: bool,
}

impl SocketCore {
    /// `shutdown` turns true when the server shuts down: the socket then closes with 1001.
    pub fn new(
        kind: &'static str,
        (reader, writer): (FrameReader, FrameWriter),
        shutdown: watch::Receiver<bool>,
        tracked: TaskTrackerToken,
        config: Arc<GatewayConfig>,
        token_expires_at: i64,
        still_valid: Option<CredentialCheck>,
    ) -> Self {
        SocketCore {
            kind,
            outbox: Arc::default(),
            writer: Some((writer, tracked)),
            incoming: Some((reader, shutdown)),
            limit: RateLimit::new(config.rate_per_sec),
            config,
            last_heard: Instant::now(),
            rate_notice_at: None,
            token_expires_at,
            still_valid: still_valid.map(std::rc::Rc::new),
            closing: false,
        }
    }

    /// `driver`, `merchant` or `tracker`.
    pub fn kind(&self) -> &'static str {
        self.kind
    }

    /// Queues a message. A full queue means the client cannot keep up: it is closed with 1013.
    pub fn send(&mut self, message: &Outbound<'_>) {
        let Ok(text) = serde_json::to_string(message) else {
            return;
        };
        metrics::counter!("ws_messages_out_total", "kind" => self.kind, "type" => message.label())
            .increment(1);
        if !self.outbox.push(Frame::Text(text)) {
            self.close_now(CloseCode::Again, "client too slow", true);
        }
    }

    /// Queues a location, replacing one not yet written (latest wins).
    pub fn send_location(&mut self, message: &Outbound<'_>) {
        let Ok(text) = serde_json::to_string(message) else {
            return;
        };
        metrics::counter!("ws_messages_out_total", "kind" => self.kind, "type" => message.label())
            .increment(1);
        if self.outbox.replace_location(text) {
            metrics::counter!("ws_messages_coalesced_total", "kind" => self.kind).increment(1);
        }
    }

    pub fn error(&mut self, code: ErrorCode, message: &str) {
        self.send(&Outbound::Error { code, message });
    }

    fn close_now(&mut self, code: CloseCode, reason: &str, urgent: bool) {
        if self.closing {
            return;
        }
        self.closing = true;
        metrics::counter!(
            "ws_closes_total",
            "kind" => self.kind,
            "code" => u16::from(code).to_string()
        )
        .increment(1);
        self.outbox.close(
            CloseReason {
                code,
                description: Some(reason.to_owned()),
            },
            urgent,
        );
    }
}

/// The parts of an inbound text frame a session handles; everything else (pings, pongs,
/// binary, oversize or malformed frames, rate limits) the core handles.
pub enum Inbound {
    Text(String),
    Handled,
}

/// Resolves when the server starts shutting down.
async fn shutting_down(mut shutdown: watch::Receiver<bool>) {
    while !*shutdown.borrow_and_update() {
        if shutdown.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// A WebSocket session actor.
pub trait Socket:
    Actor<Context = Context<Self>> + StreamHandler<Result<Message, ProtocolError>>
{
    fn core(&mut self) -> &mut SocketCore;

    /// Starts reading frames, the writer, the heartbeat, the token-expiry timer and the
    /// watch for server shutdown.
    fn start_socket(&mut self, ctx: &mut Context<Self>) {
        if let Some((stream, shutdown)) = self.core().incoming.take() {
            ctx.add_stream(stream);
            ctx.spawn(
                shutting_down(shutdown)
                    .into_actor(self)
                    .map(|(), act, ctx| act.close(ctx, CloseCode::Away, "server shutting down")),
            );
        }
        let core = self.core();
        let kind = core.kind;
        metrics::gauge!("ws_connections", "kind" => kind).increment(1.0);
        if let Some((writer, tracked)) = core.writer.take() {
            let outbox = core.outbox.clone();
            actix::spawn(async move {
                write(outbox, writer).await;
                drop(tracked);
            });
        }
        let heartbeat = core.config.heartbeat_interval;
        ctx.run_interval(heartbeat, |act, ctx| {
            let core = act.core();
            if core.last_heard.elapsed() > core.config.client_timeout {
                tracing::debug!(kind = core.kind, "socket silent too long; closing");
                act.close(ctx, CloseCode::Away, "heartbeat timeout");
            } else {
                core.outbox.push(Frame::Ping);
            }
        });
        let remaining_secs = core
            .token_expires_at
            .saturating_sub(chrono::Utc::now().timestamp())
            .min(NEVER_EXPIRES_CAP_SECS);
        let remaining = Duration::from_secs(u64::try_from(remaining_secs).unwrap_or(0));
        ctx.run_later(remaining, |act, ctx| {
            act.close(ctx, CloseCode::Policy, "token_expired");
        });
        if let Some(check) = core.still_valid.clone() {
            ctx.run_interval(CREDENTIAL_CHECK_INTERVAL, move |act, ctx| {
                ctx.spawn(check().into_actor(act).map(|valid, act, ctx| {
                    if !valid {
                        act.close(ctx, CloseCode::Policy, "credential_revoked");
                    }
                }));
            });
        }
    }

    /// Sends a close frame and stops shortly after (at once if the client answers).
    fn close(&mut self, ctx: &mut Context<Self>, code: CloseCode, reason: &str) {
        self.core().close_now(code, reason, false);
        ctx.run_later(CLOSE_HANDSHAKE_TIMEOUT, |_, ctx| ctx.stop());
    }

    /// Applies the socket rules to an inbound frame; returns a text frame for the session.
    fn inbound(
        &mut self,
        frame: Result<Message, ProtocolError>,
        ctx: &mut Context<Self>,
    ) -> Inbound {
        let core = self.core();
        core.last_heard = Instant::now();
        let kind = core.kind;
        match frame {
            Ok(Message::Text(text)) => {
                if core.closing {
                    return Inbound::Handled;
                }
                if !core.limit.allow() {
                    metrics::counter!("ws_messages_dropped_total", "kind" => kind, "reason" => "rate_limited")
                        .increment(1);
                    let notify = core
                        .rate_notice_at
                        .is_none_or(|at| at.elapsed() >= Duration::from_secs(1));
                    if notify {
                        core.rate_notice_at = Some(Instant::now());
                        core.error(
                            ErrorCode::RateLimited,
                            "Too many messages; the excess was dropped.",
                        );
                    }
                    return Inbound::Handled;
                }
                Inbound::Text(text.to_string())
            }
            Ok(Message::Binary(_)) => {
                self.close(
                    ctx,
                    CloseCode::Unsupported,
                    "binary frames are not supported",
                );
                Inbound::Handled
            }
            Ok(Message::Ping(payload)) => {
                core.outbox.push(Frame::Pong(payload));
                Inbound::Handled
            }
            Ok(Message::Pong(_)) | Ok(Message::Nop) => Inbound::Handled,
            Ok(Message::Continuation(_)) => {
                self.close(
                    ctx,
                    CloseCode::Unsupported,
                    "fragmented messages are not supported",
                );
                Inbound::Handled
            }
            Ok(Message::Close(_)) => {
                core.closing = true;
                ctx.stop();
                Inbound::Handled
            }
            Err(ProtocolError::Overflow) => {
                self.close(ctx, CloseCode::Size, "frame larger than 16 KiB");
                Inbound::Handled
            }
            Err(error) => {
                tracing::debug!(kind, error = %error, "websocket protocol error");
                self.close(ctx, CloseCode::Protocol, "protocol error");
                Inbound::Handled
            }
        }
    }

    /// Bookkeeping when the session stops.
    fn stop_socket(&mut self) {
        let core = self.core();
        metrics::gauge!("ws_connections", "kind" => core.kind).decrement(1.0);
        // Ends the writer if it is waiting.
        core.outbox.close(
            CloseReason {
                code: CloseCode::Normal,
                description: None,
            },
            false,
        );
    }
}

/// An mpsc receiver as a stream that ends with one `None`, so a session can tell a feed ended.
pub fn feed_stream<T: 'static>(
    receiver: tokio::sync::mpsc::Receiver<T>,
) -> impl futures_util::Stream<Item = Option<T>> {
    use futures_util::StreamExt;
    futures_util::stream::unfold(receiver, |mut receiver| async move {
        receiver.recv().await.map(|item| (item, receiver))
    })
    .map(Some)
    .chain(futures_util::stream::once(async { None }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rate_limit_allows_a_burst_then_refuses() {
        let mut limit = RateLimit::new(20);
        let allowed = (0..30).filter(|_| limit.allow()).count();
        assert_eq!(allowed, 20);
    }

    #[test]
    fn a_newer_location_replaces_an_unsent_one() {
        let outbox = Outbox::default();
        assert!(!outbox.replace_location("a".into()));
        assert!(outbox.replace_location("b".into()));
        assert!(matches!(outbox.next(), Some(Frame::Text(t)) if t == "b"));
        assert!(outbox.next().is_none());
    }

    #[test]
    fn a_full_outbox_refuses_more() {
        let outbox = Outbox::default();
        for i in 0..OUTBOX_CAPACITY {
            assert!(outbox.push(Frame::Text(i.to_string())));
        }
        assert!(!outbox.push(Frame::Text("one too many".into())));
    }

    #[test]
    fn an_urgent_close_drops_what_is_queued() {
        let outbox = Outbox::default();
        outbox.push(Frame::Text("x".into()));
        outbox.close(
            CloseReason {
                code: CloseCode::Again,
                description: None,
            },
            true,
        );
        assert!(matches!(outbox.next(), Some(Frame::Close(r)) if r.code == CloseCode::Again));
    }
}
