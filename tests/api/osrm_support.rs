//! A real `osrm-routed` for tests: the binaries `scripts/osrm.sh install` unpacked and the
//! Helsinki graph `scripts/osrm.sh prepare` built (both under `MEALKITZ_TEST_OSRM_HOME`, default
//! `$HOME/.cache/mealkitz/osrm`), served on a free loopback port, killed when dropped.
//!
//! Missing binaries or data fail the test with the command that provides them: a test that
//! needs OSRM must not pass without it.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long `start` waits for osrm-routed to answer (Helsinki loads in well under a second).
pub const OSRM_START_TIMEOUT_MS: u64 = 10_000;
/// The prepared city the tests use.
pub const CITY: &str = "Helsinki";
const INSTALL_HINT: &str = "run `scripts/osrm.sh install && scripts/osrm.sh prepare` \
     (scripts/test.sh does) or point MEALKITZ_TEST_OSRM_HOME at an OSRM home";

/// Points in central Helsinki that the car graph connects (OSRM answers `Ok` between them).
pub mod points {
    use mealkitz::geo::LatLon;

    /// Near the Kamppi end of Simonkatu.
    pub fn kamppi() -> LatLon {
        LatLon::new(60.170, 24.940).unwrap()
    }
    /// Kasarmikatu, south of Esplanadi.
    pub fn kasarmikatu() -> LatLon {
        LatLon::new(60.167, 24.948).unwrap()
    }
    /// Pohjoisesplanadi.
    pub fn esplanadi() -> LatLon {
        LatLon::new(60.168, 24.945).unwrap()
    }
    /// Bulevardi, in the south-west.
    pub fn bulevardi() -> LatLon {
        LatLon::new(60.1642, 24.9367).unwrap()
    }
    /// Mikonkatu, near the railway station.
    pub fn mikonkatu() -> LatLon {
        LatLon::new(60.171, 24.945).unwrap()
    }
}

/// Where the OSRM binaries and graphs are.
pub fn osrm_home() -> PathBuf {
    match std::env::var_os("MEALKITZ_TEST_OSRM_HOME") {
        Some(home) if !home.is_empty() => PathBuf::from(home),
        _ => {
            let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
            Path::new(&home).join(".cache/mealkitz/osrm")
        }
    }
}

/// The osrm-routed binary and the prepared Helsinki graph, or a panic saying how to get them.
pub fn binary_and_graph() -> (PathBuf, PathBuf) {
    match find_binary_and_graph() {
        Ok(found) => found,
        Err(missing) => panic!("{missing}: {INSTALL_HINT}"),
    }
}

/// Like [`binary_and_graph`], but says what is missing instead of panicking (for benches).
pub fn find_binary_and_graph() -> Result<(PathBuf, PathBuf), String> {
    let home = osrm_home();
    let binary = home.join("bin/osrm-routed");
    let graph = home.join(format!("data/{CITY}/{CITY}.osrm"));
    if !binary.is_file() {
        return Err(format!("no osrm-routed at {}", binary.display()));
    }
    if !graph.with_extension("osrm.hsgr").is_file() {
        return Err(format!(
            "no prepared {CITY} graph at {} (.hsgr missing)",
            graph.display()
        ));
    }
    Ok((binary, graph))
}

/// A running osrm-routed (contraction hierarchies) on the Helsinki graph.
pub struct OsrmServer {
    /// `http://127.0.0.1:PORT`
    pub url: String,
    pub port: u16,
    child: Option<Child>,
    log: PathBuf,
}

impl OsrmServer {
    /// On a free port.
    pub fn start() -> OsrmServer {
        // A port found free may be taken before osrm-routed binds it: try a few.
        let mut last = String::new();
        for _ in 0..3 {
            match OsrmServer::try_start(free_port()) {
                Ok(server) => return server,
                Err(why) => last = why,
            }
        }
        panic!("{last}");
    }

    /// On `port` (e.g. to bring a killed server back where its clients look).
    pub fn start_on(port: u16) -> OsrmServer {
        OsrmServer::try_start(port).unwrap_or_else(|why| panic!("{why}"))
    }

    fn try_start(port: u16) -> Result<OsrmServer, String> {
        let (binary, graph) = binary_and_graph();
        let log = std::env::temp_dir().join(format!(
            "osrm-routed-test-{port}-{}.log",
            std::process::id()
        ));
        let log_file =
            std::fs::File::create(&log).map_err(|e| format!("{}: {e}", log.display()))?;
        let child = Command::new(&binary)
            .args([
                "--algorithm",
                "ch",
                "-i",
                "127.0.0.1",
                "-p",
                &port.to_string(),
            ])
            .arg(&graph)
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().map_err(|e| e.to_string())?)
            .stderr(log_file)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", binary.display()))?;
        let mut server = OsrmServer {
            url: format!("http://127.0.0.1:{port}"),
            port,
            child: Some(child),
            log,
        };
        let deadline = Instant::now() + Duration::from_millis(OSRM_START_TIMEOUT_MS);
        while Instant::now() < deadline {
            if let Some(child) = server.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                server.child = None;
                return Err(format!(
                    "osrm-routed exited ({status}) on port {port}: {}",
                    server.log_tail()
                ));
            }
            if answers(port) {
                return Ok(server);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let tail = server.log_tail();
        server.kill();
        Err(format!(
            "osrm-routed did not answer on port {port} within {OSRM_START_TIMEOUT_MS} ms: {tail}"
        ))
    }

    /// SIGKILL, and wait for it to be gone (its port is free afterwards).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The last lines osrm-routed logged.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(10)..].join("\n")
    }
}

impl Drop for OsrmServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_file(&self.log);
    }
}

/// A loopback port nothing listens on at the moment.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind a loopback port")
}

/// Whether an OSRM answers on `port`: a `/nearest` request gets HTTP with a JSON body.
fn answers(port: u16) -> bool {
    let Ok(mut stream) =
        TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(200))
    else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    let request = "GET /nearest/v1/driving/24.94,60.17 HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
    if stream.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer.starts_with("HTTP/1.") && answer.contains("\"code\"")
}
