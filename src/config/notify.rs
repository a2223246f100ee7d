//! The notification service: the WhatsApp Business Cloud API account customers are told through
//! (and the verify token and app secret of its inbound webhook),
//! the templates used outside the 24-hour window, which webhook addresses merchants may register,
//! the public address links point to, and how long a notifier holds a message it is sending.

use std::collections::BTreeMap;
use std::time::Duration;

use clap::Args;

use super::secret::Secret;
use super::values::{http_url, secret, whole_secs};
use crate::domain::NotifyEvent;

pub const DEFAULT_WHATSAPP_API_URL: &str = "https://graph.facebook.com";
pub const DEFAULT_WHATSAPP_API_VERSION: &str = "v23.0";
pub const DEFAULT_WHATSAPP_TEMPLATE_LANGUAGE: &str = "en";
/// Template names are `mealkitz_` and the event's key (`mealkitz_order_accepted`) unless set.
pub const DEFAULT_TEMPLATE_PREFIX: &str = "mealkitz_order_";
pub const DEFAULT_PUBLIC_URL: &str = "http://localhost:8000";
/// How long a notifier holds a claimed message before another replica may send it: longer than
/// one attempt can take (a webhook's 15 s deadline).
pub const DEFAULT_NOTIFIER_CLAIM: Duration = Duration::from_secs(60);
pub const MAX_NOTIFIER_CLAIM: Duration = Duration::from_secs(3_600);
/// WhatsApp access tokens are long; anything shorter is a mistake.
const WHATSAPP_TOKEN_MIN_BYTES: usize = 16;

#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Notifications")]
pub struct NotifyArgs {
    /// WhatsApp Business Cloud API base URL.
    #[arg(long, global = true, env = "MEALKITZ_WHATSAPP_API_URL", value_parser = http_url,
          default_value = DEFAULT_WHATSAPP_API_URL)]
    pub whatsapp_api_url: String,
    /// Graph API version in the path (`v23.0`).
    #[arg(long, global = true, env = "MEALKITZ_WHATSAPP_API_VERSION", value_parser = api_version,
          default_value = DEFAULT_WHATSAPP_API_VERSION)]
    pub whatsapp_api_version: String,
    /// The business phone number's id. With the token set, customers who agreed get order
    /// updates on WhatsApp; unset: no WhatsApp messages.
    #[arg(long, global = true, env = "MEALKITZ_WHATSAPP_PHONE_NUMBER_ID", value_parser = number_id)]
    pub whatsapp_phone_number_id: Option<String>,
    /// Access token of the WhatsApp Business account (a system user's token).
    #[arg(long, global = true, env = "MEALKITZ_WHATSAPP_TOKEN", hide_env_values = true,
          value_parser = secret(WHATSAPP_TOKEN_MIN_BYTES))]
    pub whatsapp_token: Option<Secret>,
    /// The token Meta echoes when it verifies the WhatsApp webhook
    /// (`GET /webhooks/whatsapp?hub.verify_token=…`).
    #[arg(long, global = true, env = "MEALKITZ_WHATSAPP_VERIFY_TOKEN", hide_env_values = true,
          value_parser = secret(WHATSAPP_TOKEN_MIN_BYTES))]
    pub whatsapp_verify_token: Option<Secret>,
    /// The Meta app's secret: every `POST /webhooks/whatsapp` must carry its HMAC-SHA256 of the
    /// body (`X-Hub-Signature-256`). Unset: the webhook is refused (503).
    #[arg(long, global = true, env = "MEALKITZ_WHATSAPP_APP_SECRET", hide_env_values = true,
          value_parser = secret(WHATSAPP_TOKEN_MIN_BYTES))]
    pub whatsapp_app_secret: Option<Secret>,
    /// Approved template names for messages outside the 24-hour window, as
    /// `accepted=name,picked_up=name,…` (keys: placed, accepted, rejected, ready,
    /// driver_assigned, picked_up, delivered, cancelled). Unset keys: `mealkitz_order_<key>`.
    #[arg(long, global = true, env = "MEALKITZ_WHATSAPP_TEMPLATES", value_parser = templates,
          default_value = "")]
    pub whatsapp_templates: BTreeMap<NotifyEvent, String>,
    /// Language code of the templates (`en`, `fi`, `en_US`).
    #[arg(long, global = true, env = "MEALKITZ_WHATSAPP_TEMPLATE_LANGUAGE",
          value_parser = language, default_value = DEFAULT_WHATSAPP_TEMPLATE_LANGUAGE)]
    pub whatsapp_template_language: String,
    /// Let merchants register webhook URLs on private, loopback and link-local addresses (and
    /// plain `http://`). For tests and closed networks only.
    #[arg(long, global = true, env = "MEALKITZ_WEBHOOK_ALLOW_PRIVATE", default_value_t = false,
          action = clap::ArgAction::Set, value_parser = clap::value_parser!(bool))]
    pub webhook_allow_private: bool,
    /// The address customers reach the web app at: tracking links in messages start with it.
    #[arg(long, global = true, env = "MEALKITZ_PUBLIC_URL", value_parser = http_url,
          default_value = DEFAULT_PUBLIC_URL)]
    pub public_url: String,
    /// Seconds a notifier holds a message it is sending; past it (the replica died) another
    /// sends it, with the same id.
    #[arg(long, global = true, env = "MEALKITZ_NOTIFIER_CLAIM_SECS",
          value_parser = whole_secs(MAX_NOTIFIER_CLAIM), default_value = "60")]
    pub notifier_claim_secs: Duration,
}

/// The WhatsApp account messages go out through.
#[derive(Debug, Clone, PartialEq)]
pub struct WhatsAppAccount {
    pub phone_number_id: String,
    pub token: Secret,
}

/// What the notification settings become.
#[derive(Debug, Clone, PartialEq)]
pub struct NotifyConfig {
    pub whatsapp_api_url: String,
    pub whatsapp_api_version: String,
    /// Set when both the phone number id and the token are.
    pub whatsapp: Option<WhatsAppAccount>,
    /// What the inbound webhook's verification must echo.
    pub whatsapp_verify_token: Option<Secret>,
    /// What the inbound webhook's bodies are signed with.
    pub whatsapp_app_secret: Option<Secret>,
    /// A template name for every event.
    pub whatsapp_templates: BTreeMap<NotifyEvent, String>,
    pub whatsapp_template_language: String,
    pub webhook_allow_private: bool,
    pub public_url: String,
    pub claim: Duration,
}

impl Default for NotifyConfig {
    fn default() -> Self {
        NotifyConfig {
            whatsapp_api_url: DEFAULT_WHATSAPP_API_URL.to_owned(),
            whatsapp_api_version: DEFAULT_WHATSAPP_API_VERSION.to_owned(),
            whatsapp: None,
            whatsapp_verify_token: None,
            whatsapp_app_secret: None,
            whatsapp_templates: with_default_templates(BTreeMap::new()),
            whatsapp_template_language: DEFAULT_WHATSAPP_TEMPLATE_LANGUAGE.to_owned(),
            webhook_allow_private: false,
            public_url: DEFAULT_PUBLIC_URL.to_owned(),
            claim: DEFAULT_NOTIFIER_CLAIM,
        }
    }
}

impl NotifyArgs {
    pub fn to_config(&self) -> NotifyConfig {
        let whatsapp = match (&self.whatsapp_phone_number_id, &self.whatsapp_token) {
            (Some(phone_number_id), Some(token)) => Some(WhatsAppAccount {
                phone_number_id: phone_number_id.clone(),
                token: token.clone(),
            }),
            _ => None,
        };
        NotifyConfig {
            whatsapp_api_url: self.whatsapp_api_url.clone(),
            whatsapp_api_version: self.whatsapp_api_version.clone(),
            whatsapp,
            whatsapp_verify_token: self.whatsapp_verify_token.clone(),
            whatsapp_app_secret: self.whatsapp_app_secret.clone(),
            whatsapp_templates: with_default_templates(self.whatsapp_templates.clone()),
            whatsapp_template_language: self.whatsapp_template_language.clone(),
            webhook_allow_private: self.webhook_allow_private,
            public_url: self.public_url.clone(),
            claim: self.notifier_claim_secs,
        }
    }
}

fn with_default_templates(
    mut given: BTreeMap<NotifyEvent, String>,
) -> BTreeMap<NotifyEvent, String> {
    for event in NotifyEvent::ALL {
        given
            .entry(event)
            .or_insert_with(|| format!("{DEFAULT_TEMPLATE_PREFIX}{}", event.template_key()));
    }
    given
}

/// `v` and a version number (`v23.0`).
fn api_version(raw: &str) -> Result<String, String> {
    let raw = raw.trim();
    match raw.strip_prefix('v') {
        Some(number)
            if !number.is_empty() && number.chars().all(|c| c.is_ascii_digit() || c == '.') =>
        {
            Ok(raw.to_owned())
        }
        _ => Err("must look like v23.0".to_owned()),
    }
}

/// The phone number id: digits (it goes into a URL path).
fn number_id(raw: &str) -> Result<String, String> {
    let raw = raw.trim();
    if !raw.is_empty() && raw.len() <= 32 && raw.chars().all(|c| c.is_ascii_digit()) {
        Ok(raw.to_owned())
    } else {
        Err("must be the phone number id, digits only".to_owned())
    }
}

/// A template language code: letters and `_`, at most 10.
fn language(raw: &str) -> Result<String, String> {
    let raw = raw.trim();
    if !raw.is_empty()
        && raw.len() <= 10
        && raw.chars().all(|c| c.is_ascii_alphabetic() || c == '_')
    {
        Ok(raw.to_owned())
    } else {
        Err("must be a language code such as en or en_US".to_owned())
    }
}

/// `key=name` pairs separated by commas; keys are event keys, names WhatsApp template names
/// (lower-case letters, digits and `_`).
fn templates(raw: &str) -> Result<BTreeMap<NotifyEvent, String>, String> {
    let mut out = BTreeMap::new();
    for pair in raw.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (key, name) = pair
            .split_once('=')
            .ok_or_else(|| format!("'{pair}' is not key=template_name"))?;
        let event = NotifyEvent::ALL
            .into_iter()
            .find(|e| e.template_key() == key.trim())
            .ok_or_else(|| {
                format!(
                    "'{}' is not an event key; use one of {}",
                    key.trim(),
                    NotifyEvent::ALL.map(NotifyEvent::template_key).join(", ")
                )
            })?;
        let name = name.trim();
        if name.is_empty()
            || name.len() > 512
            || !name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        {
            return Err(format!("'{name}' is not a template name (a-z, 0-9 and _)"));
        }
        out.insert(event, name.to_owned());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_default_per_event_and_a_given_name_wins() {
        let given = templates("accepted=order_ok_v2, picked_up=on_the_way").unwrap();
        let all = with_default_templates(given);
        assert_eq!(all[&NotifyEvent::Accepted], "order_ok_v2");
        assert_eq!(all[&NotifyEvent::PickedUp], "on_the_way");
        assert_eq!(all[&NotifyEvent::Delivered], "mealkitz_order_delivered");
        assert!(
            templates("eaten=x")
                .unwrap_err()
                .contains("not an event key")
        );
        assert!(templates("accepted=Bad Name").is_err());
        assert!(templates("accepted").is_err());
    }

    #[test]
    fn the_account_needs_both_the_number_id_and_the_token() {
        let config = crate::config::Config::from_args([
            "--whatsapp-phone-number-id",
            "1234567890",
            "--whatsapp-token",
            "EAAG-a-long-enough-token",
        ])
        .unwrap();
        let account = config.notify.whatsapp.unwrap();
        assert_eq!(account.phone_number_id, "1234567890");
        assert_eq!(format!("{:?}", account.token), "[redacted]");
        let none = crate::config::Config::from_args(["--whatsapp-phone-number-id", "1"]).unwrap();
        assert!(none.notify.whatsapp.is_none());
        assert!(
            crate::config::Config::from_args(["--whatsapp-phone-number-id", "12/../x"]).is_err()
        );
        assert!(crate::config::Config::from_args(["--whatsapp-api-version", "latest"]).is_err());
    }
}
