//! Typed identifiers, so an order id can never be passed where a user id is expected.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

macro_rules! typed_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub Uuid);

        impl $name {
            /// A new identifier. UUIDv7 ids sort by creation time, which keeps index pages
            /// warm and gives cursor pagination a stable order for free.
            pub fn new() -> Self {
                Self(Uuid::now_v7())
            }

            pub fn as_uuid(&self) -> Uuid {
                self.0
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl FromStr for $name {
            type Err = uuid::Error;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Uuid::parse_str(s).map(Self)
            }
        }

        impl From<Uuid> for $name {
            fn from(id: Uuid) -> Self {
                Self(id)
            }
        }
    };
}

typed_id!(
    /// A registered user: customer, driver, merchant owner or admin. A driver's id is its user id.
    UserId
);
typed_id!(
    /// A merchant (a restaurant or meal-kit kitchen), owned by a user with the merchant role.
    MerchantId
);
typed_id!(
    /// An order, from checkout to delivery.
    OrderId
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_ids_sort_by_creation_order() {
        let first = OrderId::new();
        let second = OrderId::new();
        assert!(first < second);
    }

    #[test]
    fn ids_round_trip_through_their_text_form() {
        let id = UserId::new();
        assert_eq!(id.to_string().parse::<UserId>().unwrap(), id);
        assert!("not-a-uuid".parse::<UserId>().is_err());
    }
}
