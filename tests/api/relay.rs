//! A TCP relay to Redis that a test owns: it forwards connections until it is cut (every relayed
//! connection dropped, new ones closed at once) and forwards again once restored. The replica
//! behind it loses Redis while the others keep it.

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

pub struct RedisRelay {
    pub port: u16,
    state: Arc<Mutex<RelayState>>,
    accept: AbortHandle,
}

impl RedisRelay {
    pub async fn start() -> RedisRelay {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let upstream = crate::helpers::redis_url()
            .trim_start_matches("redis://")
            .trim_end_matches('/')
            .to_owned();
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
        RedisRelay {
            port,
            state,
            accept: accept.abort_handle(),
        }
    }

    /// The URL a replica reaches Redis at through this relay.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Drops every relayed connection and refuses new ones until [`RedisRelay::restore`].
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

impl Drop for RedisRelay {
    fn drop(&mut self) {
        self.cut();
        self.accept.abort();
    }
}
