//! The simulated WhatsApp customers (`simulate --whatsapp-share`): each a phone number that
//! orders like a person would — says hi, shares its location, taps (or types) a kitchen, a dish
//! and a quantity, sometimes adds more, checks out, opens the payment link and pays (a few
//! first with a card that is declined), and waits for "Order #… placed" — through signed calls
//! to the engine's WhatsApp webhook, reading the bot's answers at the Graph API stand-in, with
//! a human pause before each message. Some calls are delivered twice, as Meta does, and any
//! answer to the repeat is counted as a duplicate action. One conversation per number at a
//! time: a customer's next order waits for the last to end. And like a person, a number never
//! writes more than the webhook reads from one number a minute: it waits instead (counted).

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use tokio::sync::mpsc::UnboundedReceiver;

use super::args::WhatsAppPlan;
use super::city::{MENU, PlannedOrder};
use super::clients::{Customers, addressed};
use super::notify::{BotArrival, STAND_IN_APP_SECRET, STAND_IN_PHONE_NUMBER_ID, StandIns};
use super::whatsapp_figures::{ChatStats, Talked, WhatsAppFigures};
use super::whatsapp_wire::{
    Bot, Pick, SIGNATURE_HEADER, Said, Sender, envelope, pay_token, pick_dish, pick_kitchen,
    placed_code, signature,
};
use crate::api::limits::WHATSAPP_MESSAGES_PER_PHONE_PER_MINUTE;

/// How long a customer waits for the bot before giving up.
const REPLY_TIMEOUT: Duration = Duration::from_secs(30);
/// After a message delivered twice, how long (at least) the customer watches for the bot
/// answering the repeat.
const REDELIVERY_WATCH: Duration = Duration::from_millis(750);
/// The window of the webhook's per-number limit, and the new messages a number sends in it at
/// most (one below the limit).
const PHONE_WINDOW: Duration = Duration::from_secs(60);
const PHONE_MESSAGES_PER_WINDOW: usize = WHATSAPP_MESSAGES_PER_PHONE_PER_MINUTE as usize - 1;
/// Longest excerpt of an unexpected bot message quoted in a failure's reason.
const QUOTE_MAX_CHARS: usize = 60;
/// Tries at the webhook when it answers 5xx or not at all, a second apart (Meta retries too).
const WEBHOOK_TRIES: usize = 3;
const WEBHOOK_RETRY_PAUSE: Duration = Duration::from_secs(1);
/// Shares of the customers who greet with "hello" (the rest say "hi"), type the kitchen's
/// number instead of tapping its row, type the quantity instead of tapping, and tap "Add more"
/// once.
const HELLO_SHARE: f64 = 0.3;
const TYPED_KITCHEN_SHARE: f64 = 0.2;
const TYPED_QUANTITY_SHARE: f64 = 0.25;
const ADD_MORE_SHARE: f64 = 0.25;
/// Pages of kitchens a customer turns through looking for its own.
const KITCHEN_PAGES_MAX: usize = 5;
/// The quantities the bot offers as buttons (`qty:1` to `qty:3`).
const QUANTITY_BUTTONS_MAX: u32 = 3;
/// The card that pays, and the one that is declined.
const VISA: &str = "pm_card_visa";
const DECLINED_CARD: &str = "pm_card_chargeDeclined";
/// Profile names the customers have on WhatsApp.
const NAMES: &[&str] = &[
    "Aino", "Eero", "Helmi", "Onni", "Venla", "Leo", "Ella", "Väinö",
];

/// WhatsApp customer `i`'s number (seed `seed`): Finnish mobile, 14 digits, so it is never one
/// of the REST customers' 12-digit numbers; a rerun with the same seed is the same person.
pub fn whatsapp_phone(seed: u64, i: usize) -> String {
    format!("+35845{:03}{:06}", seed % 1_000, i % 1_000_000)
}

/// The run's WhatsApp customers: the first [`WhatsAppPlan::customers`] of the simulated ones.
pub struct Chatters {
    customers: Customers,
    plan: WhatsAppPlan,
    seed: u64,
    /// Of all the simulated customers.
    out_of: usize,
    /// Each WhatsApp customer's handset; held while it talks.
    handsets: Vec<tokio::sync::Mutex<Handset>>,
    chat: Mutex<ChatStats>,
}

impl Chatters {
    /// The WhatsApp customers among `out_of`, ordering from `customers`' kitchens and counted in
    /// its stats, listening at `stand_ins`.
    pub fn new(
        customers: &Customers,
        plan: &WhatsAppPlan,
        stand_ins: &StandIns,
        seed: u64,
        out_of: usize,
    ) -> Chatters {
        let handsets = (0..plan.customers(out_of))
            .map(|i| {
                let phone = whatsapp_phone(seed, i);
                tokio::sync::Mutex::new(Handset {
                    inbox: stand_ins.listen(&phone[1..]),
                    sent: VecDeque::new(),
                })
            })
            .collect();
        Chatters {
            customers: customers.clone(),
            plan: plan.clone(),
            seed,
            out_of,
            handsets,
            chat: Mutex::new(ChatStats::default()),
        }
    }

    /// Whether simulated customer `customer` orders over WhatsApp.
    pub fn takes(&self, customer: usize) -> bool {
        customer < self.handsets.len()
    }

    /// Orders planned order `n` over WhatsApp; its id when placed.
    pub async fn order(&self, n: usize, planned: &PlannedOrder) -> Option<String> {
        let mut handset = self.handsets.get(planned.customer)?.lock().await;
        // What came since this number's last conversation (its order's updates) is old news.
        while handset.inbox.try_recv().is_ok() {}
        let phone = whatsapp_phone(self.seed, planned.customer);
        let mut talk = Talk {
            run: self,
            handset: &mut handset,
            rng: StdRng::seed_from_u64(self.seed ^ (n as u64).wrapping_mul(0x2545_f491_4f6c_dd1d)),
            digits: &phone[1..],
            name: NAMES[planned.customer % NAMES.len()],
            posted_at: None,
            redelivered: false,
            order: None,
            unexpected: None,
            talked: Talked::default(),
        };
        self.lock().conversations += 1;
        let started = Instant::now();
        let outcome = talk.converse(planned).await;
        let (order, talked) = (talk.order.take(), std::mem::take(&mut talk.talked));
        let mut chat = self.lock();
        chat.add(talked);
        if order.is_some() {
            chat.orders += 1;
        }
        match outcome {
            Ok(placed_at) => chat
                .time_to_order_secs
                .push(placed_at.saturating_duration_since(started).as_secs_f64()),
            Err(reason) => chat.failed(&reason),
        }
        order
    }

    /// Notes a conversation that had not ended when the run did.
    pub fn unfinished(&self) {
        self.lock().failed("still talking when the run ended");
    }

    pub fn figures(&self) -> WhatsAppFigures {
        self.lock().figures(self.handsets.len(), self.out_of)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ChatStats> {
        self.chat.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A WhatsApp customer's handset: the bot's messages to it, and when it sent its latest new
/// messages (within the last [`PHONE_WINDOW`]).
struct Handset {
    inbox: UnboundedReceiver<BotArrival>,
    sent: VecDeque<Instant>,
}

impl Handset {
    /// How long to wait before one more new message keeps within the per-number limit.
    fn wait_for_room(&mut self, now: Instant) -> Duration {
        while self
            .sent
            .front()
            .is_some_and(|at| now.saturating_duration_since(*at) >= PHONE_WINDOW)
        {
            self.sent.pop_front();
        }
        match self.sent.front() {
            Some(oldest) if self.sent.len() >= PHONE_MESSAGES_PER_WINDOW => {
                PHONE_WINDOW.saturating_sub(now.saturating_duration_since(*oldest))
            }
            _ => Duration::ZERO,
        }
    }
}

/// One conversation, from "hi" to the order placed.
struct Talk<'a> {
    run: &'a Chatters,
    handset: &'a mut Handset,
    rng: StdRng,
    digits: &'a str,
    name: &'a str,
    /// When the last webhook call was made, until the bot's first reply to it came.
    posted_at: Option<Instant>,
    /// The last message was delivered twice.
    redelivered: bool,
    /// The order, once paid.
    order: Option<String>,
    /// The last bot message the customer did not expect, quoted.
    unexpected: Option<String>,
    talked: Talked,
}

impl Talk<'_> {
    /// The conversation; when the bot said the order was placed, or why it did not get there
    /// (a short reason, the same for every customer it happens to).
    async fn converse(&mut self, planned: &PlannedOrder) -> Result<Instant, String> {
        let hi = if self.rng.random_bool(HELLO_SHARE) {
            "hello"
        } else {
            "hi"
        };
        self.say(Said::Text(hi.to_owned())).await?;
        let (asked, _) = self
            .expect("location request", |bot| {
                matches!(bot, Bot::LocationRequest | Bot::List(_) | Bot::Buttons(_))
            })
            .await?;
        if asked != Bot::LocationRequest {
            // An earlier conversation of this number was left half-way (a rerun): start over.
            self.pause().await;
            self.say(Said::Text("start over".to_owned())).await?;
            self.expect("location request", |bot| *bot == Bot::LocationRequest)
                .await?;
        }
        self.pause().await;
        let chatters = self.run;
        let run = &chatters.customers;
        let location = match addressed(&run.maps, &run.area, planned.dropoff) {
            Some(place) => Said::Location {
                lat: place.lat,
                lon: place.lon,
                address: Some(place.label),
            },
            None => Said::Location {
                lat: planned.dropoff.lat,
                lon: planned.dropoff.lon,
                address: None,
            },
        };
        self.say(location).await?;
        let kitchen = self.choose_kitchen(planned).await?;
        let (merchant, items) = &run.merchants[planned.merchant];
        let wanted: Vec<&str> = if kitchen == *merchant {
            planned
                .lines
                .iter()
                .filter_map(|(line, _)| items.get(*line).map(String::as_str))
                .collect()
        } else {
            Vec::new()
        };
        let quantity = planned.lines.first().map_or(1, |(_, q)| *q);
        self.choose_dish(&wanted, quantity).await?;
        if self.rng.random_bool(ADD_MORE_SHARE) {
            self.pause().await;
            self.tap_button("basket:add", "Add more").await?;
            let more = planned.lines.get(1).map_or(1, |(_, q)| *q);
            self.choose_dish(wanted.get(1..).unwrap_or_default(), more)
                .await?;
        }
        self.pause().await;
        self.tap_button("basket:checkout", "Checkout").await?;
        let (link, _) = self
            .expect(
                "payment link",
                |bot| matches!(bot, Bot::Text(text) if pay_token(text).is_some()),
            )
            .await?;
        let token = match &link {
            Bot::Text(text) => pay_token(text).unwrap_or_default().to_owned(),
            _ => String::new(),
        };
        // Opening the page and picking a card.
        self.pause().await;
        if self.rng.random_bool(self.run.plan.decline_share) {
            match self.pay(&token, DECLINED_CARD).await? {
                (402, _) => self.talked.declined_first += 1,
                (status, _) => return Err(format!("a declined card was answered {status}")),
            }
            self.pause().await;
        }
        let paid_at = Instant::now();
        let (status, order) = self.pay(&token, VISA).await?;
        let id = match (status, order["id"].as_str()) {
            (201, Some(id)) => id.to_owned(),
            (201, None) => return Err("paying answered 201 without an order".to_owned()),
            (status, _) => {
                let code = order["error"]["code"].as_str().unwrap_or("no error code");
                return Err(format!("paying with Visa answered {status} {code}"));
            }
        };
        self.run
            .customers
            .stats
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .trace(&id)
            .placed_at
            .get_or_insert(paid_at);
        self.order = Some(id);
        let (_, placed_at) = self
            .expect(
                "\"Order #… placed\" message",
                |bot| matches!(bot, Bot::Text(text) if placed_code(text).is_some()),
            )
            .await?;
        Ok(placed_at)
    }

    /// Reads the kitchens and picks one (turning pages to find its own); the merchant's id.
    async fn choose_kitchen(&mut self, planned: &PlannedOrder) -> Result<String, String> {
        let (list, _) = self
            .expect("kitchen list", |bot| {
                bot.lists("kitchen:") || *bot == Bot::LocationRequest
            })
            .await?;
        if list == Bot::LocationRequest {
            return Err("no kitchen delivers to the location".to_owned());
        }
        let chatters = self.run;
        let merchants = &chatters.customers.merchants;
        let wanted = merchants[planned.merchant].0.as_str();
        let ours: Vec<&str> = merchants.iter().map(|(id, _)| id.as_str()).collect();
        let mut list = list;
        for _ in 0..KITCHEN_PAGES_MAX {
            match pick_kitchen(list.offered(), wanted, &ours) {
                Pick::Row(i, row) => {
                    self.pause().await;
                    let said = if self.rng.random_bool(TYPED_KITCHEN_SHARE) {
                        Said::Text((i + 1).to_string())
                    } else {
                        Said::ListReply {
                            id: row.id.clone(),
                            title: row.title,
                        }
                    };
                    self.say(said).await?;
                    let id = row.id.strip_prefix("kitchen:").unwrap_or_default();
                    return Ok(id.to_owned());
                }
                Pick::NextPage(row) => {
                    self.pause().await;
                    self.say(Said::ListReply {
                        id: row.id,
                        title: row.title,
                    })
                    .await?;
                    (list, _) = self
                        .expect("next kitchens", |bot| bot.lists("kitchen:"))
                        .await?;
                }
                Pick::Nothing => break,
            }
        }
        Err("none of the simulation's kitchens was listed".to_owned())
    }

    /// Reads the menu, taps a dish (the first of `wanted` listed, else any), then the
    /// quantity, and reads the basket.
    async fn choose_dish(&mut self, wanted: &[&str], quantity: u32) -> Result<(), String> {
        let (menu, _) = self.expect("menu", |bot| bot.lists("dish:")).await?;
        let fallback = self.rng.random_range(0..MENU.len());
        let Pick::Row(_, dish) = pick_dish(menu.offered(), wanted, fallback) else {
            return Err("the menu had no dish".to_owned());
        };
        self.pause().await;
        self.say(Said::ListReply {
            id: dish.id,
            title: dish.title,
        })
        .await?;
        self.expect("quantity buttons", |bot| bot.has_button("qty:1"))
            .await?;
        self.pause().await;
        let quantity = quantity.max(1);
        if quantity <= QUANTITY_BUTTONS_MAX && !self.rng.random_bool(TYPED_QUANTITY_SHARE) {
            self.tap_button(&format!("qty:{quantity}"), &quantity.to_string())
                .await?;
        } else {
            self.say(Said::Text(quantity.to_string())).await?;
        }
        self.expect("basket", |bot| bot.has_button("basket:checkout"))
            .await?;
        Ok(())
    }

    async fn tap_button(&mut self, id: &str, title: &str) -> Result<(), String> {
        self.say(Said::ButtonReply {
            id: id.to_owned(),
            title: title.to_owned(),
        })
        .await
    }

    /// Sends one message through the webhook, signed; now and then delivers it twice.
    async fn say(&mut self, said: Said) -> Result<(), String> {
        let wait = self.handset.wait_for_room(Instant::now());
        if !wait.is_zero() {
            self.talked.waits_for_the_limit += 1;
            tokio::time::sleep(wait).await;
            self.handset.wait_for_room(Instant::now());
        }
        self.handset.sent.push_back(Instant::now());
        let wamid = format!("wamid.sim{}", uuid::Uuid::new_v4().simple());
        let from = Sender {
            digits: self.digits,
            name: self.name,
            wamid: &wamid,
            sent_at_unix_secs: chrono::Utc::now().timestamp(),
        };
        let body = envelope(STAND_IN_PHONE_NUMBER_ID, from, &said).to_string();
        let signed = signature(STAND_IN_APP_SECRET.as_bytes(), body.as_bytes());
        self.posted_at = Some(Instant::now());
        self.post(&body, &signed).await?;
        if self.rng.random_bool(self.run.plan.redeliver_share) {
            self.talked.redeliveries += 1;
            self.redelivered = true;
            self.post(&body, &signed).await?;
        }
        Ok(())
    }

    async fn post(&mut self, body: &str, signed: &str) -> Result<(), String> {
        let url = format!("{}/webhooks/whatsapp", self.run.customers.api_base);
        let mut last = String::new();
        for _ in 0..WEBHOOK_TRIES {
            self.talked.webhook_calls += 1;
            let answer = self
                .run
                .customers
                .http
                .post(&url)
                .header(SIGNATURE_HEADER, signed)
                .header("content-type", "application/json")
                .body(body.to_owned())
                .send()
                .await;
            match answer.map(|a| a.status().as_u16()) {
                Ok(200) => return Ok(()),
                Ok(status) if status < 500 => {
                    return Err(format!("the webhook answered {status}"));
                }
                Ok(status) => last = format!("the webhook answered {status}"),
                Err(_) => last = "the webhook did not answer".to_owned(),
            }
            tokio::time::sleep(WEBHOOK_RETRY_PAUSE).await;
        }
        Err(last)
    }

    /// `POST /api/v1/pay/{token}` with `card`: the status and the body.
    async fn pay(&mut self, token: &str, card: &str) -> Result<(u16, Value), String> {
        let customers = &self.run.customers;
        let answer = customers
            .http
            .post(format!("{}/api/v1/pay/{token}", customers.api_base))
            .json(&json!({"payment_method": card}))
            .send()
            .await
            .map_err(|_| "the pay endpoint did not answer".to_owned())?;
        let status = answer.status().as_u16();
        Ok((status, answer.json().await.unwrap_or(Value::Null)))
    }

    /// Waits for the bot's message `wanted` accepts (order updates pass by; other messages
    /// are counted as unexpected); it and when it arrived. Times the first reply to the last
    /// webhook call.
    async fn expect(
        &mut self,
        what: &str,
        wanted: impl Fn(&Bot) -> bool,
    ) -> Result<(Bot, Instant), String> {
        let deadline = tokio::time::Instant::now() + REPLY_TIMEOUT;
        loop {
            let arrived = match tokio::time::timeout_at(deadline, self.handset.inbox.recv()).await {
                Ok(Some(arrived)) => arrived,
                Ok(None) => return Err("the Graph API stand-in stopped".to_owned()),
                Err(_) => {
                    let mut reason = format!("no {what} within {} s", REPLY_TIMEOUT.as_secs());
                    if let Some(said) = self.unexpected.take() {
                        reason.push_str(&format!(" (the bot said {said})"));
                    }
                    return Err(reason);
                }
            };
            let bot = Bot::read(&arrived.body);
            if !bot.is_conversation() {
                continue;
            }
            if let Some(posted) = self.posted_at.take() {
                let latency = arrived.at.saturating_duration_since(posted);
                self.talked
                    .reply_latency_ms
                    .push(latency.as_secs_f64() * 1e3);
            }
            if wanted(&bot) {
                self.unexpected = None;
                return Ok((bot, arrived.at));
            }
            self.talked.unexpected_replies += 1;
            self.unexpected = Some(quote(&bot));
        }
    }

    /// A person's pause before the next message. After a message delivered twice it lasts
    /// long enough to see the bot answer the repeat, which it must not.
    async fn pause(&mut self) {
        let think = self.run.plan.think;
        let spread = think.max.saturating_sub(think.min).as_secs_f64();
        let mut pause = think.min + Duration::from_secs_f64(spread * self.rng.random::<f64>());
        if self.redelivered {
            pause = pause.max(REDELIVERY_WATCH);
        }
        let until = tokio::time::Instant::now() + pause;
        while let Ok(Some(arrived)) =
            tokio::time::timeout_at(until, self.handset.inbox.recv()).await
        {
            let bot = Bot::read(&arrived.body);
            if !bot.is_conversation() {
                continue;
            }
            if self.redelivered {
                self.talked.duplicate_actions += 1;
            } else {
                self.talked.unexpected_replies += 1;
                self.unexpected = Some(quote(&bot));
            }
        }
        self.redelivered = false;
    }
}

/// A bot message in a few words, for a failure's reason.
fn quote(bot: &Bot) -> String {
    match bot {
        Bot::Text(text) => {
            let mut quoted: String = text.chars().take(QUOTE_MAX_CHARS).collect();
            if text.chars().count() > QUOTE_MAX_CHARS {
                quoted.push('…');
            }
            format!("{quoted:?}")
        }
        Bot::LocationRequest => "a location request".to_owned(),
        other => {
            let ids: Vec<&str> = other
                .offered()
                .iter()
                .map(|o| o.id.split(':').next().unwrap_or_default())
                .collect();
            format!("a list or buttons of {}", ids.join(","))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Phone;

    #[test]
    fn whatsapp_numbers_are_valid_unique_and_never_a_rest_customers() {
        let mut seen = std::collections::HashSet::new();
        for seed in [7, 11, 1_007] {
            for i in [0, 1, 2, 999_999] {
                let phone = whatsapp_phone(seed, i);
                let parsed = Phone::parse(&phone).expect("E.164");
                assert!(phone.starts_with("+3584"), "{phone}");
                assert_eq!(parsed.digits().len(), 14);
                assert_ne!(
                    parsed.digits().len(),
                    super::super::notify::customer_phone(i).len() - 1
                );
                seen.insert((seed % 1_000, phone));
            }
        }
        let phones: std::collections::HashSet<_> = seen.iter().map(|(_, p)| p).collect();
        // Seeds 7 and 1 007 are the same people; every other number differs.
        assert_eq!(phones.len(), 8);
        assert_eq!(whatsapp_phone(7, 3), whatsapp_phone(7, 3));
    }

    #[test]
    fn a_number_never_writes_more_new_messages_in_a_minute_than_the_webhook_reads() {
        let (_tx, inbox) = tokio::sync::mpsc::unbounded_channel();
        let mut handset = Handset {
            inbox,
            sent: VecDeque::new(),
        };
        let t0 = Instant::now();
        for i in 0..PHONE_MESSAGES_PER_WINDOW {
            let at = t0 + Duration::from_secs(i as u64);
            assert_eq!(handset.wait_for_room(at), Duration::ZERO, "message {i}");
            handset.sent.push_back(at);
        }
        assert!(PHONE_MESSAGES_PER_WINDOW < WHATSAPP_MESSAGES_PER_PHONE_PER_MINUTE as usize);
        // Full: the next waits until the oldest is a minute old.
        let now = t0 + Duration::from_secs(30);
        assert_eq!(handset.wait_for_room(now), Duration::from_secs(30));
        // Then there is room again, and the oldest is forgotten.
        assert_eq!(handset.wait_for_room(t0 + PHONE_WINDOW), Duration::ZERO);
        assert_eq!(handset.sent.len(), PHONE_MESSAGES_PER_WINDOW - 1);
    }

    #[test]
    fn an_unexpected_bot_message_is_quoted_briefly() {
        let long = "I can't check this basket out: Sim Kitchen 3 doesn't deliver that far, sorry.";
        let quoted = quote(&Bot::Text(long.to_owned()));
        assert!(quoted.starts_with("\"I can't check"), "{quoted}");
        assert!(quoted.chars().count() <= QUOTE_MAX_CHARS + 3, "{quoted}");
        assert_eq!(quote(&Bot::LocationRequest), "a location request");
        let buttons = Bot::Buttons(vec![super::super::whatsapp_wire::Offered {
            id: "qty:1".to_owned(),
            title: "1".to_owned(),
        }]);
        assert_eq!(quote(&buttons), "a list or buttons of qty");
    }
}
