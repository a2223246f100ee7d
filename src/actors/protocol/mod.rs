//! The protocol between the engine and its actors, and between the actors themselves: every
//! message an actor is sent by someone else, the feeds its subscribers receive, and the address
//! of each kind of actor. Actor files import this module and never each other, so no actor's
//! file has to change (or even compile) before another's; one file per receiving kind keeps
//! each small. Messages an actor sends only itself (timers) stay in that actor's file.

mod addresses;
mod driver;
mod feeds;
mod handoff;
mod merchant;
mod order;
mod region;

pub use addresses::{Accepts, Address, DriverAddr, MerchantAddr, OrderAddr, RegionAddr};
pub use driver::{
    AnswerOffer, CrashDriver, GetDriverStatus, GoOffline, OrderChanged, Progress, PublishOffer,
    Reannounce, ReportProgress, ReserveOffer, RestoreWork, RouteChanged, SessionClosed,
    SetAvailability, SubscribeDriver, UpdateLocation, WithdrawOffer,
};
pub use feeds::{DriverFeed, DriverStatus, LegKind, OfferView, OrderFeed, RouteView};
pub use handoff::Retire;
pub use merchant::{BoardUpdate, CrashMerchant, SubscribeBoard};
pub use order::{
    AcceptOffer, CancelOrder, Canceller, ConfirmDelivery, ConfirmPickup, CrashOrder, DeclineOffer,
    DriverMoved, GetOrder, MarkReady, MerchantAccept, MerchantReject, SubscribeOrder,
};
pub use region::{
    Candidate, CrashRegion, FindCandidates, IndexSize, MatchOutcome, ReloadOrder, RemoveDriver,
    RequestMatch, UpsertDriver,
};
