//! What the load tools share: settings from the environment, login tokens signed with the
//! server's secret, and CPU accounting from /proc. (Each bench uses part of it.)
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use mealkitz::config::{DatabaseUrl, Secret};
use mealkitz::domain::{Role, UserId};
use serde_json::json;
use sqlx::{AssertSqlSafe, Connection, PgConnection};
use uuid::Uuid;

/// A whole-number setting from the environment, or `default`.
pub fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A number setting from the environment, or `default`.
pub fn env_f64_or(name: &str, default: f64) -> f64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A login token for `user` as `role`, valid for an hour, signed with `secret` (the server's
/// `MEALKITZ_JWT_SECRET`), so that the tool needs no login round trip per user.
pub fn token(secret: &str, user: UserId, role: Role) -> String {
    let exp = chrono::Utc::now().timestamp() + 3_600;
    let claims = json!({"sub": user, "role": role, "exp": exp, "iat": exp - 3_600});
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

/// utime + stime of a process (or, with a `task/<tid>` path, of one thread), in clock ticks,
/// with its command name.
pub fn stat_ticks(path: &str) -> Option<(String, u64)> {
    let stat = std::fs::read_to_string(format!("{path}/stat")).ok()?;
    let (head, tail) = stat.rsplit_once(')')?;
    let comm = head.split_once('(')?.1.to_owned();
    let fields: Vec<&str> = tail.split_whitespace().collect();
    Some((
        comm,
        fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?,
    ))
}

/// CPU ticks used by every process whose command name is `name` (e.g. `postgres`: the server and
/// each backend), in clock ticks. A process that exits between two readings takes its ticks with
/// it, so a difference undercounts by what such processes used.
pub fn command_ticks(name: &str) -> u64 {
    let Ok(processes) = std::fs::read_dir("/proc") else {
        return 0;
    };
    processes
        .filter_map(Result::ok)
        .filter(|entry| {
            entry
                .file_name()
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_digit())
        })
        .filter_map(|entry| stat_ticks(&entry.path().to_string_lossy()))
        .filter(|(comm, _)| comm == name)
        .map(|(_, ticks)| ticks)
        .sum()
}

/// CPU ticks a process has used, 0 if unreadable.
pub fn cpu_ticks(pid: u32) -> u64 {
    stat_ticks(&format!("/proc/{pid}")).map_or(0, |(_, ticks)| ticks)
}

/// Every thread of `pid`: tid → (name, ticks).
pub fn thread_ticks(pid: u32) -> HashMap<String, (String, u64)> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return HashMap::new();
    };
    tasks
        .filter_map(Result::ok)
        .filter_map(|task| {
            let tid = task.file_name().to_string_lossy().into_owned();
            Some((tid, stat_ticks(&task.path().to_string_lossy())?))
        })
        .collect()
}

/// The whole machine from /proc/stat, ticks over all cores.
#[derive(Clone, Copy)]
pub struct MachineTicks {
    pub busy: u64,
    /// Disk waits: a store that flushes on every commit shows here.
    pub iowait: u64,
    /// Interrupts and softirqs (loopback TCP is largely processed there).
    pub irq: u64,
    pub steal: u64,
    pub total: u64,
}

pub fn machine_ticks() -> MachineTicks {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let fields: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    let at = |i: usize| fields.get(i).copied().unwrap_or(0);
    // user nice system idle iowait irq softirq steal (guest time is inside user).
    let total: u64 = (0..8).map(at).sum();
    MachineTicks {
        busy: total - at(3) - at(4),
        iowait: at(4),
        irq: at(5) + at(6),
        steal: at(7),
        total,
    }
}

/// The store the server runs on, created fresh for the run and removed after it.
pub enum BenchStore {
    Postgres { admin: String, database: String },
    Sqlite { dir: std::path::PathBuf },
}

impl BenchStore {
    /// A fresh store of `kind` (`postgres`: a new database on `BENCH_DATABASE_URL`, default
    /// `postgres://postgres@127.0.0.1:5432/postgres`; `sqlite`: a new file), named after `tool`.
    pub async fn create(kind: &str, tool: &str) -> BenchStore {
        match kind {
            "postgres" => {
                let admin = std::env::var("BENCH_DATABASE_URL")
                    .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
                let database = format!("mealkitz_bench_{tool}_{}", Uuid::new_v4().simple());
                let mut connection = PgConnection::connect(&admin)
                    .await
                    .expect("PostgreSQL reachable at BENCH_DATABASE_URL");
                sqlx::query(AssertSqlSafe(format!("CREATE DATABASE \"{database}\"")))
                    .execute(&mut connection)
                    .await
                    .unwrap();
                BenchStore::Postgres { admin, database }
            }
            "sqlite" => {
                let dir = std::env::temp_dir()
                    .join(format!("mealkitz-{tool}-{}", Uuid::new_v4().simple()));
                std::fs::create_dir_all(&dir).unwrap();
                BenchStore::Sqlite { dir }
            }
            other => panic!("the store must be postgres or sqlite, not {other:?}"),
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            BenchStore::Postgres { .. } => "PostgreSQL",
            BenchStore::Sqlite { .. } => "SQLite",
        }
    }

    pub fn url(&self) -> String {
        match self {
            BenchStore::Postgres { admin, database } => {
                // Keep the admin URL's options (e.g. `?sslmode=disable`) for the fresh database.
                let (base, last) = admin.rsplit_once('/').unwrap();
                let options = last.split_once('?').map_or("", |(_, q)| q);
                let options = if options.is_empty() {
                    String::new()
                } else {
                    format!("?{options}")
                };
                format!("{base}/{database}{options}")
            }
            BenchStore::Sqlite { dir } => format!("sqlite://{}", dir.join("bench.db").display()),
        }
    }

    pub fn database_url(&self) -> DatabaseUrl {
        match self {
            BenchStore::Postgres { .. } => DatabaseUrl::Postgres(Secret::new(self.url())),
            BenchStore::Sqlite { .. } => DatabaseUrl::Sqlite(self.url()),
        }
    }

    pub async fn remove(self) {
        match self {
            BenchStore::Postgres { admin, database } => {
                if let Ok(mut connection) = PgConnection::connect(&admin).await {
                    let _ = sqlx::query(AssertSqlSafe(format!(
                        "DROP DATABASE \"{database}\" WITH (FORCE)"
                    )))
                    .execute(&mut connection)
                    .await;
                }
            }
            BenchStore::Sqlite { dir } => {
                let _ = std::fs::remove_dir_all(&dir);
            }
        }
    }
}

/// The release binary as a command, run under `BENCH_SERVER_WRAPPER` when that is set — a
/// profiler's command line such as `heaptrack -o /tmp/mealkitz` (split on whitespace). The
/// pid the tools print is then the wrapper's, and the server's own CPU and memory figures
/// describe the wrapper too: read them from the profiler instead.
pub fn server_command() -> Command {
    let binary = env!("CARGO_BIN_EXE_mealkitz");
    let wrapper = std::env::var("BENCH_SERVER_WRAPPER").unwrap_or_default();
    let mut words = wrapper.split_whitespace();
    match words.next() {
        None => Command::new(binary),
        Some(program) => {
            let mut command = Command::new(program);
            command.args(words).arg(binary);
            command
        }
    }
}

/// Starts `mealkitz serve` (the release binary) on a free loopback port with JSON logs and
/// `env` (which overrides these defaults); returns it and its port, read from its log
/// (`BENCH_SERVER_LOG=1` shows the log).
pub fn start_server(env: &[(&str, String)]) -> (Child, u16) {
    let mut child = server_command()
        .args(["serve", "--bind", "127.0.0.1:0"])
        .env("MEALKITZ_LOG_FORMAT", "json")
        .env("RUST_LOG", "info,mealkitz::api::middleware=warn")
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start mealkitz serve");
    let stderr = child.stderr.take().unwrap();
    let (port_tx, port_rx) = std::sync::mpsc::channel();
    // BENCH_SERVER_LOG=1 passes the server's log through.
    let echo = std::env::var("BENCH_SERVER_LOG").is_ok_and(|v| v == "1");
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if echo {
                eprintln!("server: {line}");
            }
            if let Ok(entry) = serde_json::from_str::<serde_json::Value>(&line)
                && entry["message"] == "mealkitz listening"
            {
                let _ = port_tx.send(entry["port"].as_u64().unwrap() as u16);
            }
        }
    });
    let port = port_rx
        .recv_timeout(Duration::from_secs(60))
        .expect("server port");
    (child, port)
}

/// Waits until the server on `port` answers `/ready` with 200.
pub async fn wait_ready(http: &reqwest::Client, port: u16) {
    while http
        .get(format!("http://127.0.0.1:{port}/ready"))
        .send()
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
        != 200
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until the two replicas whose node ids start with `a` and `b` hold two of the demo
/// city's four regions each; returns each region's owner.
pub async fn regions_shared_two_and_two(
    store: &mealkitz::store::Store,
    a: &str,
    b: &str,
) -> HashMap<String, String> {
    loop {
        let leases = store.region_leases().await.unwrap();
        let now_ms = mealkitz::store::unix_ms();
        let live: HashMap<String, String> = leases
            .into_iter()
            .filter(|(_, _, _, expires)| *expires > now_ms)
            .map(|(region, owner, _, _)| (region, owner))
            .collect();
        let held = |node: &str| live.values().filter(|o| o.starts_with(node)).count();
        if held(a) == 2 && held(b) == 2 {
            return live;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}
