//! Webhook signatures, as Stripe signs them: `Mealkitz-Signature: t=<unix seconds>,v1=<hex>`
//! where each `v1` is HMAC-SHA256 of `"<t>.<raw body>"` under the webhook secret. Several `v1`
//! values may be sent while a secret is being rotated; any one matching is enough.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Signatures older (or further in the future) than this are refused, so a captured request
/// cannot be replayed later.
pub const WEBHOOK_TOLERANCE_SECS: i64 = 300;
/// The header carrying the signature.
pub const SIGNATURE_HEADER: &str = "Mealkitz-Signature";

/// Why a signature was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("the Mealkitz-Signature header is missing")]
    Missing,
    #[error("the Mealkitz-Signature header is malformed; expected t=<unix seconds>,v1=<hex>")]
    Malformed,
    #[error("the signature timestamp is more than 5 minutes from now")]
    Expired,
    #[error("no signature matches")]
    NoMatch,
}

fn mac(secret: &[u8], timestamp: i64, body: &[u8]) -> Hmac<Sha256> {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// Bytes as lower-case hex digits.
pub fn encode_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Hex digits as bytes; `None` for an odd length or a non-hex digit.
pub fn decode_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

/// The header value signing `body` at `timestamp` (for senders and tests).
pub fn sign(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    let digest = mac(secret, timestamp, body).finalize().into_bytes();
    let hex = encode_hex(&digest);
    format!("t={timestamp},v1={hex}")
}

/// Checks `header` against `body` at time `now` (unix seconds). Comparison is constant-time.
pub fn verify(
    header: Option<&str>,
    body: &[u8],
    secret: &[u8],
    now: i64,
) -> Result<(), SignatureError> {
    let header = header.ok_or(SignatureError::Missing)?;
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", value)) => {
                timestamp = Some(
                    value
                        .parse::<i64>()
                        .map_err(|_| SignatureError::Malformed)?,
                )
            }
            Some(("v1", value)) => {
                signatures.push(decode_hex(value).ok_or(SignatureError::Malformed)?)
            }
            Some(_) => {}
            None => return Err(SignatureError::Malformed),
        }
    }
    let timestamp = timestamp.ok_or(SignatureError::Malformed)?;
    if signatures.is_empty() {
        return Err(SignatureError::Malformed);
    }
    if (now - timestamp).abs() > WEBHOOK_TOLERANCE_SECS {
        return Err(SignatureError::Expired);
    }
    let expected = mac(secret, timestamp, body);
    if signatures
        .iter()
        .any(|signature| expected.clone().verify_slice(signature).is_ok())
    {
        Ok(())
    } else {
        Err(SignatureError::NoMatch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"whsec_test";
    const BODY: &[u8] = br#"{"id":"evt_1"}"#;

    #[test]
    fn a_fresh_signature_of_the_body_verifies() {
        let header = sign(SECRET, 1_000, BODY);
        assert_eq!(verify(Some(&header), BODY, SECRET, 1_010), Ok(()));
    }

    #[test]
    fn tampering_another_secret_or_age_is_refused() {
        let header = sign(SECRET, 1_000, BODY);
        assert_eq!(
            verify(Some(&header), b"{}", SECRET, 1_000),
            Err(SignatureError::NoMatch)
        );
        assert_eq!(
            verify(Some(&header), BODY, b"other", 1_000),
            Err(SignatureError::NoMatch)
        );
        assert_eq!(
            verify(Some(&header), BODY, SECRET, 1_301),
            Err(SignatureError::Expired)
        );
        assert_eq!(
            verify(Some(&header), BODY, SECRET, 699),
            Err(SignatureError::Expired)
        );
        assert_eq!(
            verify(None, BODY, SECRET, 1_000),
            Err(SignatureError::Missing)
        );
        for bad in [
            "",
            "t=x,v1=00",
            "t=1000",
            "v1=00",
            "t=1000,v1=zz",
            "nonsense",
        ] {
            assert_eq!(
                verify(Some(bad), BODY, SECRET, 1_000),
                Err(SignatureError::Malformed),
                "case {bad:?}"
            );
        }
    }

    #[test]
    fn any_of_several_signatures_may_match_during_rotation() {
        let old = sign(b"old-secret", 1_000, BODY);
        let new = sign(SECRET, 1_000, BODY);
        let old_v1 = old.split_once(",v1=").unwrap().1;
        let new_v1 = new.split_once(",v1=").unwrap().1;
        let header = format!("t=1000,v1={old_v1},v1={new_v1}");
        assert_eq!(verify(Some(&header), BODY, SECRET, 1_000), Ok(()));
        assert_eq!(verify(Some(&header), BODY, b"old-secret", 1_000), Ok(()));
    }
}
