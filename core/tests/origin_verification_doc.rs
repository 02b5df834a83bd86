//! The test vectors in `docs/origin-verification.md` are what the gateway's own signing code
//! produces, so the document an origin team implements from cannot drift from the gateway.

use portcullis_core::origin_signing::{canonical, header_value, Signed};
use serde_json::Value;

#[test]
fn the_documented_vectors_are_the_gateways_signatures() {
    let doc = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/origin-verification.md"),
    )
    .expect("docs/origin-verification.md");
    let block = doc
        .split("```json\n")
        .nth(1)
        .and_then(|rest| rest.split("\n```").next())
        .expect("a ```json block of test vectors");
    let vectors: Vec<Value> = serde_json::from_str(block).expect("the vectors are JSON");
    assert!(vectors.len() >= 3, "{} vectors", vectors.len());
    let mut kinds = (false, false);
    for v in &vectors {
        let text = |k: &str| v[k].as_str().unwrap_or_else(|| panic!("{k} in {v}"));
        let body = v["body"].as_str().map(str::as_bytes);
        kinds = (kinds.0 || body.is_some(), kinds.1 || body.is_none());
        let consumer = Some(text("consumer")).filter(|c| *c != "-");
        let signed = Signed {
            t: v["t"].as_u64().expect("t"),
            method: text("method"),
            path_and_query: text("path_and_query"),
            request_id: text("request_id"),
            consumer,
            body,
        };
        assert_eq!(canonical(&signed), text("canonical"), "{v}");
        assert_eq!(
            header_value(text("secret").as_bytes(), &signed),
            text("header"),
            "{v}"
        );
        let digest = canonical(&signed).rsplit('\n').next().map(str::to_owned);
        let documented = v["body_sha256"].as_str().unwrap_or("UNSIGNED-PAYLOAD");
        assert_eq!(digest.as_deref(), Some(documented), "{v}");
    }
    assert_eq!(
        kinds,
        (true, true),
        "a buffered body and the marker are both covered"
    );
}
