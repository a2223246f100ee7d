//! The sandbox gateway: no money moves. It answers Stripe's test payment methods —
//! `pm_card_visa` authorises, `pm_card_chargeDeclined` is declined, and
//! `pm_card_chargeDeclinedInsufficientFunds` is declined for insufficient funds — and honours
//! idempotency keys like a real gateway.

use std::collections::HashMap;
use std::sync::Mutex;

use futures_util::FutureExt;
use futures_util::future::BoxFuture;

use super::{Authorisation, AuthoriseRequest, DeclineCode, GatewayError, PaymentGateway};
use crate::domain::Cents;

/// The sandbox's payment methods.
pub const SANDBOX_VISA: &str = "pm_card_visa";
pub const SANDBOX_DECLINED: &str = "pm_card_chargeDeclined";
pub const SANDBOX_INSUFFICIENT_FUNDS: &str = "pm_card_chargeDeclinedInsufficientFunds";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hold {
    Authorised,
    Captured,
    Voided,
    Refunded,
}

#[derive(Default)]
struct Ledger {
    /// The first answer to each idempotency key.
    authorisations: HashMap<String, Authorisation>,
    /// Keys of capture, void and refund calls already done.
    done: HashMap<String, Result<(), GatewayError>>,
    holds: HashMap<String, (Cents, Hold)>,
    next_reference: u64,
}

/// An in-memory gateway for development and tests.
#[derive(Default)]
pub struct SandboxGateway {
    ledger: Mutex<Ledger>,
}

impl SandboxGateway {
    pub fn new() -> Self {
        Self::default()
    }

    fn with<T>(&self, f: impl FnOnce(&mut Ledger) -> T) -> T {
        f(&mut self.ledger.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// How many distinct authorisations were made (retries with a known key excluded).
    pub fn authorisation_count(&self) -> usize {
        self.with(|ledger| ledger.holds.len())
    }

    fn transition(
        &self,
        operation: &'static str,
        key: &str,
        reference: &str,
        from: Hold,
        to: Hold,
    ) -> Result<(), GatewayError> {
        let result = self.with(|ledger| {
            if let Some(done) = ledger.done.get(key) {
                return done.clone();
            }
            let result = match ledger.holds.get_mut(reference) {
                Some((_, hold)) if *hold == from => {
                    *hold = to;
                    Ok(())
                }
                Some((_, hold)) => Err(GatewayError::Refused(format!(
                    "cannot {operation} a payment that is {hold:?}"
                ))),
                None => Err(GatewayError::Refused(format!("no payment {reference}"))),
            };
            ledger.done.insert(key.to_owned(), result.clone());
            result
        });
        let outcome = if result.is_ok() { "ok" } else { "refused" };
        metrics::counter!("payment_gateway_calls_total", "operation" => operation, "outcome" => outcome)
            .increment(1);
        result
    }
}

impl PaymentGateway for SandboxGateway {
    fn authorise<'a>(
        &'a self,
        request: AuthoriseRequest<'a>,
    ) -> BoxFuture<'a, Result<Authorisation, GatewayError>> {
        let result = self.with(|ledger| {
            if let Some(answer) = ledger.authorisations.get(request.idempotency_key) {
                return Ok(answer.clone());
            }
            let answer = match request.payment_method {
                SANDBOX_VISA => {
                    ledger.next_reference += 1;
                    let reference = format!(
                        "pi_sandbox_{}_{}",
                        ledger.next_reference,
                        uuid::Uuid::new_v4().simple()
                    );
                    ledger
                        .holds
                        .insert(reference.clone(), (request.amount, Hold::Authorised));
                    Authorisation::Authorised { reference }
                }
                SANDBOX_DECLINED => Authorisation::Declined(DeclineCode::CardDeclined),
                SANDBOX_INSUFFICIENT_FUNDS => {
                    Authorisation::Declined(DeclineCode::InsufficientFunds)
                }
                other => return Err(GatewayError::UnknownPaymentMethod(other.to_owned())),
            };
            ledger
                .authorisations
                .insert(request.idempotency_key.to_owned(), answer.clone());
            Ok(answer)
        });
        let outcome = match &result {
            Ok(Authorisation::Authorised { .. }) => "authorised",
            Ok(Authorisation::Declined(_)) => "declined",
            Err(_) => "error",
        };
        metrics::counter!("payment_gateway_calls_total", "operation" => "authorise", "outcome" => outcome)
            .increment(1);
        async move { result }.boxed()
    }

    fn capture<'a>(
        &'a self,
        idempotency_key: &'a str,
        reference: &'a str,
        _amount: Cents,
    ) -> BoxFuture<'a, Result<(), GatewayError>> {
        let result = self.transition(
            "capture",
            idempotency_key,
            reference,
            Hold::Authorised,
            Hold::Captured,
        );
        async move { result }.boxed()
    }

    fn void<'a>(
        &'a self,
        idempotency_key: &'a str,
        reference: &'a str,
    ) -> BoxFuture<'a, Result<(), GatewayError>> {
        let result = self.transition(
            "void",
            idempotency_key,
            reference,
            Hold::Authorised,
            Hold::Voided,
        );
        async move { result }.boxed()
    }

    fn refund<'a>(
        &'a self,
        idempotency_key: &'a str,
        reference: &'a str,
        _amount: Cents,
    ) -> BoxFuture<'a, Result<(), GatewayError>> {
        let result = self.transition(
            "refund",
            idempotency_key,
            reference,
            Hold::Captured,
            Hold::Refunded,
        );
        async move { result }.boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request<'a>(key: &'a str, method: &'a str) -> AuthoriseRequest<'a> {
        AuthoriseRequest {
            idempotency_key: key,
            amount: Cents(1_000),
            payment_method: method,
        }
    }

    #[actix_web::test]
    async fn test_methods_authorise_or_decline_as_stripe_documents() {
        let gateway = SandboxGateway::new();
        assert!(matches!(
            gateway.authorise(request("a", SANDBOX_VISA)).await,
            Ok(Authorisation::Authorised { .. })
        ));
        assert_eq!(
            gateway.authorise(request("b", SANDBOX_DECLINED)).await,
            Ok(Authorisation::Declined(DeclineCode::CardDeclined))
        );
        assert_eq!(
            gateway
                .authorise(request("c", SANDBOX_INSUFFICIENT_FUNDS))
                .await,
            Ok(Authorisation::Declined(DeclineCode::InsufficientFunds))
        );
        assert_eq!(
            gateway.authorise(request("d", "pm_card_unicorn")).await,
            Err(GatewayError::UnknownPaymentMethod("pm_card_unicorn".into()))
        );
    }

    #[actix_web::test]
    async fn a_retried_call_with_the_same_key_moves_no_money_again() {
        let gateway = SandboxGateway::new();
        let first = gateway.authorise(request("k", SANDBOX_VISA)).await.unwrap();
        let again = gateway.authorise(request("k", SANDBOX_VISA)).await.unwrap();
        assert_eq!(first, again);
        assert_eq!(gateway.authorisation_count(), 1);
        let Authorisation::Authorised { reference } = first else {
            unreachable!()
        };
        gateway
            .capture("cap", &reference, Cents(1_000))
            .await
            .unwrap();
        gateway
            .capture("cap", &reference, Cents(1_000))
            .await
            .unwrap();
        // A new key for the same move is refused: it was captured already.
        assert!(
            gateway
                .capture("cap-2", &reference, Cents(1_000))
                .await
                .is_err()
        );
        assert!(gateway.void("void", &reference).await.is_err());
        gateway
            .refund("refund", &reference, Cents(1_000))
            .await
            .unwrap();
    }
}
