//! Signature checks on `ring` for the native gateway: the core's [`Verify`] backend, plugged in
//! by `serve` and `demo`. The core still decides which key and algorithm apply, and its
//! [`Scheme`] table says what they mean; this only makes the check itself faster than the
//! portable pure-Rust default.
//!
//! [`Verify`]: portcullis_core::signature::Verify

use portcullis_core::jwt::{Algorithm, Jwk};
use portcullis_core::signature::scheme::{Curve, Hash, PublicKey, Scheme};
use portcullis_core::signature::SyncVerify;
use ring::signature::{self as sig, RsaPublicKeyComponents, UnparsedPublicKey};

/// `ring` as the core's signature backend.
#[derive(Debug, Default, Clone, Copy)]
pub struct Ring;

impl Ring {
    /// The check itself. `false` for anything `ring` refuses, including RSA moduli outside
    /// 2048 to 8192 bits.
    pub fn check(alg: Algorithm, key: &Jwk, message: &[u8], signature: &[u8]) -> bool {
        let Some((scheme, _)) = Scheme::of(alg, &key.material) else {
            return false;
        };
        let rsa: &sig::RsaParameters = match scheme {
            Scheme::Pkcs1(Hash::Sha256) => &sig::RSA_PKCS1_2048_8192_SHA256,
            Scheme::Pkcs1(Hash::Sha384) => &sig::RSA_PKCS1_2048_8192_SHA384,
            Scheme::Pkcs1(Hash::Sha512) => &sig::RSA_PKCS1_2048_8192_SHA512,
            Scheme::Pss(Hash::Sha256) => &sig::RSA_PSS_2048_8192_SHA256,
            Scheme::Pss(Hash::Sha384) => &sig::RSA_PSS_2048_8192_SHA384,
            Scheme::Pss(Hash::Sha512) => &sig::RSA_PSS_2048_8192_SHA512,
            Scheme::Ecdsa(curve, hash) => {
                let algorithm = match (curve, hash) {
                    (Curve::P256, Hash::Sha256) => &sig::ECDSA_P256_SHA256_FIXED,
                    (Curve::P384, Hash::Sha384) => &sig::ECDSA_P384_SHA384_FIXED,
                    _ => return false,
                };
                return unparsed(algorithm, key, message, signature);
            }
            Scheme::Ed25519 => return unparsed(&sig::ED25519, key, message, signature),
        };
        let PublicKey::Rsa { n, e } = PublicKey::of(&key.material) else {
            return false;
        };
        RsaPublicKeyComponents { n, e }
            .verify(rsa, message, signature)
            .is_ok()
    }
}

/// A check with a key `ring` takes as bytes: an EC point, an Ed25519 key.
fn unparsed(
    algorithm: &'static dyn sig::VerificationAlgorithm,
    key: &Jwk,
    message: &[u8],
    signature: &[u8],
) -> bool {
    let bytes = match PublicKey::of(&key.material) {
        PublicKey::Point(point) => point,
        PublicKey::Ed25519(k) => k.to_vec(),
        PublicKey::Rsa { .. } => return false,
    };
    UnparsedPublicKey::new(algorithm, bytes)
        .verify(message, signature)
        .is_ok()
}

impl SyncVerify for Ring {
    fn check_now(&self, alg: Algorithm, key: &Jwk, message: &[u8], signature: &[u8]) -> bool {
        Self::check(alg, key, message, signature)
    }

    fn name(&self) -> &'static str {
        "ring"
    }
}

#[cfg(test)]
mod tests {
    use portcullis_core::jwt::parse_jwk;
    use portcullis_core::signature::PureRust;
    use portcullis_core::testing::keys;

    use super::*;

    /// For every test key and algorithm: ring and the pure-Rust default agree on a valid
    /// signature, on each single flipped byte of it, on a truncated one, and on another message.
    #[test]
    fn ring_agrees_with_the_portable_default() {
        let jwks = keys().jwks();
        let mut checked = 0;
        for jwk in jwks["keys"].as_array().expect("keys") {
            let key = parse_jwk(jwk).expect("test key parses");
            for alg in [
                Algorithm::RS256,
                Algorithm::RS384,
                Algorithm::RS512,
                Algorithm::PS256,
                Algorithm::PS384,
                Algorithm::PS512,
                Algorithm::ES256,
                Algorithm::ES384,
                Algorithm::EdDSA,
            ] {
                if !key.fits(alg) {
                    continue;
                }
                let kid = key.kid.as_deref();
                let token = keys().sign(alg, kid, &serde_json::json!({"sub": "x", "exp": 1}));
                let (input, signature) = token.rsplit_once('.').expect("compact JWS");
                let signature = base64_url(signature);
                assert!(
                    Ring::check(alg, &key, input.as_bytes(), &signature),
                    "{alg:?}"
                );
                assert!(PureRust::check(alg, &key, input.as_bytes(), &signature));
                for i in [0, signature.len() / 2, signature.len() - 1] {
                    let mut bad = signature.clone();
                    bad[i] ^= 0x01;
                    assert!(
                        !Ring::check(alg, &key, input.as_bytes(), &bad),
                        "{alg:?} {i}"
                    );
                    assert!(!PureRust::check(alg, &key, input.as_bytes(), &bad));
                }
                let short = &signature[..signature.len() - 1];
                assert!(!Ring::check(alg, &key, input.as_bytes(), short));
                assert!(!PureRust::check(alg, &key, input.as_bytes(), short));
                let other = format!("{input}x");
                assert!(!Ring::check(alg, &key, other.as_bytes(), &signature));
                assert!(!PureRust::check(alg, &key, other.as_bytes(), &signature));
                checked += 1;
            }
        }
        assert!(checked >= 9, "only {checked} key/algorithm pairs checked");
    }

    fn base64_url(text: &str) -> Vec<u8> {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(text)
            .expect("base64url")
    }
}
