//! JSON Web Keys (RFC 7517) for verification: RSA, EC P-256/P-384 and OKP Ed25519 public keys.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use rsa::traits::PublicKeyParts;
use rsa::{BigUint, RsaPublicKey};
use serde_json::Value;

use super::{Algorithm, JwkProblem};

/// Smallest RSA modulus accepted, in bits (RFC 7518 §3.3 requires 2048).
pub const MIN_RSA_BITS: usize = 2048;

/// A verification key.
#[derive(Clone)]
pub struct Jwk {
    /// `kid`, if the key has one.
    pub kid: Option<String>,
    /// `alg`, if the key pins one.
    pub alg: Option<Algorithm>,
    /// The key itself.
    pub material: KeyMaterial,
}

impl std::fmt::Debug for Jwk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Jwk")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

/// Public key material by type.
#[derive(Clone)]
pub enum KeyMaterial {
    /// RSA, for RS* and PS*.
    Rsa(RsaPublicKey),
    /// EC P-256, for ES256.
    P256(p256::ecdsa::VerifyingKey),
    /// EC P-384, for ES384.
    P384(p384::ecdsa::VerifyingKey),
    /// OKP Ed25519, for EdDSA.
    Ed25519(ed25519_compact::PublicKey),
}

impl Jwk {
    /// Whether this key may verify a token signed with `alg`: the key type must fit the algorithm,
    /// and a key that names its `alg` is used for that algorithm only.
    pub fn fits(&self, alg: Algorithm) -> bool {
        if self.alg.is_some_and(|a| a != alg) {
            return false;
        }
        use Algorithm::*;
        matches!(
            (&self.material, alg),
            (
                KeyMaterial::Rsa(_),
                RS256 | RS384 | RS512 | PS256 | PS384 | PS512
            ) | (KeyMaterial::P256(_), ES256)
                | (KeyMaterial::P384(_), ES384)
                | (KeyMaterial::Ed25519(_), EdDSA)
        )
    }
}

fn member<'a>(
    jwk: &'a serde_json::Map<String, Value>,
    name: &'static str,
) -> Result<&'a str, JwkProblem> {
    jwk.get(name)
        .and_then(Value::as_str)
        .ok_or_else(|| format!("missing or non-string \"{name}\"").into())
}

fn b64(jwk: &serde_json::Map<String, Value>, name: &'static str) -> Result<Vec<u8>, JwkProblem> {
    let text = member(jwk, name)?;
    URL_SAFE_NO_PAD
        .decode(text)
        .map_err(|_| format!("\"{name}\" is not base64url without padding").into())
}

/// Parse one JWK. Private members (`d`, `p`, …) are refused: a policy file never needs a private
/// key, and one there is a leak waiting to happen.
pub fn parse_jwk(value: &Value) -> Result<Jwk, JwkProblem> {
    let jwk = value
        .as_object()
        .ok_or(JwkProblem::Borrowed("a JWK is a JSON object"))?;
    if ["d", "p", "q", "dp", "dq", "qi", "k"]
        .iter()
        .any(|m| jwk.contains_key(*m))
    {
        return Err("contains private or symmetric key material; list public keys only".into());
    }
    if let Some(u) = jwk.get("use") {
        if u.as_str() != Some("sig") {
            return Err("\"use\" must be \"sig\" for a verification key".into());
        }
    }
    let kid = match jwk.get("kid") {
        None => None,
        Some(Value::String(k)) => Some(k.clone()),
        Some(_) => return Err("\"kid\" must be a string".into()),
    };
    let alg =
        match jwk.get("alg") {
            None => None,
            Some(a) => Some(a.as_str().and_then(Algorithm::from_name).ok_or(
                JwkProblem::Borrowed("\"alg\" is not a supported JWS algorithm"),
            )?),
        };
    let material =
        match member(jwk, "kty")? {
            "RSA" => {
                let n = BigUint::from_bytes_be(&b64(jwk, "n")?);
                let e = BigUint::from_bytes_be(&b64(jwk, "e")?);
                let key = RsaPublicKey::new(n, e)
                    .map_err(|_| JwkProblem::Borrowed("not a valid RSA public key"))?;
                if key.size() * 8 < MIN_RSA_BITS {
                    return Err(format!("RSA keys must have at least {MIN_RSA_BITS} bits").into());
                }
                KeyMaterial::Rsa(key)
            }
            "EC" => {
                let x = b64(jwk, "x")?;
                let y = b64(jwk, "y")?;
                match member(jwk, "crv")? {
                    "P-256" => {
                        if x.len() != 32 || y.len() != 32 {
                            return Err("P-256 coordinates are 32 bytes each".into());
                        }
                        let point = p256::EncodedPoint::from_affine_coordinates(
                            x.as_slice().into(),
                            y.as_slice().into(),
                            false,
                        );
                        KeyMaterial::P256(
                            p256::ecdsa::VerifyingKey::from_encoded_point(&point)
                                .map_err(|_| JwkProblem::Borrowed("not a point on P-256"))?,
                        )
                    }
                    "P-384" => {
                        if x.len() != 48 || y.len() != 48 {
                            return Err("P-384 coordinates are 48 bytes each".into());
                        }
                        let point = p384::EncodedPoint::from_affine_coordinates(
                            x.as_slice().into(),
                            y.as_slice().into(),
                            false,
                        );
                        KeyMaterial::P384(
                            p384::ecdsa::VerifyingKey::from_encoded_point(&point)
                                .map_err(|_| JwkProblem::Borrowed("not a point on P-384"))?,
                        )
                    }
                    _ => return Err("EC keys must use crv P-256 or P-384".into()),
                }
            }
            "OKP" => {
                if member(jwk, "crv")? != "Ed25519" {
                    return Err("OKP keys must use crv Ed25519".into());
                }
                let x = b64(jwk, "x")?;
                KeyMaterial::Ed25519(
                    ed25519_compact::PublicKey::from_slice(&x)
                        .map_err(|_| JwkProblem::Borrowed("not an Ed25519 public key"))?,
                )
            }
            "oct" => return Err(
                "symmetric (oct) keys do not belong in a JWKS; use secret_env for HS* algorithms"
                    .into(),
            ),
            _ => return Err("\"kty\" must be RSA, EC or OKP".into()),
        };
    let jwk = Jwk { kid, alg, material };
    if let Some(a) = alg {
        if !jwk.fits(a) {
            return Err(format!("\"alg\" {} does not fit this key type", a.name()).into());
        }
    }
    Ok(jwk)
}
