//! A PostgreSQL server that crashes loses nothing a client was answered: these tests run a
//! server of their own (initdb into a temporary directory), stop it in `immediate` mode — no
//! shutdown checkpoint, and the WAL still in its buffers is lost, as in a crash of the server —
//! and read the orders, the payments and the sandbox gateway's books after its recovery. The
//! server's WAL writer sleeps 10 s, so a commit that did not wait for its own flush may still be
//! in the buffers when the server is killed (with the whole test server committing
//! asynchronously, this test failed one run in three: docs/performance.md, "Machine L").

use std::path::{Path, PathBuf};
use std::process::Command;

use futures_util::future::join_all;
use mealkitz::domain::{OrderId, OrderStatus};
use mealkitz::payments::sandbox::SANDBOX_VISA;
use mealkitz::store::{PaymentStatus, SandboxAnswer, Store};

use crate::checkout::{checkout, new_key, order_body};
use crate::helpers::{Db, TestDb, at, migrated_store, spawn_app_with, test_config};
use crate::merchants::open_shop;

/// How long the test server's WAL writer sleeps between rounds (its maximum): longer than any
/// test here, so the WAL of a commit that did not wait for its flush reaches the disk only when
/// a later commit flushes it or a filled page wakes the writer.
const WAL_WRITER_DELAY_MS: u64 = 10_000;

/// A PostgreSQL server of the test's own, on a free loopback port, that the test can crash.
/// Run as the `postgres` user when the test runs as root (PostgreSQL refuses root).
struct CrashablePostgres {
    dir: PathBuf,
    bin: PathBuf,
    port: u16,
    as_postgres: bool,
}

impl CrashablePostgres {
    fn start() -> CrashablePostgres {
        let dir =
            std::env::temp_dir().join(format!("mealkitz-pg-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("create the server's directory");
        let as_postgres = is_root();
        if as_postgres {
            run(Command::new("chown").arg("postgres:").arg(&dir));
        }
        let server = CrashablePostgres {
            bin: postgres_bin_dir(),
            port: free_port(),
            dir,
            as_postgres,
        };
        let data = server.data();
        run(server
            .command("initdb")
            .args([
                "-A",
                "trust",
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--no-sync",
                "-D",
            ])
            .arg(&data));
        server.start_server();
        server
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// One of PostgreSQL's programs, run as the user that owns the data directory.
    fn command(&self, program: &str) -> Command {
        let program = self.bin.join(program);
        if self.as_postgres {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(program);
            command
        } else {
            Command::new(program)
        }
    }

    fn pg_ctl(&self, args: &[&str]) -> Command {
        let mut command = self.command("pg_ctl");
        command.arg("-D").arg(self.data()).args(args);
        command
    }

    /// Durable as a production server is: `fsync`, synchronous commits.
    fn start_server(&self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c wal_writer_delay={WAL_WRITER_DELAY_MS}ms \
             -c fsync=on -c synchronous_commit=on -c max_connections=40 -c shared_buffers=16MB",
            self.port,
            self.dir.display()
        );
        let log = self.dir.join("server.log");
        run(self
            .pg_ctl(&["-w", "-t", "30", "-o", &options, "-l"])
            .arg(&log)
            .arg("start"));
    }

    /// Kills the server as a crash would: no checkpoint, the WAL buffers lost.
    fn crash(&self) {
        run(&mut self.pg_ctl(&["-m", "immediate", "stop"]));
    }

    /// Starts it again: it recovers from its WAL before it takes connections.
    fn restart(&self) {
        self.start_server();
    }

    fn admin_url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for CrashablePostgres {
    fn drop(&mut self) {
        let _ = self.pg_ctl(&["-m", "immediate", "stop"]).output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn run(command: &mut Command) {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("{command:?} could not start: {e}"));
    assert!(
        output.status.success(),
        "{command:?} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

fn is_root() -> bool {
    let output = Command::new("id").arg("-u").output().expect("id -u");
    String::from_utf8_lossy(&output.stdout).trim() == "0"
}

/// The newest PostgreSQL's programs (Debian keeps them out of PATH), or `pg_config`'s.
fn postgres_bin_dir() -> PathBuf {
    let mut installed: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|entry| entry.path().join("bin"))
        .filter(|bin| bin.join("initdb").exists())
        .collect();
    installed.sort_by_key(|bin| {
        bin.parent()
            .and_then(Path::file_name)
            .and_then(|v| v.to_str()?.parse::<u32>().ok())
            .unwrap_or(0)
    });
    if let Some(bin) = installed.pop() {
        return bin;
    }
    let output = Command::new("pg_config")
        .arg("--bindir")
        .output()
        .expect("PostgreSQL's server programs (initdb, pg_ctl) are installed: scripts/test.sh installs them");
    PathBuf::from(String::from_utf8_lossy(&output.stdout).trim())
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// Checkouts answered 201, then the database server killed at once: after its recovery every
/// answered order is there with its payment authorised and its one hold at the sandbox, and a
/// retry of each key answers the same order without a second authorisation.
#[actix_web::test]
async fn a_database_crash_right_after_checkouts_were_answered_loses_none_of_their_orders_payments_or_holds()
 {
    const CHECKOUTS: usize = 8;
    let server = CrashablePostgres::start();
    let db = TestDb::create_on(Db::Postgres, server.admin_url()).await;
    let config = test_config(&db);
    let app = spawn_app_with(db, config).await;
    let shop = open_shop(&app, 5_000.0, 5_000.0).await;
    let customer = app.signed_up("customer").await;
    let body = order_body(&shop, at(5_500.0, 5_000.0), SANDBOX_VISA);

    let keys: Vec<String> = (0..CHECKOUTS).map(|_| new_key()).collect();
    let answers = join_all(
        keys.iter()
            .map(|key| checkout(&app, &customer.token, key, &body)),
    )
    .await;
    server.crash();

    let mut orders = Vec::new();
    for answer in &answers {
        assert_eq!(answer.status, 201, "{}", answer.text);
        orders.push(
            answer.body["id"]
                .as_str()
                .unwrap()
                .parse::<OrderId>()
                .unwrap(),
        );
    }
    server.restart();
    let store = migrated_store(&app.db).await;
    for order_id in &orders {
        let order = store.load_order(*order_id).await.unwrap();
        let order = order.unwrap_or_else(|| panic!("order {order_id} was answered and is lost"));
        assert_eq!(order.view().status, OrderStatus::Placed);
        let payment = store.payment_for_order(*order_id).await.unwrap().unwrap();
        assert_eq!(
            payment.status,
            PaymentStatus::Authorised,
            "order {order_id}"
        );
        let reference = payment
            .gateway_ref
            .expect("an authorised payment has its reference");
        assert!(
            store
                .sandbox_answer(&mealkitz::payments::authorise_key(*order_id))
                .await
                .unwrap()
                == Some(SandboxAnswer::Authorised { reference }),
            "the sandbox still has the hold of order {order_id}"
        );
    }
    let one_hold_each = vec![("authorised".to_owned(), CHECKOUTS as i64)];
    assert_eq!(sandbox_holds(&store).await, one_hold_each);

    // The engine came back by itself; each key still answers its own order.
    app.wait_until_ready().await;
    for (key, order_id) in keys.iter().zip(&orders) {
        let again = checkout(&app, &customer.token, key, &body).await;
        assert_eq!(again.status, 201, "{}", again.text);
        assert_eq!(again.body["id"], order_id.to_string());
    }
    assert_eq!(
        sandbox_holds(&store).await,
        one_hold_each,
        "no second authorisation"
    );
    store.close().await;
}

async fn sandbox_holds(store: &Store) -> Vec<(String, i64)> {
    store.sandbox_hold_counts().await.unwrap()
}
