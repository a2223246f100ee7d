//! Mean and percentiles of one measure, as the simulator's report prints them.

use serde::Serialize;

/// Mean and percentiles of one measure.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub count: usize,
    pub mean: f64,
    pub p50: f64,
    pub p90: f64,
    pub p95: f64,
    pub p99: f64,
    pub max: f64,
}

impl Summary {
    pub fn of(mut values: Vec<f64>) -> Summary {
        values.retain(|v| v.is_finite());
        values.sort_by(f64::total_cmp);
        let at = |q: f64| {
            if values.is_empty() {
                0.0
            } else {
                values[((values.len() - 1) as f64 * q).round() as usize]
            }
        };
        Summary {
            count: values.len(),
            mean: if values.is_empty() {
                0.0
            } else {
                values.iter().sum::<f64>() / values.len() as f64
            },
            p50: at(0.50),
            p90: at(0.90),
            p95: at(0.95),
            p99: at(0.99),
            max: values.last().copied().unwrap_or(0.0),
        }
    }
}
