//! Owns travel-time estimates: distance over an average speed. Deliberately simple, so that
//! dispatch decisions are explainable; a road-network router can replace it behind the same
//! function later.

/// Average urban driving speed door to door, including lights and parking.
pub const DEFAULT_AVERAGE_SPEED_KMH: f64 = 25.0;

/// Metres per second in one km/h.
const MPS_PER_KMH: f64 = 1_000.0 / 3_600.0;

/// Seconds to cover `distance_m` at an average of `speed_kmh`.
///
/// A non-positive or non-finite speed gives `f64::INFINITY` ("never arrives"), so such a
/// candidate sorts last instead of panicking or winning with NaN. A negative distance counts
/// as zero; a NaN distance also gives infinity.
pub fn travel_secs(distance_m: f64, speed_kmh: f64) -> f64 {
    if !(speed_kmh.is_finite() && speed_kmh > 0.0) || distance_m.is_nan() {
        return f64::INFINITY;
    }
    distance_m.max(0.0) / (speed_kmh * MPS_PER_KMH)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn twenty_five_km_at_twenty_five_kmh_takes_an_hour() {
        assert!((travel_secs(25_000.0, 25.0) - 3_600.0).abs() < 1e-9);
    }

    #[test]
    fn three_km_at_the_default_speed_takes_seven_minutes_twelve() {
        let secs = travel_secs(3_000.0, DEFAULT_AVERAGE_SPEED_KMH);
        assert!((secs - 432.0).abs() < 1e-9, "{secs}");
    }

    #[test]
    fn zero_distance_takes_no_time_and_negative_distance_counts_as_zero() {
        assert_eq!(travel_secs(0.0, 25.0), 0.0);
        assert_eq!(travel_secs(-10.0, 25.0), 0.0);
    }

    #[test]
    fn non_positive_or_non_finite_speed_gives_infinity() {
        for speed in [0.0, -5.0, f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            assert_eq!(travel_secs(1_000.0, speed), f64::INFINITY, "speed {speed}");
        }
    }

    #[test]
    fn nan_or_infinite_distance_gives_infinity() {
        assert_eq!(travel_secs(f64::NAN, 25.0), f64::INFINITY);
        assert_eq!(travel_secs(f64::INFINITY, 25.0), f64::INFINITY);
    }

    #[test]
    fn doubling_speed_halves_time() {
        let slow = travel_secs(5_000.0, 20.0);
        let fast = travel_secs(5_000.0, 40.0);
        assert!((slow - 2.0 * fast).abs() < 1e-9);
    }
}
