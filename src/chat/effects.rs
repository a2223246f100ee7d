//! What a conversation asks of the world, done: a typed address looked up, the open kitchens
//! that deliver to a point, a kitchen's menu, a payment link for a basket (priced as checkout
//! prices it), an order's status, a cancellation, a tracking link. A failing dependency answers
//! [`Found::Unavailable`]; nothing here panics or gives up the conversation.

use crate::actors::commands::orders::CancelOrder;
use crate::actors::{Canceller, EngineError};
use crate::domain::chat::{Basket, Dropoff, link_code_hash};
use crate::domain::conversation::{Conversation, Dish, Effect, Found, Kitchen};
use crate::domain::pricing::quote;
use crate::domain::{MerchantId, OrderId, OrderStatus, Phone, Position, UserId};
use crate::geo::{LatLon, haversine_m};
use crate::maps::MapsError;
use crate::store::{NewPayLink, PAY_LINK_TTL_SECS, StoreError, new_pay_token, pay_token_hash};

use super::ChatParts;

/// Most merchants looked at around a delivery point.
const KITCHENS_LOOKED_AT: i64 = 200;
/// Metres per degree of latitude.
const METRES_PER_DEGREE: f64 = 111_320.0;

/// Who the effect is done for.
pub struct Party<'a> {
    pub phone: &'a Phone,
    pub customer: UserId,
    pub conversation: &'a Conversation,
}

/// Does `effect`.
pub async fn run(parts: &ChatParts, party: &Party<'_>, effect: Effect) -> Found {
    let done = match effect {
        Effect::Geocode { address } => return geocode(parts, &address),
        Effect::FindKitchens { at } => kitchens(parts, at).await,
        Effect::LoadMenu { kitchen } => menu(parts, party, kitchen).await,
        Effect::IssuePayLink { basket, key } => pay_link(parts, party, &basket, &key).await,
        Effect::OrderStatus { order } => status(parts, party, order).await,
        Effect::CancelOrder { order } => return cancel(parts, party, order).await,
        Effect::TrackingLink { order } => Ok(tracking_link(parts, party, order)),
        Effect::LinkAccount { code } => link_account(parts, party, &code).await,
    };
    done.unwrap_or_else(|error| {
        tracing::warn!(error = %error, "a WhatsApp conversation could not reach the store");
        Found::Unavailable
    })
}

fn geocode(parts: &ChatParts, address: &str) -> Found {
    match parts.maps.geocode(address, None, 1) {
        Ok(places) => match places.into_iter().next() {
            Some(place) => Found::Located(Dropoff {
                position: Position {
                    lat: place.lat,
                    lon: place.lon,
                },
                address: place.label,
            }),
            None => Found::NotLocated,
        },
        Err(MapsError::Unavailable(_)) => Found::NoGeocoder,
    }
}

/// Whether dispatch serves `at` (it lies in a region).
fn served(parts: &ChatParts, at: Position) -> Option<LatLon> {
    let point = LatLon::new(at.lat, at.lon).ok()?;
    parts.engine.regions().locate(point).map(|_| point)
}

/// The open kitchens within the delivery distance of `at`, nearest first.
async fn kitchens(parts: &ChatParts, at: Position) -> Result<Found, StoreError> {
    let Some(point) = served(parts, at) else {
        return Ok(Found::Kitchens(Vec::new()));
    };
    let limit_m = parts.checkout.max_delivery_distance_m;
    let dlat = limit_m / METRES_PER_DEGREE;
    let dlon = limit_m / (METRES_PER_DEGREE * at.lat.to_radians().cos().max(0.01));
    let nearby = parts
        .store
        .merchants_in_box(
            Position {
                lat: at.lat - dlat,
                lon: at.lon - dlon,
            },
            Position {
                lat: at.lat + dlat,
                lon: at.lon + dlon,
            },
            KITCHENS_LOOKED_AT,
        )
        .await?;
    let mut kitchens: Vec<Kitchen> = nearby
        .into_iter()
        .filter(|m| m.is_open)
        .filter_map(|m| {
            let there = LatLon::new(m.location.lat, m.location.lon).ok()?;
            let distance_m = haversine_m(point, there);
            (distance_m <= limit_m).then_some(Kitchen {
                id: m.id,
                name: m.name,
                distance_m,
            })
        })
        .collect();
    kitchens.sort_by(|a, b| a.distance_m.total_cmp(&b.distance_m));
    Ok(Found::Kitchens(kitchens))
}

async fn menu(parts: &ChatParts, party: &Party<'_>, id: MerchantId) -> Result<Found, StoreError> {
    let Some(merchant) = parts.store.merchant(id).await? else {
        return Ok(Found::KitchenClosed);
    };
    if !merchant.is_open {
        return Ok(Found::KitchenClosed);
    }
    let distance_m = distance_m(party.conversation.dropoff.as_ref(), merchant.location);
    let dishes = parts
        .store
        .menu(id)
        .await?
        .into_iter()
        .map(|item| Dish {
            id: item.id,
            name: item.name,
            price_cents: item.price_cents,
        })
        .collect();
    Ok(Found::Menu {
        kitchen: Kitchen {
            id,
            name: merchant.name,
            distance_m: distance_m.unwrap_or(0.0),
        },
        dishes,
    })
}

fn distance_m(dropoff: Option<&Dropoff>, from: Position) -> Option<f64> {
    let dropoff = dropoff?;
    let a = LatLon::new(dropoff.position.lat, dropoff.position.lon).ok()?;
    let b = LatLon::new(from.lat, from.lon).ok()?;
    Some(haversine_m(a, b))
}

/// A payment link for the basket, priced as checkout will price it.
async fn pay_link(
    parts: &ChatParts,
    party: &Party<'_>,
    basket: &Basket,
    key: &str,
) -> Result<Found, StoreError> {
    let Some(merchant) = parts.store.merchant(basket.merchant_id).await? else {
        return Ok(Found::CheckoutRefused(
            "the kitchen is gone. Type *start over*.".into(),
        ));
    };
    if !merchant.is_open {
        return Ok(Found::CheckoutRefused(format!(
            "{} has just closed. Type *start over* to pick another kitchen.",
            merchant.name
        )));
    }
    let Some(distance_m) = distance_m(Some(&basket.dropoff), merchant.location) else {
        return Ok(Found::CheckoutRefused("the address is not valid.".into()));
    };
    if distance_m > parts.checkout.max_delivery_distance_m {
        return Ok(Found::CheckoutRefused(format!(
            "{} doesn't deliver that far.",
            merchant.name
        )));
    }
    let Ok(priced) = quote(
        basket
            .lines
            .iter()
            .map(|l| (l.unit_price_cents, l.quantity)),
        distance_m,
    ) else {
        return Ok(Found::CheckoutRefused("the total is too large.".into()));
    };
    let token = new_pay_token();
    let token_hash = pay_token_hash(&token);
    let basket_key = format!("{}:{key}", party.phone.as_str());
    let now = crate::store::now();
    let issued = parts
        .store
        .issue_pay_link(&NewPayLink {
            phone: party.phone.as_str(),
            customer_id: party.customer,
            basket,
            basket_key: &basket_key,
            token_hash: &token_hash,
            expires_at: now + chrono::Duration::seconds(PAY_LINK_TTL_SECS),
        })
        .await?;
    Ok(match issued {
        Some(_) => Found::PayLink {
            url: format!("{}/pay/{token}", parts.notify.public_url),
            delivery_fee_cents: priced.delivery_fee_cents,
            total_cents: priced.total_cents,
        },
        None => Found::AlreadyPaid,
    })
}

async fn status(parts: &ChatParts, party: &Party<'_>, order: OrderId) -> Result<Found, StoreError> {
    Ok(match parts.store.load_order(order).await? {
        // Only the chat's own customer's order (a linked number orders for another account).
        Some(order) if order.customer_id == party.customer => Found::Status {
            status: order.status(),
            eta_minutes: None,
        },
        _ => Found::Unavailable,
    })
}

async fn cancel(parts: &ChatParts, party: &Party<'_>, order: OrderId) -> Found {
    let cancelled = parts
        .engine
        .execute(CancelOrder {
            order_id: order,
            by: Canceller::Customer(party.customer),
            reason: "Cancelled in the WhatsApp chat".to_owned(),
        })
        .await;
    match cancelled {
        Ok(_) | Err(EngineError::OrderClosed(OrderStatus::Cancelled)) => Found::Cancelled,
        Err(EngineError::OrderClosed(status)) => Found::CannotCancel { status },
        Err(EngineError::Transition(_)) => match parts.store.load_order(order).await {
            Ok(Some(order)) if order.status() == OrderStatus::Cancelled => Found::Cancelled,
            Ok(Some(order)) => Found::CannotCancel {
                status: order.status(),
            },
            _ => Found::Unavailable,
        },
        Err(error) => {
            tracing::warn!(error = %error, order_id = %order, "cannot cancel an order from WhatsApp");
            Found::Unavailable
        }
    }
}

fn tracking_link(parts: &ChatParts, party: &Party<'_>, order: OrderId) -> Found {
    let base = format!("{}/track/{order}", parts.notify.public_url);
    Found::TrackingLink {
        url: match (parts.issue_token)(party.customer) {
            Some(token) => format!("{base}#token={token}"),
            None => base,
        },
    }
}

async fn link_account(
    parts: &ChatParts,
    party: &Party<'_>,
    code: &str,
) -> Result<Found, StoreError> {
    let redeemed = parts
        .store
        .redeem_whatsapp_link_code(&link_code_hash(code), party.phone, crate::store::now())
        .await?;
    Ok(match redeemed {
        Some(user) => {
            tracing::info!(user_id = %user.id, phone = %party.phone.masked(), "a WhatsApp number was linked to an account");
            Found::Linked {
                customer: user.id,
                name: user.name,
            }
        }
        None => Found::LinkRefused,
    })
}
