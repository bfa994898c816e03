//! `X-Hub-Signature-256` verification: HMAC-SHA256 of the raw body under any of the configured
//! secrets (several during rotation), compared in constant time. Pure: no I/O.
//!
//! ring's HMAC is used rather than the `hmac`/`sha2` crates: on CPUs without SHA extensions its
//! assembly SHA-256 is about twice as fast (80 µs against 150 µs for a 28 KB payload, measured
//! with `target/release/examples/parts`), and hashing the body is the receive role's largest cost.

use ring::hmac;

/// Why a signature was refused. Kept coarse on purpose: the client learns nothing more.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// Not of the form `sha256=<64 hex digits>`.
    #[error("malformed signature header")]
    Malformed,
    /// Well-formed, but no configured secret produces it.
    #[error("signature does not match")]
    Mismatch,
    /// No secret is configured (refuse everything rather than accept everything).
    #[error("no webhook secret configured")]
    NoSecrets,
}

/// The secrets deliveries may be signed with, as ready HMAC keys.
#[derive(Clone)]
pub struct Verifier {
    keyed: Vec<hmac::Key>,
}

impl std::fmt::Debug for Verifier {
    // Never print key material, not even derived state.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("secrets", &self.keyed.len())
            .finish()
    }
}

impl Verifier {
    /// A verifier accepting signatures made with any of `secrets`.
    pub fn new<S: AsRef<[u8]>>(secrets: &[S]) -> Verifier {
        let keyed = secrets
            .iter()
            .map(|s| hmac::Key::new(hmac::HMAC_SHA256, s.as_ref()))
            .collect();
        Verifier { keyed }
    }

    /// How many secrets are accepted.
    pub fn len(&self) -> usize {
        self.keyed.len()
    }

    /// Whether no secret is configured.
    pub fn is_empty(&self) -> bool {
        self.keyed.is_empty()
    }

    /// Checks `header` (the `X-Hub-Signature-256` value) against `body`.
    pub fn verify(&self, header: &str, body: &[u8]) -> Result<(), SignatureError> {
        if self.keyed.is_empty() {
            return Err(SignatureError::NoSecrets);
        }
        let hex_digest = header
            .trim()
            .strip_prefix("sha256=")
            .ok_or(SignatureError::Malformed)?;
        if hex_digest.len() != 64 {
            return Err(SignatureError::Malformed);
        }
        let expected = hex::decode(hex_digest).map_err(|_| SignatureError::Malformed)?;
        // Each comparison is constant time. Secrets are tried in the order configured (current
        // first), so only deliveries signed with an older secret pay for a second hash; which
        // secret matched is no secret.
        if self
            .keyed
            .iter()
            .any(|key| hmac::verify(key, body, &expected).is_ok())
        {
            Ok(())
        } else {
            Err(SignatureError::Mismatch)
        }
    }
}

/// `sha256=<hex>` for `body` under `secret`: what GitHub sends (used by tests and tools).
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    format!("sha256={}", hex::encode(hmac::sign(&key, body).as_ref()))
}

#[cfg(test)]
mod tests {
    use super::*;

    // GitHub's own test vector (docs: "Validating webhook deliveries").
    const SECRET: &str = "It's a Secret to Everybody";
    const PAYLOAD: &str = "Hello, World!";
    const SIGNATURE: &str =
        "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";

    #[test]
    fn githubs_test_vector_verifies() {
        assert_eq!(sign(SECRET.as_bytes(), PAYLOAD.as_bytes()), SIGNATURE);
        assert_eq!(
            Verifier::new(&[SECRET]).verify(SIGNATURE, PAYLOAD.as_bytes()),
            Ok(())
        );
    }

    #[test]
    fn any_of_several_secrets_is_accepted_during_rotation() {
        let verifier = Verifier::new(&["new-secret", SECRET]);
        assert_eq!(verifier.verify(SIGNATURE, PAYLOAD.as_bytes()), Ok(()));
        let other = sign(b"new-secret", PAYLOAD.as_bytes());
        assert_eq!(verifier.verify(&other, PAYLOAD.as_bytes()), Ok(()));
    }

    #[test]
    fn wrong_secret_or_changed_body_is_a_mismatch() {
        let verifier = Verifier::new(&["another secret"]);
        assert_eq!(
            verifier.verify(SIGNATURE, PAYLOAD.as_bytes()),
            Err(SignatureError::Mismatch)
        );
        let verifier = Verifier::new(&[SECRET]);
        assert_eq!(
            verifier.verify(SIGNATURE, b"Hello, World?"),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn malformed_headers_are_refused() {
        let verifier = Verifier::new(&[SECRET]);
        let sha1 = "sha1=0123456789abcdef0123456789abcdef01234567";
        let short = &SIGNATURE[..70];
        let not_hex = format!("sha256={}", "z".repeat(64));
        for header in ["", "757107ea", sha1, short, not_hex.as_str()] {
            assert_eq!(
                verifier.verify(header, PAYLOAD.as_bytes()),
                Err(SignatureError::Malformed),
                "{header}"
            );
        }
    }

    #[test]
    fn uppercase_hex_and_surrounding_spaces_are_accepted() {
        let verifier = Verifier::new(&[SECRET]);
        let upper = format!(" sha256={} ", SIGNATURE[7..].to_uppercase());
        assert_eq!(verifier.verify(&upper, PAYLOAD.as_bytes()), Ok(()));
    }

    #[test]
    fn no_secrets_refuses_everything() {
        let verifier = Verifier::new::<&str>(&[]);
        assert_eq!(
            verifier.verify(SIGNATURE, PAYLOAD.as_bytes()),
            Err(SignatureError::NoSecrets)
        );
    }

    #[test]
    fn debug_output_shows_no_key_material() {
        let text = format!("{:?}", Verifier::new(&[SECRET]));
        assert_eq!(text, "Verifier { secrets: 1 }");
    }
}
