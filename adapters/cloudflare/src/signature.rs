//! Signature checks with WebCrypto (`crypto.subtle`) for the Worker: the core's [`Verify`]
//! backend, plugged in where [`crate::policy`] builds the [`Gateway`](portcullis_core::Gateway).
//!
//! workerd runs WebCrypto in native code, so an uncached RS256 or ES256 token no longer spends
//! milliseconds of the Worker's CPU budget in WebAssembly. The core still decides which key and
//! algorithm apply; this only answers whether a signature is valid, and answers `false` for
//! anything it cannot check (a signature of the wrong length, a key and algorithm that do not
//! fit, a key WebCrypto refuses to import, a rejected promise).
//!
//! | JWS | WebCrypto | key imported as |
//! | --- | --- | --- |
//! | RS256/384/512 | RSASSA-PKCS1-v1_5, SHA-256/384/512 | JWK (`n`, `e`) |
//! | PS256/384/512 | RSA-PSS, salt as long as the hash (RFC 7518 §3.5) | JWK (`n`, `e`) |
//! | ES256, ES384 | ECDSA on P-256/P-384, SHA-256/384; JWS's `r‖s` is WebCrypto's form | raw point |
//! | EdDSA | Ed25519 (the standard name; workerd also knows `NODE-ED25519`) | raw 32 bytes |
//!
//! Importing parses and validates a key every time, so imported keys are kept per isolate (see
//! [`KEY_CACHE_ENTRIES`]). The isolate is single-threaded; the cache is thread-local and holds the
//! only JavaScript values, so [`WebCrypto`] itself stays `Send + Sync` as the core requires.

use std::cell::RefCell;
use std::collections::HashMap;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use js_sys::{Array, Object, Reflect, Uint8Array};
use portcullis_core::jwt::{Algorithm, Jwk, KeyMaterial};
use portcullis_core::signature::{Check, Verify};
use rsa::traits::PublicKeyParts;
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;
use web_sys::{CryptoKey, SubtleCrypto, WorkerGlobalScope};

/// How many imported keys an isolate keeps. A key set rarely holds more than a few keys, each
/// imported once per algorithm it is used with; past this, the least recently used goes.
pub const KEY_CACHE_ENTRIES: usize = 64;

/// WebCrypto as the core's signature backend.
#[derive(Debug, Default, Clone, Copy)]
pub struct WebCrypto;

impl Verify for WebCrypto {
    fn verify<'a>(
        &'a self,
        alg: Algorithm,
        key: &'a Jwk,
        message: &'a [u8],
        signature: &'a [u8],
    ) -> Check<'a> {
        Box::pin(check(alg, &key.material, message, signature))
    }

    fn name(&self) -> &'static str {
        "webcrypto"
    }
}

/// The WebCrypto parameters for one JWS algorithm on one kind of key.
#[derive(Debug, Clone, Copy)]
enum Scheme {
    /// RSASSA-PKCS1-v1_5 with this hash.
    Pkcs1(&'static str),
    /// RSA-PSS with this hash and a salt of this many bytes.
    Pss(&'static str, u32),
    /// ECDSA on this curve with this hash.
    Ecdsa(&'static str, &'static str),
    Ed25519,
}

impl Scheme {
    /// The scheme for `alg` on `material` and the one signature length it allows: the modulus
    /// length for RSA (RFC 8017 §8.1.2, §8.2.2), `r‖s` for ECDSA, 64 bytes for Ed25519. `None`
    /// when the algorithm does not fit the key.
    fn of(alg: Algorithm, material: &KeyMaterial) -> Option<(Scheme, usize)> {
        use Algorithm::*;
        Some(match (material, alg) {
            (KeyMaterial::Rsa(k), RS256) => (Scheme::Pkcs1("SHA-256"), k.size()),
            (KeyMaterial::Rsa(k), RS384) => (Scheme::Pkcs1("SHA-384"), k.size()),
            (KeyMaterial::Rsa(k), RS512) => (Scheme::Pkcs1("SHA-512"), k.size()),
            (KeyMaterial::Rsa(k), PS256) => (Scheme::Pss("SHA-256", 32), k.size()),
            (KeyMaterial::Rsa(k), PS384) => (Scheme::Pss("SHA-384", 48), k.size()),
            (KeyMaterial::Rsa(k), PS512) => (Scheme::Pss("SHA-512", 64), k.size()),
            (KeyMaterial::P256(_), ES256) => (Scheme::Ecdsa("P-256", "SHA-256"), 64),
            (KeyMaterial::P384(_), ES384) => (Scheme::Ecdsa("P-384", "SHA-384"), 96),
            (KeyMaterial::Ed25519(_), EdDSA) => (Scheme::Ed25519, 64),
            _ => return None,
        })
    }

    /// `importKey`'s algorithm argument.
    fn import_params(self) -> Object {
        match self {
            Scheme::Pkcs1(hash) => {
                object(&[("name", "RSASSA-PKCS1-v1_5".into()), ("hash", hash.into())])
            }
            Scheme::Pss(hash, _) => object(&[("name", "RSA-PSS".into()), ("hash", hash.into())]),
            Scheme::Ecdsa(curve, _) => {
                object(&[("name", "ECDSA".into()), ("namedCurve", curve.into())])
            }
            Scheme::Ed25519 => object(&[("name", "Ed25519".into())]),
        }
    }

    /// `verify`'s algorithm argument.
    fn verify_params(self) -> Object {
        match self {
            Scheme::Pkcs1(_) => object(&[("name", "RSASSA-PKCS1-v1_5".into())]),
            Scheme::Pss(_, salt) => {
                object(&[("name", "RSA-PSS".into()), ("saltLength", salt.into())])
            }
            Scheme::Ecdsa(_, hash) => object(&[("name", "ECDSA".into()), ("hash", hash.into())]),
            Scheme::Ed25519 => object(&[("name", "Ed25519".into())]),
        }
    }
}

async fn check(alg: Algorithm, material: &KeyMaterial, message: &[u8], signature: &[u8]) -> bool {
    let Some((scheme, signature_len)) = Scheme::of(alg, material) else {
        return false;
    };
    if signature.len() != signature_len {
        return false;
    }
    let Some(subtle) = subtle() else {
        return false;
    };
    let Some(key) = imported(&subtle, alg, scheme, material).await else {
        return false;
    };
    // Copies in JavaScript memory, so nothing WebCrypto reads points into the Wasm heap.
    let signature = Uint8Array::from(signature);
    let message = Uint8Array::from(message);
    let Ok(promise) = subtle.verify_with_object_and_buffer_source_and_buffer_source(
        &scheme.verify_params(),
        &key,
        &signature,
        &message,
    ) else {
        return false;
    };
    JsFuture::from(promise)
        .await
        .is_ok_and(|valid| valid.as_bool() == Some(true))
}

/// The global scope's `crypto.subtle`.
fn subtle() -> Option<SubtleCrypto> {
    let scope: WorkerGlobalScope = js_sys::global().unchecked_into();
    scope.crypto().ok().map(|c| c.subtle())
}

/// The key imported for `alg`, from the cache or imported now (and then cached).
async fn imported(
    subtle: &SubtleCrypto,
    alg: Algorithm,
    scheme: Scheme,
    material: &KeyMaterial,
) -> Option<CryptoKey> {
    let id = cache_id(alg, material);
    if let Some(key) = KEYS.with_borrow_mut(|cache| cache.get(&id)) {
        return Some(key);
    }
    let (format, data) = key_data(material);
    let usages = Array::of1(&"verify".into());
    let promise = subtle
        .import_key_with_object(format, &data, &scheme.import_params(), false, &usages)
        .ok()?;
    let key: CryptoKey = JsFuture::from(promise).await.ok()?.dyn_into().ok()?;
    KEYS.with_borrow_mut(|cache| cache.insert(id, key.clone()));
    Some(key)
}

/// `importKey`'s format and key data: a JWK with `n` and `e` for RSA (WebCrypto has no raw RSA
/// format), the raw public key for the curves.
fn key_data(material: &KeyMaterial) -> (&'static str, Object) {
    match material {
        KeyMaterial::Rsa(k) => {
            let n = URL_SAFE_NO_PAD.encode(k.n().to_bytes_be());
            let e = URL_SAFE_NO_PAD.encode(k.e().to_bytes_be());
            let jwk = object(&[("kty", "RSA".into()), ("n", n.into()), ("e", e.into())]);
            ("jwk", jwk)
        }
        KeyMaterial::P256(k) => ("raw", bytes(k.to_encoded_point(false).as_bytes())),
        KeyMaterial::P384(k) => ("raw", bytes(k.to_encoded_point(false).as_bytes())),
        KeyMaterial::Ed25519(k) => ("raw", bytes(&k[..])),
    }
}

/// The cache key: the algorithm (an imported key is bound to its hash and padding) and the whole
/// public key, so that two keys can never share an entry.
fn cache_id(alg: Algorithm, material: &KeyMaterial) -> Vec<u8> {
    let mut id = alg.name().as_bytes().to_vec();
    id.push(b'.');
    match material {
        KeyMaterial::Rsa(k) => {
            let n = k.n().to_bytes_be();
            id.extend_from_slice(&(n.len() as u32).to_be_bytes());
            id.extend_from_slice(&n);
            id.extend_from_slice(&k.e().to_bytes_be());
        }
        KeyMaterial::P256(k) => id.extend_from_slice(k.to_encoded_point(false).as_bytes()),
        KeyMaterial::P384(k) => id.extend_from_slice(k.to_encoded_point(false).as_bytes()),
        KeyMaterial::Ed25519(k) => id.extend_from_slice(&k[..]),
    }
    id
}

fn bytes(data: &[u8]) -> Object {
    Uint8Array::from(data).into()
}

/// A plain JavaScript object with these members.
fn object(members: &[(&str, JsValue)]) -> Object {
    let object = Object::new();
    for (name, value) in members {
        // Setting a member on a fresh plain object cannot fail; were it to, WebCrypto would
        // refuse the incomplete argument and the check would answer `false`.
        let _ = Reflect::set(&object, &(*name).into(), value);
    }
    object
}

// ===== the key cache =====

thread_local! {
    static KEYS: RefCell<KeyCache> = RefCell::new(KeyCache::default());
}

/// Imported keys by [`cache_id`], at most [`KEY_CACHE_ENTRIES`], least recently used evicted.
#[derive(Default)]
struct KeyCache {
    entries: HashMap<Vec<u8>, (CryptoKey, u64)>,
    clock: u64,
}

impl KeyCache {
    fn get(&mut self, id: &[u8]) -> Option<CryptoKey> {
        self.clock += 1;
        let (key, used) = self.entries.get_mut(id)?;
        *used = self.clock;
        Some(key.clone())
    }

    fn insert(&mut self, id: Vec<u8>, key: CryptoKey) {
        self.clock += 1;
        if self.entries.len() >= KEY_CACHE_ENTRIES && !self.entries.contains_key(&id) {
            let oldest = self
                .entries
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(id, _)| id.clone());
            if let Some(oldest) = oldest {
                self.entries.remove(&oldest);
            }
        }
        self.entries.insert(id, (key, self.clock));
    }
}
