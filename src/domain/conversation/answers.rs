//! The conversation's answers: what each effect's result makes of it ([`Conversation::resume`])
//! and each stage's question as WhatsApp shows it ([`Conversation::prompt`]), paged lists
//! included.

use super::{
    Conversation, Effect, Found, KITCHEN_PAGE_ROWS, MENU_PAGE_ROWS, QUANTITY_MAX, Stage, Step,
    money, page_of, status_phrase,
};
use crate::domain::Cents;
use crate::domain::chat::{Reply, ReplyOption};
use crate::domain::notification::order_code;

impl Conversation {
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

fn last_page(len: usize, per_page: usize) -> usize {
    len.saturating_sub(1) / per_page.max(1)
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
