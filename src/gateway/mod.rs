//! The WebSocket gateway: the HTTP upgrade of the three sockets (the driver app, the merchant
//! board, an order's tracking page), one session actor per socket, and the socket core they
//! share (bounded outbox, heartbeats, rate limit, frame checks, close codes). It is apart from
//! the engine so that the engine knows nothing of sockets: a session reaches dispatch only
//! through the [`Engine`](crate::actors::Engine) handle, and `actors` never imports `gateway`.

mod driver;
mod inbound;
mod merchant;
pub mod routes;
mod session;
mod socket;
mod tracker;

pub use driver::DriverSession;
pub use merchant::MerchantSession;
pub use session::SessionSetup;
pub use socket::{MAX_FRAME_BYTES, OUTBOX_CAPACITY};
pub use tracker::TrackerSession;
