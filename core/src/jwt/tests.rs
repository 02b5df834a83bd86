use serde_json::json;

use super::*;
use crate::testing::{keys, token, TestKeys, HS_SECRET};

const NOW: u64 = 1_750_000_000;

fn all_algorithms() -> Vec<Algorithm> {
    use Algorithm::*;
    vec![
        HS256, HS384, HS512, RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, EdDSA,
    ]
}

fn provider(algorithms: Vec<Algorithm>) -> JwtProvider {
    let jwks: Vec<Jwk> = keys().jwks()["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| parse_jwk(k).unwrap())
        .collect();
    JwtProvider::with_keys(
        JwtSettings {
            issuer: "https://idp.test/".into(),
            audiences: vec!["api".into()],
            algorithms,
            leeway_s: 30,
            consumer_claim: "sub".into(),
            scopes_claim: None,
        },
        jwks,
        Some(HS_SECRET.as_bytes().to_vec()),
    )
}

fn claims() -> serde_json::Value {
    json!({ "iss": "https://idp.test/", "aud": "api", "sub": "alice", "exp": NOW + 600, "scope": "a b" })
}

fn verify(p: &JwtProvider, t: &str) -> Result<VerifiedClaims, TokenError> {
    p.verify(t, UnixTime::from_secs(NOW))
}

#[test]
fn every_algorithm_verifies() {
    let p = provider(all_algorithms());
    for alg in all_algorithms() {
        let claims =
            verify(&p, &token(alg, &claims())).unwrap_or_else(|e| panic!("{alg:?}: {e:?}"));
        assert_eq!(claims["sub"], "alice");
    }
}

#[test]
fn alg_none_is_never_accepted() {
    let p = provider(all_algorithms());
    let header = b64(br#"{"alg":"none","typ":"JWT"}"#);
    let body = b64(claims().to_string().as_bytes());
    for t in [format!("{header}.{body}."), format!("{header}.{body}")] {
        assert!(
            matches!(
                verify(&p, &t),
                Err(TokenError::AlgorithmNotAllowed | TokenError::Malformed)
            ),
            "{t}"
        );
    }
    let header = b64(br#"{"alg":"None"}"#);
    assert_eq!(
        verify(&p, &format!("{header}.{body}.")),
        Err(TokenError::AlgorithmNotAllowed)
    );
}

#[test]
fn algorithm_must_be_listed() {
    let p = provider(vec![Algorithm::RS256]);
    assert_eq!(
        verify(&p, &token(Algorithm::ES256, &claims())),
        Err(TokenError::AlgorithmNotAllowed)
    );
    assert_eq!(
        verify(&p, &token(Algorithm::HS256, &claims())),
        Err(TokenError::AlgorithmNotAllowed)
    );
}

#[test]
fn rsa_public_key_is_never_an_hmac_secret() {
    // Algorithm confusion: sign HS256 with the RSA public modulus as the secret and claim the RSA kid.
    let rsa_n = keys().jwks()["keys"][0]["n"].as_str().unwrap().to_owned();
    let forged = {
        use jwt_compact::alg::{Hs256, Hs256Key};
        use jwt_compact::{AlgorithmExt, Claims, Header};
        let mut c = Claims::new(claims().as_object().unwrap().clone());
        c.expiration = chrono::DateTime::from_timestamp(NOW as i64 + 600, 0);
        Hs256
            .token(
                &Header::empty().with_key_id("rsa-1"),
                &c,
                &Hs256Key::new(rsa_n.as_bytes()),
            )
            .unwrap()
    };
    let rs_only = JwtProvider::with_keys(
        JwtSettings {
            issuer: "https://idp.test/".into(),
            audiences: vec!["api".into()],
            algorithms: vec![Algorithm::RS256],
            leeway_s: 0,
            consumer_claim: "sub".into(),
            scopes_claim: None,
        },
        vec![parse_jwk(&keys().jwks()["keys"][0]).unwrap()],
        None,
    );
    assert_eq!(
        verify(&rs_only, &forged),
        Err(TokenError::AlgorithmNotAllowed)
    );
}

#[test]
fn kid_selects_the_key() {
    let p = provider(all_algorithms());
    let t = keys().sign(Algorithm::ES256, Some("nope"), &claims());
    assert_eq!(verify(&p, &t), Err(TokenError::UnknownKeyId));
    // A known kid of the wrong key type cannot verify this algorithm.
    let t = keys().sign(Algorithm::ES256, Some("rsa-1"), &claims());
    assert_eq!(verify(&p, &t), Err(TokenError::NoKeyForAlgorithm));
    // Without a kid, every key that fits the algorithm is tried.
    let t = keys().sign(Algorithm::ES256, None, &claims());
    assert!(verify(&p, &t).is_ok());
}

#[test]
fn a_flipped_signature_byte_fails() {
    let p = provider(all_algorithms());
    for alg in all_algorithms() {
        let t = token(alg, &claims());
        let (head, sig) = t.rsplit_once('.').unwrap();
        let mut bytes =
            base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, sig).unwrap();
        bytes[3] ^= 0x01;
        let forged = format!("{head}.{}", b64(&bytes));
        assert_eq!(
            verify(&p, &forged),
            Err(TokenError::BadSignature),
            "{alg:?}"
        );
    }
}

#[test]
fn a_changed_claim_fails_the_signature() {
    let p = provider(all_algorithms());
    let t = token(Algorithm::RS256, &claims());
    let parts: Vec<&str> = t.split('.').collect();
    let mut c = claims();
    c["sub"] = json!("mallory");
    let forged = format!(
        "{}.{}.{}",
        parts[0],
        b64(c.to_string().as_bytes()),
        parts[2]
    );
    assert_eq!(verify(&p, &forged), Err(TokenError::BadSignature));
}

#[test]
fn registered_claims_are_enforced() {
    let p = provider(all_algorithms());
    let case = |patch: serde_json::Value| {
        let mut c = claims();
        for (k, v) in patch.as_object().unwrap() {
            if v.is_null() {
                c.as_object_mut().unwrap().remove(k);
            } else {
                c[k] = v.clone();
            }
        }
        verify(&p, &token(Algorithm::ES256, &c))
    };
    assert_eq!(case(json!({ "exp": null })), Err(TokenError::MissingExpiry));
    assert_eq!(case(json!({ "exp": NOW - 31 })), Err(TokenError::Expired));
    assert!(
        case(json!({ "exp": NOW - 29 })).is_ok(),
        "inside the leeway"
    );
    assert_eq!(
        case(json!({ "nbf": NOW + 31 })),
        Err(TokenError::NotYetValid)
    );
    assert!(case(json!({ "nbf": NOW + 29 })).is_ok());
    assert_eq!(
        case(json!({ "iss": "https://evil.test/" })),
        Err(TokenError::WrongIssuer)
    );
    assert_eq!(case(json!({ "iss": null })), Err(TokenError::WrongIssuer));
    assert_eq!(
        case(json!({ "aud": "other" })),
        Err(TokenError::WrongAudience)
    );
    assert_eq!(case(json!({ "aud": null })), Err(TokenError::WrongAudience));
    assert!(case(json!({ "aud": ["other", "api"] })).is_ok());
    assert_eq!(
        case(json!({ "sub": null })),
        Err(TokenError::MissingSubject)
    );
    assert_eq!(case(json!({ "sub": 42 })), Err(TokenError::MissingSubject));
    assert_eq!(case(json!({ "sub": "" })), Err(TokenError::MissingSubject));
}

#[test]
fn malformed_tokens_are_refused_without_panicking() {
    let p = provider(all_algorithms());
    let long = "a".repeat(MAX_TOKEN_BYTES + 1);
    for t in [
        "",
        "abc",
        "a.b",
        "a.b.c",
        "a.b.c.d",
        "....",
        "eyJ.eyJ.eyJ",
        "!!!.@@@.###",
        long.as_str(),
    ] {
        assert!(verify(&p, t).is_err(), "{t}");
    }
    let header_not_object = format!("{}.{}.", b64(b"[1,2]"), b64(b"{}"));
    assert!(verify(&p, &header_not_object).is_err());
    let claims_not_object = {
        let t = token(Algorithm::HS256, &claims());
        let parts: Vec<&str> = t.split('.').collect();
        format!("{}.{}.{}", parts[0], b64(b"[]"), parts[2])
    };
    assert!(verify(&p, &claims_not_object).is_err());
}

#[test]
fn jwk_parsing_refuses_what_it_should() {
    let jwks = keys().jwks();
    let rsa = &jwks["keys"][0];
    let mut private = rsa.clone();
    private["d"] = json!("AAAA");
    assert!(parse_jwk(&private).is_err());
    let mut enc = rsa.clone();
    enc["use"] = json!("enc");
    assert!(parse_jwk(&enc).is_err());
    let mut wrong_alg = rsa.clone();
    wrong_alg["alg"] = json!("ES256");
    assert!(parse_jwk(&wrong_alg).is_err());
    assert!(parse_jwk(&json!({ "kty": "oct", "k": "c2VjcmV0" })).is_err());
    assert!(
        parse_jwk(&json!({ "kty": "RSA", "n": "AQAB", "e": "AQAB" })).is_err(),
        "tiny RSA modulus"
    );
    assert!(parse_jwk(&json!({ "kty": "EC", "crv": "P-256", "x": "AAAA", "y": "AAAA" })).is_err());
    assert!(parse_jwk(&json!({ "kty": "EC", "crv": "P-521", "x": "AAAA", "y": "AAAA" })).is_err());
    assert!(parse_jwk(&json!({ "kty": "OKP", "crv": "X25519", "x": "AAAA" })).is_err());
    assert!(parse_jwk(&json!("not an object")).is_err());
    assert!(parse_jwk(&json!({ "kty": "RSA", "n": 5, "e": "AQAB" })).is_err());
}

#[test]
fn a_key_that_pins_its_alg_is_used_for_that_alg_only() {
    let mut rsa = keys().jwks()["keys"][0].clone();
    rsa["alg"] = json!("RS256");
    let p = JwtProvider::with_keys(
        JwtSettings {
            issuer: "https://idp.test/".into(),
            audiences: vec!["api".into()],
            algorithms: vec![Algorithm::RS256, Algorithm::PS256],
            leeway_s: 0,
            consumer_claim: "sub".into(),
            scopes_claim: None,
        },
        vec![parse_jwk(&rsa).unwrap()],
        None,
    );
    assert!(verify(&p, &token(Algorithm::RS256, &claims())).is_ok());
    assert_eq!(
        verify(&p, &token(Algorithm::PS256, &claims())),
        Err(TokenError::NoKeyForAlgorithm)
    );
    let _ = TestKeys::kid_for(Algorithm::PS256);
}

fn b64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// An HS256 token over exactly these header and claims texts.
fn hs256_raw(header: &str, claims: &str) -> String {
    use hmac::{Hmac, Mac};
    let input = format!("{}.{}", b64(header.as_bytes()), b64(claims.as_bytes()));
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(HS_SECRET.as_bytes()).unwrap();
    mac.update(input.as_bytes());
    format!("{input}.{}", b64(&mac.finalize().into_bytes()))
}

#[test]
fn duplicate_keys_in_header_or_claims_are_refused_though_signed() {
    let p = provider(vec![Algorithm::HS256]);
    let exp = NOW + 600;
    let claims = format!(r#"{{"iss":"https://idp.test/","aud":"api","sub":"alice","exp":{exp}}}"#);
    assert!(verify(&p, &hs256_raw(r#"{"alg":"HS256","typ":"JWT"}"#, &claims)).is_ok());
    // Last-wins parsers would read `admin`, first-wins ones `alice`.
    let twice_sub = format!(
        r#"{{"iss":"https://idp.test/","aud":"api","sub":"alice","exp":{exp},"sub":"admin"}}"#
    );
    assert_eq!(
        verify(&p, &hs256_raw(r#"{"alg":"HS256"}"#, &twice_sub)),
        Err(TokenError::MalformedClaims)
    );
    let nested = format!(
        r#"{{"iss":"https://idp.test/","aud":"api","sub":"alice","exp":{exp},"ctx":{{"role":"user","role":"admin"}}}}"#
    );
    assert_eq!(
        verify(&p, &hs256_raw(r#"{"alg":"HS256"}"#, &nested)),
        Err(TokenError::MalformedClaims)
    );
    let escaped = format!(
        r#"{{"iss":"https://idp.test/","aud":"api","sub":"alice","exp":{exp},"s\u0075b":"admin"}}"#
    );
    assert_eq!(
        verify(&p, &hs256_raw(r#"{"alg":"HS256"}"#, &escaped)),
        Err(TokenError::MalformedClaims)
    );
    for header in [
        r#"{"alg":"HS256","kid":"a","kid":"b"}"#,
        r#"{"alg":"HS256","typ":"JWT","typ":"JWT"}"#,
        r#"{"alg":"HS256","x":1,"x":2}"#,
    ] {
        assert_eq!(
            verify(&p, &hs256_raw(header, &claims)),
            Err(TokenError::Malformed),
            "{header}"
        );
    }
}
