//! Signature checks with WebCrypto (`crypto.subtle`) for the Worker: the core's [`Verify`]
//! backend, plugged in where [`crate::policy`] builds the [`Gateway`](portcullis_core::Gateway).
//!
//! workerd runs WebCrypto natively, so an uncached RS256 or ES256 token spends no milliseconds of
//! CPU in WebAssembly. The core decides which key and algorithm apply ([`Scheme`]); this answers
//! whether a signature is valid, and `false` for anything it cannot check (a wrong length, a key
//! that does not fit, a key WebCrypto refuses, a rejected promise).
//!
//! | JWS | WebCrypto | key imported as |
//! | --- | --- | --- |
//! | RS256/384/512 | RSASSA-PKCS1-v1_5, SHA-256/384/512 | JWK (`n`, `e`) |
//! | PS256/384/512 | RSA-PSS, salt as long as the hash (RFC 7518 §3.5) | JWK (`n`, `e`) |
//! | ES256, ES384 | ECDSA on P-256/P-384, SHA-256/384; JWS's `r‖s` is WebCrypto's form | raw point |
//! | EdDSA | Ed25519 (the standard name; workerd also knows `NODE-ED25519`) | raw 32 bytes |
//!
//! Imported keys are kept per isolate ([`KEY_CACHE_ENTRIES`]) in a thread-local cache, which holds
//! the only JavaScript values, so [`WebCrypto`] stays `Send + Sync` as the core requires.

use std::cell::RefCell;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use js_sys::{Array, Object, Reflect, Uint8Array};
use portcullis_core::jwt::{Algorithm, Jwk};
use portcullis_core::signature::imported::ImportedKeys;
use portcullis_core::signature::scheme::{Param, PublicKey, Scheme};
use portcullis_core::signature::{Check, Verify};
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;
use web_sys::{CryptoKey, SubtleCrypto, WorkerGlobalScope};

/// How many imported keys an isolate keeps. A key set rarely holds more than a few keys, each
/// imported once per algorithm it is used with; past this, the least recently used goes.
pub const KEY_CACHE_ENTRIES: usize = 64;

thread_local! {
    static KEYS: RefCell<ImportedKeys<CryptoKey>> =
        RefCell::new(ImportedKeys::new(KEY_CACHE_ENTRIES));
}

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
        Box::pin(check(alg, key, message, signature))
    }

    fn name(&self) -> &'static str {
        "webcrypto"
    }
}

/// An algorithm argument (`importKey`'s, `verify`'s) as the core's scheme table gives it.
fn params(members: Vec<(&'static str, Param)>) -> Object {
    object(members.into_iter().map(|(name, value)| match value {
        Param::Text(text) => (name, JsValue::from(text)),
        Param::Number(n) => (name, JsValue::from(n)),
    }))
}

async fn check(alg: Algorithm, key: &Jwk, message: &[u8], signature: &[u8]) -> bool {
    let Some(scheme) = Scheme::for_signature(alg, &key.material, signature) else {
        return false;
    };
    let Some(subtle) = subtle() else {
        return false;
    };
    let public = PublicKey::of(&key.material);
    let Some(key) = imported(&subtle, alg, scheme, &public).await else {
        return false;
    };
    // Copies in JavaScript memory, so nothing WebCrypto reads points into the Wasm heap.
    let signature = Uint8Array::from(signature);
    let message = Uint8Array::from(message);
    let Ok(promise) = subtle.verify_with_object_and_buffer_source_and_buffer_source(
        &params(scheme.verify_params()),
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
    public: &PublicKey,
) -> Option<CryptoKey> {
    if let Some(key) = KEYS.with_borrow_mut(|cache| cache.get(alg, public)) {
        return Some(key);
    }
    let (format, data) = key_data(public);
    let usages = Array::of1(&"verify".into());
    let promise = subtle
        .import_key_with_object(
            format,
            &data,
            &params(scheme.import_params()),
            false,
            &usages,
        )
        .ok()?;
    let key: CryptoKey = JsFuture::from(promise).await.ok()?.dyn_into().ok()?;
    KEYS.with_borrow_mut(|cache| cache.insert(alg, public, key.clone()));
    Some(key)
}

/// `importKey`'s format and key data: a JWK with `n` and `e` for RSA (WebCrypto has no raw RSA
/// format), the raw public key for the curves.
fn key_data(public: &PublicKey) -> (&'static str, Object) {
    match public {
        PublicKey::Rsa { n, e } => {
            let n = URL_SAFE_NO_PAD.encode(n);
            let e = URL_SAFE_NO_PAD.encode(e);
            let jwk = object([("kty", "RSA".into()), ("n", n.into()), ("e", e.into())]);
            ("jwk", jwk)
        }
        PublicKey::Point(point) => ("raw", Uint8Array::from(&point[..]).into()),
        PublicKey::Ed25519(k) => ("raw", Uint8Array::from(&k[..]).into()),
    }
}

/// A plain JavaScript object with these members.
fn object<'a>(members: impl IntoIterator<Item = (&'a str, JsValue)>) -> Object {
    let object = Object::new();
    for (name, value) in members {
        // Setting a member on a fresh plain object cannot fail; were it to, WebCrypto would
        // refuse the incomplete argument and the check would answer `false`.
        let _ = Reflect::set(&object, &name.into(), &value);
    }
    object
}
