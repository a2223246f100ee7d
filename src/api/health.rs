//! Liveness (`/health`), readiness (`/ready`) and the Prometheus scrape endpoint (`/metrics`).

use std::collections::BTreeMap;

use actix_web::{HttpResponse, web};
use serde::Serialize;

use super::AppState;
use super::error::{ApiError, ErrorCode};
use crate::telemetry;

/// `GET /health`: the process is up and serving. Deliberately checks nothing else, so a
/// database outage does not make Kubernetes restart healthy pods.
pub async fn health() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({ "status": "ok" }))
}

#[derive(Serialize)]
struct Readiness {
    status: &'static str,
    /// Each dependency: `ok`, or why it failed.
    checks: BTreeMap<&'static str, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<super::error::ErrorDetail>,
}

/// `GET /ready`: 200 when the store (and Redis, if configured) answer; otherwise 503 naming
/// each failing check.
pub async fn ready(state: web::Data<AppState>) -> HttpResponse {
    let mut checks = BTreeMap::new();
    let mut failing = Vec::new();
    let database = if !state.store.is_migrated() {
        Err("not connected and migrated yet".to_owned())
    } else {
        state.store.ping().await.map_err(|e| e.to_string())
    };
    let database = database.and_then(|()| {
        if state.auth.tokens.is_ready() {
            Ok(())
        } else {
            Err("token-signing secret not loaded yet".to_owned())
        }
    });
    record(&mut checks, &mut failing, "database", database);
    let dispatch = if state.engine.is_ready() {
        Ok(())
    } else {
        Err("recovering open orders".to_owned())
    };
    record(&mut checks, &mut failing, "dispatch", dispatch);
    if let Some(bus) = &state.bus {
        record(&mut checks, &mut failing, "redis", bus.ping().await);
    }
    if failing.is_empty() {
        return HttpResponse::Ok().json(Readiness {
            status: "ready",
            checks,
            error: None,
        });
    }
    let message = format!("not ready: {} unavailable", failing.join(", "));
    HttpResponse::ServiceUnavailable().json(Readiness {
        status: "not_ready",
        checks,
        error: Some(
            ApiError::new(ErrorCode::NotReady)
                .with_message(message)
                .body()
                .error,
        ),
    })
}

fn record(
    checks: &mut BTreeMap<&'static str, String>,
    failing: &mut Vec<&'static str>,
    name: &'static str,
    outcome: Result<(), String>,
) {
    match outcome {
        Ok(()) => {
            checks.insert(name, "ok".to_owned());
        }
        Err(reason) => {
            checks.insert(name, reason);
            failing.push(name);
        }
    }
}

/// `GET /metrics`: Prometheus text exposition.
pub async fn metrics() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(telemetry::metrics_handle().render())
}
