//! The wire of the simulated WhatsApp customers, pure: what they send (Meta's webhook envelope
//! around one message, signed over the raw body with the app secret), how they read what the
//! bot sends through the Graph API (a location request, a list, reply buttons, a text — told
//! apart from the notifier's order updates), and the choices a person makes from a list.

use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

use crate::payments::webhook::encode_hex;

/// The header Meta signs its deliveries in.
pub const SIGNATURE_HEADER: &str = "X-Hub-Signature-256";
/// The business number's display number in the envelope's metadata.
pub const DISPLAY_PHONE_NUMBER: &str = "15550000000";
/// The WhatsApp Business account id in the envelope.
const WABA_ID: &str = "WABA";

/// One message a customer sends.
#[derive(Debug, Clone, PartialEq)]
pub enum Said {
    Text(String),
    /// A tap on a list row.
    ListReply {
        id: String,
        title: String,
    },
    /// A tap on a reply button.
    ButtonReply {
        id: String,
        title: String,
    },
    /// A shared pin, with the address WhatsApp shows for it when known.
    Location {
        lat: f64,
        lon: f64,
        address: Option<String>,
    },
}

impl Said {
    /// Meta's message object for it (without `from`, `id`, `timestamp`).
    fn message(&self) -> Value {
        match self {
            Said::Text(body) => json!({"type": "text", "text": {"body": body}}),
            Said::ListReply { id, title } => json!({"type": "interactive", "interactive": {
                "type": "list_reply", "list_reply": {"id": id, "title": title}}}),
            Said::ButtonReply { id, title } => json!({"type": "interactive", "interactive": {
                "type": "button_reply", "button_reply": {"id": id, "title": title}}}),
            Said::Location { lat, lon, address } => {
                let mut location = json!({"latitude": lat, "longitude": lon});
                if let Some(address) = address {
                    location["address"] = json!(address);
                }
                json!({"type": "location", "location": location})
            }
        }
    }
}

/// Who sends a message, and which one: the sender's digits (`wa_id`), profile name, the
/// message's `wamid`, and when it was sent (Unix seconds).
#[derive(Debug, Clone, Copy)]
pub struct Sender<'a> {
    pub digits: &'a str,
    pub name: &'a str,
    pub wamid: &'a str,
    pub sent_at_unix_secs: i64,
}

/// Meta's webhook envelope carrying one message to the business number `phone_number_id`.
pub fn envelope(phone_number_id: &str, from: Sender<'_>, said: &Said) -> Value {
    let mut message = said.message();
    message["from"] = json!(from.digits);
    message["id"] = json!(from.wamid);
    message["timestamp"] = json!(from.sent_at_unix_secs.to_string());
    json!({
        "object": "whatsapp_business_account",
        "entry": [{
            "id": WABA_ID,
            "changes": [{
                "field": "messages",
                "value": {
                    "messaging_product": "whatsapp",
                    "metadata": {
                        "display_phone_number": DISPLAY_PHONE_NUMBER,
                        "phone_number_id": phone_number_id,
                    },
                    "contacts": [{"profile": {"name": from.name}, "wa_id": from.digits}],
                    "messages": [message],
                },
            }],
        }],
    })
}

/// The `X-Hub-Signature-256` value for `body`: `sha256=` and the hex HMAC-SHA256 of the raw
/// body under the app secret.
pub fn signature(app_secret: &[u8], body: &[u8]) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(app_secret).expect("HMAC takes keys of any length");
    mac.update(body);
    format!("sha256={}", encode_hex(&mac.finalize().into_bytes()))
}

/// A row or reply button the bot offered.
#[derive(Debug, Clone, PartialEq)]
pub struct Offered {
    pub id: String,
    pub title: String,
}

/// A message the bot sent, as a customer reads it.
#[derive(Debug, Clone, PartialEq)]
pub enum Bot {
    /// "Send location".
    LocationRequest,
    List(Vec<Offered>),
    Buttons(Vec<Offered>),
    Text(String),
    /// An order update from the notifier (a template, or a text sent without a link preview:
    /// the bot's texts ask for one), not part of the conversation.
    Notification,
    /// Anything else.
    Other,
}

impl Bot {
    /// Reads a Cloud API message body as the Graph API received it.
    pub fn read(message: &Value) -> Bot {
        match message["type"].as_str() {
            Some("template") => Bot::Notification,
            Some("text") if message["text"]["preview_url"] == json!(false) => Bot::Notification,
            Some("text") => Bot::Text(
                message["text"]["body"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            ),
            Some("interactive") => {
                let interactive = &message["interactive"];
                let action = &interactive["action"];
                match interactive["type"].as_str() {
                    Some("location_request_message") => Bot::LocationRequest,
                    Some("list") => Bot::List(
                        action["sections"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .flat_map(|section| section["rows"].as_array().into_iter().flatten())
                            .filter_map(offered)
                            .collect(),
                    ),
                    Some("button") => Bot::Buttons(
                        action["buttons"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .filter_map(|button| offered(&button["reply"]))
                            .collect(),
                    ),
                    _ => Bot::Other,
                }
            }
            _ => Bot::Other,
        }
    }

    /// Whether it is a list with a row whose id starts with `prefix` (`kitchen:`, `dish:`).
    pub fn lists(&self, prefix: &str) -> bool {
        matches!(self, Bot::List(rows) if rows.iter().any(|r| r.id.starts_with(prefix)))
    }

    /// Whether it has a reply button of id `id` (`qty:1`, `basket:checkout`).
    pub fn has_button(&self, id: &str) -> bool {
        matches!(self, Bot::Buttons(buttons) if buttons.iter().any(|b| b.id == id))
    }

    /// The rows or buttons offered (none for other messages).
    pub fn offered(&self) -> &[Offered] {
        match self {
            Bot::List(options) | Bot::Buttons(options) => options,
            _ => &[],
        }
    }

    /// Whether the customer could answer it: anything but a notification or an unknown kind.
    pub fn is_conversation(&self) -> bool {
        !matches!(self, Bot::Notification | Bot::Other)
    }
}

fn offered(row: &Value) -> Option<Offered> {
    Some(Offered {
        id: row["id"].as_str()?.to_owned(),
        title: row["title"].as_str().unwrap_or_default().to_owned(),
    })
}

/// The payment link's token in a text: what follows `/pay/`, up to white space.
pub fn pay_token(text: &str) -> Option<&str> {
    let (_, rest) = text.split_once("/pay/")?;
    let token = rest.split(|c: char| c.is_whitespace()).next()?;
    let token = token.trim_end_matches(['.', ',', ')']);
    (!token.is_empty()).then_some(token)
}

/// The order's code when the text says it was placed ("Order #ABC123 placed …").
pub fn placed_code(text: &str) -> Option<&str> {
    let (_, rest) = text.split_once("Order #")?;
    let code = rest.split(|c: char| !c.is_ascii_alphanumeric()).next()?;
    let after = &rest[code.len()..];
    (!code.is_empty() && after.trim_start().starts_with("placed")).then_some(code)
}

/// What a customer does with a list it was shown.
#[derive(Debug, Clone, PartialEq)]
pub enum Pick {
    /// Tap (or type the number of) this row: its place on the page, from 0.
    Row(usize, Offered),
    /// Turn the page: the row that does.
    NextPage(Offered),
    /// Nothing here for them.
    Nothing,
}

/// A kitchen from the list: the one the customer meant (`wanted`, a merchant id) when it is on
/// the page; else the next page while there is one; else the nearest of the kitchens the
/// simulation runs (`ours`: a kitchen without a simulated board would never cook).
pub fn pick_kitchen(rows: &[Offered], wanted: &str, ours: &[&str]) -> Pick {
    let kitchen = |row: &Offered| row.id.strip_prefix("kitchen:").map(str::to_owned);
    if let Some((i, row)) = rows
        .iter()
        .enumerate()
        .find(|(_, row)| kitchen(row).as_deref() == Some(wanted))
    {
        return Pick::Row(i, row.clone());
    }
    // "kitchens:page:0" goes back to the start: not a new page.
    if let Some(next) = rows.iter().find(|row| {
        row.id
            .strip_prefix("kitchens:page:")
            .is_some_and(|page| page != "0")
    }) {
        return Pick::NextPage(next.clone());
    }
    rows.iter()
        .enumerate()
        .find(|(_, row)| kitchen(row).is_some_and(|id| ours.contains(&id.as_str())))
        .map_or(Pick::Nothing, |(i, row)| Pick::Row(i, row.clone()))
}

/// A dish from the menu: the first of `wanted` (menu item ids, in the order the customer
/// wants them) on the page, else the dish at `fallback` (modulo the dishes shown).
pub fn pick_dish(rows: &[Offered], wanted: &[&str], fallback: usize) -> Pick {
    let dishes: Vec<(usize, &Offered)> = rows
        .iter()
        .enumerate()
        .filter(|(_, row)| row.id.starts_with("dish:"))
        .collect();
    let found = wanted.iter().find_map(|want| {
        dishes
            .iter()
            .find(|(_, row)| row.id.strip_prefix("dish:") == Some(*want))
    });
    match found.or_else(|| dishes.get(fallback % dishes.len().max(1))) {
        Some((i, row)) => Pick::Row(*i, (*row).clone()),
        None => Pick::Nothing,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::chat::{Input, Reply, ReplyOption};

    fn row(id: &str, title: &str) -> Offered {
        Offered {
            id: id.to_owned(),
            title: title.to_owned(),
        }
    }

    fn sender(wamid: &str) -> Sender<'_> {
        Sender {
            digits: "358451234567",
            name: "Aino",
            wamid,
            sent_at_unix_secs: 1_800_000_000,
        }
    }

    #[test]
    fn the_envelope_is_metas_and_the_engine_reads_each_kind_of_message_from_it() {
        let cases = [
            (
                Said::Text("hi".to_owned()),
                Input::Text {
                    body: "hi".to_owned(),
                },
            ),
            (
                Said::ListReply {
                    id: "kitchen:abc".to_owned(),
                    title: "Sim Kitchen 0".to_owned(),
                },
                Input::Choice {
                    id: "kitchen:abc".to_owned(),
                    title: "Sim Kitchen 0".to_owned(),
                },
            ),
            (
                Said::ButtonReply {
                    id: "qty:2".to_owned(),
                    title: "2".to_owned(),
                },
                Input::Choice {
                    id: "qty:2".to_owned(),
                    title: "2".to_owned(),
                },
            ),
            (
                Said::Location {
                    lat: 60.17,
                    lon: 24.94,
                    address: Some("Mannerheimintie 1".to_owned()),
                },
                Input::Location {
                    lat: 60.17,
                    lon: 24.94,
                    label: Some("Mannerheimintie 1".to_owned()),
                },
            ),
        ];
        for (said, input) in cases {
            let body = envelope("1234567890", sender("wamid.X1"), &said);
            assert_eq!(body["object"], "whatsapp_business_account");
            let value = &body["entry"][0]["changes"][0]["value"];
            assert_eq!(body["entry"][0]["changes"][0]["field"], "messages");
            assert_eq!(value["metadata"]["phone_number_id"], "1234567890");
            assert_eq!(value["contacts"][0]["wa_id"], "358451234567");
            assert_eq!(value["contacts"][0]["profile"]["name"], "Aino");
            let message = &value["messages"][0];
            assert_eq!(message["from"], "358451234567");
            assert_eq!(message["id"], "wamid.X1");
            assert_eq!(message["timestamp"], "1800000000");
            assert_eq!(Input::from_whatsapp(message), input, "{said:?}");
        }
    }

    #[test]
    fn the_signature_is_the_one_the_webhook_checks() {
        let body = serde_json::to_vec(&envelope(
            "1234567890",
            sender("wamid.X2"),
            &Said::Text("hello".to_owned()),
        ))
        .unwrap();
        let header = signature(b"sim-app-secret-0123456789", &body);
        assert!(header.starts_with("sha256="));
        assert_eq!(header.len(), "sha256=".len() + 64);
        use crate::api::whatsapp::signature_matches;
        assert!(signature_matches(
            Some(&header),
            &body,
            b"sim-app-secret-0123456789"
        ));
        assert!(!signature_matches(Some(&header), &body, b"another-secret"));
        let mut tampered = body.clone();
        tampered[10] ^= 1;
        assert!(!signature_matches(
            Some(&header),
            &tampered,
            b"sim-app-secret-0123456789"
        ));
        assert_eq!(
            SIGNATURE_HEADER,
            crate::api::whatsapp::WHATSAPP_SIGNATURE_HEADER
        );
    }

    #[test]
    fn the_bots_replies_read_as_what_they_ask_and_order_updates_as_notifications() {
        let to = "358451234567";
        let ask = Reply::location_request("Where should it go?").to_whatsapp(to);
        assert_eq!(Bot::read(&ask), Bot::LocationRequest);
        let rows = vec![
            ReplyOption {
                id: "kitchen:k1".to_owned(),
                title: "Sim Kitchen 1".to_owned(),
                description: Some("0.4 km away".to_owned()),
            },
            ReplyOption {
                id: "kitchens:page:1".to_owned(),
                title: "More kitchens".to_owned(),
                description: None,
            },
        ];
        let list = Bot::read(&Reply::list("Which one?", "Kitchens", rows).to_whatsapp(to));
        assert_eq!(
            list,
            Bot::List(vec![
                row("kitchen:k1", "Sim Kitchen 1"),
                row("kitchens:page:1", "More kitchens")
            ])
        );
        assert!(list.lists("kitchen:"));
        assert!(!list.lists("dish:"));
        let buttons = Bot::read(
            &Reply::buttons(
                "Your basket",
                &[("basket:checkout", "Checkout"), ("basket:add", "Add more")],
            )
            .to_whatsapp(to),
        );
        assert!(buttons.has_button("basket:checkout"));
        assert!(!buttons.has_button("qty:1"));
        assert_eq!(buttons.offered().len(), 2);
        let text = Bot::read(&Reply::text("Pay here: http://x/pay/abc").to_whatsapp(to));
        assert_eq!(text, Bot::Text("Pay here: http://x/pay/abc".to_owned()));
        assert!(text.is_conversation());
        // The notifier's messages: a text without a link preview, or a template.
        let update = json!({"messaging_product": "whatsapp", "to": to, "type": "text",
            "text": {"preview_url": false, "body": "Sim Kitchen 1 accepted your order #ABC123."}});
        assert_eq!(Bot::read(&update), Bot::Notification);
        let template =
            json!({"to": to, "type": "template", "template": {"name": "mealkitz_order_accepted"}});
        assert_eq!(Bot::read(&template), Bot::Notification);
        assert!(!Bot::read(&template).is_conversation());
        assert_eq!(Bot::read(&json!({"type": "image"})), Bot::Other);
    }

    #[test]
    fn the_pay_link_and_the_placed_order_are_read_from_the_bots_texts() {
        let text = "Total €16.49 (with €3.99 delivery). Pay here — the link works for 30 minutes:\nhttp://localhost:8000/pay/AbC-_12x";
        assert_eq!(pay_token(text), Some("AbC-_12x"));
        assert_eq!(pay_token("http://h/pay/tok. Thanks"), Some("tok"));
        assert_eq!(pay_token("no link here"), None);
        assert_eq!(pay_token("http://h/pay/ and more"), None);
        let placed = "Order #A1B2C3 placed ✅ Track it here: http://h/track/x#token=y";
        assert_eq!(placed_code(placed), Some("A1B2C3"));
        assert_eq!(placed_code("Order #A1B2C3 is being prepared."), None);
        assert_eq!(placed_code("Nothing"), None);
    }

    #[test]
    fn a_customer_taps_its_kitchen_or_turns_the_page_or_settles_for_one_of_ours() {
        let page = vec![
            row("kitchen:other", "Far Away Kitchen"),
            row("kitchen:k2", "Sim Kitchen 2"),
            row("kitchen:k1", "Sim Kitchen 1"),
            row("kitchens:page:1", "More kitchens"),
        ];
        assert_eq!(
            pick_kitchen(&page, "k1", &["k1", "k2"]),
            Pick::Row(2, page[2].clone())
        );
        // Not on this page: the next one.
        assert_eq!(
            pick_kitchen(&page, "k9", &["k2", "k9"]),
            Pick::NextPage(page[3].clone())
        );
        // The last page turns back to the start: take the nearest of ours instead.
        let last = vec![
            row("kitchen:other", "Far Away Kitchen"),
            row("kitchen:k2", "Sim Kitchen 2"),
            row("kitchens:page:0", "Back to the start"),
        ];
        assert_eq!(
            pick_kitchen(&last, "k9", &["k2", "k9"]),
            Pick::Row(1, last[1].clone())
        );
        // Only kitchens nobody runs in this simulation.
        assert_eq!(pick_kitchen(&last[..1], "k9", &["k9"]), Pick::Nothing);
    }

    #[test]
    fn a_customer_taps_the_dish_it_wants_or_another_one() {
        let menu = vec![
            row("dish:d1", "Ramen kit"),
            row("dish:d2", "Gyoza (6)"),
            row("dish:d3", "Miso soup"),
            row("menu:page:1", "More dishes"),
        ];
        assert_eq!(
            pick_dish(&menu, &["d3", "d1"], 0),
            Pick::Row(2, menu[2].clone())
        );
        assert_eq!(
            pick_dish(&menu, &["gone", "d2"], 0),
            Pick::Row(1, menu[1].clone())
        );
        // None of those: the fallback, counted among the dishes only.
        assert_eq!(
            pick_dish(&menu, &["gone"], 4),
            Pick::Row(1, menu[1].clone())
        );
        assert_eq!(pick_dish(&menu[3..], &["d1"], 0), Pick::Nothing);
    }
}
