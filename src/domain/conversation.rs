//! The WhatsApp ordering conversation as a pure state machine: greeting → delivery location →
//! the kitchens that deliver there → a kitchen's menu → quantity → the basket (Checkout, Add
//! more, Cancel) → a payment link → "Order #… placed", with `status`, `cancel`, `help` and
//! `menu`/`start over` at any point and a reset after 30 idle minutes. It reads [`Input`]s and
//! answers with [`Reply`]s; what needs the world (an address looked up, kitchens found, a menu
//! loaded, a link issued, an order's status or cancellation) it asks for as an [`Effect`], and
//! the worker that runs it hands back what it [`Found`]. No I/O.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::chat::{Basket, BasketLine, Dropoff, Input, Reply, ReplyOption, link_code_normal};
use super::notification::{CURRENCY_SIGN, order_code};
use super::{Cents, MerchantId, OrderId, OrderStatus, Position, UserId};

/// A conversation with nothing said for this long is reset, with a note.
pub const IDLE_EXPIRY_SECS: i64 = 30 * 60;
/// Dishes shown per page of a menu (one row more is "More dishes").
pub const MENU_PAGE_ROWS: usize = 9;
/// Kitchens shown per page (one row more is "More kitchens").
pub const KITCHEN_PAGE_ROWS: usize = 9;
/// The most of one dish in a basket (as checkout allows).
pub const QUANTITY_MAX: u32 = 99;
/// The most lines in a basket (as checkout allows).
pub const BASKET_MAX_LINES: usize = 50;

/// A kitchen that delivers to the customer's location.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Kitchen {
    pub id: MerchantId,
    pub name: String,
    /// From the delivery location, in metres.
    pub distance_m: f64,
}

/// A dish of the chosen kitchen's menu.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dish {
    pub id: Uuid,
    pub name: String,
    pub price_cents: Cents,
}

/// Where the conversation stands: what the customer's next message answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "stage", rename_all = "snake_case")]
pub enum Stage {
    /// Nothing going on: the next message greets.
    Start,
    AwaitingLocation,
    ChoosingKitchen {
        kitchens: Vec<Kitchen>,
        page: usize,
    },
    ChoosingDish {
        page: usize,
    },
    ChoosingQuantity {
        dish: Uuid,
    },
    /// The basket was shown with Checkout / Add more / Cancel.
    Reviewing,
    /// A payment link for the basket as it is was sent.
    AwaitingPayment,
}

/// What the conversation needs from the world before it can answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "effect", rename_all = "snake_case")]
pub enum Effect {
    /// Look up a typed address (near the service area).
    Geocode { address: String },
    /// The open kitchens that deliver to this point, nearest first.
    FindKitchens { at: Position },
    /// A kitchen (still open?) and its menu.
    LoadMenu { kitchen: MerchantId },
    /// A payment link for the basket; `key` (session and basket revision) makes one link, and
    /// one checkout, per basket.
    IssuePayLink { basket: Basket, key: String },
    /// Where an order is.
    OrderStatus { order: OrderId },
    /// Cancel an order for the customer.
    CancelOrder { order: OrderId },
    /// A link to the tracking page of a just-placed order.
    TrackingLink { order: OrderId },
    /// Link this number to the account that made the code (its one form).
    LinkAccount { code: String },
}

/// What an [`Effect`] found.
#[derive(Debug, Clone, PartialEq)]
pub enum Found {
    Located(Dropoff),
    /// No such address.
    NotLocated,
    Kitchens(Vec<Kitchen>),
    Menu {
        kitchen: Kitchen,
        dishes: Vec<Dish>,
    },
    /// The kitchen is closed, gone, or does not deliver there any more.
    KitchenClosed,
    PayLink {
        url: String,
        delivery_fee_cents: Cents,
        total_cents: Cents,
    },
    /// The basket cannot be checked out as it is (the reason is for the customer).
    CheckoutRefused(String),
    /// This basket's link was paid already.
    AlreadyPaid,
    Status {
        status: OrderStatus,
        /// Minutes to the door, when known.
        eta_minutes: Option<i64>,
    },
    Cancelled,
    /// Too late: the kitchen accepted it (or it ended).
    CannotCancel {
        status: OrderStatus,
    },
    TrackingLink {
        url: String,
    },
    /// The number now orders as this account (named so the customer can tell).
    Linked {
        customer: UserId,
        name: String,
    },
    /// No such code, used, or expired.
    LinkRefused,
    /// A dependency failed (database, maps, …): try again shortly.
    Unavailable,
    /// Typed addresses cannot be looked up here (no geocoder): send a pin.
    NoGeocoder,
}

/// What one input or effect result produced: messages to send, and maybe an effect to run
/// (whose result goes to [`Conversation::resume`]).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Step {
    pub replies: Vec<Reply>,
    pub effect: Option<Effect>,
}

impl Step {
    fn say(reply: Reply) -> Step {
        Step {
            replies: vec![reply],
            effect: None,
        }
    }

    fn run(effect: Effect) -> Step {
        Step {
            replies: Vec::new(),
            effect: Some(effect),
        }
    }

    fn before(mut self, reply: Reply) -> Step {
        self.replies.insert(0, reply);
        self
    }
}

/// One phone number's conversation, as persisted between messages.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Conversation {
    pub stage: Stage,
    /// The customer's first name, from their WhatsApp profile.
    #[serde(default)]
    pub name: Option<String>,
    pub dropoff: Option<Dropoff>,
    pub kitchen: Option<Kitchen>,
    #[serde(default)]
    pub menu: Vec<Dish>,
    #[serde(default)]
    pub basket: Vec<BasketLine>,
    /// Moves on whenever the basket changes: a payment link pays one revision.
    pub basket_rev: u32,
    /// Moves on at every greeting and start over: counts the conversations of this number.
    pub session: u32,
    /// The last order placed in this chat (for `status` and `cancel`).
    pub last_order: Option<OrderId>,
    pub last_active_at: Option<DateTime<Utc>>,
}

impl Default for Conversation {
    fn default() -> Self {
        Conversation::new(None)
    }
}

/// A typed word the conversation understands anywhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Command {
    Greeting,
    Help,
    Menu,
    StartOver,
    Status,
    Cancel,
    CancelOrder,
    Checkout,
    AddMore,
}

fn command(text: &str) -> Option<Command> {
    let words: String = text
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || c.is_whitespace())
        .collect();
    let words = words.split_whitespace().collect::<Vec<_>>().join(" ");
    Some(match words.as_str() {
        "hi" | "hello" | "hey" | "hei" | "moi" | "hola" | "order" | "start" => Command::Greeting,
        "help" | "commands" => Command::Help,
        "menu" => Command::Menu,
        "start over" | "restart" | "reset" | "new order" => Command::StartOver,
        "status" | "where is my order" | "track" | "order status" => Command::Status,
        "cancel" | "stop" => Command::Cancel,
        "cancel order" | "cancel my order" => Command::CancelOrder,
        "checkout" | "check out" | "pay" => Command::Checkout,
        "add more" | "add" | "more" => Command::AddMore,
        _ => return None,
    })
}

/// The code of a "link K7M2-QX9P" message, in its one form.
fn link_code_of(text: &str) -> Option<String> {
    let (word, code) = text.trim().split_once(char::is_whitespace)?;
    if !word.eq_ignore_ascii_case("link") {
        return None;
    }
    link_code_normal(code)
}

/// The help text: what can be typed at any point.
pub const HELP_TEXT: &str = "I take meal orders right here. You can type:\n\
• *menu* — the menu of your kitchen (or start over)\n\
• *start over* — a new basket\n\
• *status* — where your order is\n\
• *cancel* — clear the basket, or cancel your order before the kitchen accepts it\n\
• *help* — this message";

/// Money as the customer reads it.
pub fn money(cents: Cents) -> String {
    format!("{CURRENCY_SIGN}{cents}")
}

fn status_phrase(status: OrderStatus) -> &'static str {
    match status {
        OrderStatus::Placed => "waiting for the kitchen to accept it",
        OrderStatus::Accepted => "being prepared",
        OrderStatus::Ready => "ready and waiting for its driver",
        OrderStatus::PickedUp => "on its way to you",
        OrderStatus::Delivered => "delivered",
        OrderStatus::Rejected => "rejected by the kitchen (the hold on your card is released)",
        OrderStatus::Cancelled => "cancelled (the hold on your card is released)",
    }
}

/// Reads "3", "x3", "3 pcs" as 3.
fn typed_number(text: &str) -> Option<u32> {
    let digits: String = text
        .trim()
        .trim_start_matches(['x', 'X'])
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    if digits.is_empty() || digits.len() > 6 {
        return None;
    }
    digits.parse().ok()
}

/// The option among `names` (1-based `number`, or a name containing the text) the customer typed.
fn typed_choice<'a>(text: &str, page_ids: &[(&'a str, &'a str)]) -> Option<&'a str> {
    if let Some(n) = typed_number(text) {
        return page_ids
            .get((n as usize).checked_sub(1)?)
            .map(|(id, _)| *id);
    }
    let wanted = text.trim().to_lowercase();
    if wanted.len() < 3 {
        return None;
    }
    let mut matching = page_ids
        .iter()
        .filter(|(_, name)| name.to_lowercase().contains(&wanted));
    match (matching.next(), matching.next()) {
        (Some((id, _)), None) => Some(id),
        _ => None,
    }
}

impl Conversation {
    /// A new conversation (first contact), greeting by `name` when known.
    pub fn new(name: Option<String>) -> Conversation {
        Conversation {
            stage: Stage::Start,
            name,
            dropoff: None,
            kitchen: None,
            menu: Vec::new(),
            basket: Vec::new(),
            basket_rev: 0,
            session: 0,
            last_order: None,
            last_active_at: None,
        }
    }

    /// When the idle sweep should reset it: 30 minutes after the last message, unless there is
    /// nothing to reset.
    pub fn expires_at(&self) -> Option<DateTime<Utc>> {
        if self.stage == Stage::Start {
            return None;
        }
        self.last_active_at
            .map(|at| at + chrono::Duration::seconds(IDLE_EXPIRY_SECS))
    }

    /// The basket as a payment link carries it.
    pub fn basket(&self) -> Option<Basket> {
        let kitchen = self.kitchen.as_ref()?;
        let dropoff = self.dropoff.clone()?;
        (!self.basket.is_empty()).then(|| Basket {
            merchant_id: kitchen.id,
            merchant_name: kitchen.name.clone(),
            lines: self.basket.clone(),
            dropoff,
        })
    }

    /// One input from the customer (or the pay endpoint, or the idle sweep) at `now`.
    pub fn handle(&mut self, input: &Input, now: DateTime<Utc>) -> Step {
        if matches!(input, Input::Idle) {
            return self.expire(now);
        }
        // The sweep may not have come by (the worker was down): a stale conversation is reset
        // before the new message is read.
        let stale = self.expires_at().is_some_and(|at| at <= now);
        let note = stale.then(|| self.expire(now));
        if !matches!(input, Input::Paid { .. }) {
            self.last_active_at = Some(now);
        }
        let step = self.read(input);
        match note {
            Some(note) => Step {
                replies: note.replies.into_iter().chain(step.replies).collect(),
                effect: step.effect,
            },
            None => step,
        }
    }

    fn expire(&mut self, now: DateTime<Utc>) -> Step {
        if self.expires_at().is_none_or(|at| at > now) {
            return Step::default();
        }
        let had_basket = !self.basket.is_empty();
        self.clear();
        let text = if had_basket {
            "This conversation timed out after 30 minutes without a reply, so I cleared your basket (any payment link in it has expired too). Say hi to start again."
        } else {
            "This conversation timed out after 30 minutes without a reply. Say hi whenever you want to order."
        };
        Step::say(Reply::text(text))
    }

    /// Back to the start, keeping who and where the customer is and their last order.
    fn clear(&mut self) {
        self.stage = Stage::Start;
        self.kitchen = None;
        self.menu.clear();
        if !self.basket.is_empty() {
            self.basket.clear();
            self.basket_rev += 1;
        }
    }

    fn read(&mut self, input: &Input) -> Step {
        match input {
            Input::Idle => Step::default(),
            Input::Paid { order_id } => {
                self.last_order = Some(*order_id);
                self.clear();
                Step::run(Effect::TrackingLink { order: *order_id })
            }
            Input::Unsupported { kind } => Step::say(Reply::text(format!(
                "Sorry, I can't read {kind} messages yet.\n\n{HELP_TEXT}"
            ))),
            Input::Location { lat, lon, label } => self.located_at(*lat, *lon, label.clone()),
            Input::Text { body } if link_code_of(body).is_some() => {
                let code = link_code_of(body).unwrap_or_default();
                Step::run(Effect::LinkAccount { code })
            }
            Input::Text { body } => match command(body) {
                Some(command) => self.command(command),
                None => self.typed(body),
            },
            Input::Choice { id, .. } => self.chose(id),
        }
    }

    fn greet(&mut self) -> Step {
        self.clear();
        self.session += 1;
        self.stage = Stage::AwaitingLocation;
        let hello = match &self.name {
            Some(name) => format!("Hi {name}! "),
            None => "Hi! ".to_owned(),
        };
        let mut body = format!(
            "{hello}I'm the MealKitz bot: I can order you a meal from a kitchen nearby. Where should it go? Tap *Send location*, or type the address."
        );
        if let Some(dropoff) = &self.dropoff {
            body.push_str(&format!(
                "\n\nLast time it was {}: type *same* to use it again.",
                dropoff.address
            ));
        }
        Step::say(Reply::location_request(body))
    }

    fn command(&mut self, command: Command) -> Step {
        match command {
            Command::Help => Step::say(Reply::text(HELP_TEXT)),
            Command::Greeting if self.stage == Stage::Start => self.greet(),
            Command::Greeting => self.prompt().before(Reply::text(
                "Hi again! We're in the middle of an order — here is where we were (type *start over* for a new one):",
            )),
            Command::StartOver => self.greet(),
            Command::Menu => match self.kitchen.clone() {
                Some(_) if !self.menu.is_empty() => {
                    self.stage = Stage::ChoosingDish { page: 0 };
                    self.prompt()
                }
                _ => self.greet(),
            },
            Command::Status => match self.last_order {
                Some(order) => Step::run(Effect::OrderStatus { order }),
                None => Step::say(Reply::text(
                    "You haven't ordered in this chat yet. Say hi to start an order.",
                )),
            },
            Command::Cancel if !self.basket.is_empty() || self.stage != Stage::Start => {
                self.clear();
                let mut text = "OK, I cleared your basket. Say hi to start again.".to_owned();
                if let Some(order) = self.last_order {
                    text.push_str(&format!(
                        " To cancel order #{}, type *cancel order*.",
                        order_code(order)
                    ));
                }
                Step::say(Reply::text(text))
            }
            Command::Cancel | Command::CancelOrder => match self.last_order {
                Some(order) => Step::run(Effect::CancelOrder { order }),
                None => Step::say(Reply::text("There is no order to cancel.")),
            },
            Command::Checkout => self.chose("basket:checkout"),
            Command::AddMore => self.chose("basket:add"),
        }
    }

    /// Text that is no command: an answer to the stage's question, or a greeting.
    fn typed(&mut self, text: &str) -> Step {
        match self.stage.clone() {
            Stage::Start => self.greet(),
            Stage::AwaitingLocation => {
                if text.trim().eq_ignore_ascii_case("same")
                    && let Some(dropoff) = self.dropoff.clone()
                {
                    return Step::run(Effect::FindKitchens {
                        at: dropoff.position,
                    });
                }
                if text.chars().count() < 3 {
                    return self.prompt().before(Reply::text(
                        "That's too short to be an address. Type the street and number, and the city.",
                    ));
                }
                Step::run(Effect::Geocode {
                    address: text.to_owned(),
                })
            }
            Stage::ChoosingKitchen { kitchens, page } => {
                let shown = page_of(&kitchens, page, KITCHEN_PAGE_ROWS)
                    .iter()
                    .map(|k| (format!("kitchen:{}", k.id), k.name.as_str()));
                self.typed_row(text, shown, "Please pick a kitchen from the list.")
            }
            Stage::ChoosingDish { page } => {
                let menu = self.menu.clone();
                let shown = page_of(&menu, page, MENU_PAGE_ROWS)
                    .iter()
                    .map(|d| (format!("dish:{}", d.id), d.name.as_str()));
                self.typed_row(text, shown, "Please pick a dish from the menu.")
            }
            Stage::ChoosingQuantity { dish } => match typed_number(text) {
                Some(n) if (1..=QUANTITY_MAX).contains(&n) => self.add_to_basket(dish, n),
                _ => Step::say(Reply::text(format!(
                    "Please type a number from 1 to {QUANTITY_MAX}."
                ))),
            },
            Stage::Reviewing | Stage::AwaitingPayment => self.prompt().before(Reply::text(
                "Tap *Checkout* to pay, *Add more* for more dishes, or *Cancel*.",
            )),
        }
    }

    /// A row of the list shown, chosen by typing its number or part of its name; otherwise the
    /// list again after `otherwise`.
    fn typed_row<'a>(
        &mut self,
        text: &str,
        shown: impl Iterator<Item = (String, &'a str)>,
        otherwise: &str,
    ) -> Step {
        let rows: Vec<(String, &str)> = shown.collect();
        let refs: Vec<(&str, &str)> = rows.iter().map(|(id, name)| (id.as_str(), *name)).collect();
        match typed_choice(text, &refs).map(str::to_owned) {
            Some(id) => self.chose(&id),
            None => self.prompt().before(Reply::text(otherwise)),
        }
    }

    fn located_at(&mut self, lat: f64, lon: f64, label: Option<String>) -> Step {
        if !self.basket.is_empty() {
            return self.prompt().before(Reply::text(
                "Your basket is from a kitchen near the old address. Type *start over* first to deliver somewhere else.",
            ));
        }
        let position = Position { lat, lon };
        self.dropoff = Some(Dropoff {
            position,
            address: label.unwrap_or_else(|| format!("Pinned location ({lat:.5}, {lon:.5})")),
        });
        if self.stage == Stage::Start {
            self.session += 1;
        }
        self.stage = Stage::AwaitingLocation;
        Step::run(Effect::FindKitchens { at: position })
    }

    /// A tapped button or list row.
    fn chose(&mut self, id: &str) -> Step {
        let (kind, value) = id.split_once(':').unwrap_or((id, ""));
        match (kind, self.stage.clone()) {
            ("kitchen", Stage::ChoosingKitchen { kitchens, .. }) => {
                match kitchens.iter().find(|k| k.id.to_string() == value) {
                    Some(kitchen) => Step::run(Effect::LoadMenu {
                        kitchen: kitchen.id,
                    }),
                    None => self.stale(),
                }
            }
            ("kitchens", Stage::ChoosingKitchen { kitchens, .. }) => {
                self.stage = Stage::ChoosingKitchen {
                    kitchens,
                    page: page_number(value),
                };
                self.prompt()
            }
            ("dish", Stage::ChoosingDish { .. }) => {
                match self.menu.iter().find(|d| d.id.to_string() == value) {
                    Some(dish) => {
                        self.stage = Stage::ChoosingQuantity { dish: dish.id };
                        self.prompt()
                    }
                    None => self.stale(),
                }
            }
            ("menu", Stage::ChoosingDish { .. }) => {
                self.stage = Stage::ChoosingDish {
                    page: page_number(value),
                };
                self.prompt()
            }
            ("qty", Stage::ChoosingQuantity { dish }) => match value.parse::<u32>() {
                Ok(n) if (1..=QUANTITY_MAX).contains(&n) => self.add_to_basket(dish, n),
                _ => self.stale(),
            },
            ("basket", Stage::Reviewing | Stage::AwaitingPayment) => match value {
                "checkout" if self.stage == Stage::AwaitingPayment => Step::say(Reply::text(
                    "Your payment link is in the message above; it works for 30 minutes. Type *add more* to change the basket first.",
                )),
                "checkout" => match self.basket() {
                    Some(basket) => Step::run(Effect::IssuePayLink {
                        basket,
                        key: format!("{}:{}", self.session, self.basket_rev),
                    }),
                    None => self.stale(),
                },
                "add" => {
                    self.stage = Stage::ChoosingDish { page: 0 };
                    self.prompt()
                }
                "cancel" => self.command(Command::Cancel),
                _ => self.stale(),
            },
            _ => self.stale(),
        }
    }

    /// A tap on a button of an earlier step.
    fn stale(&mut self) -> Step {
        if self.stage == Stage::Start {
            return self.greet().before(Reply::text(
                "That button belongs to an earlier conversation. Let's start a new one.",
            ));
        }
        self.prompt().before(Reply::text(
            "That button belongs to an earlier step. Here is where we are:",
        ))
    }

    fn add_to_basket(&mut self, dish: Uuid, quantity: u32) -> Step {
        let Some(dish) = self.menu.iter().find(|d| d.id == dish).cloned() else {
            return self.stale();
        };
        let lines = self.basket.len();
        match self.basket.iter_mut().find(|l| l.menu_item_id == dish.id) {
            Some(line) => line.quantity = (line.quantity + quantity).min(QUANTITY_MAX),
            None if lines >= BASKET_MAX_LINES => {
                self.stage = Stage::Reviewing;
                return self.prompt().before(Reply::text(format!(
                    "A basket holds at most {BASKET_MAX_LINES} different dishes."
                )));
            }
            None => self.basket.push(BasketLine {
                menu_item_id: dish.id,
                name: dish.name.clone(),
                quantity,
                unit_price_cents: dish.price_cents,
            }),
        }
        self.basket_rev += 1;
        self.stage = Stage::Reviewing;
        self.prompt()
    }

    /// What an effect found.
    pub fn resume(&mut self, found: Found) -> Step {
        match found {
            Found::Located(dropoff) => {
                let at = dropoff.position;
                self.dropoff = Some(dropoff);
                Step::run(Effect::FindKitchens { at })
            }
            Found::NotLocated => self.prompt().before(Reply::text(
                "I couldn't find that address. Add the street number and the city, or share your location pin.",
            )),
            Found::NoGeocoder => Step::say(Reply::location_request(
                "I can't look up typed addresses right now. Please share your location pin instead: tap *Send location*.",
            )),
            Found::Kitchens(kitchens) if kitchens.is_empty() => {
                self.stage = Stage::AwaitingLocation;
                let place = self
                    .dropoff
                    .as_ref()
                    .map_or("there".to_owned(), |d| d.address.clone());
                Step::say(Reply::location_request(format!(
                    "Sorry, no open kitchen delivers to {place} right now. Try another address, or later."
                )))
            }
            Found::Kitchens(kitchens) => {
                self.stage = Stage::ChoosingKitchen { kitchens, page: 0 };
                self.prompt()
            }
            Found::Menu { kitchen, dishes } if dishes.is_empty() => self.prompt().before(
                Reply::text(format!("{} has nothing on its menu right now.", kitchen.name)),
            ),
            Found::Menu { kitchen, dishes } => {
                self.kitchen = Some(kitchen);
                self.menu = dishes;
                self.stage = Stage::ChoosingDish { page: 0 };
                self.prompt()
            }
            Found::KitchenClosed => self.prompt().before(Reply::text(
                "That kitchen isn't taking orders right now. Pick another one, or type *start over*.",
            )),
            Found::PayLink {
                url,
                delivery_fee_cents,
                total_cents,
            } => {
                self.stage = Stage::AwaitingPayment;
                Step::say(Reply::text(format!(
                    "Total {} (with {} delivery). Pay here — the link works for 30 minutes:\n{url}",
                    money(total_cents),
                    money(delivery_fee_cents)
                )))
            }
            Found::CheckoutRefused(reason) => {
                self.prompt()
                    .before(Reply::text(format!("I can't check this basket out: {reason}")))
            }
            Found::AlreadyPaid => {
                self.clear();
                Step::say(Reply::text(
                    "This basket is paid already: its order is placed. Type *status* to see where it is.",
                ))
            }
            Found::Status {
                status,
                eta_minutes,
            } => {
                let Some(order) = self.last_order else {
                    return Step::default();
                };
                let mut text = format!("Order #{} is {}.", order_code(order), status_phrase(status));
                if let Some(minutes) = eta_minutes.filter(|_| !status.is_final()) {
                    text.push_str(&format!(" Expected at your door in about {minutes} min."));
                }
                Step::say(Reply::text(text))
            }
            Found::Cancelled => {
                let code = self.last_order.map(order_code).unwrap_or_default();
                Step::say(Reply::text(format!(
                    "Order #{code} is cancelled. The hold on your card is released — you are not charged."
                )))
            }
            Found::CannotCancel { status } => {
                let code = self.last_order.map(order_code).unwrap_or_default();
                Step::say(Reply::text(format!(
                    "Order #{code} can't be cancelled any more: it is {}.",
                    status_phrase(status)
                )))
            }
            Found::TrackingLink { url } => {
                let code = self.last_order.map(order_code).unwrap_or_default();
                Step::say(Reply::text(format!(
                    "Order #{code} placed ✅ Track it here: {url}\nI'll message you when the kitchen accepts it. Type *status* any time."
                )))
            }
            Found::Linked { name, .. } => {
                // Orders placed before were another account's.
                self.last_order = None;
                Step::say(Reply::text(format!(
                    "Done: this number now orders for the account of {name}. Your orders from here show up there too."
                )))
            }
            Found::LinkRefused => Step::say(Reply::text(
                "That link code doesn't work: it may be mistyped, used or older than 10 minutes. Make a new one on the website.",
            )),
            Found::Unavailable => Step::say(Reply::text(
                "Sorry, something on our side is not answering. Please try again in a minute.",
            )),
        }
    }

    /// The current stage's question, asked (again).
    pub fn prompt(&self) -> Step {
        match &self.stage {
            Stage::Start => Step::say(Reply::text("Say hi to start an order.")),
            Stage::AwaitingLocation => Step::say(Reply::location_request(
                "Where should we deliver? Tap *Send location*, or type the address.",
            )),
            Stage::ChoosingKitchen { kitchens, page } => {
                let page = (*page).min(last_page(kitchens.len(), KITCHEN_PAGE_ROWS));
                let mut rows: Vec<ReplyOption> = page_of(kitchens, page, KITCHEN_PAGE_ROWS)
                    .iter()
                    .map(|k| ReplyOption {
                        id: format!("kitchen:{}", k.id),
                        title: k.name.clone(),
                        description: Some(format!("{:.1} km away", k.distance_m / 1_000.0)),
                    })
                    .collect();
                rows.extend(more_row(
                    kitchens.len(),
                    page,
                    KITCHEN_PAGE_ROWS,
                    "kitchens",
                    "More kitchens",
                ));
                let place = self
                    .dropoff
                    .as_ref()
                    .map_or(String::new(), |d| format!(" to {}", d.address));
                Step::say(Reply::list(
                    format!(
                        "{} kitchen{} deliver{}{place}. Which one?",
                        kitchens.len(),
                        if kitchens.len() == 1 { "" } else { "s" },
                        if kitchens.len() == 1 { "s" } else { "" }
                    ),
                    "Kitchens",
                    rows,
                ))
            }
            Stage::ChoosingDish { page } => {
                let page = (*page).min(last_page(self.menu.len(), MENU_PAGE_ROWS));
                let mut rows: Vec<ReplyOption> = page_of(&self.menu, page, MENU_PAGE_ROWS)
                    .iter()
                    .map(|d| ReplyOption {
                        id: format!("dish:{}", d.id),
                        title: d.name.clone(),
                        description: Some(money(d.price_cents)),
                    })
                    .collect();
                rows.extend(more_row(
                    self.menu.len(),
                    page,
                    MENU_PAGE_ROWS,
                    "menu",
                    "More dishes",
                ));
                let kitchen = self
                    .kitchen
                    .as_ref()
                    .map_or("The kitchen", |k| k.name.as_str());
                Step::say(Reply::list(
                    format!("{kitchen}'s menu. What would you like?"),
                    "Menu",
                    rows,
                ))
            }
            Stage::ChoosingQuantity { dish } => {
                let name = self
                    .menu
                    .iter()
                    .find(|d| d.id == *dish)
                    .map_or("it", |d| d.name.as_str());
                Step::say(Reply::buttons(
                    format!("How many {name}? Tap, or type a number from 1 to {QUANTITY_MAX}."),
                    &[("qty:1", "1"), ("qty:2", "2"), ("qty:3", "3")],
                ))
            }
            Stage::Reviewing | Stage::AwaitingPayment => {
                let kitchen = self.kitchen.as_ref().map_or("", |k| k.name.as_str());
                let mut body = format!("Your basket from {kitchen}:\n");
                for line in &self.basket {
                    body.push_str(&format!(
                        "• {} × {} — {}\n",
                        line.quantity,
                        line.name,
                        money(Cents(
                            line.unit_price_cents
                                .0
                                .saturating_mul(i64::from(line.quantity))
                        ))
                    ));
                }
                let subtotal = self.basket().map_or(Cents(0), |b| b.subtotal());
                body.push_str(&format!(
                    "Subtotal {} (delivery is added at checkout)",
                    money(subtotal)
                ));
                if let Some(dropoff) = &self.dropoff {
                    body.push_str(&format!("\nTo: {}", dropoff.address));
                }
                Step::say(Reply::buttons(
                    body,
                    &[
                        ("basket:checkout", "Checkout"),
                        ("basket:add", "Add more"),
                        ("basket:cancel", "Cancel"),
                    ],
                ))
            }
        }
    }
}

/// The page a "More" row turns to (`page:2`), the first when unreadable.
fn page_number(value: &str) -> usize {
    value
        .strip_prefix("page:")
        .and_then(|p| p.parse().ok())
        .unwrap_or(0)
}

fn last_page(len: usize, per_page: usize) -> usize {
    len.saturating_sub(1) / per_page.max(1)
}

fn page_of<T>(items: &[T], page: usize, per_page: usize) -> &[T] {
    let start = (page * per_page).min(items.len());
    let end = (start + per_page).min(items.len());
    &items[start..end]
}

/// The row that turns the page: to the next page, or back to the first from the last.
fn more_row(
    len: usize,
    page: usize,
    per_page: usize,
    kind: &str,
    title: &str,
) -> Option<ReplyOption> {
    if len <= per_page {
        return None;
    }
    let next = if page >= last_page(len, per_page) {
        0
    } else {
        page + 1
    };
    Some(ReplyOption {
        id: format!("{kind}:page:{next}"),
        title: if next == 0 {
            "Back to the start".to_owned()
        } else {
            title.to_owned()
        },
        description: Some(format!(
            "Page {} of {}",
            next + 1,
            last_page(len, per_page) + 1
        )),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::chat::BUTTONS_MAX;

    fn at(minute: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + minute * 60, 0).unwrap()
    }

    fn text(body: &str) -> Input {
        Input::Text { body: body.into() }
    }

    fn choice(id: &str) -> Input {
        Input::Choice {
            id: id.into(),
            title: String::new(),
        }
    }

    fn kitchen(n: u128) -> Kitchen {
        Kitchen {
            id: MerchantId(Uuid::from_u128(n)),
            name: format!("Kitchen {n}"),
            distance_m: 500.0 * n as f64,
        }
    }

    fn dish(n: u128) -> Dish {
        Dish {
            id: Uuid::from_u128(1_000 + n),
            name: format!("Dish {n}"),
            price_cents: Cents(1_000 + n as i64),
        }
    }

    fn place() -> Dropoff {
        Dropoff {
            position: Position {
                lat: 60.17,
                lon: 24.94,
            },
            address: "Mannerheimintie 5, Helsinki".into(),
        }
    }

    /// A conversation at a stage, as the steps before it would have left it.
    fn at_stage(stage: &str) -> Conversation {
        let mut c = Conversation::new(Some("Aino".into()));
        c.session = 1;
        c.last_active_at = Some(at(0));
        if stage == "start" {
            return c;
        }
        c.stage = Stage::AwaitingLocation;
        if stage == "location" {
            return c;
        }
        c.dropoff = Some(place());
        c.stage = Stage::ChoosingKitchen {
            kitchens: vec![kitchen(1), kitchen(2)],
            page: 0,
        };
        if stage == "kitchens" {
            return c;
        }
        c.kitchen = Some(kitchen(1));
        c.menu = (1..=3).map(dish).collect();
        c.stage = Stage::ChoosingDish { page: 0 };
        if stage == "menu" {
            return c;
        }
        c.stage = Stage::ChoosingQuantity { dish: dish(2).id };
        if stage == "quantity" {
            return c;
        }
        c.basket = vec![BasketLine {
            menu_item_id: dish(2).id,
            name: "Dish 2".into(),
            quantity: 2,
            unit_price_cents: Cents(1_002),
        }];
        c.basket_rev = 1;
        c.stage = Stage::Reviewing;
        if stage == "basket" {
            return c;
        }
        c.stage = Stage::AwaitingPayment;
        assert_eq!(stage, "paying", "unknown stage {stage}");
        c
    }

    fn stage_name(stage: &Stage) -> &'static str {
        match stage {
            Stage::Start => "start",
            Stage::AwaitingLocation => "location",
            Stage::ChoosingKitchen { .. } => "kitchens",
            Stage::ChoosingDish { .. } => "menu",
            Stage::ChoosingQuantity { .. } => "quantity",
            Stage::Reviewing => "basket",
            Stage::AwaitingPayment => "paying",
        }
    }

    fn effect_name(effect: &Option<Effect>) -> &'static str {
        match effect {
            None => "-",
            Some(Effect::Geocode { .. }) => "geocode",
            Some(Effect::FindKitchens { .. }) => "find_kitchens",
            Some(Effect::LoadMenu { .. }) => "load_menu",
            Some(Effect::IssuePayLink { .. }) => "pay_link",
            Some(Effect::OrderStatus { .. }) => "status",
            Some(Effect::CancelOrder { .. }) => "cancel",
            Some(Effect::TrackingLink { .. }) => "tracking",
            Some(Effect::LinkAccount { .. }) => "link",
        }
    }

    fn all_text(step: &Step) -> String {
        step.replies
            .iter()
            .map(|r| serde_json::to_string(r).unwrap())
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[test]
    fn every_stage_answers_every_kind_of_input_as_the_table_says() {
        let order = OrderId(Uuid::from_u128(0xabc123));
        let k1 = format!("kitchen:{}", kitchen(1).id);
        let d3 = format!("dish:{}", dish(3).id);
        // (stage, input, next stage, effect asked, text the replies contain)
        let table: Vec<(&str, Input, &str, &str, &str)> = vec![
            ("start", text("hi"), "location", "-", "location_request"),
            (
                "start",
                text("I'd like some food"),
                "location",
                "-",
                "Hi Aino!",
            ),
            ("start", text("status"), "start", "-", "haven't ordered"),
            ("start", text("cancel"), "start", "-", "no order to cancel"),
            ("start", text("help"), "start", "-", "*status*"),
            ("start", text("link k7m2-qx9p"), "start", "link", ""),
            ("basket", text("LINK K7M2QX9P"), "basket", "link", ""),
            ("start", text("link me up"), "location", "-", "Hi Aino"),
            (
                "start",
                choice("basket:checkout"),
                "location",
                "-",
                "earlier conversation",
            ),
            (
                "start",
                Input::Location {
                    lat: 60.17,
                    lon: 24.94,
                    label: None,
                },
                "location",
                "find_kitchens",
                "",
            ),
            (
                "start",
                Input::Unsupported {
                    kind: "image".into(),
                },
                "start",
                "-",
                "can't read image messages",
            ),
            (
                "location",
                text("Mannerheimintie 5"),
                "location",
                "geocode",
                "",
            ),
            ("location", text("ab"), "location", "-", "too short"),
            (
                "location",
                Input::Location {
                    lat: 60.17,
                    lon: 24.94,
                    label: Some("Home".into()),
                },
                "location",
                "find_kitchens",
                "",
            ),
            ("location", choice(&k1), "location", "-", "earlier step"),
            ("kitchens", choice(&k1), "kitchens", "load_menu", ""),
            ("kitchens", text("2"), "kitchens", "load_menu", ""),
            ("kitchens", text("kitchen 1"), "kitchens", "load_menu", ""),
            ("kitchens", text("9"), "kitchens", "-", "pick a kitchen"),
            (
                "kitchens",
                choice("kitchen:00000000-0000-0000-0000-000000000063"),
                "kitchens",
                "-",
                "earlier step",
            ),
            ("menu", choice(&d3), "quantity", "-", "How many Dish 3?"),
            ("menu", text("3"), "quantity", "-", "qty:3"),
            ("menu", text("pizza"), "menu", "-", "pick a dish"),
            ("menu", text("menu"), "menu", "-", "Kitchen 1's menu"),
            ("quantity", choice("qty:2"), "basket", "-", "2 × Dish 2"),
            ("quantity", text("12"), "basket", "-", "12 × Dish 2"),
            ("quantity", text("0"), "quantity", "-", "from 1 to 99"),
            ("quantity", text("100"), "quantity", "-", "from 1 to 99"),
            (
                "quantity",
                choice("qty:7000"),
                "quantity",
                "-",
                "earlier step",
            ),
            (
                "basket",
                choice("basket:checkout"),
                "basket",
                "pay_link",
                "",
            ),
            ("basket", text("checkout"), "basket", "pay_link", ""),
            (
                "basket",
                choice("basket:add"),
                "menu",
                "-",
                "Kitchen 1's menu",
            ),
            (
                "basket",
                choice("basket:cancel"),
                "start",
                "-",
                "cleared your basket",
            ),
            (
                "basket",
                text("cancel"),
                "start",
                "-",
                "cleared your basket",
            ),
            ("basket", text("what?"), "basket", "-", "Tap *Checkout*"),
            (
                "basket",
                Input::Location {
                    lat: 60.2,
                    lon: 24.9,
                    label: None,
                },
                "basket",
                "-",
                "start over",
            ),
            (
                "basket",
                text("start over"),
                "location",
                "-",
                "Last time it was Mannerheimintie 5",
            ),
            (
                "paying",
                choice("basket:checkout"),
                "paying",
                "-",
                "payment link is in the message above",
            ),
            ("paying", choice("basket:add"), "menu", "-", "menu"),
            (
                "paying",
                Input::Paid { order_id: order },
                "start",
                "tracking",
                "",
            ),
            (
                "kitchens",
                Input::Paid { order_id: order },
                "start",
                "tracking",
                "",
            ),
        ];
        for (stage, input, next, effect, says) in table {
            let mut c = at_stage(stage);
            let step = c.handle(&input, at(1));
            let case = format!("{stage} + {input:?}");
            assert_eq!(stage_name(&c.stage), next, "{case}: stage");
            assert_eq!(effect_name(&step.effect), effect, "{case}: effect");
            let said = all_text(&step);
            assert!(said.contains(says), "{case}: replies {said} lack {says:?}");
            if effect == "-" {
                assert!(!step.replies.is_empty(), "{case}: nothing said");
            }
        }
    }

    #[test]
    fn what_effects_find_moves_the_conversation_on() {
        // (stage, found, next stage, effect asked next, text)
        let table: Vec<(&str, Found, &str, &str, &str)> = vec![
            (
                "location",
                Found::Located(place()),
                "location",
                "find_kitchens",
                "",
            ),
            (
                "location",
                Found::NotLocated,
                "location",
                "-",
                "couldn't find that address",
            ),
            (
                "location",
                Found::NoGeocoder,
                "location",
                "-",
                "share your location pin",
            ),
            (
                "location",
                Found::Kitchens(vec![]),
                "location",
                "-",
                "no open kitchen delivers",
            ),
            (
                "location",
                Found::Kitchens(vec![kitchen(1)]),
                "kitchens",
                "-",
                "1 kitchen delivers",
            ),
            (
                "kitchens",
                Found::Menu {
                    kitchen: kitchen(2),
                    dishes: vec![dish(1)],
                },
                "menu",
                "-",
                "Kitchen 2's menu",
            ),
            (
                "kitchens",
                Found::Menu {
                    kitchen: kitchen(2),
                    dishes: vec![],
                },
                "kitchens",
                "-",
                "nothing on its menu",
            ),
            (
                "kitchens",
                Found::KitchenClosed,
                "kitchens",
                "-",
                "isn't taking orders",
            ),
            (
                "basket",
                Found::PayLink {
                    url: "https://x/pay/t".into(),
                    delivery_fee_cents: Cents(390),
                    total_cents: Cents(2_394),
                },
                "paying",
                "-",
                "Total $23.94 (with $3.90 delivery)",
            ),
            (
                "basket",
                Found::CheckoutRefused("Kitchen 1 has just closed.".into()),
                "basket",
                "-",
                "has just closed",
            ),
            ("basket", Found::AlreadyPaid, "start", "-", "paid already"),
            (
                "basket",
                Found::Unavailable,
                "basket",
                "-",
                "try again in a minute",
            ),
        ];
        for (stage, found, next, effect, says) in table {
            let mut c = at_stage(stage);
            let case = format!("{stage} + {found:?}");
            let step = c.resume(found);
            assert_eq!(stage_name(&c.stage), next, "{case}: stage");
            assert_eq!(effect_name(&step.effect), effect, "{case}: effect");
            let said = all_text(&step);
            assert!(said.contains(says), "{case}: replies {said} lack {says:?}");
        }
    }

    #[test]
    fn a_whole_order_from_hi_to_placed() {
        let mut c = Conversation::new(Some("Aino".into()));
        assert_eq!(c.handle(&text("hi"), at(0)).effect, None);
        let step = c.handle(
            &Input::Location {
                lat: 60.17,
                lon: 24.94,
                label: None,
            },
            at(1),
        );
        assert!(matches!(step.effect, Some(Effect::FindKitchens { .. })));
        c.resume(Found::Kitchens(vec![kitchen(1)]));
        let step = c.handle(&choice(&format!("kitchen:{}", kitchen(1).id)), at(2));
        assert_eq!(
            step.effect,
            Some(Effect::LoadMenu {
                kitchen: kitchen(1).id
            })
        );
        c.resume(Found::Menu {
            kitchen: kitchen(1),
            dishes: vec![dish(1), dish(2)],
        });
        c.handle(&choice(&format!("dish:{}", dish(1).id)), at(3));
        c.handle(&choice("qty:2"), at(3));
        c.handle(&choice("basket:add"), at(4));
        c.handle(&choice(&format!("dish:{}", dish(1).id)), at(4));
        c.handle(&text("3"), at(5));
        assert_eq!(c.basket.len(), 1, "the same dish twice is one line");
        assert_eq!(c.basket[0].quantity, 5);
        let step = c.handle(&choice("basket:checkout"), at(6));
        let Some(Effect::IssuePayLink { basket, key }) = step.effect else {
            panic!("checkout asks for a link: {step:?}");
        };
        assert_eq!(basket.merchant_id, kitchen(1).id);
        assert_eq!(basket.subtotal(), Cents(5 * 1_001));
        assert_eq!(key, format!("{}:{}", c.session, c.basket_rev));
        c.resume(Found::PayLink {
            url: "https://x/pay/t".into(),
            delivery_fee_cents: Cents(390),
            total_cents: Cents(5_395),
        });
        let order = OrderId(Uuid::from_u128(0xabc123));
        let step = c.handle(&Input::Paid { order_id: order }, at(7));
        assert_eq!(step.effect, Some(Effect::TrackingLink { order }));
        let step = c.resume(Found::TrackingLink {
            url: "https://x/track/1".into(),
        });
        assert!(all_text(&step).contains("Order #ABC123 placed"));
        assert!(c.basket.is_empty());
        assert_eq!(c.last_order, Some(order));
        // From then on, status and cancel are about that order.
        assert_eq!(
            c.handle(&text("Status"), at(8)).effect,
            Some(Effect::OrderStatus { order })
        );
        assert_eq!(
            c.handle(&text("cancel"), at(8)).effect,
            Some(Effect::CancelOrder { order })
        );
        let step = c.resume(Found::CannotCancel {
            status: OrderStatus::Accepted,
        });
        assert!(all_text(&step).contains("can't be cancelled any more: it is being prepared"));
    }

    #[test]
    fn a_changed_basket_is_a_new_revision_and_so_a_new_link() {
        let mut c = at_stage("paying");
        let before = c.basket_rev;
        c.handle(&choice("basket:add"), at(1));
        c.handle(&choice(&format!("dish:{}", dish(1).id)), at(1));
        c.handle(&choice("qty:1"), at(1));
        let step = c.handle(&choice("basket:checkout"), at(2));
        let Some(Effect::IssuePayLink { key, .. }) = step.effect else {
            panic!("{step:?}");
        };
        assert!(c.basket_rev > before);
        assert_eq!(key, format!("1:{}", c.basket_rev));
    }

    #[test]
    fn thirty_idle_minutes_reset_the_conversation_with_a_note() {
        let mut c = at_stage("basket");
        assert_eq!(c.expires_at(), Some(at(30)));
        assert!(c.handle(&Input::Idle, at(29)).replies.is_empty(), "not yet");
        let step = c.handle(&Input::Idle, at(30));
        assert!(all_text(&step).contains("timed out after 30 minutes"));
        assert_eq!(c.stage, Stage::Start);
        assert!(c.basket.is_empty());
        assert_eq!(c.expires_at(), None, "nothing left to expire");
        assert!(c.handle(&Input::Idle, at(90)).replies.is_empty());

        // A message after the sweep missed it: the note first, then the message is read.
        let mut c = at_stage("menu");
        let step = c.handle(&text("hi"), at(45));
        let said = all_text(&step);
        assert!(said.find("timed out").unwrap() < said.find("Hi Aino").unwrap());
        assert_eq!(c.stage, Stage::AwaitingLocation);
    }

    #[test]
    fn long_lists_page_within_whatsapps_limits() {
        let mut c = at_stage("menu");
        c.menu = (1..=25).map(dish).collect();
        c.menu[0].name = "An extraordinarily long dish name for a list row".into();
        let rows = |step: &Step| match &step.replies[0] {
            Reply::List { rows, .. } => rows.clone(),
            other => panic!("a list: {other:?}"),
        };
        let first = rows(&c.prompt());
        assert_eq!(first.len(), 10);
        assert_eq!(first[9].id, "menu:page:1");
        assert!(first.iter().all(|r| r.title.chars().count() <= 24));
        assert!(first[0].title.ends_with('…'));
        let step = c.handle(&choice("menu:page:2"), at(1));
        let last = rows(&step);
        assert_eq!(last.len(), 8, "7 dishes and the way back");
        assert_eq!(last[7].id, "menu:page:0");
        // A dish typed by its number on the page shown.
        let step = c.handle(&text("1"), at(1));
        assert!(all_text(&step).contains("Dish 19"), "{}", all_text(&step));
        // Buttons: at most three, short titles.
        match &step.replies[0] {
            Reply::Buttons { buttons, .. } => {
                assert!(buttons.len() <= BUTTONS_MAX);
                assert!(buttons.iter().all(|b| b.title.chars().count() <= 20));
            }
            other => panic!("buttons: {other:?}"),
        }
    }

    #[test]
    fn the_state_survives_a_round_trip_through_json() {
        let c = at_stage("paying");
        let json = serde_json::to_value(&c).unwrap();
        assert_eq!(serde_json::from_value::<Conversation>(json).unwrap(), c);
    }
}
