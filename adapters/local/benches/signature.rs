//! Native signature checks: the `ring` backend the gateway uses against the core's portable
//! pure-Rust default, per algorithm, on the core's deterministic test keys.
//! `cargo bench -p portcullis --bench signature`.

use criterion::{criterion_group, criterion_main, Criterion};
use portcullis::signature::Ring;
use portcullis_core::jwt::{parse_jwk, Algorithm, Jwk};
use portcullis_core::signature::PureRust;
use portcullis_core::testing::{keys, TestKeys};

fn case(alg: Algorithm) -> (Jwk, String, Vec<u8>) {
    let kid = TestKeys::kid_for(alg);
    let jwks = keys().jwks();
    let jwk = jwks["keys"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|k| k["kid"].as_str() == kid)
        .map(|k| parse_jwk(k).expect("test key"))
        .expect("a test key for the algorithm");
    let token = keys().sign(alg, kid, &serde_json::json!({"sub": "bench", "exp": 1}));
    let (input, signature) = token.rsplit_once('.').expect("compact JWS");
    use base64::Engine;
    let signature = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(signature)
        .expect("base64url");
    (jwk, input.to_owned(), signature)
}

fn signature(c: &mut Criterion) {
    let mut group = c.benchmark_group("signature");
    for alg in [
        Algorithm::RS256,
        Algorithm::PS256,
        Algorithm::ES256,
        Algorithm::ES384,
        Algorithm::EdDSA,
    ] {
        let (key, input, sig) = case(alg);
        assert!(Ring::check(alg, &key, input.as_bytes(), &sig));
        group.bench_function(format!("{} ring", alg.name()), |b| {
            b.iter(|| Ring::check(alg, &key, input.as_bytes(), &sig))
        });
        group.bench_function(format!("{} pure-rust", alg.name()), |b| {
            b.iter(|| PureRust::check(alg, &key, input.as_bytes(), &sig))
        });
    }
    group.finish();
}

criterion_group!(benches, signature);
criterion_main!(benches);
