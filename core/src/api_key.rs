//! API keys: the policy stores only SHA-256 hashes, and a presented key is compared against every
//! stored hash in constant time, so neither the file nor response timing gives a key away.

use http::HeaderName;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// An API-key provider: the header to read and the accepted keys.
#[derive(Debug)]
pub struct ApiKeyProvider {
    /// Where clients send the key. Never forwarded to the origin.
    pub header: HeaderName,
    /// Accepted keys.
    pub keys: Vec<ApiKey>,
}

/// One accepted key.
#[derive(Debug, Clone)]
pub struct ApiKey {
    /// SHA-256 of the key.
    pub sha256: [u8; 32],
    /// The consumer this key identifies.
    pub consumer: String,
    /// Scopes this key grants.
    pub scopes: Vec<String>,
}

/// Longest key accepted, in bytes.
pub const MAX_KEY_BYTES: usize = 1024;

impl ApiKeyProvider {
    /// The key matching `presented`, if any. Every stored hash is compared, match or not.
    pub fn verify(&self, presented: &[u8]) -> Option<&ApiKey> {
        if presented.is_empty() || presented.len() > MAX_KEY_BYTES {
            return None;
        }
        let digest: [u8; 32] = Sha256::digest(presented).into();
        let mut found: Option<&ApiKey> = None;
        for key in &self.keys {
            if bool::from(key.sha256.ct_eq(&digest)) {
                found = Some(key);
            }
        }
        found
    }
}
