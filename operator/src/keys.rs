//! Per-scan result-signing keys, derived from the operator's master key and a ScanRequest's UID
//! (HMAC-SHA256 as the derivation function, with a fixed, versioned label). The operator writes
//! the derived key into the per-scan Secret once and can derive it again to verify a result, so
//! it never reads Secrets back (no `get`/`list` on Secrets). A key leaked from one scan pod signs
//! results for that ScanRequest only.

use ring::hmac;

/// Derivation label: changing the scheme changes the label, so keys of two schemes never match.
const LABEL: &[u8] = b"gatehouse.dev/scan-key/v1\0";

/// Fewest bytes of master key accepted (256 bits).
pub const MIN_MASTER_KEY_BYTES: usize = 32;

/// The master key could not be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    /// Too short to derive keys from safely.
    #[error(
        "master key has {0} bytes; at least {MIN_MASTER_KEY_BYTES} are needed (e.g. `openssl rand -hex 32`)"
    )]
    TooShort(usize),
}

/// The operator's master key. Its value is never printed.
#[derive(Clone)]
pub struct MasterKey(hmac::Key);

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(redacted)")
    }
}

impl MasterKey {
    /// The key from a mounted Secret file's contents; surrounding whitespace (a trailing newline)
    /// is not part of it.
    pub fn from_file_contents(contents: &[u8]) -> Result<MasterKey, KeyError> {
        let key = contents.trim_ascii();
        if key.len() < MIN_MASTER_KEY_BYTES {
            return Err(KeyError::TooShort(key.len()));
        }
        Ok(MasterKey(hmac::Key::new(hmac::HMAC_SHA256, key)))
    }

    /// The signing key of the ScanRequest with this UID.
    pub fn scan_key(&self, uid: &str) -> ScanKey {
        let mut context = hmac::Context::with_key(&self.0);
        context.update(LABEL);
        context.update(uid.as_bytes());
        let tag = context.sign();
        let mut bytes = [0_u8; 32];
        bytes.copy_from_slice(tag.as_ref());
        ScanKey(bytes)
    }
}

/// One ScanRequest's result-signing key. Its value is never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct ScanKey([u8; 32]);

impl std::fmt::Debug for ScanKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ScanKey(redacted)")
    }
}

impl ScanKey {
    /// The key as the per-scan Secret holds it (64 hex digits, surrounding whitespace
    /// ignored); `None` for anything else.
    pub fn from_hex(text: &str) -> Option<ScanKey> {
        let bytes = hex::decode(text.trim()).ok()?;
        Some(ScanKey(bytes.try_into().ok()?))
    }

    /// The key as it goes into the per-scan Secret (hex).
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// The HMAC-SHA256 of `payload` under this key, hex.
    pub fn sign(&self, payload: &[u8]) -> String {
        hex::encode(hmac::sign(
            &hmac::Key::new(hmac::HMAC_SHA256, &self.0),
            payload,
        ))
    }

    /// Whether `signature` (hex) is this key's signature of `payload`; constant time in the
    /// signature's contents.
    pub fn verify(&self, payload: &[u8], signature: &str) -> bool {
        let Ok(tag) = hex::decode(signature) else {
            return false;
        };
        hmac::verify(&hmac::Key::new(hmac::HMAC_SHA256, &self.0), payload, &tag).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const UID: &str = "5b7f2a1e-3c4d-4e5f-8a9b-0c1d2e3f4a5b";

    fn master() -> MasterKey {
        // As mounted from a Secret: the trailing newline is not part of the key.
        MasterKey::from_file_contents(b"master-key-for-tests-0123456789abcdef\n")
            .unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn keys_match_an_independent_hmac_sha256() {
        // Python: hmac.new(b"master-key-for-tests-0123456789abcdef",
        // b"gatehouse.dev/scan-key/v1\0" + uid, hashlib.sha256).hexdigest()
        assert_eq!(
            master().scan_key(UID).to_hex(),
            "bcd4b452158a267e2ccb6c7864f35683a649e957dd92f41e358b518684495a36"
        );
        assert_eq!(
            master()
                .scan_key("5b7f2a1e-3c4d-4e5f-8a9b-0c1d2e3f4a5c")
                .to_hex(),
            "3585329b44a86c7b42f6af1dcafcaaac8404585194dc4161af16306cf61352ad"
        );
    }

    #[test]
    fn a_key_verifies_its_own_signatures_only() {
        let key = master().scan_key(UID);
        let other = master().scan_key("another-uid");
        let signature = key.sign(b"result");
        assert!(key.verify(b"result", &signature));
        assert!(!key.verify(b"result!", &signature));
        assert!(!other.verify(b"result", &signature));
        assert!(!key.verify(b"result", "not hex"));
        assert!(!key.verify(b"result", ""));
    }

    #[test]
    fn short_master_keys_are_refused_and_keys_are_never_printed() {
        assert_eq!(
            MasterKey::from_file_contents(b"  short\n").err(),
            Some(KeyError::TooShort(5))
        );
        let master = MasterKey::from_file_contents(&[b'k'; 32]).unwrap_or_else(|e| panic!("{e}"));
        let key = master.scan_key(UID);
        assert_eq!(
            format!("{master:?} {key:?}"),
            "MasterKey(redacted) ScanKey(redacted)"
        );
    }
}
