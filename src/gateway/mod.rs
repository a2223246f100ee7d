//! The WebSocket gateway: the HTTP upgrade of the three sockets (the driver app, the merchant
//! board, an order's tracking page) and the HTTP server that hands them over, their frames on
//! the bare TCP stream, one session actor per socket, and the socket core they share (bounded
//! outbox, heartbeats, rate limit, frame checks, close codes). It is apart from
//! the engine so that the engine knows nothing of sockets: a session reaches dispatch only
//! through the [`Engine`](crate::actors::Engine) handle, and `actors` never imports `gateway`.

mod driver;
pub mod handover;
mod inbound;
mod merchant;
pub mod routes;
mod session;
mod socket;
mod tracker;
mod wire;

pub use driver::DriverSession;
pub use merchant::MerchantSession;
pub use session::SessionSetup;
pub use socket::OUTBOX_CAPACITY;
pub use tracker::TrackerSession;
pub use wire::MAX_FRAME_BYTES;
