//! What a WhatsApp conversation is made of, without the conversation itself: the customer's
//! inputs read from Meta's message objects, the bot's replies within WhatsApp's interactive
//! limits (≤ 3 reply buttons with titles ≤ 20 characters, ≤ 10 list rows with titles ≤ 24), and
//! the basket a payment link carries. Pure: no I/O.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{Cents, MerchantId, Position};

/// Most reply buttons in one message (WhatsApp's limit).
pub const BUTTONS_MAX: usize = 3;
/// Longest reply-button title, in characters (WhatsApp's limit).
pub const BUTTON_TITLE_MAX_CHARS: usize = 20;
/// Most rows in one list message, over all its sections (WhatsApp's limit).
pub const LIST_ROWS_MAX: usize = 10;
/// Longest list-row title, in characters (WhatsApp's limit).
pub const ROW_TITLE_MAX_CHARS: usize = 24;
/// Longest list-row description, in characters (WhatsApp's limit).
pub const ROW_DESCRIPTION_MAX_CHARS: usize = 72;
/// Longest list button label, in characters (WhatsApp's limit).
pub const LIST_BUTTON_MAX_CHARS: usize = 20;
/// Longest body of an interactive message, in characters (WhatsApp's limit).
pub const INTERACTIVE_BODY_MAX_CHARS: usize = 1_024;
/// Longest text message, in characters (WhatsApp's limit).
pub const TEXT_MAX_CHARS: usize = 4_096;
/// Longest typed text the conversation reads; the rest is cut.
pub const INPUT_MAX_CHARS: usize = 500;
/// Longest row or button id, in characters (WhatsApp allows 200 / 256).
pub const REPLY_ID_MAX_CHARS: usize = 200;

/// The inbox kind of the message the pay endpoint writes when a link was paid (`paid_{link}`);
/// the webhook never keeps a message under it.
pub const PAID_KIND: &str = "paid";
/// The id prefix of those messages.
pub const PAID_ID_PREFIX: &str = "paid_";

/// What the customer sent, as the conversation reads it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Input {
    /// Typed text, trimmed and cut to [`INPUT_MAX_CHARS`].
    Text { body: String },
    /// A tap on a reply button or a list row: the id we gave it.
    Choice { id: String, title: String },
    /// A shared location pin.
    Location {
        lat: f64,
        lon: f64,
        /// The pin's name and address, when WhatsApp sent them.
        label: Option<String>,
    },
    /// A kind of message the bot cannot read (image, audio, sticker, …).
    Unsupported { kind: String },
    /// The payment link was paid: this order was placed (sent by the pay endpoint).
    Paid { order_id: super::OrderId },
    /// Nothing came for the idle timeout (sent by the worker's sweep).
    Idle,
}

impl Input {
    /// Reads one of Meta's message objects (`messages[]` of the webhook envelope).
    pub fn from_whatsapp(message: &serde_json::Value) -> Input {
        let kind = message["type"].as_str().unwrap_or("unknown");
        match kind {
            "text" => Input::Text {
                body: clean_text(message["text"]["body"].as_str().unwrap_or_default()),
            },
            "interactive" => {
                let interactive = &message["interactive"];
                let reply = match interactive["type"].as_str() {
                    Some("button_reply") => &interactive["button_reply"],
                    Some("list_reply") => &interactive["list_reply"],
                    _ => {
                        return Input::Unsupported {
                            kind: "interactive".to_owned(),
                        };
                    }
                };
                match reply["id"].as_str() {
                    Some(id) if !id.is_empty() => Input::Choice {
                        id: cut(id, REPLY_ID_MAX_CHARS),
                        title: clean_text(reply["title"].as_str().unwrap_or_default()),
                    },
                    _ => Input::Unsupported {
                        kind: "interactive".to_owned(),
                    },
                }
            }
            // A tap on a quick-reply button of a template arrives as `button`.
            "button" => Input::Text {
                body: clean_text(message["button"]["text"].as_str().unwrap_or_default()),
            },
            "location" => {
                let location = &message["location"];
                let lat = number(&location["latitude"]);
                let lon = number(&location["longitude"]);
                match (lat, lon) {
                    (Some(lat), Some(lon))
                        if (-90.0..=90.0).contains(&lat) && (-180.0..=180.0).contains(&lon) =>
                    {
                        let label = [location["name"].as_str(), location["address"].as_str()]
                            .into_iter()
                            .flatten()
                            .map(clean_text)
                            .filter(|s| !s.is_empty())
                            .collect::<Vec<_>>()
                            .join(", ");
                        Input::Location {
                            lat,
                            lon,
                            label: (!label.is_empty()).then_some(label),
                        }
                    }
                    _ => Input::Unsupported {
                        kind: "location".to_owned(),
                    },
                }
            }
            other => Input::Unsupported {
                kind: cut(other, 32),
            },
        }
    }
}

/// A number WhatsApp may send as a JSON number or a string.
fn number(value: &serde_json::Value) -> Option<f64> {
    value
        .as_f64()
        .or_else(|| value.as_str().and_then(|s| s.trim().parse().ok()))
        .filter(|n: &f64| n.is_finite())
}

/// Trimmed, control characters turned into spaces, cut to [`INPUT_MAX_CHARS`].
fn clean_text(text: &str) -> String {
    let cleaned: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    cut(cleaned.trim(), INPUT_MAX_CHARS)
}

/// `text` cut to at most `max` characters; a cut text ends with `…`.
pub fn cut(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let mut out: String = text.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// One button or list row: the id the tap sends back, and what the customer reads.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReplyOption {
    pub id: String,
    pub title: String,
    /// List rows only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// What the bot sends: one WhatsApp message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Reply {
    Text {
        body: String,
    },
    /// Up to three reply buttons under a body.
    Buttons {
        body: String,
        buttons: Vec<ReplyOption>,
    },
    /// A list behind a button (`button` is its label), up to ten rows.
    List {
        body: String,
        button: String,
        rows: Vec<ReplyOption>,
    },
    /// WhatsApp's "Send location" request.
    LocationRequest {
        body: String,
    },
}

impl Reply {
    pub fn text(body: impl Into<String>) -> Reply {
        Reply::Text {
            body: cut(&body.into(), TEXT_MAX_CHARS),
        }
    }

    /// Reply buttons: at most [`BUTTONS_MAX`], titles cut to [`BUTTON_TITLE_MAX_CHARS`].
    pub fn buttons(body: impl Into<String>, buttons: &[(&str, &str)]) -> Reply {
        Reply::Buttons {
            body: cut(&body.into(), INTERACTIVE_BODY_MAX_CHARS),
            buttons: buttons
                .iter()
                .take(BUTTONS_MAX)
                .map(|(id, title)| ReplyOption {
                    id: cut(id, REPLY_ID_MAX_CHARS),
                    title: cut(title, BUTTON_TITLE_MAX_CHARS),
                    description: None,
                })
                .collect(),
        }
    }

    /// A list: at most [`LIST_ROWS_MAX`] rows, titles and descriptions cut to WhatsApp's limits.
    pub fn list(body: impl Into<String>, button: &str, rows: Vec<ReplyOption>) -> Reply {
        Reply::List {
            body: cut(&body.into(), INTERACTIVE_BODY_MAX_CHARS),
            button: cut(button, LIST_BUTTON_MAX_CHARS),
            rows: rows
                .into_iter()
                .take(LIST_ROWS_MAX)
                .map(|row| ReplyOption {
                    id: cut(&row.id, REPLY_ID_MAX_CHARS),
                    title: cut(&row.title, ROW_TITLE_MAX_CHARS),
                    description: row.description.map(|d| cut(&d, ROW_DESCRIPTION_MAX_CHARS)),
                })
                .collect(),
        }
    }

    pub fn location_request(body: impl Into<String>) -> Reply {
        Reply::LocationRequest {
            body: cut(&body.into(), INTERACTIVE_BODY_MAX_CHARS),
        }
    }

    /// The message as the Cloud API's `POST /{phone-number-id}/messages` takes it, to `to`
    /// (digits of the E.164 number).
    pub fn to_whatsapp(&self, to: &str) -> serde_json::Value {
        use serde_json::json;
        let message = match self {
            Reply::Text { body } => json!({
                "type": "text",
                "text": { "preview_url": true, "body": body },
            }),
            Reply::Buttons { body, buttons } => json!({
                "type": "interactive",
                "interactive": {
                    "type": "button",
                    "body": { "text": body },
                    "action": { "buttons": buttons.iter().map(|b| json!({
                        "type": "reply",
                        "reply": { "id": b.id, "title": b.title },
                    })).collect::<Vec<_>>() },
                },
            }),
            Reply::List { body, button, rows } => json!({
                "type": "interactive",
                "interactive": {
                    "type": "list",
                    "body": { "text": body },
                    "action": {
                        "button": button,
                        "sections": [{ "rows": rows.iter().map(|r| {
                            let mut row = json!({ "id": r.id, "title": r.title });
                            if let Some(description) = &r.description {
                                row["description"] = json!(description);
                            }
                            row
                        }).collect::<Vec<_>>() }],
                    },
                },
            }),
            Reply::LocationRequest { body } => json!({
                "type": "interactive",
                "interactive": {
                    "type": "location_request_message",
                    "body": { "text": body },
                    "action": { "name": "send_location" },
                },
            }),
        };
        let mut body = json!({
            "messaging_product": "whatsapp",
            "recipient_type": "individual",
            "to": to,
        });
        if let (Some(out), Some(fields)) = (body.as_object_mut(), message.as_object()) {
            out.extend(fields.clone());
        }
        body
    }
}

/// One line of a basket: a menu item as it was when chosen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BasketLine {
    pub menu_item_id: Uuid,
    pub name: String,
    pub quantity: u32,
    pub unit_price_cents: Cents,
}

/// Where the order goes: a point, and the address or label the customer gave.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Dropoff {
    pub position: Position,
    pub address: String,
}

/// What a payment link pays for: one kitchen's items, delivered to one place. The checkout
/// prices it again (menu prices and delivery fee as they are when paying).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Basket {
    pub merchant_id: MerchantId,
    pub merchant_name: String,
    pub lines: Vec<BasketLine>,
    pub dropoff: Dropoff,
}

impl Basket {
    /// The items' sum, without the delivery fee.
    pub fn subtotal(&self) -> Cents {
        Cents(
            self.lines
                .iter()
                .map(|l| l.unit_price_cents.0.saturating_mul(i64::from(l.quantity)))
                .fold(0i64, i64::saturating_add),
        )
    }
}

/// The alphabet of account link codes: Crockford's base 32 (no I, L, O or U to misread).
pub const LINK_CODE_ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
/// Characters in a link code (40 bits: no guessing one within its ten minutes).
pub const LINK_CODE_CHARS: usize = 8;
/// How long a link code can be used.
pub const LINK_CODE_TTL_SECS: i64 = 10 * 60;

/// A link code as typed (`k7m2-qx9p`, `K7M2 QX9P`, with O for 0 or I/L for 1) in its one form
/// (`K7M2QX9P`); `None` if it cannot be one.
pub fn link_code_normal(typed: &str) -> Option<String> {
    let code: String = typed
        .chars()
        .filter(|c| !matches!(c, '-' | ' '))
        .map(|c| match c.to_ascii_uppercase() {
            'O' => '0',
            'I' | 'L' => '1',
            other => other,
        })
        .collect();
    (code.len() == LINK_CODE_CHARS && code.bytes().all(|b| LINK_CODE_ALPHABET.contains(&b)))
        .then_some(code)
}

/// What a link code is stored and found by: the hex SHA-256 of its one form.
pub fn link_code_hash(normal: &str) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(normal.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn metas_message_objects_are_read_as_inputs() {
        let cases = [
            (
                json!({"type":"text","text":{"body":"  hi\tthere \u{0007} "}}),
                Input::Text {
                    body: "hi there".into(),
                },
            ),
            (
                json!({"type":"interactive","interactive":{"type":"button_reply","button_reply":{"id":"qty:2","title":"2"}}}),
                Input::Choice {
                    id: "qty:2".into(),
                    title: "2".into(),
                },
            ),
            (
                json!({"type":"interactive","interactive":{"type":"list_reply","list_reply":{"id":"dish:x","title":"Soup","description":"$9"}}}),
                Input::Choice {
                    id: "dish:x".into(),
                    title: "Soup".into(),
                },
            ),
            (
                json!({"type":"location","location":{"latitude":60.17,"longitude":"24.94","name":"Home","address":"Mannerheimintie 5"}}),
                Input::Location {
                    lat: 60.17,
                    lon: 24.94,
                    label: Some("Home, Mannerheimintie 5".into()),
                },
            ),
            (
                json!({"type":"location","location":{"latitude":91,"longitude":24}}),
                Input::Unsupported {
                    kind: "location".into(),
                },
            ),
            (
                json!({"type":"interactive","interactive":{"type":"nfm_reply"}}),
                Input::Unsupported {
                    kind: "interactive".into(),
                },
            ),
            (
                json!({"type":"image","image":{"id":"1"}}),
                Input::Unsupported {
                    kind: "image".into(),
                },
            ),
            (
                json!(null),
                Input::Unsupported {
                    kind: "unknown".into(),
                },
            ),
        ];
        for (message, expected) in cases {
            assert_eq!(Input::from_whatsapp(&message), expected, "{message}");
        }
        let long = "x".repeat(5_000);
        let Input::Text { body } =
            Input::from_whatsapp(&json!({"type":"text","text":{"body":long}}))
        else {
            panic!("text");
        };
        assert_eq!(body.chars().count(), INPUT_MAX_CHARS);
    }

    #[test]
    fn link_codes_are_read_however_they_are_typed() {
        assert_eq!(link_code_normal("k7m2-qx9p").as_deref(), Some("K7M2QX9P"));
        assert_eq!(link_code_normal(" K7M2 QX9P ").as_deref(), Some("K7M2QX9P"));
        assert_eq!(
            link_code_normal("O1L2-I3UX"),
            None,
            "U is not in the alphabet"
        );
        assert_eq!(link_code_normal("OILZ-0000").as_deref(), Some("011Z0000"));
        assert_eq!(link_code_normal("K7M2QX9"), None);
        assert_eq!(link_code_normal("K7M2QX9P1"), None);
        assert_eq!(link_code_hash("K7M2QX9P").len(), 64);
        assert_ne!(link_code_hash("K7M2QX9P"), link_code_hash("K7M2QX9Q"));
    }

    #[test]
    fn replies_are_cloud_api_messages_within_the_limits() {
        let buttons = Reply::buttons(
            "Pick",
            &[
                ("a", "One"),
                ("b", "A title far longer than twenty"),
                ("c", "Three"),
                ("d", "Four"),
            ],
        );
        let body = buttons.to_whatsapp("358401234567");
        assert_eq!(body["to"], "358401234567");
        assert_eq!(body["messaging_product"], "whatsapp");
        assert_eq!(body["interactive"]["type"], "button");
        let sent = body["interactive"]["action"]["buttons"].as_array().unwrap();
        assert_eq!(sent.len(), 3);
        assert_eq!(
            sent[1]["reply"]["title"].as_str().unwrap().chars().count(),
            20
        );

        let rows = (0..12)
            .map(|i| ReplyOption {
                id: format!("r{i}"),
                title: format!("Row {i}"),
                description: Some("d".repeat(100)),
            })
            .collect();
        let list = Reply::list("Body", "A very long button label", rows).to_whatsapp("1");
        let action = &list["interactive"]["action"];
        assert_eq!(action["sections"][0]["rows"].as_array().unwrap().len(), 10);
        assert!(action["button"].as_str().unwrap().chars().count() <= 20);
        assert_eq!(
            action["sections"][0]["rows"][0]["description"]
                .as_str()
                .unwrap()
                .chars()
                .count(),
            72
        );

        let ask = Reply::location_request("Where?").to_whatsapp("1");
        assert_eq!(ask["interactive"]["type"], "location_request_message");
        assert_eq!(ask["interactive"]["action"]["name"], "send_location");
        assert_eq!(
            Reply::text("Hello").to_whatsapp("1")["text"]["body"],
            "Hello"
        );
    }
}
