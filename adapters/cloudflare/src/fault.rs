//! Fault injection for the conformance suite, compiled in only with the cargo feature
//! `fault-injection` (off by default; `scripts/test-workers` builds the Worker with it, into a
//! directory of its own).
//!
//! With the feature, a request carrying [`HEADER`]`: internal` makes handling return an error,
//! so the suite can see that the Worker answers it 500 `internal` problem+json
//! (`exchange::internal_error`) rather than leaving it to workerd (a panic would not do: it
//! aborts the wasm instance); `unroutable` makes the Worker treat the request as one it cannot
//! convert, which workerd never hands over otherwise (it refuses such requests itself). Without
//! the feature, [`requested`] is always `None` and the header is an ordinary header.

use http::HeaderMap;

/// The request header that makes handling fail on purpose, with the feature.
pub const HEADER: &str = "x-portcullis-fault";

/// A failure a request can ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// `internal`: handling returns an error.
    Internal,
    /// `unroutable`: treat the request as one the Worker cannot convert.
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

/// The injected error.
pub fn injected() -> worker::Error {
    worker::Error::RustError(format!(
        "fault injected on purpose ({HEADER}); a fault-injection test build"
    ))
}
