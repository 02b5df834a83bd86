//! Fault injection for the conformance suite, compiled in only with the cargo feature
//! `fault-injection` (off by default; `scripts/test-workers` builds the Worker with it, into a
//! directory of its own).
//!
//! With the feature, a request carrying [`HEADER`] makes handling return an error, so the suite
//! can see that the Worker answers it 500 `internal` problem+json (`exchange::internal_error`)
//! rather than leaving it to workerd. A panic would not do: it aborts the wasm instance. Without
//! the feature, [`inject`] never fails and the header is an ordinary header.

use http::HeaderMap;

/// The request header that makes handling fail on purpose (any value), with the feature.
pub const HEADER: &str = "x-portcullis-fault";

/// An error if fault injection is compiled in and `headers` ask for it.
pub fn inject(headers: &HeaderMap) -> worker::Result<()> {
    if cfg!(feature = "fault-injection") && headers.contains_key(HEADER) {
        return Err(worker::Error::RustError(format!(
            "fault injected on purpose ({HEADER}); a fault-injection test build"
        )));
    }
    Ok(())
}
