use std::collections::HashSet;

use super::*;

#[test]
fn readme_table_of_reasons_is_rendered_from_the_code() {
    crate::generated_docs::check("README.md", "reasons", &reasons_markdown(), "readme_table");
}

#[test]
fn log_slugs_are_unique_and_shaped_for_log_pipelines() {
    let mut seen = HashSet::new();
    for r in Reason::ALL {
        let s = r.slug();
        assert!(seen.insert(s), "{s} is listed twice");
        assert!(
            !s.is_empty() && s.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
            "{s}"
        );
        assert!(r.meaning().ends_with('.'), "{s}: a meaning is one sentence");
    }
}

#[test]
fn every_problem_type_has_a_reason_and_its_own_slug() {
    let slugs: HashSet<_> = ProblemType::ALL.iter().map(|t| t.slug()).collect();
    assert_eq!(slugs.len(), ProblemType::ALL.len());
    for t in ProblemType::ALL {
        assert!(
            Reason::ALL.iter().any(|r| r.problem_type() == *t),
            "{t:?} has no reason"
        );
        assert!(t.status().is_client_error() || t.status().is_server_error());
    }
}

#[test]
fn plain_reasons_build_the_kind_of_their_problem_type() {
    fn check<R: PlainReason + Copy>(r: R) {
        let reject = Reject::new(r, "x");
        assert_eq!(reject.kind().problem_type(), r.into().problem_type());
        assert_eq!(reject.problem_type(), R::KIND.problem_type());
    }
    check(BadPathReason::DotSegment);
    check(BadRequestReason::Malformed);
    check(NotFoundReason::NoRoute);
    check(ForbiddenReason::Scope);
    check(StoreUnavailableReason::StoreError);
    check(NoPolicyReason::InvalidSchema);
    check(KeysUnavailableReason::NoKeys);
    check(OriginUnreachableReason::Unreachable);
    check(OriginTimeoutReason::TimedOut);
}

#[test]
fn slugs_and_statuses_are_the_logged_contract() {
    // A sample pinned by hand: log pipelines and the conformance vectors depend on these.
    let r = Reject::unauthenticated(UnauthenticatedReason::TokenExpired, Vec::new(), "x");
    assert_eq!(r.log_reason(), "unauthenticated:token_expired");
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = Reject::new(StoreUnavailableReason::StoreError, "x");
    assert_eq!(r.log_reason(), "quota-store-unavailable:store_error");
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    let r = Reject::new(NoPolicyReason::InvalidSchema, "x");
    assert_eq!(r.log_reason(), "no-policy:invalid_schema");
}

#[test]
fn equality_ignores_the_detail_but_not_the_reason() {
    let a = Reject::new(ForbiddenReason::Scope, "one wording");
    assert_eq!(a, Reject::new(ForbiddenReason::Scope, "another"));
    assert_ne!(a, Reject::new(ForbiddenReason::Claim, "one wording"));
}

#[test]
fn quota_refusal_headers_are_the_draft_fields() {
    let r = Reject::quota_exceeded(
        7,
        RateLimit {
            name: "q".into(),
            limit: std::num::NonZeroU32::new(5).unwrap(),
            window_s: 60,
            remaining: 0,
            reset_s: 7,
        },
        "x",
    );
    let response = r.to_response("id");
    let h = response.headers();
    assert_eq!(h["retry-after"], "7");
    assert_eq!(h["ratelimit-policy"], "\"q\";q=5;w=60");
    assert_eq!(h["ratelimit"], "\"q\";r=0;t=7");
}
