//! Test harness: fresh databases, an application per test, and request helpers.

use mealkitz::actors::commands::*;
use std::path::PathBuf;
use std::sync::Once;
use std::time::{Duration, Instant};

use mealkitz::actors::Engine;
use mealkitz::config::{Config, DatabaseConfig, DatabaseUrl, LogFormat, Secret};
use mealkitz::domain::{Email, Role};
use mealkitz::startup::{Application, StopHandle};
use mealkitz::store::{NewUser, Store};
use serde_json::{Value, json};
use sqlx::{AssertSqlSafe, Connection, PgConnection};

/// The webhook secret of test applications.
pub const TEST_WEBHOOK_SECRET: &str = "whsec_test_0123456789abcdef";

/// The PostgreSQL server tests create their databases on (trust auth, user postgres).
pub fn postgres_admin_url() -> String {
    std::env::var("TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// The Redis server tests use.
pub fn redis_url() -> String {
    std::env::var("TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

/// Which store a test runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Db {
    Postgres,
    Sqlite,
}

/// A database that exists only for one test: a randomly named PostgreSQL database (dropped
/// after) or a SQLite file in a temporary directory (removed after).
pub struct TestDb {
    pub kind: Db,
    /// The URL the application connects to.
    pub url: String,
    name: String,
    dir: Option<PathBuf>,
    /// The PostgreSQL server's admin URL, where the database is dropped.
    admin: String,
}

impl TestDb {
    pub async fn create(kind: Db) -> TestDb {
        Self::create_on(kind, postgres_admin_url()).await
    }

    /// A fresh database on the PostgreSQL server at `admin` (a server of the test's own).
    pub async fn create_on(kind: Db, admin: String) -> TestDb {
        let name = format!("mealkitz_test_{}", uuid::Uuid::new_v4().simple());
        match kind {
            Db::Postgres => {
                let mut connection = PgConnection::connect(&admin)
                    .await
                    .expect("PostgreSQL must be reachable at TEST_DATABASE_URL");
                sqlx::query(AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
                    .execute(&mut connection)
                    .await
                    .expect("create test database");
                let base = admin.rsplit_once('/').map(|(base, _)| base).unwrap();
                TestDb {
                    kind,
                    url: format!("{base}/{name}"),
                    name,
                    dir: None,
                    admin,
                }
            }
            Db::Sqlite => {
                let dir = std::env::temp_dir().join(&name);
                std::fs::create_dir_all(&dir).expect("create temp dir");
                TestDb {
                    kind,
                    url: format!("sqlite://{}", dir.join("mealkitz.db").display()),
                    name,
                    dir: Some(dir),
                    admin,
                }
            }
        }
    }

    pub fn database_url(&self) -> DatabaseUrl {
        match self.kind {
            Db::Postgres => DatabaseUrl::Postgres(Secret::new(self.url.clone())),
            Db::Sqlite => DatabaseUrl::Sqlite(self.url.clone()),
        }
    }

    pub fn config(&self) -> DatabaseConfig {
        DatabaseConfig {
            url: self.database_url(),
            max_connections: 5,
            ..DatabaseConfig::default()
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Some(dir) = &self.dir {
            let _ = std::fs::remove_dir_all(dir);
            return;
        }
        let name = self.name.clone();
        let admin = self.admin.clone();
        // Drop runs outside any async context we could block on; use a private runtime.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let mut connection = PgConnection::connect(&admin).await?;
                sqlx::query(AssertSqlSafe(format!(
                    "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
                )))
                .execute(&mut connection)
                .await
                .map(drop)
            })
        })
        .join();
        if let Ok(Err(error)) = dropped {
            eprintln!("could not drop test database: {error}");
        }
    }
}

fn init_test_logs() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if std::env::var_os("TEST_LOG").is_some() {
            mealkitz::telemetry::init_tracing(LogFormat::Pretty);
        }
    });
}

/// A store handle on `db`, migrated: for setting up rows directly.
pub async fn migrated_store(db: &TestDb) -> Store {
    let store = Store::open(&db.config()).unwrap();
    store.migrate().await.expect("migrations apply");
    store
}

/// A user row to create directly in a store (the password hash is a placeholder: such users
/// do not log in).
pub fn new_user(email: &str, role: Role) -> NewUser {
    NewUser {
        email: Email::parse(email).unwrap(),
        name: "Test".to_owned(),
        role,
        password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".to_owned(),
    }
}

/// A configuration for a test application: port 0 on loopback, one worker, the given database.
pub fn test_config(db: &TestDb) -> Config {
    config_for(db.database_url())
}

/// The test configuration for any database URL: the real settings, parsed from the flags below
/// (never from the environment), then the few fields no flag sets.
pub fn config_for(url: DatabaseUrl) -> Config {
    let webhook_secret = format!("--webhook-secret={TEST_WEBHOOK_SECRET}");
    let mut config = Config::from_args([
        "--bind=127.0.0.1:0",
        "--http-workers=1",
        "--db-max-connections=5",
        "--token-ttl-secs=3600",
        &webhook_secret,
        // Tests sign many users in from one address; the limits get their own tests.
        "--login-failures-per-address-per-minute=100000",
        "--checkouts-per-minute=100000",
    ])
    .expect("the test settings are valid");
    config.database.url = url;
    config.dispatch.fault_injection = true;
    config
}

/// `config` with Redis at `url`, under a key prefix of its own so that tests run in parallel.
pub fn with_redis(mut config: Config, url: &str) -> Config {
    let redis_url = format!("--redis-url={url}");
    let prefix = format!("--redis-key-prefix=test-{}:", uuid::Uuid::new_v4().simple());
    config.redis = Config::from_args([redis_url.as_str(), prefix.as_str()])
        .expect("the test's Redis settings are valid")
        .redis;
    config
}

/// A running application and a client for it.
pub struct TestApp {
    pub address: String,
    pub client: reqwest::Client,
    pub db: TestDb,
    pub engine: Engine,
    handle: StopHandle,
    /// The service's OpenAPI document, fetched on first use: every response the helpers see is
    /// checked against it.
    openapi: tokio::sync::OnceCell<Value>,
}

/// Starts an application on a fresh database and waits until it is ready.
pub async fn spawn_app(kind: Db) -> TestApp {
    let db = TestDb::create(kind).await;
    let config = test_config(&db);
    spawn_app_with(db, config).await
}

/// Starts an application on `db` with `config` and waits until it is ready.
pub async fn spawn_app_with(db: TestDb, config: Config) -> TestApp {
    let app = start(db, config).await;
    app.wait_until_ready().await;
    app
}

/// A running application whose database the caller owns (the child engine of recovery tests,
/// a second replica on a shared database).
pub struct Running {
    pub engine: Engine,
    pub address: String,
    pub handle: StopHandle,
}

impl Running {
    pub async fn wait_until_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self.engine.is_ready() {
            assert!(Instant::now() < deadline, "engine not ready after 30 s");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Starts an application on a database that someone else owns.
pub async fn start_without_db(config: Config) -> Running {
    init_test_logs();
    let application = Application::build(config)
        .await
        .expect("application builds");
    let running = Running {
        engine: application.engine(),
        address: format!("http://127.0.0.1:{}", application.port()),
        handle: application.stop_handle(),
    };
    actix_web::rt::spawn(application.run_until_stopped());
    running
}

/// Starts an application without waiting for readiness.
pub async fn start(db: TestDb, config: Config) -> TestApp {
    init_test_logs();
    let application = Application::build(config)
        .await
        .expect("application builds");
    let address = format!("http://127.0.0.1:{}", application.port());
    let handle = application.stop_handle();
    let engine = application.engine();
    actix_web::rt::spawn(application.run_until_stopped());
    TestApp {
        address,
        engine,
        client: reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            // Shorter than the server's keep-alive (5 s), so that the client never reuses a
            // connection the server is closing that instant (an `IncompleteMessage` error).
            .pool_idle_timeout(Duration::from_secs(2))
            .build()
            .unwrap(),
        db,
        handle,
        openapi: tokio::sync::OnceCell::new(),
    }
}

/// A response, read whole.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
    pub text: String,
}

impl Reply {
    pub async fn read(response: reqwest::Response) -> Reply {
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let text = response.text().await.expect("read body");
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Reply {
            status,
            headers,
            body,
            text,
        }
    }

    /// The `error.code` of a standard error body.
    pub fn error_code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("<none>")
    }

    /// Asserts the status, showing the body when it differs.
    #[track_caller]
    pub fn assert_status(&self, status: u16) {
        assert_eq!(self.status, status, "body: {}", self.text);
    }

    /// Asserts the standard error shape with `status` and `code`.
    #[track_caller]
    pub fn assert_error(&self, status: u16, code: &str) {
        assert_eq!(self.status, status, "body: {}", self.text);
        assert_eq!(self.error_code(), code, "body: {}", self.text);
        assert!(
            self.body["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "error has no message: {}",
            self.text
        );
        let content_type = self
            .headers
            .get("content-type")
            .and_then(|v| v.to_str().ok());
        assert_eq!(
            content_type,
            Some("application/json"),
            "body: {}",
            self.text
        );
    }
}

/// A registered, logged-in user.
pub struct Session {
    pub id: String,
    pub email: String,
    pub token: String,
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.address, path)
    }

    /// Sends a request and checks the response against the OpenAPI document.
    pub async fn request(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        headers: &[(&str, &str)],
        body: Option<&Value>,
    ) -> Reply {
        let mut request = self.client.request(method.parse().unwrap(), self.url(path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let reply = Reply::read(request.send().await.expect("request sent")).await;
        if path != "/openapi.json" {
            let doc = self
                .openapi
                .get_or_init(|| async {
                    let response = self
                        .client
                        .get(self.url("/openapi.json"))
                        .send()
                        .await
                        .unwrap();
                    response.json().await.unwrap()
                })
                .await;
            crate::openapi::check_response(
                doc,
                method,
                path,
                reply.status,
                &reply.body,
                &reply.text,
            );
        }
        reply
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.request("GET", path, None, &[], None).await
    }

    pub async fn get_authed(&self, path: &str, token: &str) -> Reply {
        self.request("GET", path, Some(token), &[], None).await
    }

    pub async fn post_json(&self, path: &str, body: &Value) -> Reply {
        self.request("POST", path, None, &[], Some(body)).await
    }

    pub async fn post_authed(&self, path: &str, token: &str, body: &Value) -> Reply {
        self.request("POST", path, Some(token), &[], Some(body))
            .await
    }

    pub async fn put_authed(&self, path: &str, token: &str, body: &Value) -> Reply {
        self.request("PUT", path, Some(token), &[], Some(body))
            .await
    }

    pub async fn register(&self, email: &str, password: &str, role: &str) -> Reply {
        self.post_json(
            "/api/v1/users",
            &json!({ "email": email, "password": password, "name": "Test User", "role": role }),
        )
        .await
    }

    pub async fn login(&self, email: &str, password: &str) -> Reply {
        self.post_json(
            "/api/v1/sessions",
            &json!({ "email": email, "password": password }),
        )
        .await
    }

    /// Registers a user with a unique email and `role`, logs in, and returns the session.
    pub async fn signed_up(&self, role: &str) -> Session {
        let email = format!("{}-{}@example.com", role, uuid::Uuid::new_v4().simple());
        let registered = self.register(&email, "correct horse battery", role).await;
        assert_eq!(registered.status, 201, "{}", registered.text);
        let session = self.login(&email, "correct horse battery").await;
        assert_eq!(session.status, 200, "{}", session.text);
        Session {
            id: registered.body["id"].as_str().unwrap().to_owned(),
            email,
            token: session.body["token"].as_str().unwrap().to_owned(),
        }
    }

    /// Polls `/ready` until it answers 200.
    pub async fn wait_until_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let reply = self.get("/ready").await;
            if reply.status == 200 {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "application not ready after 30 s: {}",
                reply.text
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stops the application gracefully (sockets are told first).
    pub async fn stop_gracefully(&self) {
        self.handle.stop(true).await;
    }

    /// Stops the server (dropping requests in flight) and hands back the database, so that a
    /// second application can start on it.
    pub async fn stop(self) -> TestDb {
        self.handle.stop(false).await;
        self.db
    }
}

/// Runs `$body` with `$pool` a fresh pool on test database `$db` (PostgreSQL or SQLite, the
/// same statement text for both), closed afterwards; yields what `$body` gives.
macro_rules! with_db_pool {
    ($db:expr, |$pool:ident| $body:expr) => {
        match $db.kind {
            $crate::helpers::Db::Postgres => {
                let $pool = sqlx::PgPool::connect(&$db.url).await.unwrap();
                let out = $body;
                $pool.close().await;
                out
            }
            $crate::helpers::Db::Sqlite => {
                let $pool = sqlx::SqlitePool::connect(&$db.url).await.unwrap();
                let out = $body;
                $pool.close().await;
                out
            }
        }
    };
}
pub(crate) use with_db_pool;

/// Declares one test per backend: `mod name { postgres(); sqlite(); }`, each with a fresh
/// application bound to `$app`.
macro_rules! on_both_backends {
    ($(async fn $name:ident($app:ident) $body:block)*) => {
        $(
            mod $name {
                #[allow(unused_imports)]
                use super::*;

                #[actix_web::test]
                async fn postgres() {
                    let $app = $crate::helpers::spawn_app($crate::helpers::Db::Postgres).await;
                    $body
                }

                #[actix_web::test]
                async fn sqlite() {
                    let $app = $crate::helpers::spawn_app($crate::helpers::Db::Sqlite).await;
                    $body
                }
            }
        )*
    };
}
pub(crate) use on_both_backends;

/// Declares one test per backend for cases written as `async fn case(db: Db)`:
/// `test_name => case;` becomes `mod test_name { postgres(); sqlite(); }`.
macro_rules! each_backend {
    ($($name:ident => $case:ident;)*) => {
        $(
            mod $name {
                #[actix_web::test]
                async fn postgres() {
                    super::$case($crate::helpers::Db::Postgres).await;
                }

                #[actix_web::test]
                async fn sqlite() {
                    super::$case($crate::helpers::Db::Sqlite).await;
                }
            }
        )*
    };
}
pub(crate) use each_backend;

// ---- Dispatch fixtures shared by the test files: places in the demo city, drivers with their
// feeds, orders placed through the engine. (Imported here rather than at the top, so that this
// section reads, and moves, as one piece.)

use mealkitz::actors::{DriverFeed, OfferView};
use mealkitz::config::DispatchConfig;
use mealkitz::domain::{
    Cents, MerchantId, NewOrder, OrderId, OrderItem, OrderView, Position, UserId,
};
use mealkitz::geo::LatLon;
use tokio::sync::mpsc::Receiver;

/// The demo city's centre: the corner of its four regions (nw, ne, sw, se).
const DEMO_CENTRE: Position = Position {
    lat: 40.75,
    lon: -73.98,
};
/// How long a test waits for something that should happen promptly.
pub const PROMPTLY_SECS: u64 = 5;

/// `position` moved `north_m` metres north and `east_m` metres east (negative: south, west).
pub fn offset_m(position: Position, north_m: f64, east_m: f64) -> Position {
    let LatLon { lat, lon } = LatLon {
        lat: position.lat,
        lon: position.lon,
    }
    .offset_m(north_m, east_m);
    Position { lat, lon }
}

/// How far north and east of the demo city's centre `position` is, in metres.
pub fn from_centre_m(position: Position) -> (f64, f64) {
    let point = |p: Position| LatLon {
        lat: p.lat,
        lon: p.lon,
    };
    point(position).offset_m_from(point(DEMO_CENTRE))
}

/// A point `north_m` and `east_m` metres from the demo city's centre (the corner of its four
/// regions: nw, ne, sw, se).
pub fn at(north_m: f64, east_m: f64) -> Position {
    offset_m(DEMO_CENTRE, north_m, east_m)
}

/// Starts an application with dispatch settings adjusted by `tune`.
pub async fn dispatch_app(kind: Db, tune: impl FnOnce(&mut DispatchConfig)) -> TestApp {
    let db = TestDb::create(kind).await;
    let mut config = test_config(&db);
    tune(&mut config.dispatch);
    spawn_app_with(db, config).await
}

/// A driver of the engine, with its feed.
pub struct Driver {
    pub id: UserId,
    pub feed: Receiver<DriverFeed>,
}

impl TestApp {
    pub async fn user_id(&self, role: &str) -> UserId {
        self.signed_up(role).await.id.parse().unwrap()
    }

    /// A driver online and available at `position`, with its feed open.
    pub async fn driver_at(&self, position: Position) -> Driver {
        let id = self.user_id("driver").await;
        let (_, _, feed) = self
            .engine
            .subscribe(SubscribeDriver::new(id))
            .await
            .map(|(snapshot, feed)| (snapshot.status, snapshot.active, feed))
            .unwrap();
        self.engine
            .execute(DriverAvailability {
                driver: id,
                available: true,
            })
            .await
            .unwrap();
        self.engine
            .execute(DriverLocation {
                driver: id,
                lat: position.lat,
                lon: position.lon,
                ts_ms: None,
            })
            .await
            .unwrap();
        Driver { id, feed }
    }

    /// Places an order of a new customer at a new merchant, picked up at `pickup`, and has the
    /// merchant accept it with `prep_minutes`: an order dispatch now offers to drivers.
    pub async fn accepted_at(
        &self,
        pickup: Position,
        prep_minutes: u32,
    ) -> (MerchantId, OrderView) {
        let customer = self.user_id("customer").await;
        let merchant = MerchantId::new();
        let order = self.place_at(customer, merchant, pickup).await;
        self.engine
            .execute(MerchantAccept {
                merchant_id: merchant,
                order_id: order.id,
                prep_minutes,
            })
            .await
            .expect("the merchant accepts");
        (merchant, order)
    }

    /// Places an order picked up at `pickup` and delivered 1 km north of it.
    pub async fn place_at(
        &self,
        customer: UserId,
        merchant: MerchantId,
        pickup: Position,
    ) -> OrderView {
        let dropoff = offset_m(pickup, 1_000.0, 0.0);
        self.engine
            .execute(PlaceOrder {
                order: NewOrder {
                    id: OrderId::new(),
                    merchant_id: merchant,
                    customer_id: customer,
                    items: vec![OrderItem {
                        menu_item_id: None,
                        name: "Meal kit".into(),
                        quantity: 1,
                        unit_price_cents: Cents(1500),
                    }],
                    delivery_fee_cents: Cents(0),
                    total_cents: Cents(1999),
                    pickup,
                    dropoff,
                    dropoff_address: "1 Test Street".into(),
                    pickup_address: "1 Kitchen Street".into(),
                },
            })
            .await
            .expect("order placed")
    }
}

/// An order placed at `pickup`, accepted by its merchant, and the offer its nearby driver got.
pub async fn offered(
    app: &TestApp,
    pickup: Position,
) -> (Driver, MerchantId, OrderView, OfferView) {
    let mut driver = app
        .driver_at(Position {
            lat: pickup.lat + 0.002,
            lon: pickup.lon,
        })
        .await;
    let (merchant, order) = app.accepted_at(pickup, 10).await;
    let offer = next_offer(&mut driver, Duration::from_secs(PROMPTLY_SECS))
        .await
        .expect("an offer");
    (driver, merchant, order, offer)
}

/// The next offer on a driver's feed, skipping other messages.
pub async fn next_offer(driver: &mut Driver, within: Duration) -> Option<OfferView> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, driver.feed.recv()).await {
            Ok(Some(DriverFeed::Offer(offer))) => return Some(*offer),
            Ok(Some(_)) => continue,
            Ok(None) | Err(_) => return None,
        }
    }
}
