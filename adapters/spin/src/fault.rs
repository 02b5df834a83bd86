//! Fault injection for the conformance suite, compiled in only with the cargo feature
//! `fault-injection` (off by default; `scripts/test-spin` builds the component with it).
//!
//! With the feature, a request carrying [`HEADER`]`: internal` fails after the core decided it,
//! before anything is sent to the origin or any answer handed to Spin, so the suite can see that such a failure is answered 500
//! `internal` problem+json (`exchange::internal_error`) rather than left to the host's bare 500
//! (a panic would not do: it aborts the instance); `unroutable` makes the component treat the
//! request as one it cannot convert, which the host never hands over otherwise (it refuses such
//! requests itself). Without the feature, [`requested`] is always `None` and the header is an
//! ordinary header.

use http::HeaderMap;
use spin_sdk::http::ResponseOutparam;

use crate::Unanswered;

/// The request header that makes handling fail on purpose, with the feature.
pub const HEADER: &str = "x-portcullis-fault";

/// A failure a request can ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// `internal`: fail before the answer is handed over.
    Internal,
    /// `unroutable`: treat the request as one the component cannot convert.
    Unroutable,
}

/// The failure `headers` ask for, if fault injection is compiled in.
pub fn requested(headers: &HeaderMap) -> Option<Fault> {
    if !cfg!(feature = "fault-injection") {
        return None;
    }
    match headers.get(HEADER)?.as_bytes() {
        b"internal" => Some(Fault::Internal),
        b"unroutable" => Some(Fault::Unroutable),
        _ => None,
    }
}

/// The failure: the response slot, unused.
pub fn injected(out: ResponseOutparam) -> Unanswered {
    Unanswered {
        out,
        cause: format!("fault injected on purpose ({HEADER}); a fault-injection test build"),
    }
}
