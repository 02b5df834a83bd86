//! TEST-ONLY keys and token signing for the `mint` binary.
//!
//! Tokens are assembled and signed by hand (RSA PKCS#1 v1.5 and PSS, ECDSA P-256/P-384,
//! Ed25519, HMAC) rather than through a JWT library, so that adversarial tokens — `alg: none`,
//! algorithm confusion, flipped bytes, DER signatures, non-object headers — come out exactly as
//! specified. That also makes the gateway's verifier check tokens it did not produce itself.
//!
//! Every key here is a published test fixture. Never use one for anything else.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{anyhow, bail, Context};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use rand::SeedableRng;
use rsa::pkcs8::{EncodePublicKey, LineEnding};
use rsa::signature::{RandomizedSigner, SignatureEncoding, Signer};
use rsa::traits::{PrivateKeyParts, PublicKeyParts};
use rsa::{BigUint, RsaPrivateKey};
use serde::Deserialize;
use serde_json::{Map, Value};

/// Warning stored in every private key file.
pub const TEST_ONLY: &str =
    "TEST ONLY: a published private key for the Portcullis conformance suite. Never trust it for anything.";

/// The fixture keys: name, kind, JWS algorithm.
pub const KEY_SPECS: &[(&str, KeyKind, &str)] = &[
    ("rsa-1", KeyKind::Rsa, "RS256"),
    ("rsa-2", KeyKind::Rsa, "RS256"),
    ("rsa-ps", KeyKind::Rsa, "PS256"),
    ("rsa-ps384", KeyKind::Rsa, "PS384"),
    ("rsa-ps512", KeyKind::Rsa, "PS512"),
    ("rsa-rs384", KeyKind::Rsa, "RS384"),
    ("rsa-rs512", KeyKind::Rsa, "RS512"),
    ("rsa-attacker", KeyKind::Rsa, "RS256"),
    ("ec-p256-1", KeyKind::P256, "ES256"),
    ("ec-p256-attacker", KeyKind::P256, "ES256"),
    ("ec-p384-1", KeyKind::P384, "ES384"),
    ("ed25519-1", KeyKind::Ed25519, "EdDSA"),
    ("hs-1", KeyKind::Hmac, "HS256"),
];

/// Key types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    /// RSA 2048.
    Rsa,
    /// ECDSA P-256.
    P256,
    /// ECDSA P-384.
    P384,
    /// Ed25519.
    Ed25519,
    /// A shared secret for HS*.
    Hmac,
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn unb64(v: &Value, field: &str) -> anyhow::Result<Vec<u8>> {
    let s = v
        .get(field)
        .and_then(Value::as_str)
        .ok_or_else(|| anyhow!("key has no {field:?}"))?;
    URL_SAFE_NO_PAD
        .decode(s)
        .with_context(|| format!("{field:?} is not base64url"))
}

fn big(v: &Value, field: &str) -> anyhow::Result<BigUint> {
    Ok(BigUint::from_bytes_be(&unb64(v, field)?))
}

/// A loaded private key.
pub enum PrivateKey {
    /// RSA.
    Rsa(Box<RsaPrivateKey>),
    /// P-256.
    P256(p256::ecdsa::SigningKey),
    /// P-384.
    P384(p384::ecdsa::SigningKey),
    /// Ed25519.
    Ed25519(ed25519_compact::KeyPair),
    /// HMAC secret (the text that goes into a `secret_env` variable).
    Hmac(String),
}

/// A fixture key with its name and preferred algorithm.
pub struct Key {
    /// Its name, also its `kid`.
    pub name: String,
    /// Preferred JWS algorithm.
    pub alg: String,
    /// The key.
    pub key: PrivateKey,
}

/// Generate a fresh key of `kind`.
pub fn generate(name: &str, kind: KeyKind, alg: &str) -> anyhow::Result<Key> {
    let mut rng = rand::rngs::OsRng;
    let key = match kind {
        KeyKind::Rsa => PrivateKey::Rsa(Box::new(RsaPrivateKey::new(&mut rng, 2048)?)),
        KeyKind::P256 => PrivateKey::P256(p256::ecdsa::SigningKey::random(&mut rng)),
        KeyKind::P384 => PrivateKey::P384(p384::ecdsa::SigningKey::random(&mut rng)),
        KeyKind::Ed25519 => PrivateKey::Ed25519(ed25519_compact::KeyPair::generate()),
        KeyKind::Hmac => {
            let mut bytes = [0u8; 24];
            rand::RngCore::fill_bytes(&mut rng, &mut bytes);
            PrivateKey::Hmac(format!("TEST-ONLY-hs256-secret-{}", b64(&bytes)))
        }
    };
    Ok(Key {
        name: name.to_owned(),
        alg: alg.to_owned(),
        key,
    })
}

impl Key {
    /// The private JWK (with a TEST ONLY comment) for `tests/keys/NAME.json`.
    pub fn private_jwk(&self) -> anyhow::Result<Value> {
        let mut m = Map::new();
        m.insert("_comment".into(), TEST_ONLY.into());
        m.insert("kid".into(), self.name.clone().into());
        m.insert("alg".into(), self.alg.clone().into());
        match &self.key {
            PrivateKey::Rsa(k) => {
                let primes = k.primes();
                if primes.len() != 2 {
                    bail!("expected a two-prime RSA key");
                }
                let one = BigUint::from(1u8);
                m.insert("kty".into(), "RSA".into());
                m.insert("n".into(), b64(&k.n().to_bytes_be()).into());
                m.insert("e".into(), b64(&k.e().to_bytes_be()).into());
                m.insert("d".into(), b64(&k.d().to_bytes_be()).into());
                m.insert("p".into(), b64(&primes[0].to_bytes_be()).into());
                m.insert("q".into(), b64(&primes[1].to_bytes_be()).into());
                m.insert(
                    "dp".into(),
                    b64(&(k.d() % (&primes[0] - &one)).to_bytes_be()).into(),
                );
                m.insert(
                    "dq".into(),
                    b64(&(k.d() % (&primes[1] - &one)).to_bytes_be()).into(),
                );
                let qi = k
                    .crt_coefficient()
                    .ok_or_else(|| anyhow!("no CRT coefficient"))?;
                m.insert("qi".into(), b64(&qi.to_bytes_be()).into());
            }
            PrivateKey::P256(k) => {
                let point = k.verifying_key().to_encoded_point(false);
                m.insert("kty".into(), "EC".into());
                m.insert("crv".into(), "P-256".into());
                m.insert(
                    "x".into(),
                    b64(point.x().ok_or_else(|| anyhow!("no x"))?).into(),
                );
                m.insert(
                    "y".into(),
                    b64(point.y().ok_or_else(|| anyhow!("no y"))?).into(),
                );
                m.insert("d".into(), b64(&k.to_bytes()).into());
            }
            PrivateKey::P384(k) => {
                let point = k.verifying_key().to_encoded_point(false);
                m.insert("kty".into(), "EC".into());
                m.insert("crv".into(), "P-384".into());
                m.insert(
                    "x".into(),
                    b64(point.x().ok_or_else(|| anyhow!("no x"))?).into(),
                );
                m.insert(
                    "y".into(),
                    b64(point.y().ok_or_else(|| anyhow!("no y"))?).into(),
                );
                m.insert("d".into(), b64(&k.to_bytes()).into());
            }
            PrivateKey::Ed25519(kp) => {
                m.insert("kty".into(), "OKP".into());
                m.insert("crv".into(), "Ed25519".into());
                m.insert("x".into(), b64(kp.pk.as_ref()).into());
                m.insert("d".into(), b64(kp.sk.seed().as_ref()).into());
            }
            PrivateKey::Hmac(secret) => {
                m.insert("kty".into(), "oct".into());
                m.insert("k".into(), b64(secret.as_bytes()).into());
                m.insert("secret".into(), secret.clone().into());
            }
        }
        Ok(Value::Object(m))
    }

    /// Load a key from its private JWK.
    pub fn from_private_jwk(v: &Value) -> anyhow::Result<Key> {
        let name = v
            .get("kid")
            .and_then(Value::as_str)
            .ok_or_else(|| anyhow!("key has no kid"))?
            .to_owned();
        let alg = v
            .get("alg")
            .and_then(Value::as_str)
            .ok_or_else(|| anyhow!("key has no alg"))?
            .to_owned();
        let kty = v.get("kty").and_then(Value::as_str).unwrap_or("");
        let crv = v.get("crv").and_then(Value::as_str).unwrap_or("");
        let key = match (kty, crv) {
            ("RSA", _) => PrivateKey::Rsa(Box::new(RsaPrivateKey::from_components(
                big(v, "n")?,
                big(v, "e")?,
                big(v, "d")?,
                vec![big(v, "p")?, big(v, "q")?],
            )?)),
            ("EC", "P-256") => {
                PrivateKey::P256(p256::ecdsa::SigningKey::from_slice(&unb64(v, "d")?)?)
            }
            ("EC", "P-384") => {
                PrivateKey::P384(p384::ecdsa::SigningKey::from_slice(&unb64(v, "d")?)?)
            }
            ("OKP", "Ed25519") => {
                let seed = ed25519_compact::Seed::from_slice(&unb64(v, "d")?)?;
                PrivateKey::Ed25519(ed25519_compact::KeyPair::from_seed(seed))
            }
            ("oct", _) => PrivateKey::Hmac(
                v.get("secret")
                    .and_then(Value::as_str)
                    .ok_or_else(|| anyhow!("oct key has no secret"))?
                    .to_owned(),
            ),
            _ => bail!("unsupported key type {kty:?} {crv:?}"),
        };
        Ok(Key { name, alg, key })
    }

    /// The public JWK as one line of JSON in a fixed member order, for pasting into configs.
    /// `None` for HMAC secrets, which never appear in a JWKS.
    pub fn public_jwk_line(&self) -> anyhow::Result<Option<String>> {
        let q = |s: &str| serde_json::to_string(s).unwrap_or_default();
        let head = format!(
            "\"kid\":{},\"alg\":{},\"use\":\"sig\"",
            q(&self.name),
            q(&self.alg)
        );
        Ok(Some(match &self.key {
            PrivateKey::Rsa(k) => format!(
                "{{\"kty\":\"RSA\",{head},\"n\":{},\"e\":{}}}",
                q(&b64(&k.n().to_bytes_be())),
                q(&b64(&k.e().to_bytes_be()))
            ),
            PrivateKey::P256(k) => {
                let p = k.verifying_key().to_encoded_point(false);
                format!(
                    "{{\"kty\":\"EC\",{head},\"crv\":\"P-256\",\"x\":{},\"y\":{}}}",
                    q(&b64(p.x().ok_or_else(|| anyhow!("no x"))?)),
                    q(&b64(p.y().ok_or_else(|| anyhow!("no y"))?))
                )
            }
            PrivateKey::P384(k) => {
                let p = k.verifying_key().to_encoded_point(false);
                format!(
                    "{{\"kty\":\"EC\",{head},\"crv\":\"P-384\",\"x\":{},\"y\":{}}}",
                    q(&b64(p.x().ok_or_else(|| anyhow!("no x"))?)),
                    q(&b64(p.y().ok_or_else(|| anyhow!("no y"))?))
                )
            }
            PrivateKey::Ed25519(kp) => {
                format!(
                    "{{\"kty\":\"OKP\",{head},\"crv\":\"Ed25519\",\"x\":{}}}",
                    q(&b64(kp.pk.as_ref()))
                )
            }
            PrivateKey::Hmac(_) => return Ok(None),
        }))
    }

    /// The public key as SPKI PEM (RSA and P-256), for tools that take keys as files.
    pub fn public_pem(&self) -> anyhow::Result<String> {
        match &self.key {
            PrivateKey::Rsa(_) => Ok(String::from_utf8(self.rsa_public(false)?)?),
            PrivateKey::P256(k) => {
                use p256::pkcs8::EncodePublicKey;
                Ok(k.verifying_key().to_public_key_pem(LineEnding::LF)?)
            }
            _ => bail!("{}: no PEM form here", self.name),
        }
    }

    /// The HMAC secret, for an HMAC fixture.
    pub fn hmac_secret(&self) -> Option<&str> {
        match &self.key {
            PrivateKey::Hmac(secret) => Some(secret),
            _ => None,
        }
    }

    /// The RSA public key as SPKI PEM / DER (the bytes an algorithm-confusion attacker would use
    /// as an HMAC secret).
    fn rsa_public(&self, der: bool) -> anyhow::Result<Vec<u8>> {
        let PrivateKey::Rsa(k) = &self.key else {
            bail!("{} is not an RSA key", self.name)
        };
        let public = k.to_public_key();
        Ok(if der {
            public.to_public_key_der()?.as_bytes().to_vec()
        } else {
            public.to_public_key_pem(LineEnding::LF)?.into_bytes()
        })
    }

    /// Sign `message` with JWS algorithm `alg`.
    pub fn sign(&self, alg: &str, message: &[u8]) -> anyhow::Result<Vec<u8>> {
        Ok(match (&self.key, alg) {
            (PrivateKey::Rsa(k), "RS256") => {
                rsa::pkcs1v15::SigningKey::<sha2::Sha256>::new((**k).clone())
                    .sign(message)
                    .to_vec()
            }
            (PrivateKey::Rsa(k), "RS384") => {
                rsa::pkcs1v15::SigningKey::<sha2::Sha384>::new((**k).clone())
                    .sign(message)
                    .to_vec()
            }
            (PrivateKey::Rsa(k), "RS512") => {
                rsa::pkcs1v15::SigningKey::<sha2::Sha512>::new((**k).clone())
                    .sign(message)
                    .to_vec()
            }
            (PrivateKey::Rsa(k), "PS256") => {
                // PSS is randomised; a fixed seed keeps `mint` reproducible.
                let mut rng = rand::rngs::StdRng::seed_from_u64(7);
                rsa::pss::SigningKey::<sha2::Sha256>::new((**k).clone())
                    .sign_with_rng(&mut rng, message)
                    .to_vec()
            }
            (PrivateKey::Rsa(k), "PS384") => {
                let mut rng = rand::rngs::StdRng::seed_from_u64(7);
                rsa::pss::SigningKey::<sha2::Sha384>::new((**k).clone())
                    .sign_with_rng(&mut rng, message)
                    .to_vec()
            }
            (PrivateKey::Rsa(k), "PS512") => {
                let mut rng = rand::rngs::StdRng::seed_from_u64(7);
                rsa::pss::SigningKey::<sha2::Sha512>::new((**k).clone())
                    .sign_with_rng(&mut rng, message)
                    .to_vec()
            }
            (PrivateKey::P256(k), "ES256") => {
                let sig: p256::ecdsa::Signature = k.sign(message);
                sig.to_bytes().to_vec()
            }
            (PrivateKey::P384(k), "ES384") => {
                let sig: p384::ecdsa::Signature = k.sign(message);
                sig.to_bytes().to_vec()
            }
            (PrivateKey::Ed25519(kp), "EdDSA") => kp.sk.sign(message, None).to_vec(),
            (PrivateKey::Hmac(secret), hs) if hs.starts_with("HS") => {
                hmac_sign(hs, secret.as_bytes(), message)?
            }
            _ => bail!("key {} cannot sign {alg}", self.name),
        })
    }

    /// An ECDSA signature in ASN.1 DER instead of JWS's fixed `r || s` (must be refused).
    fn sign_der(&self, message: &[u8]) -> anyhow::Result<Vec<u8>> {
        Ok(match &self.key {
            PrivateKey::P256(k) => {
                let sig: p256::ecdsa::Signature = k.sign(message);
                sig.to_der().as_bytes().to_vec()
            }
            PrivateKey::P384(k) => {
                let sig: p384::ecdsa::Signature = k.sign(message);
                sig.to_der().as_bytes().to_vec()
            }
            _ => bail!("{} is not an ECDSA key", self.name),
        })
    }
}

fn hmac_sign(alg: &str, secret: &[u8], message: &[u8]) -> anyhow::Result<Vec<u8>> {
    Ok(match alg {
        "HS256" => {
            let mut m = Hmac::<sha2::Sha256>::new_from_slice(secret)?;
            m.update(message);
            m.finalize().into_bytes().to_vec()
        }
        "HS384" => {
            let mut m = Hmac::<sha2::Sha384>::new_from_slice(secret)?;
            m.update(message);
            m.finalize().into_bytes().to_vec()
        }
        "HS512" => {
            let mut m = Hmac::<sha2::Sha512>::new_from_slice(secret)?;
            m.update(message);
            m.finalize().into_bytes().to_vec()
        }
        _ => bail!("not an HMAC algorithm: {alg}"),
    })
}

/// Load every fixture key in `dir`; a missing one is an error.
pub fn load_keys(dir: &Path) -> anyhow::Result<BTreeMap<String, Key>> {
    let mut keys = BTreeMap::new();
    for (name, _, _) in KEY_SPECS {
        let path = dir.join(format!("{name}.json"));
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        let key = Key::from_private_jwk(&serde_json::from_str(&text)?)
            .with_context(|| format!("loading {}", path.display()))?;
        keys.insert((*name).to_owned(), key);
    }
    Ok(keys)
}

/// Load every fixture key in `dir`, generating (and writing) the missing ones.
pub fn load_or_generate_keys(dir: &Path) -> anyhow::Result<BTreeMap<String, Key>> {
    std::fs::create_dir_all(dir)?;
    let mut keys = BTreeMap::new();
    for (name, kind, alg) in KEY_SPECS {
        let path = dir.join(format!("{name}.json"));
        let key = if path.exists() {
            let text = std::fs::read_to_string(&path)?;
            Key::from_private_jwk(&serde_json::from_str(&text)?)
                .with_context(|| format!("loading {}", path.display()))?
        } else {
            eprintln!("mint: generating TEST ONLY key {name}");
            let key = generate(name, *kind, alg)?;
            std::fs::write(
                &path,
                serde_json::to_string_pretty(&key.private_jwk()?)? + "\n",
            )?;
            key
        };
        keys.insert((*name).to_owned(), key);
    }
    Ok(keys)
}

/// The token source file (`tests/tokens.json`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenSource {
    /// Free text.
    #[serde(default, rename = "_comment")]
    pub comment: Option<String>,
    /// Claims every token starts from (a token's `null` claim removes one).
    #[serde(default)]
    pub default_claims: Map<String, Value>,
    /// Tokens by name.
    pub tokens: BTreeMap<String, TokenSpec>,
}

/// How to make one token.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenSpec {
    /// What the token is for.
    pub note: String,
    /// A literal token (nothing else applies).
    #[serde(default)]
    pub raw: Option<String>,
    /// The key that signs (a fixture name). Also the default `kid`.
    #[serde(default)]
    pub key: Option<String>,
    /// The header's `alg` (default: the key's algorithm).
    #[serde(default)]
    pub alg: Option<String>,
    /// Header members merged over `{"alg", "typ": "JWT", "kid": key}`; `null` removes one;
    /// the string `"$public_jwk:NAME"` becomes that fixture's public JWK.
    #[serde(default)]
    pub header: Map<String, Value>,
    /// Exact header JSON text instead (need not be an object).
    #[serde(default)]
    pub header_text: Option<String>,
    /// Claims merged over the defaults; `null` removes one.
    #[serde(default)]
    pub claims: Map<String, Value>,
    /// Exact claims JSON text instead.
    #[serde(default)]
    pub claims_text: Option<String>,
    /// Add a `pad` claim of this many bytes (for oversized tokens).
    #[serde(default)]
    pub pad_bytes: Option<usize>,
    /// How to sign: `key` (default), `none` (empty signature), or `hmac` with `hmac_secret`.
    #[serde(default)]
    pub sign: Option<String>,
    /// Signing algorithm when it differs from the header's `alg`.
    #[serde(default)]
    pub sign_alg: Option<String>,
    /// For `sign: hmac`: `pem:KEY` or `der:KEY` (an RSA public key's bytes) or `text:...`.
    #[serde(default)]
    pub hmac_secret: Option<String>,
    /// After signing: `flip_signature_byte`, `truncate_signature` (the last byte dropped),
    /// `extend_signature` (a zero byte appended), `flip_payload_byte`, `strip_signature`,
    /// `der_signature`, `two_segments`, `four_segments`.
    #[serde(default)]
    pub tamper: Option<String>,
}

/// A plain compact JWS of `claims`, signed by `key` with its own algorithm and `kid` (for load
/// generation, where each request may need a fresh token).
pub fn signed(key: &Key, claims: &Value) -> anyhow::Result<String> {
    let header = serde_json::json!({"alg": key.alg, "typ": "JWT", "kid": key.name});
    let input = format!(
        "{}.{}",
        b64(serde_json::to_string(&header)?.as_bytes()),
        b64(serde_json::to_string(claims)?.as_bytes())
    );
    let signature = key.sign(&key.alg, input.as_bytes())?;
    Ok(format!("{input}.{}", b64(&signature)))
}

/// Make every token in `source` with `keys`.
pub fn mint_all(
    source: &TokenSource,
    keys: &BTreeMap<String, Key>,
) -> anyhow::Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for (name, spec) in &source.tokens {
        let token =
            mint(spec, &source.default_claims, keys).with_context(|| format!("token {name:?}"))?;
        out.insert(name.clone(), token);
    }
    Ok(out)
}

fn merge(base: &Map<String, Value>, over: &Map<String, Value>) -> Map<String, Value> {
    let mut m = base.clone();
    for (k, v) in over {
        if v.is_null() {
            m.remove(k);
        } else {
            m.insert(k.clone(), v.clone());
        }
    }
    m
}

fn mint(
    spec: &TokenSpec,
    defaults: &Map<String, Value>,
    keys: &BTreeMap<String, Key>,
) -> anyhow::Result<String> {
    if let Some(raw) = &spec.raw {
        return Ok(raw.clone());
    }
    let key = match &spec.key {
        Some(k) => Some(keys.get(k).ok_or_else(|| anyhow!("no key named {k:?}"))?),
        None => None,
    };
    let alg = spec
        .alg
        .clone()
        .or_else(|| key.map(|k| k.alg.clone()))
        .ok_or_else(|| anyhow!("a token needs an alg or a key"))?;
    let header_text = match &spec.header_text {
        Some(t) => t.clone(),
        None => {
            let mut base = Map::new();
            base.insert("alg".into(), alg.clone().into());
            base.insert("typ".into(), "JWT".into());
            if let Some(k) = key {
                base.insert("kid".into(), k.name.clone().into());
            }
            let mut header = merge(&base, &spec.header);
            for value in header.values_mut() {
                // `"$public_jwk:NAME"` embeds a fixture's public JWK (the `jwk` header attack).
                if let Some(name) = value.as_str().and_then(|s| s.strip_prefix("$public_jwk:")) {
                    let line = keys
                        .get(name)
                        .ok_or_else(|| anyhow!("no key {name:?}"))?
                        .public_jwk_line()?
                        .ok_or_else(|| anyhow!("{name} has no public JWK"))?;
                    *value = serde_json::from_str(&line)?;
                }
            }
            serde_json::to_string(&header)?
        }
    };
    let claims_text = match &spec.claims_text {
        Some(t) => t.clone(),
        None => {
            let mut claims = merge(defaults, &spec.claims);
            if let Some(n) = spec.pad_bytes {
                claims.insert("pad".into(), "x".repeat(n).into());
            }
            serde_json::to_string(&claims)?
        }
    };
    let signing_input = format!(
        "{}.{}",
        b64(header_text.as_bytes()),
        b64(claims_text.as_bytes())
    );
    let sign_alg = spec.sign_alg.clone().unwrap_or_else(|| alg.clone());
    let der = spec.tamper.as_deref() == Some("der_signature");
    let mut signature = match spec.sign.as_deref().unwrap_or("key") {
        "none" => Vec::new(),
        "key" => {
            let key = key.ok_or_else(|| anyhow!("sign: key needs a key"))?;
            if der {
                key.sign_der(signing_input.as_bytes())?
            } else {
                key.sign(&sign_alg, signing_input.as_bytes())?
            }
        }
        "hmac" => {
            let secret = spec
                .hmac_secret
                .as_deref()
                .ok_or_else(|| anyhow!("sign: hmac needs hmac_secret"))?;
            let bytes = if let Some(k) = secret.strip_prefix("pem:") {
                keys.get(k)
                    .ok_or_else(|| anyhow!("no key {k:?}"))?
                    .rsa_public(false)?
            } else if let Some(k) = secret.strip_prefix("der:") {
                keys.get(k)
                    .ok_or_else(|| anyhow!("no key {k:?}"))?
                    .rsa_public(true)?
            } else if let Some(t) = secret.strip_prefix("text:") {
                t.as_bytes().to_vec()
            } else {
                bail!("hmac_secret is pem:KEY, der:KEY or text:...");
            };
            hmac_sign(&sign_alg, &bytes, signing_input.as_bytes())?
        }
        other => bail!("unknown sign mode {other:?}"),
    };
    let mut payload_flip = false;
    match spec.tamper.as_deref() {
        None | Some("der_signature") => {}
        Some("flip_signature_byte") => {
            let mid = signature.len() / 2;
            let byte = signature
                .get_mut(mid)
                .ok_or_else(|| anyhow!("no signature to flip"))?;
            *byte ^= 0x01;
        }
        Some("truncate_signature") => {
            signature
                .pop()
                .ok_or_else(|| anyhow!("no signature to truncate"))?;
        }
        Some("extend_signature") => signature.push(0),
        Some("strip_signature") => signature.clear(),
        Some("flip_payload_byte") => payload_flip = true,
        Some("two_segments") => return Ok(signing_input),
        Some("four_segments") => {
            return Ok(format!(
                "{signing_input}.{}.{}",
                b64(&signature),
                b64(&signature)
            ))
        }
        Some(other) => bail!("unknown tamper {other:?}"),
    }
    let mut input = signing_input;
    if payload_flip {
        // Change the claims after signing: `"sub":"alice"` becomes `"sub":"alicf"`.
        let (h, c) = input.split_once('.').ok_or_else(|| anyhow!("no payload"))?;
        let claims = String::from_utf8(URL_SAFE_NO_PAD.decode(c)?)?;
        let changed = claims.replacen("alice", "alicf", 1);
        if changed == claims {
            bail!("flip_payload_byte needs \"alice\" in the claims");
        }
        input = format!("{h}.{}", b64(changed.as_bytes()));
    }
    Ok(format!("{input}.{}", b64(&signature)))
}

/// Replace, in `text`, every `"${jwk:NAME}"` and every one-line public JWK (`{"kty":...}`) whose
/// `kid` names a fixture key with that key's current public JWK line. Returns the new text.
pub fn fill_jwks(text: &str, keys: &BTreeMap<String, Key>) -> anyhow::Result<String> {
    let mut lines = BTreeMap::new();
    for (name, key) in keys {
        if let Some(line) = key.public_jwk_line()? {
            lines.insert(name.clone(), line);
        }
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    loop {
        let placeholder = rest.find("\"${jwk:");
        let jwk = rest.find("{\"kty\":\"");
        let start = match (placeholder, jwk) {
            (None, None) => break,
            (Some(a), None) | (None, Some(a)) => a,
            (Some(a), Some(b)) => a.min(b),
        };
        out.push_str(&rest[..start]);
        let here = &rest[start..];
        if let Some(after) = here.strip_prefix("\"${jwk:") {
            let end = after
                .find("}\"")
                .ok_or_else(|| anyhow!("unterminated ${{jwk:...}}"))?;
            let name = &after[..end];
            out.push_str(
                lines
                    .get(name)
                    .ok_or_else(|| anyhow!("no public key named {name:?}"))?,
            );
            rest = &after[end + 2..];
        } else {
            let end = here.find('}').ok_or_else(|| anyhow!("unterminated JWK"))? + 1;
            let existing = &here[..end];
            let kid = serde_json::from_str::<Value>(existing)
                .ok()
                .and_then(|v| v.get("kid").and_then(Value::as_str).map(str::to_owned));
            match kid.and_then(|k| lines.get(&k)) {
                Some(line) => out.push_str(line),
                None => out.push_str(existing),
            }
            rest = &here[end..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> BTreeMap<String, Key> {
        load_keys(&crate::suite_dir().join("keys")).expect("key fixtures")
    }

    #[test]
    fn fill_jwks_replaces_placeholders_and_stale_keys_only() {
        let keys = keys();
        let fresh = keys["rsa-1"].public_jwk_line().unwrap().unwrap();
        let text = r#"{"keys": ["${jwk:rsa-1}", {"kty":"RSA","kid":"rsa-1","n":"old","e":"AQAB"}, {"kty":"RSA","kid":"other","n":"x","e":"AQAB"}]}"#;
        let out = fill_jwks(text, &keys).unwrap();
        assert_eq!(
            out,
            format!(
                r#"{{"keys": [{fresh}, {fresh}, {{"kty":"RSA","kid":"other","n":"x","e":"AQAB"}}]}}"#
            )
        );
        assert!(fill_jwks(r#""${jwk:nope}""#, &keys).is_err());
    }

    #[test]
    fn tokens_are_deterministic_and_shaped() {
        let keys = keys();
        let source: TokenSource = serde_json::from_str(
            &std::fs::read_to_string(crate::suite_dir().join("tokens.json")).unwrap(),
        )
        .unwrap();
        let a = mint_all(&source, &keys).unwrap();
        let b = mint_all(&source, &keys).unwrap();
        assert_eq!(a, b);
        let committed = crate::vector::load_tokens(&crate::vectors_dir()).unwrap();
        assert_eq!(
            a, committed,
            "tokens.generated.json is stale: run `cargo run -p portcullis-conformance --bin mint`"
        );
        assert!(
            a["none-alg"].ends_with('.'),
            "alg none has an empty signature"
        );
        assert_eq!(a["two-segments"].matches('.').count(), 1);
        assert_eq!(a["four-segments"].matches('.').count(), 3);
        let es384 = a["es384-alice"].rsplit('.').next().unwrap();
        assert_eq!(
            URL_SAFE_NO_PAD.decode(es384).unwrap().len(),
            96,
            "ES384 signatures are r||s"
        );
        assert!(a["oversized"].len() > 16 * 1024);
    }
}
