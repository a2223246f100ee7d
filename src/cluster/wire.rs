//! What travels on a replica's Redis channel: the envelope of every message, and an error as it
//! crosses replicas. Commands, answers and feed updates ride inside as JSON whose shapes the
//! engine owns (`actors::wire`); the envelope's own JSON is a contract with replicas of other
//! versions, checked against golden files.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::actors::EngineError;
use crate::error::ErrorCode;

/// A message on a replica's channel.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "k", rename_all = "snake_case")]
pub enum Envelope {
    /// A command to run here; answer on `from`'s channel.
    Call { id: Uuid, from: String, call: Value },
    /// A command to run here without an answer (best-effort).
    Cast { call: Value },
    /// The answer to our command `id`.
    Reply {
        id: Uuid,
        result: Result<Value, RemoteError>,
    },
    /// An update of our subscription `sub`, served by `from`.
    Feed {
        sub: Uuid,
        from: String,
        item: Value,
    },
    /// Our subscription `sub` ended at its owner (the entity closed or moved).
    End { sub: Uuid, from: String },
    /// The subscriber of `sub` (a subscription we serve) is gone.
    Unsubscribe { sub: Uuid },
    /// `from` still forwards these subscriptions to us (sent every beat).
    Alive { from: String, subs: Vec<Uuid> },
}

/// An error as it crosses replicas: its code (a row of the error table), its message, and
/// whether the command should be sent again (the row says: the owner is changing, restarting
/// or briefly cut off).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RemoteError {
    pub code: String,
    pub message: String,
    pub retry: bool,
}

impl From<&EngineError> for RemoteError {
    fn from(error: &EngineError) -> Self {
        let code = error.code();
        RemoteError {
            code: code.as_str().to_owned(),
            message: error.to_string(),
            retry: code.router_resends(),
        }
    }
}

impl From<RemoteError> for EngineError {
    fn from(error: RemoteError) -> Self {
        EngineError::Remote {
            code: ErrorCode::from_code(&error.code).unwrap_or(ErrorCode::Internal),
            message: error.message,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_to_resend_round_trips_with_its_code_and_a_final_one_is_not_resent() {
        let moving = RemoteError::from(&EngineError::NotOwner("region ne moved".into()));
        assert!(moving.retry);
        assert_eq!(moving.code, "dispatch_unavailable");
        let closed = RemoteError::from(&EngineError::OfferExpired);
        assert!(!closed.retry);
        let back = EngineError::from(closed.clone());
        assert_eq!(back.code(), "offer_expired");
        assert_eq!(back.to_string(), closed.message);
        let unknown = EngineError::from(RemoteError {
            code: "no_such_code".into(),
            message: "?".into(),
            retry: false,
        });
        assert_eq!(unknown.code(), "internal_error");
    }

    /// The golden files of tests/golden/wire/envelope, written by the version before commands
    /// became structs: each reads as an envelope and writes back the same, and the command
    /// inside a `call` or `cast` is one this version knows.
    #[test]
    fn every_envelope_matches_its_golden_json() {
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/wire/envelope");
        let mut read = 0;
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let golden: Value =
                serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
            let envelope: Envelope = serde_json::from_value(golden.clone()).unwrap();
            if let Envelope::Call { call, .. } | Envelope::Cast { call } = &envelope {
                let op = crate::actors::wire::op_of(call).unwrap();
                assert!(crate::actors::commands::find(op).is_some(), "{op} unknown");
            }
            assert_eq!(
                serde_json::to_value(&envelope).unwrap(),
                golden,
                "{}",
                path.display()
            );
            read += 1;
        }
        assert_eq!(read, 8, "one file per kind of envelope");
    }

    #[test]
    fn envelopes_survive_json() {
        let envelope = Envelope::Call {
            id: Uuid::nil(),
            from: "pod-a".into(),
            call: serde_json::json!({
                "op": "answer_offer",
                "driver": Uuid::nil(),
                "offer_id": Uuid::nil(),
                "accept": true,
            }),
        };
        let text = serde_json::to_string(&envelope).unwrap();
        let back: Envelope = serde_json::from_str(&text).unwrap();
        assert!(matches!(
            back,
            Envelope::Call { call, .. } if call["op"] == "answer_offer" && call["accept"] == true
        ));
    }
}
