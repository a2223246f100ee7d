//! A TCP relay on a loopback port that a test owns, standing between an engine and PostgreSQL or
//! Redis: it forwards connections until it is cut (every relayed connection dropped, new ones
//! accepted and closed at once) and forwards again once restored, on the same port. The engine
//! behind it loses that server while everything else keeps it.

use std::sync::{Arc, Mutex};

use tokio::task::AbortHandle;

/// What the relay is doing now.
#[derive(Default)]
struct RelayState {
    /// Cut: connections are refused (accepted and closed at once).
    cut: bool,
    /// The relayed connections, dropped by a cut.
    connections: Vec<AbortHandle>,
}

pub struct Relay {
    pub port: u16,
    state: Arc<Mutex<RelayState>>,
    accept: AbortHandle,
}

impl Relay {
    /// A relay to `upstream` (`host:port`).
    pub async fn start(upstream: impl Into<String>) -> Relay {
        let upstream = upstream.into();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(Mutex::new(RelayState::default()));
        let shared = state.clone();
        let accept = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if shared.lock().unwrap().cut {
                    drop(inbound);
                    continue;
                }
                let upstream = upstream.clone();
                let relay = tokio::spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(&upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                let mut state = shared.lock().unwrap();
                state.connections.retain(|c| !c.is_finished());
                state.connections.push(relay.abort_handle());
            }
        });
        Relay {
            port,
            state,
            accept: accept.abort_handle(),
        }
    }

    /// A relay to the tests' Redis.
    pub async fn to_redis() -> Relay {
        let url = reqwest::Url::parse(&crate::helpers::redis_url()).expect("a Redis URL");
        Relay::start(format!(
            "{}:{}",
            url.host_str().unwrap_or("127.0.0.1"),
            url.port().unwrap_or(6379)
        ))
        .await
    }

    /// A relay to the server of the database at `url`.
    pub async fn to_database(url: &str) -> Relay {
        let url = reqwest::Url::parse(url).expect("a database URL");
        Relay::start(format!(
            "{}:{}",
            url.host_str().unwrap_or("127.0.0.1"),
            url.port().unwrap_or(5432)
        ))
        .await
    }

    /// The URL a replica reaches Redis at through this relay.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// `url` (a database URL) going through this relay.
    pub fn url_through(&self, url: &str) -> String {
        let mut url = reqwest::Url::parse(url).expect("a database URL");
        url.set_host(Some("127.0.0.1")).unwrap();
        url.set_port(Some(self.port)).unwrap();
        url.to_string()
    }

    /// Drops every relayed connection and refuses new ones until [`Relay::restore`].
    pub fn cut(&self) {
        let mut state = self.state.lock().unwrap();
        state.cut = true;
        for connection in state.connections.drain(..) {
            connection.abort();
        }
    }

    /// Forwards new connections again.
    pub fn restore(&self) {
        self.state.lock().unwrap().cut = false;
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.cut();
        self.accept.abort();
    }
}
