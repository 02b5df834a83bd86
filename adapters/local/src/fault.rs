//! Fault injection for the conformance suite, compiled in only with the cargo feature
//! `fault-injection` (off by default; the suite's own build of the binary turns it on).
//!
//! With the feature, a request carrying [`HEADER`]`: internal` panics inside handling, so the
//! suite can see that the server catches the panic and still answers 500 `internal`
//! problem+json (`exchange::internal_error`) with its access line. (The edge adapters also take
//! `unroutable`; natively there is no such path, since hyper hands over only requests `http`
//! accepts, so that value means nothing here.) Without the feature, [`inject`] does nothing and
//! the header is an ordinary header: no build a release or benchmark makes can be made to fail.

/// The request header that makes handling fail on purpose, with the feature.
pub const HEADER: &str = "x-portcullis-fault";

/// Whether this build has fault injection.
pub const COMPILED_IN: bool = cfg!(feature = "fault-injection");

/// Panic if fault injection is compiled in and `headers` ask for it.
pub fn inject(headers: &http::HeaderMap) {
    if COMPILED_IN && headers.get(HEADER).is_some_and(|v| v == "internal") {
        panic!("fault injected on purpose ({HEADER}); a fault-injection test build");
    }
}

/// Warn at start-up, before the readiness line, that this binary fails requests on purpose.
pub fn warn_if_compiled_in() {
    if COMPILED_IN {
        crate::log::event(
            portcullis_core::Level::Warn,
            format!("built with the fault-injection feature: a request carrying {HEADER}: internal fails on purpose; a test build, not for production"),
        );
    }
}
