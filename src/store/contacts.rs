//! Who may be told, and how: a customer's phone and WhatsApp consent (the checkout's for one
//! order, else the account's), the last time a WhatsApp user wrote to us (the 24-hour window),
//! and the delivery statuses WhatsApp reports for our messages.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{Store, StoreError, on_pool, on_writer};
use crate::domain::{OrderId, Phone, UserId};

/// Where and whether a customer may be told about an order on WhatsApp.
#[derive(Debug, Clone, PartialEq)]
pub struct CustomerContact {
    pub phone: Option<Phone>,
    pub consent: bool,
}

impl Store {
    /// Where a customer may be told about `order` on WhatsApp: the phone and consent given at
    /// checkout for it, else the account's.
    pub async fn customer_contact(
        &self,
        order: OrderId,
        customer: UserId,
    ) -> Result<CustomerContact, StoreError> {
        /// The checkout's phone and consent, then the account's.
        type ContactRow = (Option<String>, Option<bool>, Option<String>, bool);
        let row: Option<ContactRow> = on_pool!(self, |pool| {
            sqlx::query_as(
                "SELECT c.phone, c.notify_whatsapp, u.phone, u.notify_whatsapp FROM users u \
                     LEFT JOIN order_contacts c ON c.order_id = $1 WHERE u.id = $2",
            )
            .bind(order.as_uuid())
            .bind(customer.as_uuid())
            .fetch_optional(pool)
            .await?
        });
        let Some((order_phone, order_consent, user_phone, user_consent)) = row else {
            return Ok(CustomerContact {
                phone: None,
                consent: false,
            });
        };
        let phone = order_phone
            .or(user_phone)
            .and_then(|raw| Phone::parse(&raw).ok());
        Ok(CustomerContact {
            phone,
            consent: order_consent.unwrap_or(user_consent),
        })
    }

    /// Keeps the phone and consent given at checkout for one order (a retried checkout writes
    /// the same again).
    pub async fn set_order_contact(
        &self,
        order: OrderId,
        phone: Option<&Phone>,
        notify_whatsapp: Option<bool>,
    ) -> Result<(), StoreError> {
        on_writer!(self, |pool| {
            sqlx::query(
                "INSERT INTO order_contacts (order_id, phone, notify_whatsapp, created_at) \
                 VALUES ($1, $2, $3, $4) ON CONFLICT (order_id) DO UPDATE \
                 SET phone = excluded.phone, notify_whatsapp = excluded.notify_whatsapp",
            )
            .bind(order.as_uuid())
            .bind(phone.map(Phone::as_str))
            .bind(notify_whatsapp)
            .bind(super::now())
            .execute(pool)
            .await?
            .rows_affected()
        });
        Ok(())
    }

    /// When `phone` last wrote to us on WhatsApp, if ever.
    pub async fn whatsapp_last_inbound(
        &self,
        phone: &Phone,
    ) -> Result<Option<DateTime<Utc>>, StoreError> {
        let row: Option<(DateTime<Utc>,)> = on_pool!(self, |pool| {
            sqlx::query_as("SELECT last_inbound_at FROM whatsapp_contacts WHERE phone = $1")
                .bind(phone.as_str())
                .fetch_optional(pool)
                .await?
        });
        Ok(row.map(|(at,)| at))
    }

    /// Notes that `phone` wrote to us at `at` (the inbound webhook): it opens the customer-service
    /// window. A late redelivery never moves it back.
    pub async fn record_whatsapp_inbound(
        &self,
        phone: &Phone,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        on_writer!(self, |pool| {
            sqlx::query(
                "INSERT INTO whatsapp_contacts (phone, last_inbound_at) VALUES ($1, $2) \
                 ON CONFLICT (phone) DO UPDATE SET last_inbound_at = excluded.last_inbound_at \
                 WHERE whatsapp_contacts.last_inbound_at < excluded.last_inbound_at",
            )
            .bind(phone.as_str())
            .bind(at)
            .execute(pool)
            .await?
            .rows_affected()
        });
        Ok(())
    }

    /// Records a status WhatsApp reported for the message it knows as `provider_id` (`sent`,
    /// `delivered`, `read`, `failed`). A status never moves back (a late `sent` after `read`
    /// is kept out); `failed` always wins. Returns whether a message of ours had that id.
    pub async fn record_whatsapp_status(
        &self,
        provider_id: &str,
        status: &str,
        at: DateTime<Utc>,
        error: Option<&str>,
    ) -> Result<bool, StoreError> {
        let rank = |s: &str| match s {
            "sent" => 1,
            "delivered" => 2,
            "read" => 3,
            "failed" => 4,
            _ => 0,
        };
        let current: Option<(Uuid, Option<String>)> = on_pool!(self, |pool| {
            sqlx::query_as(
                "SELECT id, provider_status FROM notifications WHERE provider_id = $1 LIMIT 1",
            )
            .bind(provider_id)
            .fetch_optional(pool)
            .await?
        });
        let Some((id, known)) = current else {
            return Ok(false);
        };
        if known
            .as_deref()
            .is_some_and(|known| rank(known) >= rank(status))
        {
            return Ok(true);
        }
        on_writer!(self, |pool| {
            sqlx::query(
                "UPDATE notifications SET provider_status = $2, provider_status_at = $3, \
                 last_error = COALESCE($4, last_error) WHERE id = $1",
            )
            .bind(id)
            .bind(status)
            .bind(at)
            .bind(error)
            .execute(pool)
            .await?
            .rows_affected()
        });
        Ok(true)
    }
}
