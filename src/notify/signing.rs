//! Standard Webhooks signatures (<https://www.standardwebhooks.com>): secrets `whsec_` + base64 of
//! random bytes; each delivery signed as `v1,` + base64(HMAC-SHA256(key, "{id}.{timestamp}.{body}"))
//! where the key is the secret's decoded bytes; several signatures, space-separated, while a
//! secret is being rotated.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;

/// The prefix of every endpoint secret.
pub const SECRET_PREFIX: &str = "whsec_";
/// Random bytes in a new secret (192 bits, as Svix).
const SECRET_BYTES: usize = 24;

/// A new endpoint secret.
pub fn new_secret() -> String {
    let mut bytes = [0u8; SECRET_BYTES];
    rand::rng().fill_bytes(&mut bytes);
    format!("{SECRET_PREFIX}{}", STANDARD.encode(bytes))
}

/// The HMAC key of a secret: the bytes its base64 part decodes to (the whole text when it does
/// not decode, as the reference libraries do not; ours always decode).
fn key(secret: &str) -> Vec<u8> {
    let encoded = secret.strip_prefix(SECRET_PREFIX).unwrap_or(secret);
    STANDARD
        .decode(encoded)
        .unwrap_or_else(|_| encoded.as_bytes().to_vec())
}

/// One `v1,…` signature of `body` sent as message `id` at `timestamp` (unix seconds).
pub fn signature(secret: &str, id: &str, timestamp: i64, body: &[u8]) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(&key(secret)).expect("HMAC takes keys of any length");
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
}

/// The `webhook-signature` header: one signature per secret, space-separated.
pub fn signature_header(secrets: &[&str], id: &str, timestamp: i64, body: &[u8]) -> String {
    secrets
        .iter()
        .map(|secret| signature(secret, id, timestamp, body))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Whether any `v1` signature in `header` matches under `secret` (constant-time per signature):
/// for receivers written in Rust and for our own tests.
pub fn verify(secret: &str, id: &str, timestamp: i64, body: &[u8], header: &str) -> bool {
    let expected = signature(secret, id, timestamp, body);
    let expected = expected.as_bytes();
    header.split(' ').any(|given| {
        use subtle::ConstantTimeEq;
        given.len() == expected.len() && bool::from(given.as_bytes().ct_eq(expected))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_matches_the_standard_webhooks_reference_vector() {
        // The test vector of the Standard Webhooks specification's reference libraries.
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let id = "msg_p5jXN8AQM9LWM0D4loKWxJek";
        let timestamp = 1_614_265_330;
        let body = br#"{"test": 2432232314}"#;
        assert_eq!(
            signature(secret, id, timestamp, body),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
        assert!(verify(
            secret,
            id,
            timestamp,
            body,
            &signature_header(&[secret], id, timestamp, body)
        ));
        assert!(!verify(
            secret,
            id,
            timestamp + 1,
            body,
            &signature(secret, id, timestamp, body)
        ));
    }

    #[test]
    fn during_a_rotation_both_secrets_sign_and_either_verifies() {
        let (old, new) = (new_secret(), new_secret());
        assert!(new.starts_with("whsec_") && new.len() == 6 + 32);
        let header = signature_header(&[&new, &old], "msg_1", 1, b"{}");
        assert_eq!(header.split(' ').count(), 2);
        assert!(verify(&old, "msg_1", 1, b"{}", &header));
        assert!(verify(&new, "msg_1", 1, b"{}", &header));
        assert!(!verify(&new_secret(), "msg_1", 1, b"{}", &header));
    }
}
