//! `mealkitz serve` child processes of one deployment on a fresh PostgreSQL database (and, when
//! asked, Redis under a key prefix of their own), for the tests that run the real binary: each
//! started behind a watchdog that SIGKILLs it when the test lets go, waited for until ready,
//! killed on demand, and called over REST with retries while it is busy or gone. A user, a
//! merchant with a menu and an order are made through them the same way in every such test.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use mealkitz::domain::Position;
use serde_json::{Value, json};
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;

use crate::helpers::{Db, Reply, Session, TestDb, at, offset_m, redis_url};

const BINARY: &str = env!("CARGO_BIN_EXE_mealkitz");
/// Lease TTL of the processes: a killed process's regions are free this long after its last
/// renewal.
const LEASE_TTL_SECS: u64 = 3;
/// One signing secret for every process, so that a token from one is good on all and after a
/// restart (and no process races another to generate and store one).
const JWT_SECRET: &str = "processes-test-jwt-secret-0123456789abcdef";
const PASSWORD: &str = "correct horse battery";
/// How long a REST call may keep failing with a retryable error (its region between owners) or
/// keep finding no process, and how long a socket waits for something that should come.
pub(crate) const RETRY_WINDOW: Duration = Duration::from_secs(15);
/// How long a process may take to become ready.
const READY_WITHIN: Duration = Duration::from_secs(30);
/// Error codes that mean "not now": the request is sent again.
pub(crate) const RETRYABLE: [&str; 3] =
    ["dispatch_unavailable", "store_unavailable", "actor_failed"];
/// Pause before a retry.
pub(crate) const BACKOFF: Duration = Duration::from_millis(250);
/// Lines of each process's log kept, printed when a test fails.
const LOG_TAIL_LINES: usize = 100;

/// Runs `mealkitz serve` ("$0") in the background and prints its pid; kills it with SIGKILL as
/// soon as its stdin closes, whether the test closed it (a kill, or the end of the test) or the
/// test process went away (a nextest timeout), so that no replica outlives its test. The shell
/// drops its own copies of stdout and stderr, so the replica's stderr ends when the replica does.
const WATCHDOG: &str = r#""$0" serve --bind 127.0.0.1:0 >/dev/null &
pid=$!
echo "$pid"
exec >/dev/null 2>/dev/null
while read -r _; do :; done
kill -9 "$pid"
wait "$pid"
exit 0
"#;

/// One `mealkitz serve` child process.
pub(crate) struct Replica {
    /// "#1", "#2", … in the order the test started them.
    pub(crate) name: String,
    /// Its `MEALKITZ_NODE_ID`; the process adds a random suffix, so its lease rows and member
    /// row start with this.
    pub(crate) node: String,
    pub(crate) address: String,
    /// The watchdog shell; the replica dies when `watchdog` (the shell's stdin) is dropped.
    shell: Child,
    watchdog: Option<ChildStdin>,
    log: Arc<Mutex<VecDeque<String>>>,
    /// Set once the replica's stderr ended: it exited.
    pub(crate) exited: Arc<AtomicBool>,
    pub(crate) alive: bool,
}

impl Replica {
    /// Starts a replica and waits until it listens (not until it is ready).
    pub(crate) async fn spawn(
        number: usize,
        node: String,
        settings: &[(&'static str, String)],
    ) -> Replica {
        let name = format!("#{number}");
        let mut command = Command::new("sh");
        command
            .arg("-c")
            .arg(WATCHDOG)
            .arg(BINARY)
            .current_dir(std::env::temp_dir());
        for (key, _) in std::env::vars() {
            if key.starts_with("MEALKITZ_") || key == "DATABASE_URL" || key == "REDIS_URL" {
                command.env_remove(key);
            }
        }
        command
            .env("RUST_LOG", "info")
            .env("MEALKITZ_LOG_FORMAT", "json")
            .env("MEALKITZ_NODE_ID", &node);
        for (key, value) in settings {
            command.env(key, value);
        }
        let mut shell = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the watchdog shell");
        let watchdog = shell.stdin.take();
        let mut pid = String::new();
        BufReader::new(shell.stdout.take().unwrap())
            .read_line(&mut pid)
            .expect("the watchdog prints the replica's pid");
        assert!(
            pid.trim().parse::<u32>().is_ok(),
            "replica {name}: no pid from the watchdog: {pid:?}"
        );

        let log = Arc::new(Mutex::new(VecDeque::new()));
        let exited = Arc::new(AtomicBool::new(false));
        let (port_tx, port_rx) = mpsc::channel();
        {
            let stderr = shell.stderr.take().unwrap();
            let (log, exited, name) = (log.clone(), exited.clone(), name.clone());
            let echo = std::env::var_os("TEST_LOG").is_some();
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    if echo {
                        eprintln!("[replica {name}] {line}");
                    }
                    if let Ok(entry) = serde_json::from_str::<Value>(&line)
                        && entry["message"] == "mealkitz listening"
                        && let Some(port) = entry["port"].as_u64()
                    {
                        let _ = port_tx.send(port);
                    }
                    // Every request is logged; the tail keeps what else happened.
                    if line.contains("\"message\":\"request served\"") {
                        continue;
                    }
                    let mut tail = log.lock().unwrap();
                    if tail.len() == LOG_TAIL_LINES {
                        tail.pop_front();
                    }
                    tail.push_back(line);
                }
                exited.store(true, Ordering::SeqCst);
            });
        }
        let mut replica = Replica {
            name,
            node,
            address: String::new(),
            shell,
            watchdog,
            log,
            exited,
            alive: true,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        let port = loop {
            match port_rx.try_recv() {
                Ok(port) => break port,
                Err(mpsc::TryRecvError::Disconnected) => {
                    panic!(
                        "replica {} exited before listening:\n{}",
                        replica.name,
                        replica.log_tail()
                    )
                }
                Err(mpsc::TryRecvError::Empty) => {
                    assert!(
                        Instant::now() < deadline,
                        "replica {} did not log its port within 30 s:\n{}",
                        replica.name,
                        replica.log_tail()
                    );
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        };
        replica.address = format!("http://127.0.0.1:{port}");
        replica
    }

    /// Kills the replica with SIGKILL (through the watchdog) and reaps it.
    pub(crate) fn kill(&mut self) {
        if !self.alive {
            return;
        }
        self.alive = false;
        drop(self.watchdog.take());
        let _ = self.shell.wait();
    }

    pub(crate) fn log_tail(&self) -> String {
        self.log
            .lock()
            .map(|tail| tail.iter().cloned().collect::<Vec<_>>().join("\n"))
            .unwrap_or_default()
    }

    /// Whether a lease or member row's `owner` names this process.
    pub(crate) fn owns(&self, owner: &str) -> bool {
        owner.starts_with(&self.node)
    }
}

/// A merchant with a two-item menu, made through REST.
pub(crate) struct Shop {
    pub(crate) owner: Session,
    pub(crate) merchant_id: String,
    /// Menu item ids.
    pub(crate) items: Vec<String>,
    pub(crate) location: Position,
}

/// Processes of one deployment on a fresh database (and a Redis key prefix of their own when they
/// use Redis). Dropping it kills every process still running (also when the test panics, which
/// prints their logs), removes the Redis keys, and then drops the database.
pub(crate) struct Processes {
    processes: Vec<Replica>,
    /// Environment every process gets.
    settings: Vec<(&'static str, String)>,
    /// Prefix of this test's node ids.
    tag: String,
    redis_prefix: Option<String>,
    /// For reading the database directly.
    pool: PgPool,
    http: reqwest::Client,
    /// Dropped last, after the processes are dead.
    db: TestDb,
}

impl Processes {
    /// A fresh PostgreSQL database (and, with `redis`, a fresh Redis key prefix) for processes
    /// started with `extra` settings on top of the common ones; none is running yet.
    pub(crate) async fn new(redis: bool, extra: Vec<(&'static str, String)>) -> Processes {
        let db = TestDb::create(Db::Postgres).await;
        let id = uuid::Uuid::new_v4().simple().to_string();
        let redis_prefix = redis.then(|| format!("test-{id}:"));
        let mut settings = vec![
            ("DATABASE_URL", db.url.clone()),
            ("MEALKITZ_LEASE_TTL_SECS", LEASE_TTL_SECS.to_string()),
            ("MEALKITZ_JWT_SECRET", JWT_SECRET.to_owned()),
            ("MEALKITZ_HTTP_WORKERS", "2".to_owned()),
            ("MEALKITZ_DB_MAX_CONNECTIONS", "5".to_owned()),
            ("MEALKITZ_CHECKOUTS_PER_MINUTE", "1000".to_owned()),
        ];
        if let Some(prefix) = &redis_prefix {
            settings.push(("REDIS_URL", redis_url()));
            settings.push(("MEALKITZ_REDIS_KEY_PREFIX", prefix.clone()));
        }
        settings.extend(extra);
        let pool = PgPoolOptions::new()
            .max_connections(2)
            .connect_lazy(&db.url)
            .expect("a pool on the test database");
        Processes {
            processes: Vec::new(),
            settings,
            tag: format!("t{}", &id[..8]),
            redis_prefix,
            pool,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap(),
            db,
        }
    }

    /// Starts `count` processes side by side and waits until each is ready.
    pub(crate) async fn start(&mut self, count: usize) {
        let first = self.processes.len();
        for _ in 0..count {
            self.spawn().await;
        }
        for process in first..first + count {
            self.wait_ready(process).await;
        }
    }

    /// Starts one more process and waits until it is ready; its index.
    pub(crate) async fn add(&mut self) -> usize {
        let process = self.spawn().await;
        self.wait_ready(process).await;
        process
    }

    async fn spawn(&mut self) -> usize {
        let number = self.processes.len() + 1;
        let node = format!("{}-r{number}", self.tag);
        let process = Replica::spawn(number, node, &self.settings).await;
        self.processes.push(process);
        number - 1
    }

    /// Polls `/ready` until it answers 200: the process has joined (it need not own a region).
    async fn wait_ready(&self, process: usize) {
        let deadline = Instant::now() + READY_WITHIN;
        let url = format!("{}/ready", self.processes[process].address);
        loop {
            let last = match self.http.get(&url).send().await {
                Ok(response) if response.status().as_u16() == 200 => return,
                Ok(response) => {
                    let status = response.status().as_u16();
                    format!("{status} {}", response.text().await.unwrap_or_default())
                }
                Err(error) => error.to_string(),
            };
            let p = &self.processes[process];
            assert!(
                !p.exited.load(Ordering::SeqCst),
                "process {} exited before it was ready:\n{}",
                p.name,
                p.log_tail()
            );
            assert!(
                Instant::now() < deadline,
                "process {} not ready after {READY_WITHIN:?}: {last}\n{}",
                p.name,
                p.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The database the processes use (to migrate or read it directly).
    pub(crate) fn db(&self) -> &TestDb {
        &self.db
    }

    /// A pool on the database, for reading it directly.
    pub(crate) fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Every process started so far, killed ones too, in the order they were started.
    pub(crate) fn all(&self) -> &[Replica] {
        &self.processes
    }

    pub(crate) fn name(&self, process: usize) -> &str {
        &self.processes[process].name
    }

    pub(crate) fn live(&self) -> Vec<usize> {
        (0..self.processes.len())
            .filter(|&i| self.processes[i].alive)
            .collect()
    }

    /// The first live process from `from` on (wrapping).
    pub(crate) fn next_live(&self, from: usize) -> usize {
        let n = self.processes.len();
        (0..n)
            .map(|k| (from + k) % n)
            .find(|&i| self.processes[i].alive)
            .expect("a live process")
    }

    /// Kills process `process` with SIGKILL.
    pub(crate) fn kill(&mut self, process: usize) {
        self.processes[process].kill();
    }

    /// The live process a lease, member or claim row's `owner` names, if any.
    pub(crate) fn process_of(&self, owner: &str) -> Option<usize> {
        self.processes.iter().position(|p| p.alive && p.owns(owner))
    }

    /// Each process's name, node id and whether it still runs, for failure messages.
    pub(crate) fn nodes(&self) -> Vec<String> {
        self.processes
            .iter()
            .map(|p| {
                let state = if p.alive { "live" } else { "killed" };
                format!("{} {} ({state})", p.name, p.node)
            })
            .collect()
    }

    /// A REST call on `via` (or the next live process if it is gone), retried while the answer
    /// is a 503 with a retryable code or the process cannot be reached.
    pub(crate) async fn rest(
        &self,
        via: usize,
        method: &str,
        path: &str,
        token: Option<&str>,
        headers: &[(&str, &str)],
        body: Option<&Value>,
    ) -> Reply {
        let deadline = Instant::now() + RETRY_WINDOW;
        let mut process = self.next_live(via);
        loop {
            let url = format!("{}{path}", self.processes[process].address);
            let mut request = self.http.request(method.parse().unwrap(), url);
            if let Some(token) = token {
                request = request.bearer_auth(token);
            }
            for (name, value) in headers {
                request = request.header(*name, *value);
            }
            if let Some(body) = body {
                request = request.json(body);
            }
            let last = match request.send().await {
                Ok(response) => {
                    let reply = Reply::read(response).await;
                    if reply.status != 503 || !RETRYABLE.contains(&reply.error_code()) {
                        return reply;
                    }
                    format!("{} {}", reply.status, reply.text)
                }
                Err(error) => {
                    process = self.next_live(process + 1);
                    error.to_string()
                }
            };
            assert!(
                Instant::now() < deadline,
                "{method} {path} still failing after {RETRY_WINDOW:?}: {last}"
            );
            tokio::time::sleep(BACKOFF).await;
        }
    }

    /// Registers a user with `role` on `via` and logs in on the next process.
    pub(crate) async fn sign_up(&self, via: usize, role: &str) -> Session {
        let email = format!("{role}-{}@example.com", uuid::Uuid::new_v4().simple());
        let registered = self
            .rest(
                via,
                "POST",
                "/api/v1/users",
                None,
                &[],
                Some(&json!({"email": email, "password": PASSWORD, "name": "Test User", "role": role})),
            )
            .await;
        assert_eq!(registered.status, 201, "{}", registered.text);
        let session = self
            .rest(
                via + 1,
                "POST",
                "/api/v1/sessions",
                None,
                &[],
                Some(&json!({"email": email, "password": PASSWORD})),
            )
            .await;
        assert_eq!(session.status, 200, "{}", session.text);
        Session {
            id: registered.body["id"].as_str().unwrap().to_owned(),
            email,
            token: session.body["token"].as_str().unwrap().to_owned(),
        }
    }

    /// A merchant user and its merchant at `north_m`, `east_m` of the city centre, with a menu.
    pub(crate) async fn open_shop(&self, via: usize, north_m: f64, east_m: f64) -> Shop {
        let owner = self.sign_up(via, "merchant").await;
        let location = at(north_m, east_m);
        let created = self
            .rest(
                via,
                "POST",
                "/api/v1/merchants",
                Some(&owner.token),
                &[],
                Some(&json!({"name": "Test Kitchen", "address": "1 Test Street", "location": location})),
            )
            .await;
        assert_eq!(created.status, 201, "{}", created.text);
        let merchant_id = created.body["id"].as_str().unwrap().to_owned();
        let menu = self
            .rest(
                via,
                "PUT",
                &format!("/api/v1/merchants/{merchant_id}/menu"),
                Some(&owner.token),
                &[],
                Some(&json!({"items": [
                    {"name": "Ramen kit", "price_cents": 1250},
                    {"name": "Gyoza (6)", "price_cents": 599},
                ]})),
            )
            .await;
        assert_eq!(menu.status, 200, "{}", menu.text);
        let items = menu.body["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|item| item["id"].as_str().unwrap().to_owned())
            .collect();
        Shop {
            owner,
            merchant_id,
            items,
            location,
        }
    }

    /// Checks out an order at `shop` (delivered 1 km north of it, paid by card) on `via`: the
    /// order, placed.
    pub(crate) async fn checkout(&self, via: usize, customer: &Session, shop: &Shop) -> Value {
        let dropoff = offset_m(shop.location, 1_000.0, 0.0);
        let body = json!({
            "merchant_id": shop.merchant_id,
            "items": [
                {"menu_item_id": shop.items[0], "quantity": 2},
                {"menu_item_id": shop.items[1], "quantity": 1},
            ],
            "dropoff": {"lat": dropoff.lat, "lon": dropoff.lon, "address": "5 Customer Court"},
            "payment_method": "pm_card_visa",
        });
        let key = uuid::Uuid::new_v4().to_string();
        let placed = self
            .rest(
                via,
                "POST",
                "/api/v1/orders",
                Some(&customer.token),
                &[("Idempotency-Key", key.as_str())],
                Some(&body),
            )
            .await;
        assert_eq!(placed.status, 201, "{}", placed.text);
        assert_eq!(placed.body["status"], "placed", "{}", placed.text);
        placed.body
    }
}

impl Drop for Processes {
    fn drop(&mut self) {
        let failed = std::thread::panicking();
        for process in &mut self.processes {
            let was_alive = process.alive;
            process.kill();
            if failed {
                let state = if was_alive {
                    ""
                } else {
                    ", killed by the test"
                };
                eprintln!(
                    "---- process {} ({}{state}), last log lines ----\n{}",
                    process.name,
                    process.node,
                    process.log_tail()
                );
            }
        }
        if let Some(prefix) = self.redis_prefix.clone() {
            // Drop runs outside any async context we could block on; use a private runtime.
            let removed = std::thread::spawn(move || {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap()
                    .block_on(remove_redis_keys(&prefix))
            })
            .join();
            if let Ok(Err(error)) = removed {
                eprintln!("could not remove the test's Redis keys: {error}");
            }
        }
    }
}

/// Deletes every Redis key under `prefix`.
pub(crate) async fn remove_redis_keys(prefix: &str) -> redis::RedisResult<()> {
    let client = redis::Client::open(redis_url())?;
    let mut connection = client.get_multiplexed_async_connection().await?;
    let mut cursor = 0u64;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{prefix}*"))
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut connection)
            .await?;
        if !keys.is_empty() {
            let () = redis::cmd("DEL")
                .arg(&keys)
                .query_async(&mut connection)
                .await?;
        }
        if next == 0 {
            return Ok(());
        }
        cursor = next;
    }
}
