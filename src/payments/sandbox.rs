//! The sandbox gateway: no money moves. It answers Stripe's test payment methods —
//! `pm_card_visa` authorises, `pm_card_chargeDeclined` is declined, and
//! `pm_card_chargeDeclinedInsufficientFunds` is declined for insufficient funds — and honours
//! idempotency keys like a real gateway. It keeps its books in the store, so a restart or another
//! replica settles what this one authorised.

use futures_util::FutureExt;
use futures_util::future::BoxFuture;

use super::{Authorisation, AuthoriseRequest, DeclineCode, GatewayError, PaymentGateway};
use crate::domain::Cents;
use crate::store::{SandboxAnswer, Store, StoreError};

/// The sandbox's payment methods.
pub const SANDBOX_VISA: &str = "pm_card_visa";
pub const SANDBOX_DECLINED: &str = "pm_card_chargeDeclined";
pub const SANDBOX_INSUFFICIENT_FUNDS: &str = "pm_card_chargeDeclinedInsufficientFunds";

/// A gateway for development, the demo and tests. Its books are in the store (tables
/// `sandbox_holds` and `sandbox_calls`), so every replica sees the same holds and a restart
/// forgets none; while the database is down it is unavailable, like a provider that cannot be
/// reached.
pub struct SandboxGateway {
    store: Store,
}

fn unavailable(error: StoreError) -> GatewayError {
    GatewayError::Unavailable(format!("sandbox books: {error}"))
}

fn authorisation(answer: SandboxAnswer) -> Result<Authorisation, GatewayError> {
    match answer {
        SandboxAnswer::Authorised { reference } => Ok(Authorisation::Authorised { reference }),
        SandboxAnswer::Declined { code } => Ok(Authorisation::Declined(DeclineCode::parse(&code))),
        other => Err(GatewayError::Refused(format!(
            "the key was used for another operation ({other:?})"
        ))),
    }
}

fn count(operation: &'static str, outcome: &'static str) {
    metrics::counter!("payment_gateway_calls_total", "operation" => operation, "outcome" => outcome)
        .increment(1);
}

impl SandboxGateway {
    pub fn new(store: Store) -> Self {
        SandboxGateway { store }
    }

    async fn authorise_in_books(
        &self,
        request: AuthoriseRequest<'_>,
    ) -> Result<Authorisation, GatewayError> {
        // A key answered before keeps its first answer: the write below returns that one.
        let answer = match request.payment_method {
            SANDBOX_VISA => SandboxAnswer::Authorised {
                reference: format!("pi_sandbox_{}", uuid::Uuid::new_v4().simple()),
            },
            SANDBOX_DECLINED => SandboxAnswer::Declined {
                code: DeclineCode::CardDeclined.as_str().to_owned(),
            },
            SANDBOX_INSUFFICIENT_FUNDS => SandboxAnswer::Declined {
                code: DeclineCode::InsufficientFunds.as_str().to_owned(),
            },
            other => return Err(GatewayError::UnknownPaymentMethod(other.to_owned())),
        };
        let stands = self
            .store
            .sandbox_authorise(request.idempotency_key, request.amount, answer)
            .await
            .map_err(unavailable)?;
        authorisation(stands)
    }

    async fn transition(
        &self,
        operation: &'static str,
        key: &str,
        reference: &str,
        from: &str,
        to: &str,
    ) -> Result<(), GatewayError> {
        let answer = self
            .store
            .sandbox_transition(operation, key, reference, from, to)
            .await;
        let result = match answer {
            Ok(SandboxAnswer::Done) => Ok(()),
            Ok(SandboxAnswer::Refused { reason }) => Err(GatewayError::Refused(reason)),
            Ok(other) => Err(GatewayError::Refused(format!(
                "the key was used for another operation ({other:?})"
            ))),
            Err(error) => Err(unavailable(error)),
        };
        count(
            operation,
            match &result {
                Ok(()) => "ok",
                Err(GatewayError::Unavailable(_)) => "error",
                Err(_) => "refused",
            },
        );
        result
    }
}

impl PaymentGateway for SandboxGateway {
    fn authorise<'a>(
        &'a self,
        request: AuthoriseRequest<'a>,
    ) -> BoxFuture<'a, Result<Authorisation, GatewayError>> {
        async move {
            let result = self.authorise_in_books(request).await;
            count(
                "authorise",
                match &result {
                    Ok(Authorisation::Authorised { .. }) => "authorised",
                    Ok(Authorisation::Declined(_)) => "declined",
                    Err(_) => "error",
                },
            );
            result
        }
        .boxed()
    }

    fn authorisation<'a>(
        &'a self,
        idempotency_key: &'a str,
    ) -> BoxFuture<'a, Result<Option<Authorisation>, GatewayError>> {
        async move {
            match self
                .store
                .sandbox_answer(idempotency_key)
                .await
                .map_err(unavailable)?
            {
                Some(answer) => authorisation(answer).map(Some),
                None => Ok(None),
            }
        }
        .boxed()
    }

    fn capture<'a>(
        &'a self,
        idempotency_key: &'a str,
        reference: &'a str,
        _amount: Cents,
    ) -> BoxFuture<'a, Result<(), GatewayError>> {
        self.transition(
            "capture",
            idempotency_key,
            reference,
            "authorised",
            "captured",
        )
        .boxed()
    }

    fn void<'a>(
        &'a self,
        idempotency_key: &'a str,
        reference: &'a str,
    ) -> BoxFuture<'a, Result<(), GatewayError>> {
        self.transition("void", idempotency_key, reference, "authorised", "voided")
            .boxed()
    }

    fn refund<'a>(
        &'a self,
        idempotency_key: &'a str,
        reference: &'a str,
        _amount: Cents,
    ) -> BoxFuture<'a, Result<(), GatewayError>> {
        self.transition("refund", idempotency_key, reference, "captured", "refunded")
            .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::test_support::sqlite_store;

    fn request<'a>(key: &'a str, method: &'a str) -> AuthoriseRequest<'a> {
        AuthoriseRequest {
            idempotency_key: key,
            amount: Cents(1_000),
            payment_method: method,
        }
    }

    async fn gateway() -> (SandboxGateway, Store, std::path::PathBuf) {
        let (store, dir) = sqlite_store();
        store.migrate().await.unwrap();
        (SandboxGateway::new(store.clone()), store, dir)
    }

    #[actix_web::test]
    async fn test_methods_authorise_or_decline_as_stripe_documents() {
        let (gateway, _store, dir) = gateway().await;
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
        assert_eq!(gateway.authorisation("d").await, Ok(None));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[actix_web::test]
    async fn a_retried_call_with_the_same_key_moves_no_money_again() {
        let (gateway, store, dir) = gateway().await;
        let first = gateway.authorise(request("k", SANDBOX_VISA)).await.unwrap();
        let again = gateway.authorise(request("k", SANDBOX_VISA)).await.unwrap();
        assert_eq!(first, again);
        assert_eq!(
            store.sandbox_hold_counts().await.unwrap(),
            [("authorised".to_owned(), 1)]
        );
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
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[actix_web::test]
    async fn a_gateway_started_after_a_restart_settles_and_looks_up_what_the_first_authorised() {
        let (first, store, dir) = gateway().await;
        let Authorisation::Authorised { reference } = first
            .authorise(request("authorise:o1", SANDBOX_VISA))
            .await
            .unwrap()
        else {
            panic!("visa authorises")
        };
        drop(first);
        let restarted = SandboxGateway::new(store.clone());
        assert_eq!(
            restarted.authorisation("authorise:o1").await,
            Ok(Some(Authorisation::Authorised {
                reference: reference.clone()
            }))
        );
        restarted
            .void("void:p1", &reference)
            .await
            .expect("the restarted gateway knows the hold");
        assert_eq!(
            store.sandbox_hold_counts().await.unwrap(),
            [("voided".to_owned(), 1)]
        );
        std::fs::remove_dir_all(dir).unwrap();
    }
}
