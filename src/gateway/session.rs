//! What the WebSocket sessions share (one actor per socket: the driver app, the merchant board,
//! and an order's tracking page): how a session is set up, and when it subscribes again. The
//! handshake (authentication, origin, access) happens in [`super::routes`]; a session starts
//! already authorised.

use std::sync::Arc;

use tokio::sync::watch;
use tokio_util::task::task_tracker::TaskTrackerToken;

pub use super::socket::CredentialCheck;
use super::socket::SocketCore;
use super::wire::{FrameReader, FrameWriter};
use crate::actors::{Engine, EngineError};
use crate::config::GatewayConfig;

/// Pause before a session whose feed ended subscribes again; after each failure that is worth
/// retrying (another replica cannot be reached now) it doubles, up to the maximum, and the
/// socket stays open meanwhile.
pub(super) const RESUBSCRIBE_RETRY_MIN_MS: u64 = 100;
const RESUBSCRIBE_RETRY_MAX_MS: u64 = 5_000;

/// The pause after a resubscription that failed after `pause_ms`.
pub(super) fn next_resubscribe_ms(pause_ms: u64) -> u64 {
    (pause_ms.max(RESUBSCRIBE_RETRY_MIN_MS) * 2).min(RESUBSCRIBE_RETRY_MAX_MS)
}

/// Whether a failed resubscription is worth trying again with the socket left open: the
/// engine or another replica is away for now (a Redis or database outage, a region moving),
/// as opposed to a refusal that will not change.
pub(super) fn passing(error: &EngineError) -> bool {
    error.code().retry_after_secs().is_some()
}

/// What every session is started with.
pub struct SessionSetup {
    pub reader: FrameReader,
    pub writer: FrameWriter,
    pub engine: Engine,
    pub config: Arc<GatewayConfig>,
    /// When the login token expires, unix seconds.
    pub token_expires_at: i64,
    /// For a credential that can be revoked before it expires (an API key): asks whether it
    /// still works; the socket asks every second and closes with 1008 `credential_revoked`.
    pub still_valid: Option<CredentialCheck>,
    /// Turns true when the server shuts down: sessions close with 1001.
    pub shutdown: watch::Receiver<bool>,
    /// Counts the socket among those a stop waits for (until its close frame is written).
    pub counted: TaskTrackerToken,
}

impl SessionSetup {
    /// The socket state for a session of `kind` (`driver`, `merchant`, `tracker`), and the
    /// engine handle it talks to.
    pub(super) fn into_core(self, kind: &'static str) -> (SocketCore, Engine) {
        let core = SocketCore::new(
            kind,
            (self.reader, self.writer),
            self.shutdown,
            self.counted,
            self.config,
            self.token_expires_at,
            self.still_valid,
        );
        (core, self.engine)
    }
}
