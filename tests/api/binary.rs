//! The `mealkitz` binary itself: settings errors, migrate, admin create and graceful shutdown.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::helpers::{Db, TestDb};

const BINARY: &str = env!("CARGO_BIN_EXE_mealkitz");

/// A `mealkitz` command with a clean environment: only what the test passes is configured.
fn mealkitz(dir: &Path) -> Command {
    let mut command = Command::new(BINARY);
    command.current_dir(dir);
    for (key, _) in std::env::vars() {
        if key.starts_with("MEALKITZ_") || key == "DATABASE_URL" || key == "REDIS_URL" {
            command.env_remove(key);
        }
    }
    command
        .env("RUST_LOG", "info")
        .env("MEALKITZ_LOG_FORMAT", "json");
    command
}

fn run(command: &mut Command) -> Output {
    command.stdin(Stdio::null()).output().expect("run mealkitz")
}

fn stderr_lines(output: &Output) -> Vec<String> {
    String::from_utf8_lossy(&output.stderr)
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn serve_with_an_unparsable_bind_address_prints_one_line_and_exits_2() {
    let dir = tempdir();
    let output = run(mealkitz(&dir).args(["serve", "--bind", "nonsense"]));
    assert_eq!(output.status.code(), Some(2));
    let lines = stderr_lines(&output);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].contains("MEALKITZ_BIND"), "{lines:?}");
    assert!(!lines[0].contains("panicked"), "{lines:?}");
}

#[test]
fn each_wrong_setting_in_the_environment_exits_2_naming_it() {
    let dir = tempdir();
    let cases = [
        ("DATABASE_URL", "mysql://localhost/db"),
        ("MEALKITZ_BIND", "localhost"),
        ("REDIS_URL", "localhost:6379"),
        ("MEALKITZ_LOG_FORMAT", "xml"),
        ("MEALKITZ_JWT_SECRET", "too-short"),
        ("MEALKITZ_TOKEN_TTL_SECS", "soon"),
    ];
    for (key, value) in cases {
        let output = run(mealkitz(&dir).env(key, value));
        assert_eq!(output.status.code(), Some(2), "case {key}={value}");
        let lines = stderr_lines(&output);
        assert_eq!(lines.len(), 1, "case {key}={value}: {lines:?}");
        assert!(lines[0].contains(key), "case {key}={value}: {lines:?}");
    }
}

#[actix_web::test]
async fn migrate_creates_the_schema_on_a_new_postgres_database() {
    let db = TestDb::create(Db::Postgres).await;
    let dir = tempdir();
    let output = run(mealkitz(&dir).arg("migrate").env("DATABASE_URL", &db.url));
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let mut connection = <sqlx::PgConnection as sqlx::Connection>::connect(&db.url)
        .await
        .unwrap();
    let tables: Vec<(String,)> = sqlx::query_as(
        "SELECT table_name::text FROM information_schema.tables WHERE table_schema = 'public' ORDER BY 1",
    )
    .fetch_all(&mut connection)
    .await
    .unwrap();
    let tables: Vec<String> = tables.into_iter().map(|(t,)| t).collect();
    assert!(tables.contains(&"users".to_owned()), "{tables:?}");
    assert!(tables.contains(&"settings".to_owned()), "{tables:?}");
}

#[test]
fn migrate_against_an_unreachable_database_fails_with_status_1() {
    let dir = tempdir();
    let output = run(mealkitz(&dir)
        .arg("migrate")
        .env("DATABASE_URL", "postgres://postgres@127.0.0.1:1/nothing"));
    assert_eq!(output.status.code(), Some(1));
    assert!(!String::from_utf8_lossy(&output.stderr).contains("panicked"));
}

#[actix_web::test]
async fn admin_create_makes_an_admin_who_can_log_in() {
    let db = TestDb::create(Db::Sqlite).await;
    let dir = tempdir();
    let created = run(mealkitz(&dir)
        .args([
            "admin",
            "create",
            "--email",
            "Root@Example.com",
            "--password",
            "correct horse battery",
        ])
        .env("DATABASE_URL", &db.url));
    assert!(
        created.status.success(),
        "{}",
        String::from_utf8_lossy(&created.stderr)
    );

    let again = run(mealkitz(&dir)
        .args([
            "admin",
            "create",
            "--email",
            "root@example.com",
            "--password",
            "correct horse battery",
        ])
        .env("DATABASE_URL", &db.url));
    assert_eq!(again.status.code(), Some(1));

    let weak = run(mealkitz(&dir)
        .args([
            "admin",
            "create",
            "--email",
            "x@example.com",
            "--password",
            "short",
        ])
        .env("DATABASE_URL", &db.url));
    assert_eq!(weak.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&weak.stderr).contains("password"));

    let config = crate::helpers::test_config(&db);
    let app = crate::helpers::spawn_app_with(db, config).await;
    let session = app.login("root@example.com", "correct horse battery").await;
    assert_eq!(session.status, 200, "{}", session.text);
    assert_eq!(session.body["user"]["role"], "admin");
}

/// A `mealkitz serve` child process, with the port it bound read from its JSON log.
struct Served {
    child: Child,
    port: u16,
}

fn serve(command: &mut Command) -> Served {
    let mut child = command
        .args(["serve", "--bind", "127.0.0.1:0"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn mealkitz serve");
    let stderr = child.stderr.take().unwrap();
    let (port_tx, port_rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Ok(entry) = serde_json::from_str::<serde_json::Value>(&line)
                && entry["message"] == "mealkitz listening"
            {
                let _ = port_tx.send(entry["port"].as_u64().unwrap() as u16);
            }
        }
    });
    let port = port_rx
        .recv_timeout(Duration::from_secs(30))
        .expect("mealkitz logs its port");
    Served { child, port }
}

fn wait_for_exit(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

fn http_get(port: u16, path: &str) -> String {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response
}

#[test]
fn sigterm_finishes_the_request_in_flight_then_exits_0_within_10_seconds() {
    let dir = tempdir();
    let mut served = serve(&mut mealkitz(&dir));
    let ready_deadline = Instant::now() + Duration::from_secs(30);
    while !http_get(served.port, "/ready").starts_with("HTTP/1.1 200") {
        assert!(Instant::now() < ready_deadline, "never ready");
        std::thread::sleep(Duration::from_millis(50));
    }

    // Start a sign-up and send only half of its body: the request is in flight.
    let body = br#"{"email":"inflight@example.com","password":"correct horse battery","name":"In Flight","role":"customer"}"#;
    let (head, tail) = body.split_at(body.len() / 2);
    let mut stream = TcpStream::connect(("127.0.0.1", served.port)).unwrap();
    write!(
        stream,
        "POST /api/v1/users HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .unwrap();
    stream.write_all(head).unwrap();
    stream.flush().unwrap();
    std::thread::sleep(Duration::from_millis(300));

    let signalled = Instant::now();
    let kill = Command::new("kill")
        .args(["-TERM", &served.child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    std::thread::sleep(Duration::from_millis(300));
    // New connections are refused while the old one is drained.
    assert!(
        TcpStream::connect(("127.0.0.1", served.port)).is_err()
            || served.child.try_wait().unwrap().is_none()
    );

    stream.write_all(tail).unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 201"), "{response}");

    let status = wait_for_exit(&mut served.child, Duration::from_secs(10)).unwrap_or_else(|| {
        let _ = served.child.kill();
        panic!("still running 10 s after SIGTERM");
    });
    assert!(status.success(), "exit status {status:?}");
    assert!(signalled.elapsed() < Duration::from_secs(10));
}

#[test]
fn sigint_stops_gracefully_with_status_0() {
    let dir = tempdir();
    let mut served = serve(&mut mealkitz(&dir));
    assert!(http_get(served.port, "/health").starts_with("HTTP/1.1 200"));
    Command::new("kill")
        .args(["-INT", &served.child.id().to_string()])
        .status()
        .unwrap();
    let status =
        wait_for_exit(&mut served.child, Duration::from_secs(10)).expect("exits within 10 s");
    assert!(status.success(), "{status:?}");
}

#[test]
fn without_database_url_the_embedded_store_file_is_created_in_the_working_directory() {
    let dir = tempdir();
    let mut first = serve(&mut mealkitz(&dir));
    let ready_deadline = Instant::now() + Duration::from_secs(30);
    while !http_get(first.port, "/ready").starts_with("HTTP/1.1 200") {
        assert!(Instant::now() < ready_deadline, "never ready");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(dir.join("mealkitz.db").exists());
    Command::new("kill")
        .args(["-TERM", &first.child.id().to_string()])
        .status()
        .unwrap();
    assert!(wait_for_exit(&mut first.child, Duration::from_secs(10)).is_some_and(|s| s.success()));
}

/// A fresh directory under the system temp dir, left for the OS to clean.
fn tempdir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("mealkitz-bin-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
