//! Public-key signature checks for JWS (RS*, PS*, ES256, ES384, EdDSA): the one place where a
//! runtime may plug in faster crypto than the portable default.
//!
//! What a backend decides is deliberately narrow: whether `signature` is a valid signature of
//! `message` by `key` under `alg`. Everything around it (which algorithms a provider accepts,
//! which key a `kid` selects, that the key's type fits the algorithm, the claims) stays in
//! [`crate::jwt`], so a backend cannot weaken policy, only make the check faster. HMAC
//! algorithms never reach a backend: they are cheap and checked in the core.
//!
//! - [`PureRust`]: the default, portable to every target (RustCrypto's `rsa`, `p256`, `p384` and
//!   `ed25519-compact`).
//! - Native: `adapters/local` plugs in `ring`. On Workers, `adapters/cloudflare` plugs in WebCrypto
//!   (`crypto.subtle`).
//!
//! Such backends read what an algorithm means on a key from one table ([`scheme`]), so none can
//! pair it with the wrong hash or padding, and may keep imported keys in [`imported`]. A backend
//! whose check completes at once implements [`SyncVerify`].

use std::future::Future;
use std::pin::Pin;

use jwt_compact::alg::{Ed25519, Es256, Rsa};
use jwt_compact::{Algorithm as JwsAlgorithm, AlgorithmSignature};

use crate::jwt::{Algorithm, Es384, Jwk, KeyMaterial};

pub mod imported;
pub mod scheme;

/// A pending signature check. Boxed so that backends can be chosen at run time; not `Send`,
/// since WebAssembly runtimes cannot offer that.
pub type Check<'a> = Pin<Box<dyn Future<Output = bool> + 'a>>;

/// A signature-check backend.
///
/// A backend must return `false`, never panic, for anything it cannot check: a signature of the
/// wrong length, a key it does not support, an algorithm outside the list above.
pub trait Verify: Send + Sync + std::fmt::Debug {
    /// Whether `signature` is valid for `message` under `key` and `alg`. The caller has already
    /// checked that `key` fits `alg` ([`Jwk::fits`]).
    fn verify<'a>(
        &'a self,
        alg: Algorithm,
        key: &'a Jwk,
        message: &'a [u8],
        signature: &'a [u8],
    ) -> Check<'a>;

    /// The backend's name, for start-up logs and benchmarks.
    fn name(&self) -> &'static str;
}

/// A backend whose check completes at once (pure Rust, `ring`): it is a [`Verify`] whose checks
/// are ready when asked for.
pub trait SyncVerify: Send + Sync + std::fmt::Debug {
    /// Whether `signature` is valid for `message` under `key` and `alg` (see [`Verify::verify`]).
    fn check_now(&self, alg: Algorithm, key: &Jwk, message: &[u8], signature: &[u8]) -> bool;

    /// The backend's name, for start-up logs and benchmarks.
    fn name(&self) -> &'static str;
}

impl<T: SyncVerify> Verify for T {
    fn verify<'a>(
        &'a self,
        alg: Algorithm,
        key: &'a Jwk,
        message: &'a [u8],
        signature: &'a [u8],
    ) -> Check<'a> {
        Box::pin(std::future::ready(
            self.check_now(alg, key, message, signature),
        ))
    }

    fn name(&self) -> &'static str {
        SyncVerify::name(self)
    }
}

/// The portable default: pure-Rust verification, synchronous underneath.
#[derive(Debug, Default, Clone, Copy)]
pub struct PureRust;

impl PureRust {
    /// The check itself, without the future around it.
    pub fn check(alg: Algorithm, key: &Jwk, message: &[u8], signature: &[u8]) -> bool {
        match (&key.material, alg) {
            (KeyMaterial::Rsa(k), Algorithm::RS256) => with(&Rsa::rs256(), k, message, signature),
            (KeyMaterial::Rsa(k), Algorithm::RS384) => with(&Rsa::rs384(), k, message, signature),
            (KeyMaterial::Rsa(k), Algorithm::RS512) => with(&Rsa::rs512(), k, message, signature),
            (KeyMaterial::Rsa(k), Algorithm::PS256) => with(&Rsa::ps256(), k, message, signature),
            (KeyMaterial::Rsa(k), Algorithm::PS384) => with(&Rsa::ps384(), k, message, signature),
            (KeyMaterial::Rsa(k), Algorithm::PS512) => with(&Rsa::ps512(), k, message, signature),
            (KeyMaterial::P256(k), Algorithm::ES256) => with(&Es256, k, message, signature),
            (KeyMaterial::P384(k), Algorithm::ES384) => with(&Es384, k, message, signature),
            (KeyMaterial::Ed25519(k), Algorithm::EdDSA) => with(&Ed25519, k, message, signature),
            _ => false,
        }
    }
}

fn with<A: JwsAlgorithm>(alg: &A, key: &A::VerifyingKey, message: &[u8], signature: &[u8]) -> bool {
    // Length first: some `try_from_slice` implementations (Ed25519's) panic on a wrong length,
    // and the length comes straight from the token.
    if A::Signature::LENGTH.is_some_and(|n| n.get() != signature.len()) {
        return false;
    }
    match A::Signature::try_from_slice(signature) {
        Ok(signature) => alg.verify_signature(&signature, key, message),
        Err(_) => false,
    }
}

impl SyncVerify for PureRust {
    fn check_now(&self, alg: Algorithm, key: &Jwk, message: &[u8], signature: &[u8]) -> bool {
        Self::check(alg, key, message, signature)
    }

    fn name(&self) -> &'static str {
        "pure-rust"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jwt::parse_jwk;
    use crate::testing::keys;

    /// A signature of any wrong length is refused, never a panic: the length is the attacker's.
    #[test]
    fn wrong_length_signatures_are_refused_for_every_algorithm() {
        let jwks = keys().jwks();
        let algs = [
            Algorithm::RS256,
            Algorithm::PS512,
            Algorithm::ES256,
            Algorithm::ES384,
            Algorithm::EdDSA,
        ];
        let mut checked = 0;
        for jwk in jwks["keys"].as_array().into_iter().flatten() {
            let key = parse_jwk(jwk).unwrap();
            for alg in algs.into_iter().filter(|a| key.fits(*a)) {
                let token = keys().sign(alg, key.kid.as_deref(), &serde_json::json!({"exp": 1}));
                let (input, _) = token.rsplit_once('.').unwrap();
                for len in [0, 1, 31, 63, 65, 95, 97, 255, 257, 4096] {
                    let signature = vec![0x5a; len];
                    assert!(!PureRust::check(alg, &key, input.as_bytes(), &signature));
                }
                checked += 1;
            }
        }
        assert_eq!(checked, algs.len());
    }
}
