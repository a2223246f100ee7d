//! What notifies whom, pure: the event types merchants subscribe to and which journal changes
//! raise them, phone numbers (E.164), the order code people read, the words of each customer
//! message, the webhook body, the webhook retry schedule and what a WhatsApp error code means.

use std::fmt;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

use super::delivery::{Change, OrderView};
use super::ids::OrderId;
use super::money::Cents;

/// An event a merchant's webhook endpoint may subscribe to; each is raised by one kind of journal
/// entry (see [`NotifyEvent::of_change`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum NotifyEvent {
    #[serde(rename = "order.placed")]
    Placed,
    #[serde(rename = "order.accepted")]
    Accepted,
    #[serde(rename = "order.rejected")]
    Rejected,
    #[serde(rename = "order.ready")]
    Ready,
    #[serde(rename = "order.driver_assigned")]
    DriverAssigned,
    #[serde(rename = "order.picked_up")]
    PickedUp,
    #[serde(rename = "order.delivered")]
    Delivered,
    #[serde(rename = "order.cancelled")]
    Cancelled,
}

impl NotifyEvent {
    pub const ALL: [NotifyEvent; 8] = [
        NotifyEvent::Placed,
        NotifyEvent::Accepted,
        NotifyEvent::Rejected,
        NotifyEvent::Ready,
        NotifyEvent::DriverAssigned,
        NotifyEvent::PickedUp,
        NotifyEvent::Delivered,
        NotifyEvent::Cancelled,
    ];

    /// The event's name on the wire (`order.accepted`).
    pub fn as_str(self) -> &'static str {
        match self {
            NotifyEvent::Placed => "order.placed",
            NotifyEvent::Accepted => "order.accepted",
            NotifyEvent::Rejected => "order.rejected",
            NotifyEvent::Ready => "order.ready",
            NotifyEvent::DriverAssigned => "order.driver_assigned",
            NotifyEvent::PickedUp => "order.picked_up",
            NotifyEvent::Delivered => "order.delivered",
            NotifyEvent::Cancelled => "order.cancelled",
        }
    }

    pub fn parse(name: &str) -> Option<NotifyEvent> {
        NotifyEvent::ALL.into_iter().find(|e| e.as_str() == name)
    }

    /// The event a journal entry raises, if any (searching, offers and releases raise none).
    pub fn of_change(change: &Change) -> Option<NotifyEvent> {
        Some(match change {
            Change::Placed => NotifyEvent::Placed,
            Change::MerchantAccepted { .. } => NotifyEvent::Accepted,
            Change::MerchantRejected { .. } => NotifyEvent::Rejected,
            Change::MarkedReady => NotifyEvent::Ready,
            Change::DriverAssigned { .. } => NotifyEvent::DriverAssigned,
            Change::PickedUp => NotifyEvent::PickedUp,
            Change::Delivered => NotifyEvent::Delivered,
            Change::CancelledByCustomer | Change::CancelledByAdmin { .. } => NotifyEvent::Cancelled,
            Change::SearchStarted
            | Change::Offered { .. }
            | Change::OfferLapsed { .. }
            | Change::DriverReleased { .. } => return None,
        })
    }

    /// Whether the customer gets a message for it (they know they placed the order, and a ready
    /// meal means nothing to them until a driver has it).
    pub fn tells_customer(self) -> bool {
        !matches!(self, NotifyEvent::Placed | NotifyEvent::Ready)
    }

    /// The event's name without `order.` (`accepted`): the key of its WhatsApp template in
    /// `MEALKITZ_WHATSAPP_TEMPLATES`.
    pub fn template_key(self) -> &'static str {
        &self.as_str()["order.".len()..]
    }
}

impl fmt::Display for NotifyEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Digits an E.164 number has after the `+`, country code included.
const PHONE_MIN_DIGITS: usize = 8;
const PHONE_MAX_DIGITS: usize = 15;

/// A phone number in E.164 form (`+358401234567`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Phone(String);

/// Why a phone number was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "must be an international number in E.164 form: '+', the country code and the number, 8 to 15 digits (+358401234567)"
)]
pub struct InvalidPhone;

impl Phone {
    /// Reads a number as people write it: spaces, dashes, dots and brackets between the digits
    /// are dropped; the `+` and country code are required.
    pub fn parse(raw: &str) -> Result<Phone, InvalidPhone> {
        let trimmed = raw.trim();
        let rest = trimmed.strip_prefix('+').ok_or(InvalidPhone)?;
        let mut digits = String::with_capacity(rest.len());
        for c in rest.chars() {
            match c {
                '0'..='9' => digits.push(c),
                ' ' | '-' | '.' | '(' | ')' => {}
                _ => return Err(InvalidPhone),
            }
        }
        if !(PHONE_MIN_DIGITS..=PHONE_MAX_DIGITS).contains(&digits.len()) || digits.starts_with('0')
        {
            return Err(InvalidPhone);
        }
        Ok(Phone(format!("+{digits}")))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The number as WhatsApp's API writes it (`wa_id`): digits only.
    pub fn digits(&self) -> &str {
        &self.0[1..]
    }

    /// For logs: the country code's first digits and the last two, the rest hidden.
    pub fn masked(&self) -> String {
        mask_phone(&self.0)
    }
}

/// A phone number for logs: `+358••••••67`. Works on anything, valid or not.
pub fn mask_phone(raw: &str) -> String {
    let chars: Vec<char> = raw.chars().collect();
    if chars.len() <= 6 {
        return "•".repeat(chars.len());
    }
    let head: String = chars[..4].iter().collect();
    let tail: String = chars[chars.len() - 2..].iter().collect();
    format!("{head}{}{tail}", "•".repeat(chars.len() - 6))
}

impl TryFrom<String> for Phone {
    type Error = InvalidPhone;
    fn try_from(raw: String) -> Result<Phone, InvalidPhone> {
        Phone::parse(&raw)
    }
}

impl From<Phone> for String {
    fn from(phone: Phone) -> String {
        phone.0
    }
}

impl fmt::Display for Phone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The short code people read and say (`#3F9A1C` is written without the `#`): the last six hex
/// digits of the id, its random part (the first ones are a timestamp, alike for orders placed
/// together).
pub fn order_code(id: OrderId) -> String {
    let hex = id.as_uuid().simple().to_string();
    hex[hex.len() - 6..].to_ascii_uppercase()
}

/// The message id a notification carries on every attempt (`webhook-id`, WhatsApp's
/// `biz_opaque_callback_data`): one per journal entry that notifies, the same to every
/// destination, so a receiver recognises a duplicate.
pub fn message_id(outbox_id: uuid::Uuid) -> String {
    format!("msg_{}", outbox_id.simple())
}

/// Delays before each delivery attempt of a webhook, in seconds: at once, then 5 s, 5 min,
/// 30 min, 2 h, 5 h, 10 h and 10 h (Standard Webhooks' schedule); after the last, the message
/// has failed.
pub const WEBHOOK_SCHEDULE_SECS: [u64; 8] = [0, 5, 300, 1_800, 7_200, 18_000, 36_000, 36_000];
/// Each scheduled delay is stretched by up to this share at random, so endpoints that failed
/// together are not retried together.
pub const WEBHOOK_JITTER_SHARE: f64 = 0.1;
/// Longest `Retry-After` honoured (an endpoint asking for more gets the schedule's last delay).
pub const RETRY_AFTER_MAX_SECS: u64 = 36_000;

/// When to try a webhook again after `attempts` failed attempts of its schedule (1 after the
/// first): `None` once the schedule is spent. `random` in 0..1 picks the jitter; a `Retry-After`
/// the endpoint gave is honoured when it asks for longer.
pub fn webhook_retry_delay(
    attempts: u32,
    random: f64,
    retry_after: Option<Duration>,
) -> Option<Duration> {
    let scheduled = *WEBHOOK_SCHEDULE_SECS.get(attempts as usize)?;
    let jittered = Duration::from_secs_f64(
        scheduled as f64 * (1.0 + WEBHOOK_JITTER_SHARE * random.clamp(0.0, 1.0)),
    );
    let asked = retry_after.map_or(Duration::ZERO, |asked| {
        asked.min(Duration::from_secs(RETRY_AFTER_MAX_SECS))
    });
    Some(jittered.max(asked))
}

/// An endpoint failing without a success for this long is disabled and its merchant told.
pub const WEBHOOK_DISABLE_AFTER_FAILING_SECS: i64 = 5 * 24 * 3_600;

/// What a WhatsApp Cloud API error code asks of the sender.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WhatsAppFailure {
    /// 131047: more than 24 hours since the customer last wrote; only a template may be sent.
    WindowClosed,
    /// 130429 (throughput), 131056 (pair rate), 4 and 80007 (app and account rate limits): try
    /// again later, slower.
    RateLimited,
    /// 190: the access token expired or was revoked; nothing can be sent until it is replaced.
    TokenExpired,
    /// Anything else (a number not on WhatsApp, a template not approved, a bad parameter):
    /// recorded, retried a few times at most.
    Other,
}

impl WhatsAppFailure {
    pub fn of_code(code: i64) -> WhatsAppFailure {
        match code {
            131_047 => WhatsAppFailure::WindowClosed,
            130_429 | 131_056 | 4 | 80_007 => WhatsAppFailure::RateLimited,
            190 => WhatsAppFailure::TokenExpired,
            _ => WhatsAppFailure::Other,
        }
    }
}

/// The currency sign amounts are written with, as the web app writes them (`web/common.js`):
/// amounts carry no currency of their own yet.
pub const CURRENCY_SIGN: &str = "$";

/// How long WhatsApp's customer-service window stays open after the customer's last message.
pub const WHATSAPP_WINDOW_HOURS: i64 = 24;

/// Whether free text may be sent to a customer whose last message came at `last_inbound`.
pub fn whatsapp_window_open(last_inbound: Option<DateTime<Utc>>, now: DateTime<Utc>) -> bool {
    last_inbound.is_some_and(|at| now - at < chrono::Duration::hours(WHATSAPP_WINDOW_HOURS))
}

/// The facts of one customer message, frozen when the notification is made so that every
/// attempt (text or template) says the same thing.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CustomerMessage {
    pub event: NotifyEvent,
    /// [`order_code`].
    pub order_code: String,
    pub merchant_name: String,
    /// The assigned driver's first name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub driver_first_name: Option<String>,
    /// Minutes until the order should arrive, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eta_minutes: Option<u32>,
    pub total_cents: Cents,
    /// Why the merchant rejected or an admin cancelled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Where the customer follows the order.
    pub tracking_url: String,
}

impl CustomerMessage {
    /// The message as free text (inside the customer-service window).
    pub fn text(&self) -> String {
        let code = &self.order_code;
        let eta = |prefix: &str| {
            self.eta_minutes
                .map(|m| format!("{prefix} about {m} min"))
                .unwrap_or_default()
        };
        let driver = self.driver_first_name.as_deref().unwrap_or("Your driver");
        let money_back = format!(
            "The {CURRENCY_SIGN}{} held on your card is released; you are not charged.",
            self.total_cents
        );
        let reason = self
            .reason
            .as_deref()
            .filter(|r| !r.trim().is_empty())
            .map(|r| format!(" ({})", r.trim()))
            .unwrap_or_default();
        match self.event {
            NotifyEvent::Placed => format!("Order #{code} placed. Track it: {}", self.tracking_url),
            NotifyEvent::Accepted => format!(
                "{} accepted your order #{code}.{} Track it: {}",
                self.merchant_name,
                self.eta_minutes
                    .map(|m| format!(" Estimated delivery in about {m} min."))
                    .unwrap_or_default(),
                self.tracking_url
            ),
            NotifyEvent::Ready => format!("Your order #{code} is ready."),
            NotifyEvent::DriverAssigned => {
                format!("{driver} is on the way to pick up your order #{code}.")
            }
            NotifyEvent::PickedUp => format!(
                "{driver} picked up your order #{code}{}. Track it: {}",
                eta(", arriving in"),
                self.tracking_url
            ),
            NotifyEvent::Delivered => format!("Your order #{code} was delivered. Enjoy your meal!"),
            NotifyEvent::Rejected => format!(
                "Sorry — {} could not take your order #{code}{reason}. {money_back}",
                self.merchant_name
            ),
            NotifyEvent::Cancelled => {
                format!("Your order #{code} was cancelled{reason}. {money_back}")
            }
        }
    }

    /// The template's body parameters, in order: the order code, then what the event adds
    /// (docs/notifications.md lists them per template).
    pub fn template_parameters(&self) -> Vec<String> {
        let eta = self
            .eta_minutes
            .map_or_else(|| "—".to_owned(), |m| m.to_string());
        let driver = self
            .driver_first_name
            .clone()
            .unwrap_or_else(|| "Your driver".to_owned());
        let mut parameters = vec![self.order_code.clone()];
        match self.event {
            NotifyEvent::Accepted => parameters.extend([self.merchant_name.clone(), eta]),
            NotifyEvent::DriverAssigned => parameters.push(driver),
            NotifyEvent::PickedUp => parameters.extend([driver, eta]),
            NotifyEvent::Rejected | NotifyEvent::Cancelled => {
                parameters.push(format!("{CURRENCY_SIGN}{}", self.total_cents))
            }
            NotifyEvent::Placed | NotifyEvent::Ready | NotifyEvent::Delivered => {}
        }
        parameters
    }
}

/// The JSON a webhook endpoint receives: `{"type","timestamp","data":{"order":{…}}}`, the order
/// as it was right after the entry that raised the event.
pub fn webhook_body(event: NotifyEvent, at: DateTime<Utc>, order: &OrderView) -> serde_json::Value {
    serde_json::json!({
        "type": event.as_str(),
        "timestamp": at.to_rfc3339_opts(SecondsFormat::Millis, true),
        "data": { "order": order },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{LapseReason, UserId};

    #[test]
    fn each_status_change_raises_its_event_and_dispatch_chatter_raises_none() {
        let cases = [
            (Change::Placed, Some("order.placed")),
            (
                Change::MerchantAccepted { prep_minutes: 10 },
                Some("order.accepted"),
            ),
            (
                Change::MerchantRejected {
                    reason: "closed".into(),
                },
                Some("order.rejected"),
            ),
            (Change::MarkedReady, Some("order.ready")),
            (Change::PickedUp, Some("order.picked_up")),
            (Change::Delivered, Some("order.delivered")),
            (Change::CancelledByCustomer, Some("order.cancelled")),
            (
                Change::CancelledByAdmin { reason: "x".into() },
                Some("order.cancelled"),
            ),
            (Change::SearchStarted, None),
            (
                Change::OfferLapsed {
                    offer_id: uuid::Uuid::nil(),
                    driver_id: UserId::new(),
                    reason: LapseReason::Declined,
                },
                None,
            ),
        ];
        for (change, expected) in cases {
            assert_eq!(
                NotifyEvent::of_change(&change).map(NotifyEvent::as_str),
                expected,
                "{change:?}"
            );
        }
        for event in NotifyEvent::ALL {
            assert_eq!(NotifyEvent::parse(event.as_str()), Some(event));
            let json = serde_json::to_string(&event).unwrap();
            assert_eq!(json, format!("\"{}\"", event.as_str()));
        }
        assert_eq!(NotifyEvent::parse("order.eaten"), None);
        assert_eq!(
            NotifyEvent::DriverAssigned.template_key(),
            "driver_assigned"
        );
        assert_eq!(NotifyEvent::Accepted.template_key(), "accepted");
    }

    #[test]
    fn phone_numbers_are_read_as_people_write_them_and_must_be_e164() {
        assert_eq!(
            Phone::parse("+358 40 123-4567").unwrap().as_str(),
            "+358401234567"
        );
        assert_eq!(
            Phone::parse(" +1 (415) 555.2671 ").unwrap().digits(),
            "14155552671"
        );
        for bad in [
            "358401234567",
            "+0123456789",
            "+12345",
            "+1234567890123456",
            "+358 40 abc",
            "",
        ] {
            assert_eq!(Phone::parse(bad), Err(InvalidPhone), "{bad}");
        }
        let phone = Phone::parse("+358401234567").unwrap();
        assert_eq!(phone.masked(), "+358•••••••67");
        assert!(!phone.masked().contains("4012345"));
        assert!(serde_json::from_str::<Phone>("\"12\"").is_err());
    }

    #[test]
    fn the_webhook_schedule_runs_from_at_once_to_ten_hours_with_jitter_and_retry_after() {
        let at =
            |attempts, random| webhook_retry_delay(attempts, random, None).map(|d| d.as_secs_f64());
        assert_eq!(at(0, 0.5), Some(0.0));
        assert_eq!(at(1, 0.0), Some(5.0));
        assert_eq!(at(1, 1.0), Some(5.5));
        assert_eq!(at(2, 0.0), Some(300.0));
        assert_eq!(at(7, 0.0), Some(36_000.0));
        assert_eq!(at(8, 0.0), None);
        let asked = webhook_retry_delay(1, 0.0, Some(Duration::from_secs(120))).unwrap();
        assert_eq!(asked, Duration::from_secs(120));
        let greedy = webhook_retry_delay(1, 0.0, Some(Duration::from_secs(1_000_000))).unwrap();
        assert_eq!(greedy, Duration::from_secs(RETRY_AFTER_MAX_SECS));
        let sooner = webhook_retry_delay(2, 0.0, Some(Duration::from_secs(1))).unwrap();
        assert_eq!(sooner, Duration::from_secs(300));
    }

    #[test]
    fn whatsapp_error_codes_mean_window_rate_limit_token_or_other() {
        assert_eq!(
            WhatsAppFailure::of_code(131_047),
            WhatsAppFailure::WindowClosed
        );
        assert_eq!(
            WhatsAppFailure::of_code(130_429),
            WhatsAppFailure::RateLimited
        );
        assert_eq!(
            WhatsAppFailure::of_code(131_056),
            WhatsAppFailure::RateLimited
        );
        assert_eq!(WhatsAppFailure::of_code(190), WhatsAppFailure::TokenExpired);
        assert_eq!(WhatsAppFailure::of_code(131_026), WhatsAppFailure::Other);
        let now = Utc::now();
        assert!(whatsapp_window_open(
            Some(now - chrono::Duration::hours(23)),
            now
        ));
        assert!(!whatsapp_window_open(
            Some(now - chrono::Duration::hours(25)),
            now
        ));
        assert!(!whatsapp_window_open(None, now));
    }

    #[test]
    fn customer_messages_say_what_happened_with_the_facts_they_carry() {
        let message = |event| CustomerMessage {
            event,
            order_code: "3F9A1C".into(),
            merchant_name: "Kallio Kitchen".into(),
            driver_first_name: Some("Aino".into()),
            eta_minutes: Some(32),
            total_cents: Cents(2_450),
            reason: None,
            tracking_url: "https://mealkitz.example/track/x".into(),
        };
        let accepted = message(NotifyEvent::Accepted).text();
        assert!(
            accepted.contains("Kallio Kitchen accepted your order #3F9A1C"),
            "{accepted}"
        );
        assert!(accepted.contains("about 32 min"), "{accepted}");
        let assigned = message(NotifyEvent::DriverAssigned).text();
        assert!(assigned.starts_with("Aino is on the way"), "{assigned}");
        let picked = message(NotifyEvent::PickedUp).text();
        assert!(picked.contains("arriving in about 32 min"), "{picked}");
        let cancelled = message(NotifyEvent::Cancelled).text();
        assert!(
            cancelled.contains("$24.50 held on your card is released"),
            "{cancelled}"
        );
        assert_eq!(
            message(NotifyEvent::PickedUp).template_parameters(),
            ["3F9A1C", "Aino", "32"]
        );
        assert_eq!(
            message(NotifyEvent::Rejected).template_parameters(),
            ["3F9A1C", "$24.50"]
        );
    }

    #[test]
    fn the_order_code_is_six_characters_of_the_random_part() {
        let id = OrderId(uuid::Uuid::parse_str("0192c6de-7a4b-7000-8000-00000a3f9a1c").unwrap());
        assert_eq!(order_code(id), "3F9A1C");
        assert_eq!(
            message_id(uuid::Uuid::parse_str("0192c6de-7a4b-7000-8000-00000a3f9a1c").unwrap()),
            "msg_0192c6de7a4b7000800000000a3f9a1c"
        );
    }
}
