//! Money: the payment gateway interface, the built-in sandbox gateway (Stripe's test payment
//! methods), and settlement — capture at delivery, void or refund on cancellation or rejection.
//! Every gateway call carries its own idempotency key, so a retried call never charges twice.

pub mod money_loop;
pub mod reconcile;
pub mod sandbox;
pub mod settlement;
pub mod webhook;

use futures_util::future::BoxFuture;

use crate::domain::{Cents, OrderId};

/// The gateway idempotency key of the authorisation for `order`: every attempt of a checkout
/// (bound to one order id) asks with the same key, so the gateway holds money once.
pub fn authorise_key(order: OrderId) -> String {
    format!("authorise:{order}")
}

/// The gateway idempotency key of a void of `payment`.
pub fn void_key(payment: uuid::Uuid) -> String {
    format!("void:{payment}")
}

/// What checkout asks the gateway for.
#[derive(Debug, Clone)]
pub struct AuthoriseRequest<'a> {
    /// Same key, same answer: the gateway never authorises twice for one key.
    pub idempotency_key: &'a str,
    pub amount: Cents,
    pub payment_method: &'a str,
}

/// Why a card was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeclineCode {
    CardDeclined,
    InsufficientFunds,
}

impl DeclineCode {
    pub fn as_str(self) -> &'static str {
        match self {
            DeclineCode::CardDeclined => "card_declined",
            DeclineCode::InsufficientFunds => "insufficient_funds",
        }
    }

    /// The code as stored; an unknown one reads as a plain decline.
    pub fn parse(code: &str) -> DeclineCode {
        if code == DeclineCode::InsufficientFunds.as_str() {
            DeclineCode::InsufficientFunds
        } else {
            DeclineCode::CardDeclined
        }
    }
}

/// The answer to an authorisation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Authorisation {
    /// Money is held; `reference` is the gateway's id for it.
    Authorised {
        reference: String,
    },
    Declined(DeclineCode),
}

/// A gateway call that failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GatewayError {
    #[error("unknown payment method {0:?}")]
    UnknownPaymentMethod(String),
    /// The gateway refused the operation (e.g. capturing a voided authorisation).
    #[error("the gateway refused: {0}")]
    Refused(String),
    /// Could not reach the gateway; safe to retry with the same idempotency key.
    #[error("the payment gateway is unavailable: {0}")]
    Unavailable(String),
}

/// A payment gateway. Implementations must honour idempotency keys: a call repeated with the
/// same key returns the first call's result and moves no money again.
pub trait PaymentGateway: Send + Sync + 'static {
    fn authorise<'a>(
        &'a self,
        request: AuthoriseRequest<'a>,
    ) -> BoxFuture<'a, Result<Authorisation, GatewayError>>;

    /// What an earlier [`PaymentGateway::authorise`] with `idempotency_key` did, without doing
    /// anything: `None` when the gateway never received it. The reconciler asks this about a
    /// checkout that died before it learnt the answer, so that a hold it never recorded is still
    /// released. (At Stripe: the PaymentIntent found by the metadata checkout sets.)
    fn authorisation<'a>(
        &'a self,
        idempotency_key: &'a str,
    ) -> BoxFuture<'a, Result<Option<Authorisation>, GatewayError>>;

    /// Takes the held money.
    fn capture<'a>(
        &'a self,
        idempotency_key: &'a str,
        reference: &'a str,
        amount: Cents,
    ) -> BoxFuture<'a, Result<(), GatewayError>>;

    /// Releases the hold.
    fn void<'a>(
        &'a self,
        idempotency_key: &'a str,
        reference: &'a str,
    ) -> BoxFuture<'a, Result<(), GatewayError>>;

    /// Gives taken money back.
    fn refund<'a>(
        &'a self,
        idempotency_key: &'a str,
        reference: &'a str,
        amount: Cents,
    ) -> BoxFuture<'a, Result<(), GatewayError>>;
}
