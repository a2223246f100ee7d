//! The engine's ETA learning: what the maps service predicted for each pickup and delivery
//! against how long it took, folded into per-region, per-hour corrections
//! ([`crate::maps::corrections`]) that scale later predictions, kept in the store, and reported
//! as ETA error (mean absolute and p90) in the metrics.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use chrono::Timelike;

use crate::maps::corrections::Corrections;
use crate::store::Store;
use crate::tasks::Tasks;

/// How often changed corrections are written to the store.
pub const SAVE_INTERVAL: Duration = Duration::from_secs(30);
/// How many recent errors the mean and p90 gauges are computed over.
pub const ERROR_WINDOW_TRIPS: usize = 1_000;

/// Which leg a prediction was for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Leg {
    /// From the driver's acceptance to the pickup.
    Pickup,
    /// From the pickup to the delivery.
    Delivery,
}

impl Leg {
    fn label(self) -> &'static str {
        match self {
            Leg::Pickup => "pickup",
            Leg::Delivery => "delivery",
        }
    }
}

/// The corrections and the recent errors, shared by every actor of the process.
#[derive(Default)]
pub struct EtaLearning {
    corrections: Mutex<Corrections>,
    errors: Mutex<VecDeque<f64>>,
}

fn hour_now() -> usize {
    chrono::Utc::now().hour() as usize
}

impl EtaLearning {
    /// The factor to scale a road duration by in `region`, now.
    pub fn factor(&self, region: &str) -> f64 {
        self.corrections
            .lock()
            .map_or(1.0, |c| c.factor(region, hour_now()))
    }

    /// One trip's leg ended: the router predicted `predicted_secs` (before correction; the
    /// customer was told that times `told_factor`), it took `observed_secs`.
    pub fn observe(
        &self,
        region: &str,
        leg: Leg,
        predicted_secs: f64,
        told_factor: f64,
        observed_secs: f64,
    ) {
        let told = predicted_secs * told_factor;
        if !(told.is_finite() && observed_secs.is_finite()) {
            return;
        }
        let error = (told - observed_secs).abs();
        metrics::histogram!("eta_abs_error_seconds", "leg" => leg.label()).record(error);
        if let Ok(mut errors) = self.errors.lock() {
            if errors.len() == ERROR_WINDOW_TRIPS {
                errors.pop_front();
            }
            errors.push_back(error);
            let (mean, p90) = mean_and_p90(errors.iter().copied());
            metrics::gauge!("eta_mean_abs_error_seconds").set(mean);
            metrics::gauge!("eta_p90_abs_error_seconds").set(p90);
        }
        if let Ok(mut corrections) = self.corrections.lock()
            && let Some(factor) =
                corrections.observe(region, hour_now(), predicted_secs, observed_secs)
        {
            metrics::gauge!("eta_correction_factor", "region" => region.to_owned()).set(factor);
        }
    }

    /// Reads the stored corrections (at start; a failure leaves them at 1 and is logged).
    pub async fn load(&self, store: &Store) {
        match store.eta_corrections().await {
            Ok(rows) => {
                if let Ok(mut corrections) = self.corrections.lock() {
                    for (region, hour, correction) in rows {
                        corrections.restore(&region, hour, correction);
                    }
                }
            }
            Err(error) => tracing::warn!(%error, "cannot read the ETA corrections; starting at 1"),
        }
    }

    /// Writes what changed; what could not be written is tried again next time.
    pub async fn save(&self, store: &Store) {
        let changed = match self.corrections.lock() {
            Ok(mut corrections) => corrections.take_dirty(),
            Err(_) => return,
        };
        if let Err(error) = store.save_eta_corrections(&changed).await {
            tracing::warn!(%error, "cannot save the ETA corrections yet");
            if let Ok(mut corrections) = self.corrections.lock() {
                corrections.mark_dirty(&changed);
            }
        }
    }

    /// Saves every [`SAVE_INTERVAL`] while the engine runs.
    pub fn spawn_saver(self: &std::sync::Arc<Self>, tasks: &Tasks, store: Store) {
        let learning = self.clone();
        tasks.spawn(async move {
            let mut tick = tokio::time::interval(SAVE_INTERVAL);
            tick.tick().await;
            loop {
                tick.tick().await;
                learning.save(&store).await;
            }
        });
    }
}

/// The mean and the 90th percentile of `errors` (0 for none).
pub fn mean_and_p90(errors: impl Iterator<Item = f64>) -> (f64, f64) {
    let mut sorted: Vec<f64> = errors.filter(|e| e.is_finite()).collect();
    if sorted.is_empty() {
        return (0.0, 0.0);
    }
    sorted.sort_by(f64::total_cmp);
    let mean = sorted.iter().sum::<f64>() / sorted.len() as f64;
    let rank = ((sorted.len() as f64) * 0.9).ceil() as usize;
    let p90 = sorted[rank.clamp(1, sorted.len()) - 1];
    (mean, p90)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mean_and_p90_of_ten_errors() {
        let (mean, p90) = mean_and_p90((1..=10).map(|n| n as f64));
        assert!((mean - 5.5).abs() < 1e-9);
        assert_eq!(p90, 9.0);
    }

    #[test]
    fn no_errors_give_zeros() {
        assert_eq!(mean_and_p90(std::iter::empty()), (0.0, 0.0));
    }

    #[test]
    fn observed_trips_move_the_factor_of_their_region() {
        let learning = EtaLearning::default();
        for _ in 0..30 {
            learning.observe("west", Leg::Delivery, 300.0, 1.0, 600.0);
        }
        assert!(learning.factor("west") > 1.5);
        assert_eq!(learning.factor("east"), 1.0);
    }
}
