//! Test keys and a token minter (feature `testing`): deterministic, so vectors and benchmarks
//! see the same keys on every run. Never use these keys for anything real. Also an in-memory
//! shared key-set store ([`MemoryKeySets`]) standing in for Spin's key-value store.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::task::Poll;
use std::time::Duration;

use jwt_compact::alg::{Ed25519, Es256, Hs256, Hs256Key, Hs384, Hs384Key, Hs512, Hs512Key, Rsa};
use jwt_compact::{AlgorithmExt, Claims, Header};
use rand_chacha::rand_core::SeedableRng;
use rsa::traits::PublicKeyParts;
use serde_json::{json, Map, Value};

use crate::body::{BodyError, RequestBody};
use crate::jwks::shared::{Pending, SharedKeySets, SharedStoreError};
use crate::jwt::{Algorithm, Es384};

/// The HMAC secret for HS* test tokens (48 bytes).
pub const HS_SECRET: &str = "portcullis-test-secret-portcullis-test-secret-00";

/// Deterministic signing keys for every supported algorithm family.
pub struct TestKeys {
    rsa: rsa::RsaPrivateKey,
    p256: p256::ecdsa::SigningKey,
    p384: p384::ecdsa::SigningKey,
    ed25519: ed25519_compact::KeyPair,
}

/// The shared test keys (the RSA key is generated once per process).
pub fn keys() -> &'static TestKeys {
    static KEYS: OnceLock<TestKeys> = OnceLock::new();
    KEYS.get_or_init(|| {
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(0x5eed);
        TestKeys {
            rsa: rsa::RsaPrivateKey::new(&mut rng, 2048).expect("RSA test key generation"),
            p256: p256::ecdsa::SigningKey::from_slice(&[7u8; 32]).expect("P-256 test key"),
            p384: p384::ecdsa::SigningKey::from_slice(&[9u8; 48]).expect("P-384 test key"),
            ed25519: ed25519_compact::KeyPair::from_seed(ed25519_compact::Seed::new([3u8; 32])),
        }
    })
}

fn b64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

impl TestKeys {
    /// Public JWKs, with kids `rsa-1`, `ec-256`, `ec-384` and `ed-1`.
    pub fn jwks(&self) -> Value {
        let rsa = self.rsa.to_public_key();
        let p256 = self.p256.verifying_key().to_encoded_point(false);
        let p384 = self.p384.verifying_key().to_encoded_point(false);
        json!({ "keys": [
            { "kty": "RSA", "kid": "rsa-1", "use": "sig", "n": b64(&rsa.n().to_bytes_be()), "e": b64(&rsa.e().to_bytes_be()) },
            { "kty": "EC", "kid": "ec-256", "crv": "P-256", "x": b64(p256.x().unwrap()), "y": b64(p256.y().unwrap()) },
            { "kty": "EC", "kid": "ec-384", "crv": "P-384", "x": b64(p384.x().unwrap()), "y": b64(p384.y().unwrap()) },
            { "kty": "OKP", "kid": "ed-1", "crv": "Ed25519", "x": b64(self.ed25519.pk.as_ref()) },
        ]})
    }

    /// The kid of the key that signs `alg` (None for HMAC).
    pub fn kid_for(alg: Algorithm) -> Option<&'static str> {
        use Algorithm::*;
        match alg {
            HS256 | HS384 | HS512 => None,
            RS256 | RS384 | RS512 | PS256 | PS384 | PS512 => Some("rsa-1"),
            ES256 => Some("ec-256"),
            ES384 => Some("ec-384"),
            EdDSA => Some("ed-1"),
        }
    }

    /// A token for `claims` (a JSON object; `exp`/`nbf`/`iat` as numbers), signed with `alg`
    /// under `kid` (`None` leaves the header without one).
    pub fn sign(&self, alg: Algorithm, kid: Option<&str>, claims: &Value) -> String {
        let mut custom: Map<String, Value> = claims.as_object().cloned().unwrap_or_default();
        let mut c = Claims::new(Map::new());
        let time = |v: Option<Value>| {
            v.and_then(|v| v.as_i64())
                .and_then(|s| chrono::DateTime::from_timestamp(s, 0))
        };
        c.expiration = time(custom.remove("exp"));
        c.not_before = time(custom.remove("nbf"));
        c.issued_at = time(custom.remove("iat"));
        c.custom = custom;
        let mut header = Header::empty();
        if let Some(k) = kid {
            header = header.with_key_id(k);
        }
        let secret = HS_SECRET.as_bytes();
        use Algorithm::*;
        let token = match alg {
            HS256 => Hs256.token(&header, &c, &Hs256Key::new(secret)),
            HS384 => Hs384.token(&header, &c, &Hs384Key::new(secret)),
            HS512 => Hs512.token(&header, &c, &Hs512Key::new(secret)),
            RS256 => Rsa::rs256().token(&header, &c, &self.rsa),
            RS384 => Rsa::rs384().token(&header, &c, &self.rsa),
            RS512 => Rsa::rs512().token(&header, &c, &self.rsa),
            PS256 => Rsa::ps256().token(&header, &c, &self.rsa),
            PS384 => Rsa::ps384().token(&header, &c, &self.rsa),
            PS512 => Rsa::ps512().token(&header, &c, &self.rsa),
            ES256 => Es256.token(&header, &c, &self.p256),
            ES384 => Es384.token(&header, &c, &self.p384),
            EdDSA => Ed25519.token(&header, &c, &self.ed25519.sk),
        };
        token.expect("signing a test token")
    }
}

/// A request body that is all there at once, as a runtime's is once it has arrived.
#[derive(Debug, Clone, Default)]
pub struct MemoryBody(pub Vec<u8>);

impl RequestBody for MemoryBody {
    async fn read_to_limit(self, limit: u64) -> Result<Vec<u8>, BodyError> {
        if self.0.len() as u64 > limit {
            Err(BodyError::TooLarge)
        } else {
            Ok(self.0)
        }
    }
}

/// A token from `keys()` with the usual kid for `alg`.
pub fn token(alg: Algorithm, claims: &Value) -> String {
    keys().sign(alg, TestKeys::kid_for(alg), claims)
}

/// An in-memory [`SharedKeySets`] for tests: clones share one map, as instances share a store.
/// Compare-and-swap is exact; failures and another instance's writes can be injected, and what
/// the core did with it (pauses, warnings) is recorded. A pause lets every other future on the
/// executor run once and reports the step as slept, so time is virtual.
#[derive(Debug, Default, Clone)]
pub struct MemoryKeySets(Arc<Mutex<Shared>>);

#[derive(Debug, Default)]
struct Shared {
    map: HashMap<String, String>,
    fail_reads: bool,
    fail_replaces: bool,
    interleave: Option<(String, String)>,
    pauses: usize,
    warnings: Vec<String>,
}

impl MemoryKeySets {
    fn shared(&self) -> MutexGuard<'_, Shared> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Store `text` under `name`.
    pub fn set(&self, name: &str, text: &str) {
        self.shared().map.insert(name.into(), text.into());
    }

    /// The text under `name`.
    pub fn get(&self, name: &str) -> Option<String> {
        self.shared().map.get(name).cloned()
    }

    /// Make every read fail (or not).
    pub fn fail_reads(&self, fail: bool) {
        self.shared().fail_reads = fail;
    }

    /// Make every replace fail (or not).
    pub fn fail_replaces(&self, fail: bool) {
        self.shared().fail_replaces = fail;
    }

    /// Write `text` under `name` just before the next replace looks, as another instance would
    /// between a read and a write.
    pub fn interleave(&self, name: &str, text: &str) {
        self.shared().interleave = Some((name.into(), text.into()));
    }

    /// Pauses so far.
    pub fn pauses(&self) -> usize {
        self.shared().pauses
    }

    /// Warnings so far, each as `name: why`.
    pub fn warnings(&self) -> Vec<String> {
        self.shared().warnings.clone()
    }
}

impl SharedKeySets for MemoryKeySets {
    fn read<'a>(&'a self, name: &'a str) -> Pending<'a, Result<Option<String>, SharedStoreError>> {
        let shared = self.shared();
        let result = if shared.fail_reads {
            Err(SharedStoreError::new("store down"))
        } else {
            Ok(shared.map.get(name).cloned())
        };
        Box::pin(std::future::ready(result))
    }

    fn replace<'a>(
        &'a self,
        name: &'a str,
        expected: Option<&'a str>,
        text: &'a str,
    ) -> Pending<'a, Result<bool, SharedStoreError>> {
        let mut shared = self.shared();
        if let Some((other, value)) = shared.interleave.take() {
            shared.map.insert(other, value);
        }
        let result = if shared.fail_replaces {
            Err(SharedStoreError::new("store read-only"))
        } else if shared.map.get(name).map(String::as_str) != expected {
            Ok(false)
        } else {
            shared.map.insert(name.into(), text.into());
            Ok(true)
        };
        Box::pin(std::future::ready(result))
    }

    fn pause(&self, step: Duration) -> Pending<'_, Duration> {
        self.shared().pauses += 1;
        Box::pin(async move {
            yield_now().await;
            step
        })
    }

    fn warn(&self, name: &str, why: &str) {
        self.shared().warnings.push(format!("{name}: {why}"));
    }
}

/// Let every other future on a single-threaded executor run once.
pub async fn yield_now() {
    let mut yielded = false;
    std::future::poll_fn(|cx| {
        if yielded {
            return Poll::Ready(());
        }
        yielded = true;
        cx.waker().wake_by_ref();
        Poll::Pending
    })
    .await
}
