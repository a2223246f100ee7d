//! What the WebSocket sessions share (one actor per socket: the driver app, the merchant board,
//! and an order's tracking page): how a session is set up, when it subscribes again, and how an
//! inbound frame is parsed. The handshake (authentication, origin, access) happens in
//! [`super::routes`]; a session starts already authorised.

use std::sync::Arc;

use actix_ws::{MessageStream, Session};
use tokio::sync::watch;

use super::socket::SocketCore;
use crate::actors::{Engine, EngineError};
use crate::config::GatewayConfig;

/// Pause before a session whose feed ended subscribes again; after each failure that is worth
/// retrying (another replica cannot be reached now) it doubles, up to the maximum, and the
/// socket stays open meanwhile.
pub(super) const RESUBSCRIBE_RETRY_MIN_MS: u64 = 100;
const RESUBSCRIBE_RETRY_MAX_MS: u64 = 5_000;

/// The pause after a resubscription that failed after `pause_ms`.
pub(super) fn next_resubscribe_ms(pause_ms: u64) -> u64 {
    (pause_ms.max(RESUBSCRIBE_RETRY_MIN_MS) * 2).min(RESUBSCRIBE_RETRY_MAX_MS)
}

/// Whether a failed resubscription is worth trying again with the socket left open: the
/// engine or another replica is away for now (a Redis or database outage, a region moving),
/// as opposed to a refusal that will not change.
pub(super) fn passing(error: &EngineError) -> bool {
    matches!(
        error.code(),
        "dispatch_unavailable" | "store_unavailable" | "actor_failed"
    )
}

/// What every session is started with.
pub struct SessionSetup {
    pub session: Session,
    pub stream: MessageStream,
    pub engine: Engine,
    pub config: Arc<GatewayConfig>,
    /// When the login token expires, unix seconds.
    pub token_expires_at: i64,
    /// Turns true when the server shuts down: sessions close with 1001.
    pub shutdown: watch::Receiver<bool>,
}

impl SessionSetup {
    /// The socket state for a session of `kind` (`driver`, `merchant`, `tracker`), and the
    /// engine handle it talks to.
    pub(super) fn into_core(self, kind: &'static str) -> (SocketCore, Engine) {
        let core = SocketCore::new(
            kind,
            self.session,
            self.stream,
            self.shutdown,
            self.config,
            self.token_expires_at,
        );
        (core, self.engine)
    }
}

/// A kind of message a socket takes, as an enum with one variant per `type`.
pub(super) trait InboundMessage: Sized {
    /// The `type`s this socket takes.
    const TYPES: &'static [&'static str];
    /// The message of `kind` from its JSON object.
    fn from_value(kind: &str, value: serde_json::Value) -> Result<Self, String>;
    /// Its `type`, for metrics.
    fn label(&self) -> &'static str;
}

/// Declares an inbound message enum: `"type" => Variant(Payload)`, one payload struct per type,
/// so that a mistyped field is reported by name (`lat: invalid type: string, expected f64`).
macro_rules! inbound_messages {
    ($(#[$doc:meta])* $name:ident { $($tag:literal => $variant:ident($payload:ty)),* $(,)? }) => {
        $(#[$doc])*
        pub(super) enum $name {
            $($variant($payload)),*
        }

        impl super::session::InboundMessage for $name {
            const TYPES: &'static [&'static str] = &[$($tag),*];

            fn from_value(kind: &str, value: serde_json::Value) -> Result<Self, String> {
                match kind {
                    $($tag => super::session::from_value(value).map($name::$variant),)*
                    other => Err(format!("unknown message type {other:?}")),
                }
            }

            fn label(&self) -> &'static str {
                match self {
                    $($name::$variant(_) => $tag),*
                }
            }
        }
    };
}
pub(crate) use inbound_messages;

/// Deserialises a payload, naming the field at fault.
pub(super) fn from_value<T: serde::de::DeserializeOwned>(
    value: serde_json::Value,
) -> Result<T, String> {
    serde_path_to_error::deserialize(value).map_err(|error| {
        let path = error.path().to_string();
        let message = error.into_inner().to_string();
        if path == "." {
            message
        } else {
            format!("{path}: {message}")
        }
    })
}

/// Every `type` some socket takes: a known `type` sent to the wrong socket is `forbidden`, not
/// `bad_message`.
fn known_type(kind: &str) -> bool {
    <super::driver::DriverIn as InboundMessage>::TYPES.contains(&kind)
        || <super::merchant::MerchantIn as InboundMessage>::TYPES.contains(&kind)
}

/// Parses an inbound text frame: the error code (`bad_message` or `forbidden`) and what is
/// wrong, or the message.
pub(super) fn parse_message<T: InboundMessage>(text: &str) -> Result<T, (&'static str, String)> {
    let value: serde_json::Value = serde_json::from_str(text).map_err(|e| {
        let message = e.to_string();
        let message = message
            .rfind(" at line ")
            .map_or(message.as_str(), |i| &message[..i])
            .to_owned();
        ("bad_message", format!("not JSON: {message}"))
    })?;
    let kind = match value.get("type") {
        Some(serde_json::Value::String(kind)) => kind.clone(),
        Some(_) => return Err(("bad_message", "type: must be a string".to_owned())),
        None if value.is_object() => return Err(("bad_message", "type: is required".to_owned())),
        None => {
            return Err((
                "bad_message",
                "a message must be a JSON object with a type".to_owned(),
            ));
        }
    };
    if !T::TYPES.contains(&kind.as_str()) {
        return Err(if known_type(&kind) {
            (
                "forbidden",
                format!("{kind:?} is not a message this socket takes"),
            )
        } else {
            ("bad_message", format!("unknown message type {kind:?}"))
        });
    }
    T::from_value(&kind, value).map_err(|problem| ("bad_message", problem))
}

/// Parses an inbound text frame and counts it in `ws_messages_in_total` under its `type`; one
/// that does not parse is counted as `invalid` and answered with an `error` message.
pub(super) fn receive<T: InboundMessage>(core: &mut SocketCore, text: &str) -> Option<T> {
    match parse_message::<T>(text) {
        Ok(message) => {
            metrics::counter!("ws_messages_in_total", "kind" => core.kind(), "type" => message.label())
                .increment(1);
            Some(message)
        }
        Err((code, problem)) => {
            metrics::counter!("ws_messages_in_total", "kind" => core.kind(), "type" => "invalid")
                .increment(1);
            core.error(code, &problem);
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::driver;
    use super::*;

    #[test]
    fn parse_errors_name_the_field_and_tell_foreign_messages_apart() {
        let bad = |text: &str| parse_message::<driver::DriverIn>(text).err().unwrap();
        assert_eq!(bad("nope").0, "bad_message");
        assert!(bad("nope").1.starts_with("not JSON"));
        assert_eq!(bad("[1]").0, "bad_message");
        assert_eq!(bad(r#"{"lat":1}"#).1, "type: is required");
        let (code, problem) = bad(r#"{"type":"location","lat":"x","lon":1}"#);
        assert_eq!(code, "bad_message");
        assert!(problem.starts_with("lat:"), "{problem}");
        let (code, problem) = bad(r#"{"type":"location","lat":1}"#);
        assert_eq!(code, "bad_message");
        assert!(problem.contains("lon"), "{problem}");
        assert_eq!(bad(r#"{"type":"teleport"}"#).0, "bad_message");
        assert_eq!(
            bad(r#"{"type":"accept_order","order_id":"x","prep_minutes":1}"#).0,
            "forbidden"
        );
        assert!(
            parse_message::<driver::DriverIn>(r#"{"type":"location","lat":1,"lon":2}"#).is_ok()
        );
    }
}
