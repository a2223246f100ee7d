//! The OSRM HTTP client: `/table/v1/driving` and `/route/v1/driving` (and `/nearest` as a
//! probe), over one pooled connection set, with a deadline on every call and a circuit
//! [`breaker`](super::breaker) in front.
//!
//! Every call answers within its deadline: [`OsrmError::Timeout`] covers connecting, sending
//! and reading the whole body. A call the breaker refuses answers at once
//! ([`OsrmError::BreakerOpen`]). Timeouts, unreachable servers, 5xx and unreadable answers count
//! against the breaker; OSRM's own refusals (`NoRoute`, `InvalidQuery`, …) come from a healthy
//! server and do not.
//!
//! Metrics: `maps_osrm_request_seconds{call}` (histogram), `maps_osrm_requests_total{call,
//! outcome}` (outcome `ok` or an [`OsrmError::kind`]), `maps_osrm_up` (1 after an answer, 0
//! after a failure), `maps_osrm_retries_total` (requests sent again after osrm-routed closed a
//! pooled connection under them).

use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Deserialize;

use super::breaker::{SharedBreaker, State};
use super::{Health, Route};
use crate::geo::LatLon;

/// Largest table OSRM is asked for (sources × destinations): osrm-routed's default
/// `--max-table-size` of 100 allows 100 × 100. Larger tables are refused without a call.
pub const MAX_TABLE_CELLS: usize = 100 * 100;
/// Most points in one route: osrm-routed's default `--max-viaroute-size`.
pub const MAX_ROUTE_POINTS: usize = 500;
/// Idle pooled connections are closed after this long (osrm-routed keeps them 5 s).
pub const POOL_IDLE_TIMEOUT_MS: u64 = 4_000;
/// A point OSRM had to move farther than this to reach a road is outside its graph (another
/// city, the sea): its table cells are `None` and a route through it is refused, so the caller
/// uses the straight line rather than a trip from wherever OSRM snapped it.
pub const MAX_SNAP_M: f64 = 500.0;
/// Decimal places of the coordinates sent: 6 is about 0.1 m.
const COORDINATE_DECIMALS: usize = 6;

/// Why OSRM gave no answer.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum OsrmError {
    #[error("OSRM did not answer within the deadline")]
    Timeout,
    #[error("OSRM is not reachable: {0}")]
    Unreachable(String),
    #[error("OSRM's circuit breaker is open")]
    BreakerOpen,
    #[error("OSRM answered {0}")]
    Refused(String),
}

impl OsrmError {
    /// The metric label: `timeout`, `unreachable`, `breaker_open`, `refused`.
    pub fn kind(&self) -> &'static str {
        match self {
            OsrmError::Timeout => "timeout",
            OsrmError::Unreachable(_) => "unreachable",
            OsrmError::BreakerOpen => "breaker_open",
            OsrmError::Refused(_) => "refused",
        }
    }
}

/// A failed call, and whether it says the server is unwell (counts against the breaker).
#[derive(Debug)]
struct Failure {
    error: OsrmError,
    server_fault: bool,
}

impl Failure {
    /// The server answered, and said no: it is healthy.
    fn refused(reason: String) -> Failure {
        Failure {
            error: OsrmError::Refused(reason),
            server_fault: false,
        }
    }

    /// The server answered something it should not have.
    fn broken(reason: String) -> Failure {
        Failure {
            error: OsrmError::Refused(reason),
            server_fault: true,
        }
    }
}

/// A client of one OSRM server.
pub struct Osrm {
    base_url: String,
    deadline: Duration,
    client: reqwest::Client,
    /// The client's own thread: every request and its pooled connections run there, not on
    /// the caller's event loop. A region's event loop is busy with its actors (a connection it
    /// drove would wait for them) and stops when the region is handed off (taking the
    /// connections it drove with it).
    io: IoThread,
    breaker: SharedBreaker,
    /// `None` after a successful call; why the last one failed otherwise.
    last_failure: Mutex<Option<String>>,
    /// A point of the last request, for the probe to ask near (somewhere OSRM has data).
    last_point: Mutex<Option<LatLon>>,
}

impl Osrm {
    /// A client of the OSRM server at `base_url` (`http://osrm:5000`; a path prefix is kept),
    /// each call limited to `deadline`. Makes no request.
    pub fn new(base_url: &str, deadline: Duration) -> Result<Osrm, String> {
        let base_url = base_url.trim_end_matches('/');
        let parsed = reqwest::Url::parse(base_url)
            .map_err(|e| format!("OSRM URL {base_url:?} is not a URL: {e}"))?;
        if !matches!(parsed.scheme(), "http" | "https") || parsed.host().is_none() {
            return Err(format!(
                "OSRM URL {base_url:?} must be http:// or https:// with a host"
            ));
        }
        if parsed.query().is_some() || parsed.fragment().is_some() {
            return Err(format!(
                "OSRM URL {base_url:?} must not carry a query or fragment"
            ));
        }
        if deadline.is_zero() {
            return Err("the OSRM deadline must be above zero".to_owned());
        }
        let client = reqwest::Client::builder()
            .pool_idle_timeout(Duration::from_millis(POOL_IDLE_TIMEOUT_MS))
            .tcp_nodelay(true)
            .connect_timeout(deadline)
            .build()
            .map_err(|e| format!("cannot build the OSRM HTTP client: {e}"))?;
        Ok(Osrm {
            base_url: base_url.to_owned(),
            deadline,
            client,
            io: IoThread::start()?,
            breaker: SharedBreaker::default(),
            last_failure: Mutex::new(Some("not asked yet".to_owned())),
            last_point: Mutex::new(None),
        })
    }

    /// The deadline of each call.
    pub fn deadline(&self) -> Duration {
        self.deadline
    }

    /// `secs[source][destination]`, `None` where OSRM found no route.
    pub async fn table(
        &self,
        sources: &[LatLon],
        destinations: &[LatLon],
    ) -> Result<Vec<Vec<Option<f64>>>, OsrmError> {
        let url = table_url(&self.base_url, sources, destinations)?;
        self.remember_point(sources.first());
        self.call("table", &url, |body| {
            parse_table(body, sources.len(), destinations.len())
        })
        .await
    }

    /// The road route through `points` (two or more). OSRM's `NoRoute` is
    /// [`OsrmError::Refused`], so the caller falls back.
    pub async fn route(&self, points: &[LatLon]) -> Result<Route, OsrmError> {
        let url = route_url(&self.base_url, points)?;
        self.remember_point(points.first());
        self.call("route", &url, parse_route).await
    }

    /// Asks OSRM something small — the nearest road to the last point asked about (or 0,0) —
    /// whatever the breaker's state, within the deadline. Any JSON answer, even an error, means
    /// OSRM is alive and closes the breaker; no answer counts as a failure. Meant for `/ready`,
    /// so that the health recovers without traffic.
    pub async fn probe(&self) -> Health {
        let at = lock(&self.last_point).unwrap_or(LatLon { lat: 0.0, lon: 0.0 });
        let url = format!(
            "{}/nearest/v1/driving/{}?number=1",
            self.base_url,
            coordinates(&[at])
        );
        let started = Instant::now();
        let outcome = self.fetch(&url).await.and_then(|(_, body)| {
            serde_json::from_slice::<serde_json::Value>(&body)
                .map(|_| ())
                .map_err(|e| Failure::broken(format!("a probe answer that is not JSON: {e}")))
        });
        // The outcome is in the health.
        let _ = self.finish("probe", started, outcome);
        self.health()
    }

    /// Ok when the breaker is closed and the last call got an answer; degraded (with why)
    /// otherwise, including before the first call.
    pub fn health(&self) -> Health {
        let last = lock(&self.last_failure).clone();
        match (self.breaker.state(), last) {
            (State::Closed, None) => Health::Ok,
            (State::Closed, Some(reason)) => Health::Degraded(reason),
            (state, reason) => Health::Degraded(format!(
                "circuit breaker {} after {} failures in a row{}",
                if state == State::Open {
                    "open"
                } else {
                    "half-open"
                },
                self.breaker.consecutive_failures(),
                reason.map(|r| format!(", last: {r}")).unwrap_or_default()
            )),
        }
    }

    fn remember_point(&self, point: Option<&LatLon>) {
        if let Some(point) = point {
            *lock(&self.last_point) = Some(*point);
        }
    }

    /// One GET through the breaker, read with `parse`, timed and counted.
    async fn call<T>(
        &self,
        call: &'static str,
        url: &str,
        parse: impl FnOnce(&[u8]) -> Result<T, Failure>,
    ) -> Result<T, OsrmError> {
        if !self.breaker.admit() {
            metrics::counter!("maps_osrm_requests_total", "call" => call, "outcome" => "breaker_open")
                .increment(1);
            return Err(OsrmError::BreakerOpen);
        }
        let started = Instant::now();
        let outcome = self.fetch(url).await.and_then(|(status, body)| {
            if status.is_success() {
                parse(&body)
            } else {
                // OSRM explains a 4xx in JSON ({"code":"InvalidQuery","message":…}).
                Err(osrm_refusal(status, &body))
            }
        });
        self.finish(call, started, outcome)
    }

    /// Records a finished call in the metrics, the breaker and the health.
    fn finish<T>(
        &self,
        call: &'static str,
        started: Instant,
        outcome: Result<T, Failure>,
    ) -> Result<T, OsrmError> {
        metrics::histogram!("maps_osrm_request_seconds", "call" => call)
            .record(started.elapsed().as_secs_f64());
        let (label, failure) = match &outcome {
            Ok(_) => ("ok", None),
            Err(f) => (f.error.kind(), f.server_fault.then(|| f.error.to_string())),
        };
        metrics::counter!("maps_osrm_requests_total", "call" => call, "outcome" => label)
            .increment(1);
        let before = self.breaker.state();
        self.breaker.record(failure.is_none());
        match (before, self.breaker.state(), &failure) {
            (State::Closed, State::Open, Some(reason)) => {
                tracing::warn!(
                    call,
                    reason,
                    "OSRM keeps failing: circuit breaker opened; straight lines meanwhile"
                )
            }
            (State::Open | State::HalfOpen, State::Closed, _) => {
                tracing::info!(call, "OSRM answers again: circuit breaker closed")
            }
            _ => {}
        }
        metrics::gauge!("maps_osrm_up").set(if failure.is_none() { 1.0 } else { 0.0 });
        if let Some(reason) = &failure {
            tracing::debug!(call, reason, "OSRM call failed");
        }
        *lock(&self.last_failure) = failure;
        outcome.map_err(|f| f.error)
    }

    /// GET `url` and read the whole body within the deadline. A request lost on a pooled
    /// connection the server had closed is sent once more on a fresh one (see
    /// [`closed_under_us`]); both attempts share the deadline.
    async fn fetch(&self, url: &str) -> Result<(reqwest::StatusCode, Vec<u8>), Failure> {
        let (client, url, deadline) = (self.client.clone(), url.to_owned(), self.deadline);
        match self.io.handle.spawn(fetch(client, url, deadline)).await {
            Ok(outcome) => outcome,
            Err(_) => Err(Failure {
                error: OsrmError::Unreachable("the OSRM client's thread is gone".to_owned()),
                server_fault: true,
            }),
        }
    }
}

/// A thread running a single-threaded runtime for the client's requests; it ends when the
/// client is dropped.
struct IoThread {
    handle: tokio::runtime::Handle,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl IoThread {
    fn start() -> Result<IoThread, String> {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (ready, handle) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("maps-osrm".to_owned())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime,
                    Err(e) => {
                        let _ = ready.send(Err(e.to_string()));
                        return;
                    }
                };
                let _ = ready.send(Ok(runtime.handle().clone()));
                runtime.block_on(async move {
                    let _ = stopped.await;
                });
            })
            .map_err(|e| format!("cannot start the OSRM client's thread: {e}"))?;
        let handle = handle
            .recv()
            .map_err(|_| "the OSRM client's thread did not start".to_owned())??;
        Ok(IoThread {
            handle,
            _stop: stop,
        })
    }
}

/// One GET within `deadline` (sent once more if the pooled connection was closed under it).
async fn fetch(
    client: reqwest::Client,
    url: String,
    deadline: Duration,
) -> Result<(reqwest::StatusCode, Vec<u8>), Failure> {
    let url = url.as_str();
    let attempt = || async {
        let response = client.get(url).send().await?;
        let status = response.status();
        let body = response.bytes().await?;
        Ok::<_, reqwest::Error>((status, body.to_vec()))
    };
    let request = async {
        match attempt().await {
            Err(e) if closed_under_us(&e) => {
                metrics::counter!("maps_osrm_retries_total").increment(1);
                attempt().await
            }
            other => other,
        }
    };
    let error = match tokio::time::timeout(deadline, request).await {
        Ok(Ok(answer)) => return Ok(answer),
        Err(_) => OsrmError::Timeout,
        Ok(Err(e)) if e.is_timeout() => OsrmError::Timeout,
        // Without the URL: it holds customers' and drivers' coordinates, and the reason is
        // shown by /ready and logged.
        Ok(Err(e)) => OsrmError::Unreachable(error_chain(&e.without_url())),
    };
    Err(Failure {
        error,
        server_fault: true,
    })
}

/// Whether a request failed because the server closed its (pooled) connection under it rather
/// than because the server is away: sent, then no answer, with no connect error or timeout.
/// osrm-routed closes a keep-alive connection after its 512th request without saying so
/// (`Connection: keep-alive`, `Keep-Alive: max=1` on the 512th answer), so one call in 512 on a
/// busy connection meets a closed socket; every call is a GET, safe to send again.
fn closed_under_us(error: &reqwest::Error) -> bool {
    error.is_request() && !error.is_connect() && !error.is_timeout()
}

/// A mutex's value even after a panic elsewhere (each is one plain value, always valid).
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// An error and its causes on one line ("error sending request: … : Connection refused").
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// OSRM's answer header: `code` is `Ok` or why not.
#[derive(Deserialize)]
struct Header {
    code: String,
    #[serde(default)]
    message: Option<String>,
}

/// A non-2xx answer: OSRM's refusal when it carries OSRM's JSON (a 4xx), the server's fault
/// otherwise.
fn osrm_refusal(status: reqwest::StatusCode, body: &[u8]) -> Failure {
    match serde_json::from_slice::<Header>(body) {
        Ok(header) if status.is_client_error() => Failure::refused(header.code),
        _ => Failure::broken(format!("HTTP {}", status.as_u16())),
    }
}

/// `lon,lat;lon,lat;…` with [`COORDINATE_DECIMALS`] decimals.
fn coordinates(points: &[LatLon]) -> String {
    let mut out = String::with_capacity(points.len() * 22);
    for (i, p) in points.iter().enumerate() {
        if i > 0 {
            out.push(';');
        }
        out.push_str(&format!(
            "{:.*},{:.*}",
            COORDINATE_DECIMALS, p.lon, COORDINATE_DECIMALS, p.lat
        ));
    }
    out
}

fn check_points(points: &[LatLon]) -> Result<(), OsrmError> {
    match points.iter().position(|p| !p.is_valid()) {
        None => Ok(()),
        Some(i) => Err(OsrmError::Refused(format!(
            "not asked: point {i} is not a valid latitude/longitude"
        ))),
    }
}

/// `{base}/table/v1/driving/{sources;destinations}?sources=0;…&destinations=…&annotations=duration`,
/// or why it is not asked (empty, too large, invalid points).
fn table_url(
    base_url: &str,
    sources: &[LatLon],
    destinations: &[LatLon],
) -> Result<String, OsrmError> {
    if sources.is_empty() || destinations.is_empty() {
        return Err(OsrmError::Refused(
            "not asked: a table needs sources and destinations".to_owned(),
        ));
    }
    let cells = sources.len().saturating_mul(destinations.len());
    if cells > MAX_TABLE_CELLS {
        return Err(OsrmError::Refused(format!(
            "not asked: a {}×{} table is over {MAX_TABLE_CELLS} cells",
            sources.len(),
            destinations.len()
        )));
    }
    check_points(sources)?;
    check_points(destinations)?;
    let all: Vec<LatLon> = sources.iter().chain(destinations).copied().collect();
    let indices =
        |range: std::ops::Range<usize>| range.map(|i| i.to_string()).collect::<Vec<_>>().join(";");
    Ok(format!(
        "{base_url}/table/v1/driving/{}?sources={}&destinations={}&annotations=duration",
        coordinates(&all),
        indices(0..sources.len()),
        indices(sources.len()..all.len()),
    ))
}

/// `{base}/route/v1/driving/{points}?overview=full&geometries=geojson&steps=false`.
fn route_url(base_url: &str, points: &[LatLon]) -> Result<String, OsrmError> {
    if points.len() < 2 {
        return Err(OsrmError::Refused(
            "not asked: a route needs two points or more".to_owned(),
        ));
    }
    if points.len() > MAX_ROUTE_POINTS {
        return Err(OsrmError::Refused(format!(
            "not asked: {} points are over {MAX_ROUTE_POINTS}",
            points.len()
        )));
    }
    check_points(points)?;
    Ok(format!(
        "{base_url}/route/v1/driving/{}?overview=full&geometries=geojson&steps=false",
        coordinates(points)
    ))
}

/// OSRM's `code` is `Ok`; otherwise its refusal (a healthy server saying no), or, when the
/// body is not OSRM's JSON, the server's fault.
fn header(body: &[u8]) -> Result<(), Failure> {
    let header: Header = serde_json::from_slice(body)
        .map_err(|e| Failure::broken(format!("an unreadable answer: {e}")))?;
    if header.code == "Ok" {
        Ok(())
    } else {
        tracing::debug!(code = %header.code, message = ?header.message, "OSRM refused");
        Err(Failure::refused(header.code))
    }
}

#[derive(Deserialize)]
struct TableAnswer {
    durations: Vec<Vec<Option<f64>>>,
    #[serde(default)]
    sources: Vec<Waypoint>,
    #[serde(default)]
    destinations: Vec<Waypoint>,
}

/// Where OSRM placed a point: `distance` metres from it, on the nearest road.
#[derive(Deserialize)]
struct Waypoint {
    #[serde(default)]
    distance: Option<f64>,
}

impl Waypoint {
    fn on_graph(&self) -> bool {
        self.distance.is_none_or(|d| d <= MAX_SNAP_M)
    }
}

/// Whether each of `count` points is on the graph (all are when OSRM did not say).
fn on_graph(waypoints: &[Waypoint], count: usize) -> Vec<bool> {
    if waypoints.len() == count {
        waypoints.iter().map(Waypoint::on_graph).collect()
    } else {
        vec![true; count]
    }
}

/// The durations of a `/table` answer for `rows` sources and `columns` destinations; a null,
/// negative or non-finite cell, or one from or to a point off the graph, is `None`.
fn parse_table(body: &[u8], rows: usize, columns: usize) -> Result<Vec<Vec<Option<f64>>>, Failure> {
    header(body)?;
    let answer: TableAnswer = serde_json::from_slice(body)
        .map_err(|e| Failure::broken(format!("an unreadable table: {e}")))?;
    if answer.durations.len() != rows || answer.durations.iter().any(|r| r.len() != columns) {
        return Err(Failure::broken(format!(
            "a table of the wrong shape (asked {rows}×{columns})"
        )));
    }
    let sources_on = on_graph(&answer.sources, rows);
    let destinations_on = on_graph(&answer.destinations, columns);
    Ok(answer
        .durations
        .into_iter()
        .zip(sources_on)
        .map(|(row, source_on)| {
            row.into_iter()
                .zip(&destinations_on)
                .map(|(cell, destination_on)| {
                    cell.filter(|s| s.is_finite() && *s >= 0.0 && source_on && *destination_on)
                })
                .collect()
        })
        .collect())
}

#[derive(Deserialize)]
struct RouteAnswer {
    routes: Vec<RouteJson>,
    #[serde(default)]
    waypoints: Vec<Waypoint>,
}

#[derive(Deserialize)]
struct RouteJson {
    duration: f64,
    distance: f64,
    geometry: LineString,
}

#[derive(Deserialize)]
struct LineString {
    coordinates: Vec<[f64; 2]>,
}

/// The first route of a `/route` answer with a GeoJSON geometry.
fn parse_route(body: &[u8]) -> Result<Route, Failure> {
    header(body)?;
    let answer: RouteAnswer = serde_json::from_slice(body)
        .map_err(|e| Failure::broken(format!("an unreadable route: {e}")))?;
    if let Some(i) = answer.waypoints.iter().position(|w| !w.on_graph()) {
        return Err(Failure::refused(format!(
            "OffGraph: point {i} is over {MAX_SNAP_M} m from any road it knows"
        )));
    }
    let Some(route) = answer.routes.into_iter().next() else {
        return Err(Failure::refused("NoRoute".to_owned()));
    };
    let geometry = route
        .geometry
        .coordinates
        .iter()
        .map(|&[lon, lat]| LatLon::new(lat, lon))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Failure::broken(format!("a route with a bad point: {e}")))?;
    let valid = |v: f64| v.is_finite() && v >= 0.0;
    if geometry.is_empty() || !valid(route.duration) || !valid(route.distance) {
        return Err(Failure::broken(
            "a route without a line, duration or distance".to_owned(),
        ));
    }
    Ok(Route {
        duration_secs: route.duration,
        distance_m: route.distance,
        geometry,
        by_road: true,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Recorded from osrm-routed 26.10 on the Helsinki extract (hints shortened):
    /// `/table/v1/driving/24.940000,60.170000;24.948000,60.167000;24.945000,60.168000;24.938000,60.169000?sources=0&destinations=1;2;3&annotations=duration`.
    /// The third destination snaps to a service road the car profile cannot reach: null.
    const TABLE_1X3: &str = r#"{"code":"Ok","destinations":[{"hint":"AAAA","location":[24.94765,60.16699],"name":"Kasarmikatu","distance":19.45868652},{"hint":"AAAA","location":[24.945027,60.167711],"name":"Pohjoisesplanadi","distance":32.2338657},{"hint":"AAAA","location":[24.937986,60.169008],"name":"","distance":1.182494665}],"durations":[[231,188.8,null]],"sources":[{"hint":"AAAA","location":[24.940115,60.170002],"name":"","distance":6.386967751}]}"#;

    /// Recorded: `/route/v1/driving/24.940000,60.170000;24.948000,60.167000?overview=full&geometries=geojson`
    /// (the 110-point line cut to its first four and last two points, hints shortened).
    const ROUTE: &str = r#"{"code":"Ok","routes":[{"legs":[{"steps":[],"weight":231,"summary":"","duration":231,"distance":1349.1}],"weight_name":"routability","geometry":{"coordinates":[[24.940115,60.170002],[24.940102,60.170179],[24.940099,60.170207],[24.940093,60.170279],[24.947654,60.166954],[24.94765,60.16699]],"type":"LineString"},"weight":231,"duration":231,"distance":1349.1}],"waypoints":[{"hint":"AAAA","location":[24.940115,60.170002],"name":"","distance":6.386967751},{"hint":"AAAA","location":[24.94765,60.16699],"name":"Kasarmikatu","distance":19.45868652}]}"#;

    /// Recorded: a route between two points in parts of the graph not connected by road.
    const NO_ROUTE: &str = r#"{"message":"Impossible route between points","code":"NoRoute"}"#;

    /// Recorded: `GET /health` (HTTP 400): osrm-routed has no such endpoint.
    const INVALID_URL: &str =
        r#"{"message":"URL string malformed close to position 7: \"lth\"","code":"InvalidUrl"}"#;

    fn p(lat: f64, lon: f64) -> LatLon {
        LatLon::new(lat, lon).unwrap()
    }

    #[test]
    fn a_table_url_lists_sources_then_destinations_lon_first_with_six_decimals() {
        let url = table_url(
            "http://osrm:5000",
            &[p(60.17, 24.94)],
            &[
                p(60.167, 24.948),
                p(60.168, 24.945),
                p(-33.8688197, 151.2092956),
            ],
        )
        .unwrap();
        assert_eq!(
            url,
            "http://osrm:5000/table/v1/driving/24.940000,60.170000;24.948000,60.167000;\
             24.945000,60.168000;151.209296,-33.868820?sources=0&destinations=1;2;3\
             &annotations=duration"
        );
    }

    #[test]
    fn a_many_to_many_table_url_numbers_every_source_and_destination() {
        let url = table_url(
            "http://h/prefix",
            &[p(1.0, 2.0), p(3.0, 4.0)],
            &[p(5.0, 6.0), p(7.0, 8.0)],
        )
        .unwrap();
        assert!(
            url.starts_with("http://h/prefix/table/v1/driving/2.000000,1.000000;"),
            "{url}"
        );
        assert!(
            url.ends_with("?sources=0;1&destinations=2;3&annotations=duration"),
            "{url}"
        );
    }

    #[test]
    fn a_table_over_the_cap_empty_or_with_a_bad_point_is_not_asked() {
        let many = vec![p(60.17, 24.94); 101];
        let hundred = vec![p(60.17, 24.94); 100];
        assert!(table_url("http://h", &hundred, &hundred).is_ok());
        for (sources, destinations) in [
            (&many[..], &hundred[..]),
            (&[][..], &hundred[..]),
            (&hundred[..], &[][..]),
            (
                &[LatLon {
                    lat: f64::NAN,
                    lon: 0.0,
                }][..],
                &hundred[..],
            ),
            (
                &hundred[..],
                &[LatLon {
                    lat: 10.0,
                    lon: 200.0,
                }][..],
            ),
        ] {
            let error = table_url("http://h", sources, destinations).unwrap_err();
            assert!(
                matches!(&error, OsrmError::Refused(why) if why.starts_with("not asked")),
                "{error:?}"
            );
        }
    }

    #[test]
    fn a_route_url_asks_for_the_full_geojson_line_and_needs_two_points() {
        assert_eq!(
            route_url("http://osrm:5000", &[p(60.17, 24.94), p(60.167, 24.948)]).unwrap(),
            "http://osrm:5000/route/v1/driving/24.940000,60.170000;24.948000,60.167000\
             ?overview=full&geometries=geojson&steps=false"
        );
        assert!(route_url("http://osrm:5000", &[p(60.17, 24.94)]).is_err());
        assert!(route_url("http://osrm:5000", &vec![p(60.17, 24.94); 501]).is_err());
    }

    #[test]
    fn a_recorded_table_reads_as_seconds_with_none_for_null() {
        let cells = parse_table(TABLE_1X3.as_bytes(), 1, 3).unwrap();
        assert_eq!(cells, vec![vec![Some(231.0), Some(188.8), None]]);
    }

    /// Recorded (hints shortened): `/table/v1/driving/24.940000,60.170000;0.000000,0.000000?sources=0&destinations=0;1&annotations=duration`
    /// — the second point, in the Gulf of Guinea, snapped to Bulevardi 7,090 km away.
    const TABLE_OFF_GRAPH: &str = r#"{"code":"Ok","destinations":[{"hint":"AAAA","location":[24.940115,60.170002],"name":"","distance":6.386967751},{"hint":"AAAA","location":[24.93666,60.164199],"name":"Bulevardi","distance":7089539.184}],"durations":[[0,320.1]],"sources":[{"hint":"AAAA","location":[24.940115,60.170002],"name":"","distance":6.386967751}]}"#;

    #[test]
    fn a_point_far_off_the_graph_gets_no_road_time() {
        let cells = parse_table(TABLE_OFF_GRAPH.as_bytes(), 1, 2).unwrap();
        assert_eq!(cells, vec![vec![Some(0.0), None]]);
        let route = ROUTE.replace(r#""distance":19.45868652"#, r#""distance":7089539.184"#);
        let failure = parse_route(route.as_bytes()).unwrap_err();
        assert!(!failure.server_fault);
        assert!(
            matches!(&failure.error, OsrmError::Refused(why) if why.starts_with("OffGraph: point 1")),
            "{:?}",
            failure.error
        );
    }

    #[test]
    fn a_table_of_another_shape_or_with_negative_cells_is_not_trusted() {
        let failure = parse_table(TABLE_1X3.as_bytes(), 1, 2).unwrap_err();
        assert!(failure.server_fault);
        let failure = parse_table(TABLE_1X3.as_bytes(), 2, 3).unwrap_err();
        assert!(failure.server_fault);
        let odd = br#"{"code":"Ok","durations":[[-1, 5e400, 3]]}"#;
        // 5e400 overflows to infinity in serde_json: refused as unreadable, or None.
        match parse_table(odd, 1, 3) {
            Ok(cells) => assert_eq!(cells, vec![vec![None, None, Some(3.0)]]),
            Err(failure) => assert!(failure.server_fault),
        }
        let negative = br#"{"code":"Ok","durations":[[-1, 7]]}"#;
        assert_eq!(
            parse_table(negative, 1, 2).unwrap(),
            vec![vec![None, Some(7.0)]]
        );
    }

    #[test]
    fn a_recorded_route_reads_with_its_line_turned_to_lat_lon() {
        let route = parse_route(ROUTE.as_bytes()).unwrap();
        assert_eq!(route.duration_secs, 231.0);
        assert_eq!(route.distance_m, 1349.1);
        assert!(route.by_road);
        assert_eq!(route.geometry.len(), 6);
        assert_eq!(route.geometry[0], p(60.170002, 24.940115));
        assert_eq!(route.geometry[5], p(60.16699, 24.94765));
    }

    #[test]
    fn no_route_is_a_refusal_from_a_healthy_server() {
        let failure = parse_route(NO_ROUTE.as_bytes()).unwrap_err();
        assert_eq!(failure.error, OsrmError::Refused("NoRoute".to_owned()));
        assert_eq!(failure.error.kind(), "refused");
        assert!(!failure.server_fault);
    }

    #[test]
    fn an_answer_that_is_not_osrm_json_is_the_servers_fault() {
        for body in [
            &b"<html>502 Bad Gateway</html>"[..],
            br#"{"code":"Ok"}"#,
            br#"{"code":"Ok","routes":[{"duration":1,"distance":2,"geometry":"encoded"}]}"#,
            br#"{"code":"Ok","routes":[{"duration":1,"distance":2,"geometry":{"coordinates":[[200,1]]}}]}"#,
            br#"{"code":"Ok","routes":[{"duration":-1,"distance":2,"geometry":{"coordinates":[[2,1]]}}]}"#,
        ] {
            let failure = parse_route(body).unwrap_err();
            assert!(failure.server_fault, "{}", String::from_utf8_lossy(body));
            assert_eq!(failure.error.kind(), "refused");
        }
    }

    #[test]
    fn an_empty_route_list_is_no_route() {
        let failure = parse_route(br#"{"code":"Ok","routes":[]}"#).unwrap_err();
        assert_eq!(failure.error, OsrmError::Refused("NoRoute".to_owned()));
        assert!(!failure.server_fault);
    }

    #[test]
    fn a_4xx_with_osrm_json_is_a_refusal_and_a_5xx_is_a_fault() {
        let failure = osrm_refusal(reqwest::StatusCode::BAD_REQUEST, INVALID_URL.as_bytes());
        assert_eq!(failure.error, OsrmError::Refused("InvalidUrl".to_owned()));
        assert!(!failure.server_fault);
        let failure = osrm_refusal(reqwest::StatusCode::BAD_GATEWAY, INVALID_URL.as_bytes());
        assert_eq!(failure.error, OsrmError::Refused("HTTP 502".to_owned()));
        assert!(failure.server_fault);
        let failure = osrm_refusal(reqwest::StatusCode::NOT_FOUND, b"not found");
        assert!(failure.server_fault);
    }

    #[test]
    fn only_a_plain_http_url_with_a_host_and_a_nonzero_deadline_is_accepted() {
        let deadline = Duration::from_millis(250);
        assert!(Osrm::new("http://osrm:5000", deadline).is_ok());
        assert!(Osrm::new("https://maps.example.com/osrm/", deadline).is_ok());
        assert_eq!(
            Osrm::new("http://osrm:5000///", deadline).unwrap().base_url,
            "http://osrm:5000"
        );
        for bad in [
            "osrm:5000",
            "ftp://osrm",
            "not a url",
            "http://osrm:5000/?x=1",
            "",
        ] {
            assert!(Osrm::new(bad, deadline).is_err(), "{bad}");
        }
        assert!(Osrm::new("http://osrm:5000", Duration::ZERO).is_err());
    }

    #[test]
    fn before_its_first_call_the_client_reports_degraded() {
        let osrm = Osrm::new("http://127.0.0.1:9", Duration::from_millis(100)).unwrap();
        assert_eq!(osrm.health(), Health::Degraded("not asked yet".to_owned()));
    }

    /// A server that answers every request with `response`, counting them.
    async fn canned_server(
        response: String,
    ) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
        let response: std::sync::Arc<str> = response.into();
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let count = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = count.clone();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let counter = counter.clone();
                let response = response.clone();
                tokio::spawn(async move {
                    let mut buffer = [0u8; 4096];
                    let mut seen = Vec::new();
                    loop {
                        let Ok(n) = socket.read(&mut buffer).await else {
                            return;
                        };
                        if n == 0 {
                            return;
                        }
                        seen.extend_from_slice(&buffer[..n]);
                        while let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
                            seen.drain(..end + 4);
                            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                            if socket.write_all(response.as_bytes()).await.is_err() {
                                return;
                            }
                        }
                    }
                });
            }
        });
        (url, count)
    }

    /// An HTTP/1.1 answer with `status` (`"500 Internal Server Error"`) and a JSON `body`.
    fn http(status: &str, body: &str) -> String {
        format!(
            "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        )
    }

    fn http_500() -> String {
        http("500 Internal Server Error", "oops!")
    }

    #[tokio::test]
    async fn five_server_errors_open_the_breaker_and_the_sixth_call_is_not_sent() {
        let (url, count) = canned_server(http_500()).await;
        let osrm = Osrm::new(&url, Duration::from_secs(2)).unwrap();
        let (a, b) = (p(60.17, 24.94), p(60.167, 24.948));
        for _ in 0..super::super::breaker::FAILURES_TO_OPEN {
            assert_eq!(
                osrm.table(&[a], &[b]).await,
                Err(OsrmError::Refused("HTTP 500".to_owned()))
            );
        }
        assert_eq!(count.load(std::sync::atomic::Ordering::SeqCst), 5);
        let started = Instant::now();
        assert_eq!(osrm.route(&[a, b]).await, Err(OsrmError::BreakerOpen));
        assert!(started.elapsed() < Duration::from_millis(50));
        assert_eq!(count.load(std::sync::atomic::Ordering::SeqCst), 5);
        match osrm.health() {
            Health::Degraded(why) => {
                assert!(
                    why.contains("circuit breaker open after 5 failures"),
                    "{why}"
                );
                assert!(why.contains("HTTP 500"), "{why}");
            }
            other => panic!("expected degraded, got {other:?}"),
        }
    }

    /// A server like osrm-routed at its keep-alive limit: on every connection it answers the
    /// first request (saying `Connection: keep-alive`), then reads the next one and closes the
    /// connection without answering it. Counts the connections.
    async fn one_answer_per_connection_server(
        body: &'static str,
    ) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let connections = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = connections.clone();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut seen = Vec::new();
                    let mut buffer = [0u8; 4096];
                    let mut answered = false;
                    while let Ok(n) = socket.read(&mut buffer).await {
                        if n == 0 {
                            return;
                        }
                        seen.extend_from_slice(&buffer[..n]);
                        if let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
                            seen.drain(..end + 4);
                            if answered {
                                // The next request: close without a word.
                                return;
                            }
                            answered = true;
                            let answer = format!(
                                "HTTP/1.1 200 OK\r\nconnection: keep-alive\r\ncontent-type: \
                                 application/json\r\ncontent-length: {}\r\n\r\n{body}",
                                body.len()
                            );
                            if socket.write_all(answer.as_bytes()).await.is_err() {
                                return;
                            }
                        }
                    }
                });
            }
        });
        (url, connections)
    }

    #[tokio::test]
    async fn a_request_lost_on_a_connection_the_server_closed_is_sent_again_on_a_new_one() {
        let (url, connections) =
            one_answer_per_connection_server(r#"{"code":"Ok","durations":[[42]]}"#).await;
        let osrm = Osrm::new(&url, Duration::from_secs(2)).unwrap();
        let (a, b) = (p(60.17, 24.94), p(60.167, 24.948));
        for call in 0..4 {
            assert_eq!(
                osrm.table(&[a], &[b]).await,
                Ok(vec![vec![Some(42.0)]]),
                "call {call}"
            );
        }
        // Call 0 opened a connection; each later one met the closed one, then opened another.
        assert_eq!(connections.load(std::sync::atomic::Ordering::SeqCst), 4);
        assert_eq!(osrm.health(), Health::Ok);
    }

    #[tokio::test]
    async fn a_refusal_from_a_healthy_server_does_not_count_against_the_breaker() {
        let (url, count) = canned_server(http("400 Bad Request", NO_ROUTE)).await;
        let osrm = Osrm::new(&url, Duration::from_secs(2)).unwrap();
        let (a, b) = (p(60.17, 24.94), p(60.167, 24.948));
        for _ in 0..10 {
            assert_eq!(
                osrm.route(&[a, b]).await,
                Err(OsrmError::Refused("NoRoute".to_owned()))
            );
        }
        assert_eq!(count.load(std::sync::atomic::Ordering::SeqCst), 10);
        assert_eq!(osrm.health(), Health::Ok);
    }

    #[tokio::test]
    async fn a_probe_answered_with_osrm_json_closes_an_open_breaker() {
        let (url, _) = canned_server(http_500()).await;
        let osrm = Osrm::new(&url, Duration::from_secs(2)).unwrap();
        let (a, b) = (p(60.17, 24.94), p(60.167, 24.948));
        for _ in 0..5 {
            let _ = osrm.table(&[a], &[b]).await;
        }
        assert_eq!(osrm.breaker.state(), State::Open);
        // The probe goes through an open breaker; a 500 is still a failure.
        assert!(matches!(osrm.probe().await, Health::Degraded(_)));
        assert_eq!(osrm.breaker.state(), State::Open);

        let (healthy, _) = canned_server(http("200 OK", r#"{"code":"Ok"}"#)).await;
        let mut osrm = osrm;
        osrm.base_url = healthy;
        assert_eq!(osrm.probe().await, Health::Ok);
        assert_eq!(osrm.breaker.state(), State::Closed);
    }
}
