//! What a JWS algorithm means on a key, for backends that hand the check to a crypto library
//! (`ring` natively, WebCrypto on Workers): the signature scheme with its hash and curve, the one
//! signature length it allows, and the public key in the forms such libraries import. One table,
//! so no backend can pair an algorithm with the wrong hash, padding or key.
//!
//! | JWS | scheme | signature |
//! | --- | --- | --- |
//! | RS256/384/512 | RSASSA-PKCS1-v1_5, SHA-256/384/512 | the modulus length (RFC 8017 §8.2.2) |
//! | PS256/384/512 | RSASSA-PSS, MGF1 and a salt as long as the hash (RFC 7518 §3.5) | the modulus length (RFC 8017 §8.1.2) |
//! | ES256, ES384 | ECDSA on P-256/P-384, SHA-256/384 | `r‖s`: 64, 96 bytes |
//! | EdDSA | Ed25519 | 64 bytes |

use rsa::traits::PublicKeyParts;

use crate::jwt::{Algorithm, KeyMaterial};

/// A hash a scheme signs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hash {
    /// SHA-256.
    Sha256,
    /// SHA-384.
    Sha384,
    /// SHA-512.
    Sha512,
}

impl Hash {
    /// Its name as WebCrypto writes it (`SHA-256`).
    pub fn name(self) -> &'static str {
        match self {
            Hash::Sha256 => "SHA-256",
            Hash::Sha384 => "SHA-384",
            Hash::Sha512 => "SHA-512",
        }
    }

    /// Its output length in bytes: RSA-PSS's salt length.
    pub fn output_len(self) -> usize {
        match self {
            Hash::Sha256 => 32,
            Hash::Sha384 => 48,
            Hash::Sha512 => 64,
        }
    }
}

/// An elliptic curve for ECDSA.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Curve {
    /// NIST P-256.
    P256,
    /// NIST P-384.
    P384,
}

impl Curve {
    /// Its name as WebCrypto writes it (`P-256`).
    pub fn name(self) -> &'static str {
        match self {
            Curve::P256 => "P-256",
            Curve::P384 => "P-384",
        }
    }
}

/// The value of one member of a WebCrypto algorithm argument ([`Scheme::import_params`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Param {
    /// A string, such as `"SHA-256"`.
    Text(&'static str),
    /// A number, such as a salt length.
    Number(u32),
}

/// How a signature is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// RSASSA-PKCS1-v1_5 with this hash.
    Pkcs1(Hash),
    /// RSASSA-PSS with this hash, MGF1 on it, and a salt as long as it.
    Pss(Hash),
    /// ECDSA on this curve with this hash; the signature is JWS's `r‖s`.
    Ecdsa(Curve, Hash),
    /// Ed25519.
    Ed25519,
}

impl Scheme {
    /// Its name as WebCrypto writes it (`RSASSA-PKCS1-v1_5`, `RSA-PSS`, `ECDSA`, `Ed25519`).
    pub fn name(self) -> &'static str {
        match self {
            Scheme::Pkcs1(_) => "RSASSA-PKCS1-v1_5",
            Scheme::Pss(_) => "RSA-PSS",
            Scheme::Ecdsa(..) => "ECDSA",
            Scheme::Ed25519 => "Ed25519",
        }
    }

    /// WebCrypto `importKey`'s algorithm argument: `name`, with `hash` for RSA and `namedCurve`
    /// for ECDSA.
    pub fn import_params(self) -> Vec<(&'static str, Param)> {
        let name = ("name", Param::Text(self.name()));
        match self {
            Scheme::Pkcs1(hash) | Scheme::Pss(hash) => {
                vec![name, ("hash", Param::Text(hash.name()))]
            }
            Scheme::Ecdsa(curve, _) => vec![name, ("namedCurve", Param::Text(curve.name()))],
            Scheme::Ed25519 => vec![name],
        }
    }

    /// WebCrypto `verify`'s algorithm argument: `name`, with `saltLength` (the hash's length,
    /// RFC 7518 §3.5) for RSA-PSS and `hash` for ECDSA.
    pub fn verify_params(self) -> Vec<(&'static str, Param)> {
        let name = ("name", Param::Text(self.name()));
        match self {
            Scheme::Pss(hash) => vec![
                name,
                ("saltLength", Param::Number(hash.output_len() as u32)),
            ],
            Scheme::Ecdsa(_, hash) => vec![name, ("hash", Param::Text(hash.name()))],
            Scheme::Pkcs1(_) | Scheme::Ed25519 => vec![name],
        }
    }

    /// The scheme for `alg` on `material` and the one signature length it allows; `None` when
    /// the algorithm does not fit the key.
    pub fn of(alg: Algorithm, material: &KeyMaterial) -> Option<(Scheme, usize)> {
        use Algorithm::*;
        Some(match (material, alg) {
            (KeyMaterial::Rsa(k), RS256) => (Scheme::Pkcs1(Hash::Sha256), k.size()),
            (KeyMaterial::Rsa(k), RS384) => (Scheme::Pkcs1(Hash::Sha384), k.size()),
            (KeyMaterial::Rsa(k), RS512) => (Scheme::Pkcs1(Hash::Sha512), k.size()),
            (KeyMaterial::Rsa(k), PS256) => (Scheme::Pss(Hash::Sha256), k.size()),
            (KeyMaterial::Rsa(k), PS384) => (Scheme::Pss(Hash::Sha384), k.size()),
            (KeyMaterial::Rsa(k), PS512) => (Scheme::Pss(Hash::Sha512), k.size()),
            (KeyMaterial::P256(_), ES256) => (Scheme::Ecdsa(Curve::P256, Hash::Sha256), 64),
            (KeyMaterial::P384(_), ES384) => (Scheme::Ecdsa(Curve::P384, Hash::Sha384), 96),
            (KeyMaterial::Ed25519(_), EdDSA) => (Scheme::Ed25519, 64),
            _ => return None,
        })
    }

    /// The scheme for `alg` on `material`, if `signature` has the one length it allows. A
    /// backend checks this before anything else: the length comes straight from the token, and
    /// not every library refuses a wrong one cleanly.
    pub fn for_signature(
        alg: Algorithm,
        material: &KeyMaterial,
        signature: &[u8],
    ) -> Option<Scheme> {
        let (scheme, len) = Scheme::of(alg, material)?;
        (signature.len() == len).then_some(scheme)
    }
}

/// A public key in the forms crypto libraries import.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublicKey {
    /// RSA: the modulus and the public exponent, big-endian, without leading zeros.
    Rsa {
        /// The modulus.
        n: Vec<u8>,
        /// The public exponent.
        e: Vec<u8>,
    },
    /// An EC point, SEC1 uncompressed (`04‖x‖y`).
    Point(Vec<u8>),
    /// An Ed25519 key, its 32 bytes.
    Ed25519([u8; 32]),
}

impl PublicKey {
    /// The key of `material`.
    pub fn of(material: &KeyMaterial) -> PublicKey {
        match material {
            KeyMaterial::Rsa(k) => PublicKey::Rsa {
                n: k.n().to_bytes_be(),
                e: k.e().to_bytes_be(),
            },
            KeyMaterial::P256(k) => PublicKey::Point(k.to_encoded_point(false).as_bytes().to_vec()),
            KeyMaterial::P384(k) => PublicKey::Point(k.to_encoded_point(false).as_bytes().to_vec()),
            KeyMaterial::Ed25519(k) => PublicKey::Ed25519(**k),
        }
    }

    /// An identity for a key imported for `alg` (an imported key is bound to its hash and
    /// padding): the algorithm and the whole public key, so that two keys never share one.
    pub fn id(&self, alg: Algorithm) -> Vec<u8> {
        let mut id = alg.name().as_bytes().to_vec();
        id.push(b'.');
        match self {
            PublicKey::Rsa { n, e } => {
                id.extend_from_slice(&(n.len() as u32).to_be_bytes());
                id.extend_from_slice(n);
                id.extend_from_slice(e);
            }
            PublicKey::Point(point) => id.extend_from_slice(point),
            PublicKey::Ed25519(k) => id.extend_from_slice(k),
        }
        id
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jwt::parse_jwk;
    use crate::testing::keys;

    #[test]
    fn every_algorithm_has_one_scheme_on_the_key_that_fits_it_and_none_on_the_others() {
        let jwks = keys().jwks();
        let algs = [
            Algorithm::RS256,
            Algorithm::RS384,
            Algorithm::RS512,
            Algorithm::PS256,
            Algorithm::PS384,
            Algorithm::PS512,
            Algorithm::ES256,
            Algorithm::ES384,
            Algorithm::EdDSA,
        ];
        let mut fitting = 0;
        for jwk in jwks["keys"].as_array().unwrap() {
            let key = parse_jwk(jwk).unwrap();
            for alg in algs {
                let scheme = Scheme::of(alg, &key.material);
                let fits = matches!(
                    (&key.material, alg),
                    (KeyMaterial::Rsa(_), _)
                        if alg.name().starts_with("RS") || alg.name().starts_with("PS")
                ) || matches!(
                    (&key.material, alg),
                    (KeyMaterial::P256(_), Algorithm::ES256)
                        | (KeyMaterial::P384(_), Algorithm::ES384)
                        | (KeyMaterial::Ed25519(_), Algorithm::EdDSA)
                );
                assert_eq!(scheme.is_some(), fits, "{alg:?}");
                let Some((scheme, len)) = scheme else {
                    continue;
                };
                fitting += 1;
                // The length a real signature has.
                let token = keys().sign(alg, key.kid.as_deref(), &serde_json::json!({"exp": 1}));
                let signature = token.rsplit_once('.').unwrap().1;
                assert_eq!(len, signature.len() * 3 / 4, "{alg:?}");
                let right = vec![0; len];
                assert_eq!(
                    Scheme::for_signature(alg, &key.material, &right),
                    Some(scheme)
                );
                for wrong in [0, len - 1, len + 1] {
                    let wrong = vec![0; wrong];
                    assert_eq!(Scheme::for_signature(alg, &key.material, &wrong), None);
                }
                let expected = match alg {
                    Algorithm::RS384 => Scheme::Pkcs1(Hash::Sha384),
                    Algorithm::PS512 => Scheme::Pss(Hash::Sha512),
                    Algorithm::ES384 => Scheme::Ecdsa(Curve::P384, Hash::Sha384),
                    Algorithm::EdDSA => Scheme::Ed25519,
                    _ => scheme,
                };
                assert_eq!(scheme, expected);
            }
        }
        assert!(fitting >= algs.len());
    }

    #[test]
    fn webcrypto_arguments_name_the_hash_curve_and_salt_each_scheme_needs() {
        use Param::{Number, Text};
        let pss = Scheme::Pss(Hash::Sha384);
        assert_eq!(
            pss.import_params(),
            [("name", Text("RSA-PSS")), ("hash", Text("SHA-384"))]
        );
        assert_eq!(
            pss.verify_params(),
            [("name", Text("RSA-PSS")), ("saltLength", Number(48))]
        );
        let pkcs1 = Scheme::Pkcs1(Hash::Sha512);
        assert_eq!(pkcs1.import_params()[1], ("hash", Text("SHA-512")));
        assert_eq!(pkcs1.verify_params(), [("name", Text("RSASSA-PKCS1-v1_5"))]);
        let es = Scheme::Ecdsa(Curve::P256, Hash::Sha256);
        assert_eq!(
            es.import_params(),
            [("name", Text("ECDSA")), ("namedCurve", Text("P-256"))]
        );
        assert_eq!(
            es.verify_params(),
            [("name", Text("ECDSA")), ("hash", Text("SHA-256"))]
        );
        assert_eq!(Scheme::Ed25519.import_params(), [("name", Text("Ed25519"))]);
        assert_eq!(Scheme::Ed25519.verify_params(), [("name", Text("Ed25519"))]);
    }

    #[test]
    fn public_keys_come_in_their_import_forms_and_ids_never_collide() {
        let jwks = keys().jwks();
        let mut ids = std::collections::HashSet::new();
        for jwk in jwks["keys"].as_array().unwrap() {
            let key = parse_jwk(jwk).unwrap();
            let public = PublicKey::of(&key.material);
            match (&key.material, &public) {
                (KeyMaterial::Rsa(k), PublicKey::Rsa { n, e }) => {
                    assert_eq!(n.len(), k.size());
                    assert_eq!(e, &[1, 0, 1]);
                }
                (KeyMaterial::P256(_), PublicKey::Point(p)) => assert_eq!((p.len(), p[0]), (65, 4)),
                (KeyMaterial::P384(_), PublicKey::Point(p)) => assert_eq!((p.len(), p[0]), (97, 4)),
                (KeyMaterial::Ed25519(_), PublicKey::Ed25519(_)) => {}
                (_, other) => panic!("{other:?} does not fit its key"),
            }
            assert!(ids.insert(public.id(Algorithm::RS256)));
            assert!(ids.insert(public.id(Algorithm::PS256)));
        }
    }
}
