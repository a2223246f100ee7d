//! Users: their roles and the rules for a valid email address.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// What a user may do. `admin` is never self-registered: only `mealkitz admin create` makes one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Customer,
    Driver,
    Merchant,
    Admin,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Customer, Role::Driver, Role::Merchant, Role::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Customer => "customer",
            Role::Driver => "driver",
            Role::Merchant => "merchant",
            Role::Admin => "admin",
        }
    }

    /// Whether anyone may sign up with this role through the public API.
    pub fn is_self_service(self) -> bool {
        !matches!(self, Role::Admin)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A text that names no role.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown role {0:?}")]
pub struct UnknownRole(pub String);

impl FromStr for Role {
    type Err = UnknownRole;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|role| role.as_str() == s)
            .ok_or_else(|| UnknownRole(s.to_owned()))
    }
}

/// An email address, trimmed and lower-cased so that one person cannot register twice by
/// changing case.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct Email(String);

/// Longest address SMTP can carry (RFC 5321 path limit minus the angle brackets).
pub const EMAIL_MAX_LEN: usize = 254;

/// Why a text is not a usable email address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidEmail {
    #[error("must not be empty")]
    Empty,
    #[error("must be at most {EMAIL_MAX_LEN} characters")]
    TooLong,
    #[error("must look like name@example.com")]
    Malformed,
}

impl Email {
    /// Parses an address. Deliberately permissive (one `@`, a dotted domain, no spaces): the
    /// only real check of an address is a mail that arrives.
    pub fn parse(raw: &str) -> Result<Email, InvalidEmail> {
        let email = raw.trim().to_lowercase();
        if email.is_empty() {
            return Err(InvalidEmail::Empty);
        }
        if email.chars().count() > EMAIL_MAX_LEN {
            return Err(InvalidEmail::TooLong);
        }
        let (local, domain) = email.split_once('@').ok_or(InvalidEmail::Malformed)?;
        let domain_ok = domain.contains('.')
            && !domain.starts_with('.')
            && !domain.ends_with('.')
            && !domain.contains("..");
        if local.is_empty()
            || !domain_ok
            || domain.contains('@')
            || email.chars().any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(InvalidEmail::Malformed);
        }
        Ok(Email(email))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_round_trip_through_their_names() {
        for role in Role::ALL {
            assert_eq!(role.as_str().parse::<Role>().unwrap(), role);
        }
        assert!("boss".parse::<Role>().is_err());
    }

    #[test]
    fn only_admin_is_not_self_service() {
        assert!(!Role::Admin.is_self_service());
        assert!(Role::Customer.is_self_service());
        assert!(Role::Driver.is_self_service());
        assert!(Role::Merchant.is_self_service());
    }

    #[test]
    fn email_is_trimmed_and_lower_cased() {
        assert_eq!(
            Email::parse("  Ana@Example.COM ").unwrap().as_str(),
            "ana@example.com"
        );
    }

    #[test]
    fn malformed_emails_are_refused() {
        let cases = [
            ("", InvalidEmail::Empty),
            ("   ", InvalidEmail::Empty),
            ("ana", InvalidEmail::Malformed),
            ("@example.com", InvalidEmail::Malformed),
            ("ana@", InvalidEmail::Malformed),
            ("ana@example", InvalidEmail::Malformed),
            ("ana@.example.com", InvalidEmail::Malformed),
            ("ana@example..com", InvalidEmail::Malformed),
            ("ana@b@example.com", InvalidEmail::Malformed),
            ("a na@example.com", InvalidEmail::Malformed),
        ];
        for (raw, expected) in cases {
            assert_eq!(Email::parse(raw), Err(expected), "case {raw:?}");
        }
        let long = format!("{}@example.com", "a".repeat(250));
        assert_eq!(Email::parse(&long), Err(InvalidEmail::TooLong));
    }
}
