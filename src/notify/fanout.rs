//! Fan-out: what one outbox entry becomes — the webhook body for each of the merchant's enabled
//! endpoints subscribed to its event, and the customer's WhatsApp message when they agreed and
//! gave a phone — with every fact frozen now, so each attempt sends the same message.

use std::sync::Arc;

use crate::config::NotifyConfig;
use crate::domain::notification::{CustomerMessage, order_code, webhook_body};
use crate::domain::{Change, NotifyEvent, Order};
use crate::geo::LatLon;
use crate::maps::Maps;
use crate::store::{Channel, NewNotification, OutboxEntry, Store, StoreError};

/// Whether `entry` may make a WhatsApp message to the customer (an event they are told of,
/// with the channel set up): if not, and its merchant has no enabled endpoint, it makes nothing.
pub fn may_tell_customer(config: &NotifyConfig, entry: &OutboxEntry) -> bool {
    entry.event.tells_customer() && config.whatsapp.is_some()
}

/// The notifications `entry` makes (none when its order is gone).
pub async fn notifications_for(
    store: &Store,
    maps: &Arc<Maps>,
    config: &NotifyConfig,
    entry: &OutboxEntry,
) -> Result<Vec<NewNotification>, StoreError> {
    let Some((order, change)) = store.order_at(entry.order_id, entry.seq).await? else {
        tracing::warn!(order_id = %entry.order_id, seq = entry.seq, "outbox entry of an unknown order");
        return Ok(Vec::new());
    };
    let endpoints = store.webhook_endpoints(order.merchant_id).await?;
    let subscribed: Vec<_> = endpoints
        .iter()
        .filter(|e| e.disabled_at.is_none() && e.events.contains(&entry.event))
        .collect();
    let mut out = Vec::new();
    if !subscribed.is_empty() {
        let body = webhook_body(entry.event, entry.at, &order.view());
        out.extend(subscribed.into_iter().map(|endpoint| NewNotification {
            channel: Channel::Webhook,
            destination: endpoint.id.to_string(),
            endpoint_id: Some(endpoint.id),
            payload: body.clone(),
        }));
    }
    if may_tell_customer(config, entry) {
        let contact = store.customer_contact(order.id, order.customer_id).await?;
        if let (true, Some(phone)) = (contact.consent, contact.phone) {
            let message = customer_message(store, maps, config, entry, &order, change).await?;
            out.push(NewNotification {
                channel: Channel::WhatsApp,
                destination: phone.as_str().to_owned(),
                endpoint_id: None,
                payload: serde_json::to_value(&message)
                    .map_err(|e| StoreError::Corrupt(e.to_string()))?,
            });
        }
    }
    Ok(out)
}

/// The facts of the customer's message about `entry`.
async fn customer_message(
    store: &Store,
    maps: &Arc<Maps>,
    config: &NotifyConfig,
    entry: &OutboxEntry,
    order: &Order,
    change: Change,
) -> Result<CustomerMessage, StoreError> {
    let merchant_name = store
        .merchant(order.merchant_id)
        .await?
        .map_or_else(|| "The kitchen".to_owned(), |m| m.name);
    let driver_first_name = match order.driver_id {
        Some(driver) => store
            .user_by_id(driver)
            .await?
            .and_then(|user| user.name.split_whitespace().next().map(str::to_owned)),
        None => None,
    };
    let eta_minutes = match entry.event {
        NotifyEvent::Accepted => travel_secs(maps, order)
            .await
            .map(|secs| secs + f64::from(order.prep_minutes.unwrap_or(0)) * 60.0),
        NotifyEvent::PickedUp => travel_secs(maps, order).await,
        _ => None,
    }
    .map(|secs| (secs / 60.0).ceil().max(1.0) as u32);
    let reason = match change {
        Change::MerchantRejected { reason } | Change::CancelledByAdmin { reason } => Some(reason),
        _ => None,
    };
    Ok(CustomerMessage {
        event: entry.event,
        order_code: order_code(order.id),
        merchant_name,
        driver_first_name,
        eta_minutes,
        total_cents: order.total_cents,
        reason,
        tracking_url: format!("{}/track/{}", config.public_url, order.id),
    })
}

/// Travel time from the kitchen to the door, by road when a router answers.
async fn travel_secs(maps: &Arc<Maps>, order: &Order) -> Option<f64> {
    let from = LatLon::new(order.pickup.lat, order.pickup.lon).ok()?;
    let to = LatLon::new(order.dropoff.lat, order.dropoff.lon).ok()?;
    let table = maps.table(&[from], &[to]).await;
    table.secs.first()?.first().copied()
}
