//! Money as integer cents: no floating point ever touches a price.

use std::fmt;

use serde::{Deserialize, Serialize};

/// An amount of money in the smallest currency unit (cents). Arithmetic is checked: an overflow
/// is an error, never a wrapped or saturated price.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Cents(pub i64);

/// An amount left the representable range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("amount overflows the representable range")]
pub struct MoneyOverflow;

impl Cents {
    pub const ZERO: Cents = Cents(0);

    pub fn checked_add(self, other: Cents) -> Result<Cents, MoneyOverflow> {
        self.0.checked_add(other.0).map(Cents).ok_or(MoneyOverflow)
    }

    pub fn checked_mul(self, quantity: i64) -> Result<Cents, MoneyOverflow> {
        self.0.checked_mul(quantity).map(Cents).ok_or(MoneyOverflow)
    }

    /// Sums amounts, failing on overflow.
    pub fn sum<I: IntoIterator<Item = Cents>>(amounts: I) -> Result<Cents, MoneyOverflow> {
        amounts
            .into_iter()
            .try_fold(Cents::ZERO, |acc, amount| acc.checked_add(amount))
    }

    pub fn is_negative(self) -> bool {
        self.0 < 0
    }
}

impl fmt::Display for Cents {
    /// Formats as a decimal amount with two places, e.g. `12.05`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.0 < 0 { "-" } else { "" };
        let abs = self.0.unsigned_abs();
        write!(f, "{sign}{}.{:02}", abs / 100, abs % 100)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_line_items_exactly() {
        let total =
            Cents::sum([Cents(1099), Cents(250).checked_mul(3).unwrap(), Cents(1)]).unwrap();
        assert_eq!(total, Cents(1850));
    }

    #[test]
    fn overflow_is_an_error_not_a_wrapped_amount() {
        assert_eq!(Cents(i64::MAX).checked_add(Cents(1)), Err(MoneyOverflow));
        assert_eq!(Cents(i64::MAX / 2 + 1).checked_mul(2), Err(MoneyOverflow));
    }

    #[test]
    fn displays_as_a_two_place_decimal() {
        assert_eq!(Cents(1205).to_string(), "12.05");
        assert_eq!(Cents(7).to_string(), "0.07");
        assert_eq!(Cents(-150).to_string(), "-1.50");
    }
}
