//! Learned ETA corrections: per region and hour of day (UTC), the ratio of observed to
//! predicted pickup and delivery durations, as a bounded moving average. Routers know roads,
//! not kitchens' doors, parking or lunch-hour traffic; this learns what they miss. Pure: the
//! engine feeds it and keeps it in the store.

use std::collections::HashMap;

/// Hours in a day: one correction per hour.
pub const HOURS_PER_DAY: usize = 24;
/// A correction never goes below this factor ...
pub const MIN_FACTOR: f64 = 0.5;
/// ... nor above this one, whatever is observed.
pub const MAX_FACTOR: f64 = 3.0;
/// Weight of one observation in the moving average.
pub const LEARNING_RATE: f64 = 0.1;
/// Predictions shorter than this are too short to learn from (a driver already at the door).
pub const MIN_PREDICTED_SECS: f64 = 30.0;
/// An observation more than this many times off either way is an outlier (a driver who took a
/// break, a simulator's fast clock): ignored.
pub const MAX_RATIO: f64 = 4.0;

/// One hour's correction.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Correction {
    /// Multiply a router's duration by this.
    pub factor: f64,
    /// Observations folded in.
    pub samples: i64,
}

impl Default for Correction {
    fn default() -> Self {
        Correction {
            factor: 1.0,
            samples: 0,
        }
    }
}

/// Every region's corrections, and which changed since they were last saved.
#[derive(Debug, Default, Clone)]
pub struct Corrections {
    by_region: HashMap<String, [Correction; HOURS_PER_DAY]>,
    dirty: Vec<(String, usize)>,
}

impl Corrections {
    /// The factor for `region` at `hour` (0..24); 1 where nothing was learned.
    pub fn factor(&self, region: &str, hour: usize) -> f64 {
        self.by_region
            .get(region)
            .and_then(|hours| hours.get(hour))
            .map_or(1.0, |c| c.factor)
    }

    /// Sets a stored correction (at load), clamped into bounds.
    pub fn restore(&mut self, region: &str, hour: usize, correction: Correction) {
        if hour >= HOURS_PER_DAY || !correction.factor.is_finite() {
            return;
        }
        let hours = self.by_region.entry(region.to_owned()).or_default();
        hours[hour] = Correction {
            factor: correction.factor.clamp(MIN_FACTOR, MAX_FACTOR),
            samples: correction.samples.max(0),
        };
    }

    /// Folds in one trip: the router said `predicted_secs` (uncorrected), it took
    /// `observed_secs`. Returns the new factor, or `None` when the trip was not learnable.
    pub fn observe(
        &mut self,
        region: &str,
        hour: usize,
        predicted_secs: f64,
        observed_secs: f64,
    ) -> Option<f64> {
        if hour >= HOURS_PER_DAY
            || !(predicted_secs.is_finite() && observed_secs.is_finite())
            || predicted_secs < MIN_PREDICTED_SECS
            || observed_secs <= 0.0
        {
            return None;
        }
        let ratio = observed_secs / predicted_secs;
        if !(1.0 / MAX_RATIO..=MAX_RATIO).contains(&ratio) {
            return None;
        }
        let hours = self.by_region.entry(region.to_owned()).or_default();
        let cell = &mut hours[hour];
        // The first observations weigh more, so a new region learns quickly.
        let weight = LEARNING_RATE.max(1.0 / (cell.samples as f64 + 1.0));
        cell.factor = ((1.0 - weight) * cell.factor + weight * ratio).clamp(MIN_FACTOR, MAX_FACTOR);
        cell.samples += 1;
        let factor = cell.factor;
        if !self.dirty.iter().any(|(r, h)| r == region && *h == hour) {
            self.dirty.push((region.to_owned(), hour));
        }
        Some(factor)
    }

    /// The corrections changed since the last call, to save.
    pub fn take_dirty(&mut self) -> Vec<(String, usize, Correction)> {
        std::mem::take(&mut self.dirty)
            .into_iter()
            .map(|(region, hour)| {
                let correction = self.by_region[&region][hour];
                (region, hour, correction)
            })
            .collect()
    }

    /// Puts back corrections that could not be saved, to try again.
    pub fn mark_dirty(&mut self, unsaved: &[(String, usize, Correction)]) {
        for (region, hour, _) in unsaved {
            if !self.dirty.iter().any(|(r, h)| r == region && h == hour) {
                self.dirty.push((region.clone(), *hour));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_learned_means_no_correction() {
        assert_eq!(Corrections::default().factor("west", 12), 1.0);
    }

    #[test]
    fn trips_that_take_longer_than_predicted_raise_the_factor_of_that_region_and_hour_only() {
        let mut c = Corrections::default();
        for _ in 0..50 {
            c.observe("west", 12, 300.0, 450.0);
        }
        assert!(
            (c.factor("west", 12) - 1.5).abs() < 0.01,
            "{}",
            c.factor("west", 12)
        );
        assert_eq!(c.factor("west", 13), 1.0);
        assert_eq!(c.factor("east", 12), 1.0);
    }

    #[test]
    fn the_factor_stays_within_its_bounds() {
        let mut c = Corrections::default();
        for _ in 0..100 {
            c.observe("west", 1, 100.0, 390.0);
        }
        assert_eq!(c.factor("west", 1), MAX_FACTOR);
        for _ in 0..200 {
            c.observe("west", 2, 390.0, 100.0);
        }
        assert_eq!(c.factor("west", 2), MIN_FACTOR);
    }

    #[test]
    fn short_predictions_outliers_and_nonsense_are_not_learned() {
        let mut c = Corrections::default();
        let cases = [
            (10.0, 20.0),
            (300.0, 300.0 * 5.0),
            (300.0, 300.0 / 10.0),
            (300.0, 0.0),
            (f64::NAN, 100.0),
            (300.0, f64::INFINITY),
        ];
        for (predicted, observed) in cases {
            assert_eq!(
                c.observe("west", 3, predicted, observed),
                None,
                "{predicted} {observed}"
            );
        }
        assert_eq!(c.observe("west", 24, 300.0, 300.0), None);
        assert!(c.take_dirty().is_empty());
    }

    #[test]
    fn changed_hours_are_handed_out_once_for_saving_and_can_be_put_back() {
        let mut c = Corrections::default();
        c.observe("west", 5, 300.0, 330.0);
        c.observe("west", 5, 300.0, 330.0);
        let dirty = c.take_dirty();
        assert_eq!(dirty.len(), 1);
        assert_eq!(dirty[0].2.samples, 2);
        assert!(c.take_dirty().is_empty());
        c.mark_dirty(&dirty);
        assert_eq!(c.take_dirty().len(), 1);
    }

    #[test]
    fn restored_corrections_are_clamped() {
        let mut c = Corrections::default();
        c.restore(
            "west",
            7,
            Correction {
                factor: 40.0,
                samples: 3,
            },
        );
        assert_eq!(c.factor("west", 7), MAX_FACTOR);
        c.restore("west", 99, Correction::default());
    }
}
