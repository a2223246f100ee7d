//! Scopes: what an API key or an integration token may do, each naming a family of routes and
//! socket messages, the roles whose owners may hold it, and the set a grant carries. A person's
//! own session holds every scope; a key or token holds the ones it was given.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::user::Role;

macro_rules! scope_table {
    ($($variant:ident => $name:literal, [$($role:ident),*], $what:literal;)*) => {
        /// One permission an integration can be given.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Scope { $($variant),* }

        impl Scope {
            pub const ALL: &'static [Scope] = &[$(Scope::$variant),*];

            /// The name clients send and see (`orders:write`).
            pub fn as_str(self) -> &'static str {
                match self { $(Scope::$variant => $name),* }
            }

            /// What it allows, for documentation and the OpenAPI document.
            pub fn describe(self) -> &'static str {
                match self { $(Scope::$variant => $what),* }
            }

            /// The roles whose owners may hold it: a scope the owner's role can never use is
            /// refused when a key or client is made.
            pub fn roles(self) -> &'static [Role] {
                match self { $(Scope::$variant => &[$(Role::$role),*]),* }
            }
        }

        /// One type per scope, so that a handler states the scope it needs in its signature
        /// (`caller: Scoped<need::OrdersWrite>`), checked before its body is read.
        pub mod need {
            $(
                #[doc = $what]
                pub struct $variant;
                impl super::NeedsScope for $variant {
                    const SCOPE: super::Scope = super::Scope::$variant;
                }
            )*
        }
    };
}

/// A type standing for one scope (see [`need`]).
pub trait NeedsScope {
    const SCOPE: Scope;
}

//  variant          name                roles                                   what it allows
scope_table! {
    ProfileRead    => "profile:read",    [Customer, Driver, Merchant, Admin], "Read the account (GET /me, /me/merchants).";
    ProfileWrite   => "profile:write",   [Customer, Driver, Merchant, Admin], "Change the account (PATCH /me, WhatsApp link codes).";
    OrdersRead     => "orders:read",     [Customer, Driver, Merchant, Admin], "Read orders, their payments and notifications; follow them live; watch the merchant board.";
    OrdersWrite    => "orders:write",    [Customer, Merchant, Admin],         "Place and cancel orders; accept, reject and mark orders ready on the board.";
    MenuWrite      => "menu:write",      [Merchant, Admin],                   "Replace a merchant's menu.";
    MerchantsWrite => "merchants:write", [Merchant, Admin],                   "Create merchants, open and close them.";
    WebhooksManage => "webhooks:manage", [Merchant, Admin],                   "Register, list, delete and retry a merchant's webhooks.";
    DriversWrite   => "drivers:write",   [Driver],                            "Drive: the driver socket (locations, offers, deliveries).";
    MapsRead       => "maps:read",       [Customer, Driver, Merchant, Admin], "Geocode addresses, name places, read the map's streets.";
    KeysManage     => "keys:manage",     [Customer, Driver, Merchant, Admin], "Create, list and revoke API keys (never beyond the caller's own scopes).";
    Admin          => "admin",           [Admin],                             "Operate: OAuth clients, the audit log, signing keys, payments needing attention.";
}

impl Scope {
    /// The scope named `name`, if there is one.
    pub fn parse(name: &str) -> Option<Scope> {
        Scope::ALL.iter().copied().find(|s| s.as_str() == name)
    }

    fn bit(self) -> u16 {
        1 << (self as u16)
    }

    /// Whether an owner with `role` may hold it.
    pub fn allowed_for(self, role: Role) -> bool {
        self.roles().contains(&role)
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A set of scopes.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Scopes(u16);

/// Why a list of scope names was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScopeError {
    /// A name that is no scope.
    Unknown(String),
    /// A scope the owner's role can never use.
    NotForRole(Scope, Role),
}

impl fmt::Display for ScopeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ScopeError::Unknown(name) => write!(
                f,
                "`{name}` is not a scope; scopes are {}",
                Scopes::all().to_space_separated()
            ),
            ScopeError::NotForRole(scope, role) => {
                write!(f, "the scope `{scope}` is not for a {role} account")
            }
        }
    }
}

impl Scopes {
    pub const fn empty() -> Scopes {
        Scopes(0)
    }

    pub fn all() -> Scopes {
        Scope::ALL.iter().copied().collect()
    }

    /// Every scope an owner with `role` may hold.
    pub fn for_role(role: Role) -> Scopes {
        Scope::ALL
            .iter()
            .copied()
            .filter(|s| s.allowed_for(role))
            .collect()
    }

    pub fn contains(self, scope: Scope) -> bool {
        self.0 & scope.bit() != 0
    }

    pub fn insert(&mut self, scope: Scope) {
        self.0 |= scope.bit();
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Whether every scope of `self` is in `other`.
    pub fn is_subset(self, other: Scopes) -> bool {
        self.0 & !other.0 == 0
    }

    pub fn intersection(self, other: Scopes) -> Scopes {
        Scopes(self.0 & other.0)
    }

    pub fn iter(self) -> impl Iterator<Item = Scope> {
        Scope::ALL
            .iter()
            .copied()
            .filter(move |s| self.contains(*s))
    }

    /// Parses names (duplicates allowed, order ignored).
    pub fn parse<'a>(names: impl IntoIterator<Item = &'a str>) -> Result<Scopes, ScopeError> {
        let mut scopes = Scopes::empty();
        for name in names {
            let scope = Scope::parse(name).ok_or_else(|| ScopeError::Unknown(name.to_owned()))?;
            scopes.insert(scope);
        }
        Ok(scopes)
    }

    /// Parses an OAuth2 `scope` parameter or a stored list: names separated by spaces.
    pub fn parse_space_separated(text: &str) -> Result<Scopes, ScopeError> {
        Scopes::parse(text.split(' ').filter(|s| !s.is_empty()))
    }

    /// Refuses a scope that an owner with `role` can never use.
    pub fn check_role(self, role: Role) -> Result<(), ScopeError> {
        match self.iter().find(|s| !s.allowed_for(role)) {
            Some(scope) => Err(ScopeError::NotForRole(scope, role)),
            None => Ok(()),
        }
    }

    /// The names, in table order, separated by single spaces (OAuth2's `scope` form).
    pub fn to_space_separated(self) -> String {
        self.iter().map(Scope::as_str).collect::<Vec<_>>().join(" ")
    }

    pub fn names(self) -> Vec<&'static str> {
        self.iter().map(Scope::as_str).collect()
    }
}

impl FromIterator<Scope> for Scopes {
    fn from_iter<I: IntoIterator<Item = Scope>>(iter: I) -> Self {
        let mut scopes = Scopes::empty();
        for scope in iter {
            scopes.insert(scope);
        }
        scopes
    }
}

impl fmt::Debug for Scopes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.names()).finish()
    }
}

/// Serialized as a list of names.
impl Serialize for Scopes {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.names())
    }
}

impl<'de> Deserialize<'de> for Scopes {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let names = Vec::<String>::deserialize(deserializer)?;
        Scopes::parse(names.iter().map(String::as_str)).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_scope_round_trips_by_name_and_has_a_role_and_a_description() {
        for scope in Scope::ALL {
            assert_eq!(Scope::parse(scope.as_str()), Some(*scope));
            assert!(!scope.roles().is_empty(), "{scope}");
            assert!(!scope.describe().is_empty(), "{scope}");
            assert!(
                scope
                    .as_str()
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c == ':'),
                "{scope}"
            );
        }
        assert!(Scope::ALL.len() <= 16, "Scopes is a u16 bit set");
    }

    #[test]
    fn parsing_refuses_unknown_names_and_ignores_duplicates_and_order() {
        let scopes = Scopes::parse(["orders:write", "orders:read", "orders:write"]).unwrap();
        assert_eq!(scopes.names(), vec!["orders:read", "orders:write"]);
        assert_eq!(
            Scopes::parse(["orders:delete"]),
            Err(ScopeError::Unknown("orders:delete".into()))
        );
        assert_eq!(
            Scopes::parse_space_separated("  orders:read  menu:write ").unwrap(),
            Scopes::parse(["menu:write", "orders:read"]).unwrap()
        );
        assert_eq!(Scopes::parse_space_separated("").unwrap(), Scopes::empty());
    }

    #[test]
    fn a_role_may_hold_only_the_scopes_it_can_use() {
        let merchant = Scopes::parse(["orders:read", "menu:write", "webhooks:manage"]).unwrap();
        assert_eq!(merchant.check_role(Role::Merchant), Ok(()));
        assert_eq!(
            merchant.check_role(Role::Customer),
            Err(ScopeError::NotForRole(Scope::MenuWrite, Role::Customer))
        );
        assert!(!Scopes::for_role(Role::Merchant).contains(Scope::Admin));
        assert!(Scopes::for_role(Role::Admin).contains(Scope::Admin));
        assert!(Scopes::for_role(Role::Driver).contains(Scope::DriversWrite));
    }

    #[test]
    fn subsets_and_serialization() {
        let small = Scopes::parse(["orders:read"]).unwrap();
        let big = Scopes::parse(["orders:read", "orders:write"]).unwrap();
        assert!(small.is_subset(big));
        assert!(!big.is_subset(small));
        assert!(Scopes::empty().is_subset(small));
        let json = serde_json::to_string(&big).unwrap();
        assert_eq!(json, r#"["orders:read","orders:write"]"#);
        assert_eq!(serde_json::from_str::<Scopes>(&json).unwrap(), big);
        assert!(serde_json::from_str::<Scopes>(r#"["nope"]"#).is_err());
        assert_eq!(big.to_space_separated(), "orders:read orders:write");
    }
}
