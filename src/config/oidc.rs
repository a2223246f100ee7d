//! Sign-in with an OpenID provider: the issuer, this service's client id and secret there, the
//! name on the "Sign in with …" button, the redirect URI the provider sends people back to, and
//! how long a call to the provider may take.

use std::time::Duration;

use clap::Args;

use super::error::ConfigError;
use super::secret::Secret;
use super::values::{http_url, secret, whole_millis};

/// The path the provider sends people back to, under the public URL.
pub const OIDC_CALLBACK_PATH: &str = "/auth/oidc/callback";
/// How long one call to the provider (discovery, JWKS, the code exchange) may take by default.
pub const DEFAULT_OIDC_TIMEOUT: Duration = Duration::from_secs(5);
pub const MAX_OIDC_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest button name: it sits on one line of a button.
const OIDC_NAME_MAX_CHARS: usize = 40;

#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Sign-in with an OpenID provider")]
pub struct OidcArgs {
    /// The OpenID provider's issuer URL (`https://accounts.google.com`); its discovery document
    /// is `{issuer}/.well-known/openid-configuration`. Set with the client id and secret, or not
    /// at all.
    #[arg(long, global = true, env = "MEALKITZ_OIDC_ISSUER", value_parser = issuer_url)]
    pub oidc_issuer: Option<String>,
    /// This service's client id at the provider.
    #[arg(long, global = true, env = "MEALKITZ_OIDC_CLIENT_ID", value_parser = client_id)]
    pub oidc_client_id: Option<String>,
    /// This service's client secret at the provider.
    #[arg(long, global = true, env = "MEALKITZ_OIDC_CLIENT_SECRET", hide_env_values = true,
          value_parser = secret(1))]
    pub oidc_client_secret: Option<Secret>,
    /// The provider's name on the "Sign in with …" button. Default: the issuer's host.
    #[arg(long, global = true, env = "MEALKITZ_OIDC_NAME", value_parser = button_name)]
    pub oidc_name: Option<String>,
    /// The redirect URI registered at the provider. Default: the public URL and
    /// `/auth/oidc/callback`.
    #[arg(long, global = true, env = "MEALKITZ_OIDC_REDIRECT_URL", value_parser = http_url)]
    pub oidc_redirect_url: Option<String>,
    /// Milliseconds one call to the provider may take before sign-in answers 503.
    #[arg(long = "oidc-timeout-ms", value_name = "MS", global = true,
          env = "MEALKITZ_OIDC_TIMEOUT_MS", value_parser = whole_millis(MAX_OIDC_TIMEOUT),
          default_value = "5000")]
    pub oidc_timeout: Duration,
}

/// A configured provider.
#[derive(Debug, Clone, PartialEq)]
pub struct OidcConfig {
    /// Exactly as the provider writes it in its ID tokens (a trailing slash matters).
    pub issuer: String,
    pub client_id: String,
    pub client_secret: Secret,
    /// Shown on the button.
    pub name: String,
    /// Where the provider sends people back: `GET /auth/oidc/callback` of this service.
    pub redirect_url: String,
    /// Bounds every call to the provider, so a provider that hangs fails sign-in quickly (503)
    /// instead of holding a worker.
    pub timeout: Duration,
}

impl OidcArgs {
    /// The provider, when the issuer, client id and secret are all set; none when none is. Any
    /// other combination is refused, naming the first missing setting.
    pub fn to_config(&self, public_url: &str) -> Result<Option<OidcConfig>, ConfigError> {
        let (issuer, client_id, client_secret) = match (
            &self.oidc_issuer,
            &self.oidc_client_id,
            &self.oidc_client_secret,
        ) {
            (None, None, None) => return Ok(None),
            (Some(issuer), Some(id), Some(secret)) => (issuer, id, secret),
            (issuer, id, _) => {
                let missing = if issuer.is_none() {
                    "oidc_issuer"
                } else if id.is_none() {
                    "oidc_client_id"
                } else {
                    "oidc_client_secret"
                };
                return Err(ConfigError::of::<OidcArgs>(
                    missing,
                    "must be set with the other two of MEALKITZ_OIDC_ISSUER, \
                     MEALKITZ_OIDC_CLIENT_ID and MEALKITZ_OIDC_CLIENT_SECRET (or none of them)",
                ));
            }
        };
        let name = match &self.oidc_name {
            Some(name) => name.clone(),
            None => url::Url::parse(issuer)
                .ok()
                .and_then(|url| url.host_str().map(str::to_owned))
                .unwrap_or_else(|| issuer.clone()),
        };
        let redirect_url = self
            .oidc_redirect_url
            .clone()
            .unwrap_or_else(|| format!("{}{OIDC_CALLBACK_PATH}", public_url.trim_end_matches('/')));
        Ok(Some(OidcConfig {
            issuer: issuer.clone(),
            client_id: client_id.clone(),
            client_secret: client_secret.clone(),
            name,
            redirect_url,
            timeout: self.oidc_timeout,
        }))
    }
}

/// An http(s) URL without query or fragment, kept as written (no slash added or removed: the ID
/// tokens' `iss` must equal it).
fn issuer_url(raw: &str) -> Result<String, String> {
    let raw = raw.trim();
    let url = url::Url::parse(raw).map_err(|e| format!("{raw:?} is not a URL: {e}"))?;
    let scheme_ok = matches!(url.scheme(), "http" | "https");
    if !scheme_ok || url.host_str().is_none() || url.query().is_some() || url.fragment().is_some() {
        return Err(format!(
            "{raw:?} must be an https:// URL without query or fragment"
        ));
    }
    Ok(raw.to_owned())
}

fn client_id(raw: &str) -> Result<String, String> {
    let raw = raw.trim();
    if raw.is_empty() || raw.chars().any(char::is_control) {
        return Err("must be the client id the provider gave (not empty)".to_owned());
    }
    Ok(raw.to_owned())
}

fn button_name(raw: &str) -> Result<String, String> {
    let raw = raw.trim();
    if raw.is_empty()
        || raw.chars().count() > OIDC_NAME_MAX_CHARS
        || raw.chars().any(char::is_control)
    {
        return Err(format!("must be 1 to {OIDC_NAME_MAX_CHARS} characters"));
    }
    Ok(raw.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn config(args: &[&str]) -> Result<Config, ConfigError> {
        Config::from_args(args.iter().copied())
    }

    #[test]
    fn without_an_issuer_sign_in_is_off() {
        assert_eq!(config(&[]).unwrap().oidc, None);
    }

    #[test]
    fn all_three_settings_configure_a_provider_named_after_its_host() {
        let config = config(&[
            "--oidc-issuer=https://login.example.com/realms/x",
            "--oidc-client-id=mealkitz",
            "--oidc-client-secret=s3cret",
            "--public-url=https://eat.example.com/",
        ])
        .unwrap();
        let oidc = config.oidc.unwrap();
        assert_eq!(oidc.issuer, "https://login.example.com/realms/x");
        assert_eq!(oidc.name, "login.example.com");
        assert_eq!(
            oidc.redirect_url,
            "https://eat.example.com/auth/oidc/callback"
        );
        assert_eq!(oidc.timeout, DEFAULT_OIDC_TIMEOUT);
        assert!(!format!("{oidc:?}").contains("s3cret"));
    }

    #[test]
    fn the_issuer_keeps_its_trailing_slash() {
        let config = config(&[
            "--oidc-issuer=https://tenant.example.com/",
            "--oidc-client-id=a",
            "--oidc-client-secret=b",
            "--oidc-name=Example",
        ])
        .unwrap();
        let oidc = config.oidc.unwrap();
        assert_eq!(oidc.issuer, "https://tenant.example.com/");
        assert_eq!(oidc.name, "Example");
    }

    #[test]
    fn a_partial_provider_is_refused_naming_what_is_missing() {
        let cases: &[(&[&str], &str)] = &[
            (
                &["--oidc-issuer=https://a.example.com"],
                "--oidc-client-id / MEALKITZ_OIDC_CLIENT_ID",
            ),
            (
                &["--oidc-client-id=x", "--oidc-client-secret=y"],
                "--oidc-issuer / MEALKITZ_OIDC_ISSUER",
            ),
            (
                &["--oidc-issuer=https://a.example.com", "--oidc-client-id=x"],
                "--oidc-client-secret / MEALKITZ_OIDC_CLIENT_SECRET",
            ),
            (
                &["--oidc-issuer=ftp://a.example.com"],
                "--oidc-issuer / MEALKITZ_OIDC_ISSUER",
            ),
            (
                &["--oidc-issuer=https://a.example.com/?x=1"],
                "--oidc-issuer / MEALKITZ_OIDC_ISSUER",
            ),
        ];
        for (args, setting) in cases {
            let err = config(args).expect_err(&format!("case {args:?}"));
            assert_eq!(err.setting, *setting, "case {args:?}");
            assert!(!err.to_string().contains('\n'), "case {args:?}");
        }
    }
}
