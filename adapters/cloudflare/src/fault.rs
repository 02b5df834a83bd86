//! Fault injection for the conformance suite, compiled in only with the cargo feature
//! `fault-injection` (off by default; `scripts/test-workers` builds the Worker with it, into a
//! directory of its own).
//!
//! With the feature, a request carrying [`HEADER`]`: internal` makes handling return an error,
//! so the suite can see that the Worker answers it 500 `internal` problem+json
//! (`exchange::internal_error`) rather than leaving it to workerd (a panic would not do: it
//! aborts the wasm instance); `unroutable` makes the Worker treat the request as one it cannot
//! convert, which workerd never hands over otherwise (it refuses such requests itself). Without
//! the feature, neither does anything and the header is an ordinary header.

use http::HeaderMap;

/// The request header that makes handling fail on purpose, with the feature.
pub const HEADER: &str = "x-portcullis-fault";

/// Whether fault injection is compiled in and `raw` asks to be treated as unroutable.
pub fn unroutable(raw: &web_sys::Request) -> bool {
    cfg!(feature = "fault-injection")
        && raw.headers().get(HEADER).ok().flatten().as_deref() == Some("unroutable")
}

/// An error if fault injection is compiled in and `headers` ask for one.
pub fn inject(headers: &HeaderMap) -> worker::Result<()> {
    if cfg!(feature = "fault-injection") && headers.get(HEADER).is_some_and(|v| v == "internal") {
        return Err(worker::Error::RustError(format!(
            "fault injected on purpose ({HEADER}); a fault-injection test build"
        )));
    }
    Ok(())
}
