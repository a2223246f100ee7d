//! What clients send over the sockets: for each socket an enum with one variant per message
//! `type`, and the parser that reads a text frame into it, naming the field at fault when it
//! cannot. Every socket's messages are declared here, in one place, so that a `type` meant for
//! another socket is refused as `forbidden` rather than unknown without the sessions knowing
//! each other.

use serde::Deserialize;
use uuid::Uuid;

use super::socket::SocketCore;
use crate::domain::OrderId;
use crate::error::ErrorCode;

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

        impl InboundMessage for $name {
            const TYPES: &'static [&'static str] = &[$($tag),*];

            fn from_value(kind: &str, value: serde_json::Value) -> Result<Self, String> {
                match kind {
                    $($tag => from_value(value).map($name::$variant),)*
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
    <DriverIn as InboundMessage>::TYPES.contains(&kind)
        || <MerchantIn as InboundMessage>::TYPES.contains(&kind)
}

/// Parses an inbound text frame: the error code (`bad_message` or `forbidden`) and what is
/// wrong, or the message.
pub(super) fn parse_message<T: InboundMessage>(text: &str) -> Result<T, (ErrorCode, String)> {
    let value: serde_json::Value = serde_json::from_str(text).map_err(|e| {
        let message = e.to_string();
        let message = message
            .rfind(" at line ")
            .map_or(message.as_str(), |i| &message[..i])
            .to_owned();
        (ErrorCode::BadMessage, format!("not JSON: {message}"))
    })?;
    let kind = match value.get("type") {
        Some(serde_json::Value::String(kind)) => kind.clone(),
        Some(_) => return Err((ErrorCode::BadMessage, "type: must be a string".to_owned())),
        None if value.is_object() => {
            return Err((ErrorCode::BadMessage, "type: is required".to_owned()));
        }
        None => {
            return Err((
                ErrorCode::BadMessage,
                "a message must be a JSON object with a type".to_owned(),
            ));
        }
    };
    if !T::TYPES.contains(&kind.as_str()) {
        return Err(if known_type(&kind) {
            (
                ErrorCode::Forbidden,
                format!("{kind:?} is not a message this socket takes"),
            )
        } else {
            (
                ErrorCode::BadMessage,
                format!("unknown message type {kind:?}"),
            )
        });
    }
    T::from_value(&kind, value).map_err(|problem| (ErrorCode::BadMessage, problem))
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

// ---- The driver app. ----

#[derive(Deserialize)]
pub(super) struct Location {
    pub(super) lat: f64,
    pub(super) lon: f64,
    /// When the fix was taken, unix milliseconds.
    #[serde(default)]
    pub(super) ts: Option<i64>,
}

#[derive(Deserialize)]
pub(super) struct Availability {
    pub(super) available: bool,
}

#[derive(Deserialize)]
pub(super) struct OfferAnswer {
    pub(super) offer_id: Uuid,
}

#[derive(Deserialize)]
pub(super) struct OrderStep {
    pub(super) order_id: OrderId,
}

inbound_messages! {
    /// What the driver app sends.
    DriverIn {
        "location" => Location(Location),
        "availability" => Availability(Availability),
        "accept_offer" => AcceptOffer(OfferAnswer),
        "decline_offer" => DeclineOffer(OfferAnswer),
        "picked_up" => PickedUp(OrderStep),
        "delivered" => Delivered(OrderStep),
    }
}

// ---- The merchant board. ----

#[derive(Deserialize)]
pub(super) struct Accept {
    pub(super) order_id: OrderId,
    pub(super) prep_minutes: u32,
}

#[derive(Deserialize)]
pub(super) struct Reject {
    pub(super) order_id: OrderId,
    #[serde(default)]
    pub(super) reason: String,
}

#[derive(Deserialize)]
pub(super) struct Ready {
    pub(super) order_id: OrderId,
}

inbound_messages! {
    /// What the merchant board sends.
    MerchantIn {
        "accept_order" => AcceptOrder(Accept),
        "reject_order" => RejectOrder(Reject),
        "order_ready" => OrderReady(Ready),
    }
}

// ---- The tracking page. ----

/// The tracking socket takes no messages: any `type` is unknown here.
pub(super) enum TrackerIn {}

impl InboundMessage for TrackerIn {
    const TYPES: &'static [&'static str] = &[];

    fn from_value(kind: &str, _: serde_json::Value) -> Result<Self, String> {
        Err(format!("unknown message type {kind:?}"))
    }

    fn label(&self) -> &'static str {
        match *self {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_errors_name_the_field_and_tell_foreign_messages_apart() {
        let bad = |text: &str| parse_message::<DriverIn>(text).err().unwrap();
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
        assert!(parse_message::<DriverIn>(r#"{"type":"location","lat":1,"lon":2}"#).is_ok());
    }
}
