//! Liveness (`/health`), readiness (`/ready`) and the Prometheus scrape endpoint (`/metrics`).

use std::collections::BTreeMap;

use actix_web::{HttpResponse, web};
use serde::Serialize;

use super::error::{ApiError, ErrorCode};
use super::state::AppState;
use crate::telemetry;

/// Liveness.
#[derive(Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct Health {
    /// Always `ok`.
    pub status: String,
}

/// `GET /health`: the process is up and serving. Deliberately checks nothing else, so a
/// database outage does not make Kubernetes restart healthy pods.
#[utoipa::path(get, path = "/health", tag = "service", responses((status = 200, body = Health)))]
pub async fn health() -> HttpResponse {
    HttpResponse::Ok().json(Health {
        status: "ok".to_owned(),
    })
}

/// Readiness, with each dependency's state.
#[derive(Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct Readiness {
    /// `ready` or `not_ready`.
    pub status: String,
    /// Each dependency (`database`, `dispatch`, `maps`, `notifications`, and with Redis `redis`
    /// and `routing`): `ok`, or why it failed (`degraded: …` for those that do not fail readiness). `leases`, when
    /// present, tells when this replica last stepped down from a region another one took over
    /// (it does not fail readiness).
    pub checks: BTreeMap<String, String>,
    /// When not ready: `not_ready`, naming the failing checks.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<super::error::ErrorDetail>,
}

/// `GET /ready`: 200 when the store answers and dispatch runs (this replica has joined, or
/// holds every region without Redis); otherwise 503 naming each failing check. Redis and the
/// routing between replicas are reported (`degraded: …`) but do not fail readiness.
#[utoipa::path(
    get, path = "/ready", tag = "service",
    responses((status = 200, body = Readiness), (status = 503, description = "A dependency is down", body = Readiness))
)]
pub async fn ready(state: web::Data<AppState>) -> HttpResponse {
    let mut checks = BTreeMap::new();
    let mut failing = Vec::new();
    // Both pings at once: each may take its whole timeout while its server is away.
    let database = async {
        if !state.store.is_migrated() {
            Err("not connected and migrated yet".to_owned())
        } else {
            state.store.ping().await.map_err(|e| e.to_string())
        }
    };
    let redis = async {
        match &state.bus {
            Some(bus) => Some(bus.ping().await),
            None => None,
        }
    };
    let (database, redis, maps) = futures_util::join!(database, redis, state.maps.probe());
    let database = database.and_then(|()| {
        if !state.auth.tokens.is_ready() {
            Err("token-signing secret not loaded yet".to_owned())
        } else if !state.auth.signing.is_ready() {
            Err("integration signing keys not loaded yet".to_owned())
        } else {
            Ok(())
        }
    });
    record(&mut checks, &mut failing, "database", database);
    let dispatch = match state.cluster.state().not_ready_reason() {
        Some(reason) => Err(reason),
        None if state.engine.is_ready() => Ok(()),
        None => Err("recovering open orders".to_owned()),
    };
    record(&mut checks, &mut failing, "dispatch", dispatch);
    // A region another replica took over while this one could not renew: reported, not
    // failing (with Redis this replica routes its work; without, `dispatch` says standby).
    if let Some(note) = state.cluster.step_down_note() {
        checks.insert("leases".to_owned(), note);
    }
    // The maps service is reported, never failing: without OSRM, dispatch and ETAs go on by
    // the straight line.
    // Notifications are reported, never failing: messages wait in the store while a channel
    // is paused.
    checks.insert("notifications".to_owned(), state.notifier.health());
    checks.insert("whatsapp_ordering".to_owned(), state.chat.health());
    // Sign-in with a provider is reported, never failing (password logins go on), from the
    // last time a sign-in contacted it: /ready does not call the provider.
    if let Some(oidc) = &state.oidc {
        checks.insert("oidc".to_owned(), oidc.health());
    }
    checks.insert(
        "maps".to_owned(),
        match maps {
            crate::maps::Health::Ok => "ok".to_owned(),
            crate::maps::Health::StraightLine => {
                "ok: straight line (no OSRM configured)".to_owned()
            }
            crate::maps::Health::Degraded(reason) => {
                format!("degraded: {reason}; straight-line estimates meanwhile")
            }
        },
    );
    // Redis is reported, not required: without it, the regions this replica holds keep
    // working and only commands for other replicas' regions fail. Taking every replica out of
    // the load balancer when Redis is down would stop those too.
    if let Some(redis) = redis {
        let routing = state.router.as_ref().map(|router| router.health());
        checks.insert(
            "redis".to_owned(),
            match redis {
                Ok(()) => "ok".to_owned(),
                Err(reason) => {
                    format!("degraded: {reason}; work for other replicas' regions fails")
                }
            },
        );
        if let Some(routing) = routing {
            checks.insert(
                "routing".to_owned(),
                routing.map_or_else(|reason| format!("degraded: {reason}"), |()| "ok".to_owned()),
            );
        }
    }
    if failing.is_empty() {
        return HttpResponse::Ok().json(Readiness {
            status: "ready".to_owned(),
            checks,
            error: None,
        });
    }
    let message = format!("not ready: {} unavailable", failing.join(", "));
    HttpResponse::ServiceUnavailable().json(Readiness {
        status: "not_ready".to_owned(),
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
    checks: &mut BTreeMap<String, String>,
    failing: &mut Vec<&'static str>,
    name: &'static str,
    outcome: Result<(), String>,
) {
    match outcome {
        Ok(()) => {
            checks.insert(name.to_owned(), "ok".to_owned());
        }
        Err(reason) => {
            checks.insert(name.to_owned(), reason);
            failing.push(name);
        }
    }
}

/// `GET /metrics`: Prometheus text exposition.
#[utoipa::path(
    get, path = "/metrics", tag = "service",
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain"))
)]
pub async fn metrics() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(telemetry::metrics_handle().render())
}
