//! Fault injection for the conformance suite, compiled in only with the cargo feature
//! `fault-injection` (off by default; `scripts/test-spin` builds the component with it).
//!
//! With the feature, a request carrying [`HEADER`] fails after the core decided it, before any
//! answer is handed to Spin, so the suite can see that such a failure is answered 500 `internal`
//! problem+json (`exchange::internal_error`) rather than left to the host's bare 500. A panic
//! would not do: it aborts the instance. Without the feature, [`requested`] is always false and
//! the header is an ordinary header.

use http::HeaderMap;
use spin_sdk::http::ResponseOutparam;

use crate::Unanswered;

/// The request header that makes handling fail on purpose (any value), with the feature.
pub const HEADER: &str = "x-portcullis-fault";

/// Whether fault injection is compiled in and `headers` ask for it.
pub fn requested(headers: &HeaderMap) -> bool {
    cfg!(feature = "fault-injection") && headers.contains_key(HEADER)
}

/// The failure: the response slot, unused.
pub fn injected(out: ResponseOutparam) -> Unanswered {
    Unanswered {
        out,
        cause: format!("fault injected on purpose ({HEADER}); a fault-injection test build"),
    }
}
