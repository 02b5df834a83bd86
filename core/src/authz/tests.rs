use serde_json::json;

use super::*;

#[test]
fn claims_match_by_equality_or_array_membership() {
    assert!(claim_satisfied(Some(&json!("gold")), &json!("gold")));
    assert!(claim_satisfied(
        Some(&json!(["silver", "gold"])),
        &json!("gold")
    ));
    assert!(claim_satisfied(Some(&json!(true)), &json!(true)));
    assert!(!claim_satisfied(Some(&json!("Gold")), &json!("gold")));
    assert!(
        !claim_satisfied(Some(&json!("true")), &json!(true)),
        "types must match"
    );
    assert!(!claim_satisfied(Some(&json!(["silver"])), &json!("gold")));
    assert!(!claim_satisfied(
        Some(&json!({ "gold": true })),
        &json!("gold")
    ));
    assert!(!claim_satisfied(None, &json!("gold")));
}
