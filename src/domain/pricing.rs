//! Pricing a checkout in integer cents: the items, a delivery fee by distance, the total.

use super::money::{Cents, MoneyOverflow};

/// Fixed part of every delivery fee.
pub const DELIVERY_FEE_BASE_CENTS: i64 = 199;
/// Distance part of the delivery fee, per kilometre from merchant to dropoff.
pub const DELIVERY_FEE_PER_KM_CENTS: i64 = 60;

/// What an order costs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quote {
    pub subtotal_cents: Cents,
    pub delivery_fee_cents: Cents,
    pub total_cents: Cents,
}

/// The delivery fee for `distance_m` metres: the base plus the per-kilometre rate, rounded to
/// the nearest cent.
pub fn delivery_fee(distance_m: f64) -> Cents {
    let distance_m = if distance_m.is_finite() {
        distance_m.max(0.0)
    } else {
        0.0
    };
    let distance_cents = (distance_m * DELIVERY_FEE_PER_KM_CENTS as f64 / 1_000.0).round() as i64;
    Cents(DELIVERY_FEE_BASE_CENTS + distance_cents)
}

/// Prices `lines` (unit price, quantity) delivered `distance_m` metres away.
pub fn quote(
    lines: impl IntoIterator<Item = (Cents, u32)>,
    distance_m: f64,
) -> Result<Quote, MoneyOverflow> {
    let subtotal_cents = Cents::sum(
        lines
            .into_iter()
            .map(|(unit, quantity)| unit.checked_mul(i64::from(quantity)))
            .collect::<Result<Vec<_>, _>>()?,
    )?;
    let delivery_fee_cents = delivery_fee(distance_m);
    Ok(Quote {
        subtotal_cents,
        delivery_fee_cents,
        total_cents: subtotal_cents.checked_add(delivery_fee_cents)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fee_grows_with_distance_from_the_base() {
        assert_eq!(delivery_fee(0.0), Cents(199));
        assert_eq!(delivery_fee(2_500.0), Cents(199 + 150));
        assert_eq!(delivery_fee(10_000.0), Cents(199 + 600));
        assert_eq!(delivery_fee(f64::NAN), Cents(199));
        assert_eq!(delivery_fee(-5.0), Cents(199));
    }

    #[test]
    fn a_quote_adds_lines_and_the_fee_exactly() {
        let quote = quote([(Cents(1_250), 2), (Cents(399), 1)], 1_000.0).unwrap();
        assert_eq!(quote.subtotal_cents, Cents(2_899));
        assert_eq!(quote.delivery_fee_cents, Cents(259));
        assert_eq!(quote.total_cents, Cents(3_158));
    }

    #[test]
    fn an_overflowing_order_is_refused() {
        assert!(quote([(Cents(i64::MAX / 2), 3)], 0.0).is_err());
    }
}
