//! Fault injection natively, compiled in only with the cargo feature `fault-injection` (off by
//! default; the suite's own build of the binary turns it on, and with it the core's, which says
//! what a request may ask for: `portcullis_core::fault`).
//!
//! With the feature, a request asking for `internal` panics inside handling, so the suite can
//! see that the server catches the panic and still answers 500 `internal` problem+json
//! (`exchange::internal_error`) with its access line. `unroutable` means nothing here: hyper
//! hands over only requests `http` accepts. With it too, `PORTCULLIS_FAULT_CLOCK_OFFSET_MS`
//! shifts the gateway's clock ([`shifted`]), so the suite can run gateways whose clocks disagree
//! in front of one shared counter store. Without the feature, both do nothing.

use portcullis_core::fault::{self, Fault};

/// Panic if fault injection is compiled in and `headers` ask for it.
pub fn inject(headers: &http::HeaderMap) {
    if fault::requested(headers) == Some(Fault::Internal) {
        panic!("{}", fault::CAUSE);
    }
}

/// `now` moved by `PORTCULLIS_FAULT_CLOCK_OFFSET_MS` (read once), with fault injection only.
pub fn shifted(now: portcullis_core::UnixTime) -> portcullis_core::UnixTime {
    static OFFSET_MS: std::sync::OnceLock<i64> = std::sync::OnceLock::new();
    let read = || {
        std::env::var("PORTCULLIS_FAULT_CLOCK_OFFSET_MS")
            .ok()?
            .parse()
            .ok()
    };
    let ms = OFFSET_MS.get_or_init(|| fault::COMPILED_IN.then(read).flatten().unwrap_or(0));
    portcullis_core::UnixTime::from_micros(now.as_micros().saturating_add_signed(ms * 1000))
}

/// Warn at start-up, before the readiness line, that this binary fails requests on purpose.
pub fn warn_if_compiled_in() {
    if fault::COMPILED_IN {
        crate::log::event(&portcullis_core::Event::fault_injection(
            crate::context::now(),
        ));
    }
}
