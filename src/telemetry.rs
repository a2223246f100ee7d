//! Observability setup: the tracing subscriber (pretty or JSON logs) and the process-wide
//! Prometheus recorder that `/metrics` renders.

use std::io::IsTerminal;
use std::sync::OnceLock;
use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Levels when `RUST_LOG` is unset: our own info, and only warnings from chatty dependencies.
const DEFAULT_LOG_FILTER: &str = "info,sqlx=warn,actix_server=warn,actix_web=warn";
/// Histogram buckets for request and query latencies, in seconds (1 ms to 10 s).
const LATENCY_BUCKETS_SECONDS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Histogram buckets for ETA errors, in seconds (5 s to an hour); an exact-name matcher sorts
/// before the `_seconds` suffix one, so it wins.
const ETA_ERROR_BUCKETS_SECONDS: &[f64] = &[
    5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1_200.0, 1_800.0, 3_600.0,
];
/// How often histogram samples are folded into buckets when nobody scrapes, so memory stays
/// bounded.
const METRICS_UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

/// Installs the global tracing subscriber. Safe to call more than once (later calls do nothing),
/// which lets every test start an application.
pub fn init_tracing(format: LogFormat) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_LOG_FILTER));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Pretty => builder.try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .try_init(),
    };
}

/// Buckets of `journal_batch_transitions`: writes per journal commit, powers of two up to the
/// largest batch allowed.
const JOURNAL_BATCH_BUCKETS_TRANSITIONS: &[f64] = &[
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 10_000.0,
];

/// The process-wide Prometheus recorder, installed on first use. One per process because the
/// `metrics` facade has one global recorder; every application in the process shares it.
pub fn metrics_handle() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(
                Matcher::Suffix("_seconds".to_owned()),
                LATENCY_BUCKETS_SECONDS,
            )
            .expect("bucket list is non-empty")
            .set_buckets_for_metric(
                Matcher::Full("eta_abs_error_seconds".to_owned()),
                ETA_ERROR_BUCKETS_SECONDS,
            )
            .expect("bucket list is non-empty")
            .set_buckets_for_metric(
                Matcher::Full("journal_batch_transitions".to_owned()),
                JOURNAL_BATCH_BUCKETS_TRANSITIONS,
            )
            .expect("bucket list is non-empty")
            .build_recorder();
        let handle = recorder.handle();
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!("a metrics recorder was already installed; /metrics may be empty");
        }
        let upkeep = handle.clone();
        std::thread::Builder::new()
            .name("metrics-upkeep".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(METRICS_UPKEEP_INTERVAL);
                    upkeep.run_upkeep();
                }
            })
            .expect("spawn metrics upkeep thread");
        handle
    })
}
