//! Fault injection for the conformance suite, compiled in only with the cargo feature
//! `fault-injection` (off by default; each adapter's feature of the same name turns it on, and
//! only the suite's builds turn that on).
//!
//! With the feature, a request carrying [`HEADER`] asks for a failure no real input can cause,
//! so the suite can see each runtime's answer to it:
//!
//! - `internal`: handling fails inside the adapter (natively a panic, caught by the server; on
//!   Workers and Spin an error, since a wasm panic would abort the instance), and the client
//!   still gets 500 `internal` problem+json ([`crate::exchange::internal_error`]);
//! - `unroutable`: [`crate::message::request`] refuses the request as if it were not valid
//!   HTTP, which no runtime ever hands over, so the adapter answers 400 `bad-request`
//!   ([`crate::exchange::unroutable`]). Natively hyper hands over a parsed request and that
//!   function is not called, so there the value means nothing.
//! - `quota-store`: the counter store's backend fails when asked: on Workers the Durable Object
//!   throws, so the suite sees the core fail closed on a real store failure. Runtimes whose store
//!   cannot fail this way (native memory, Spin key-value) ignore it.
//!
//! Without the feature, [`requested`] is always `None` and the header is an ordinary header: no
//! build a release or benchmark makes can be made to fail.

use http::HeaderMap;

/// The request header that makes handling fail on purpose, with the feature.
pub const HEADER: &str = "x-portcullis-fault";

/// Whether this build has fault injection.
pub const COMPILED_IN: bool = cfg!(feature = "fault-injection");

/// The cause an injected `internal` failure names in its event (and, natively, its panic).
pub const CAUSE: &str =
    "fault injected on purpose (x-portcullis-fault); a fault-injection test build";

/// A failure a request can ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// `internal`: handling fails inside the adapter.
    Internal,
    /// `unroutable`: the request is treated as one that is not valid HTTP.
    Unroutable,
    /// `quota-store`: the counter store's backend fails when asked.
    QuotaStore,
}

impl Fault {
    /// The header value that asks for this failure.
    pub fn value(self) -> &'static str {
        match self {
            Fault::Internal => "internal",
            Fault::Unroutable => "unroutable",
            Fault::QuotaStore => "quota-store",
        }
    }
}

/// The failure `headers` ask for, if fault injection is compiled in; `None` for any other value
/// of [`HEADER`], and always `None` without the feature.
pub fn requested(headers: &HeaderMap) -> Option<Fault> {
    if !COMPILED_IN {
        return None;
    }
    match headers.get(HEADER)?.as_bytes() {
        b"internal" => Some(Fault::Internal),
        b"unroutable" => Some(Fault::Unroutable),
        b"quota-store" => Some(Fault::QuotaStore),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn asking(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(HEADER, value.parse().unwrap());
        headers
    }

    #[test]
    fn a_fault_is_requested_only_with_the_feature_and_a_known_value() {
        let when = |fault| COMPILED_IN.then_some(fault);
        assert_eq!(requested(&asking("internal")), when(Fault::Internal));
        assert_eq!(requested(&asking("unroutable")), when(Fault::Unroutable));
        assert_eq!(requested(&asking("quota-store")), when(Fault::QuotaStore));
        for fault in [Fault::Internal, Fault::Unroutable, Fault::QuotaStore] {
            assert_eq!(requested(&asking(fault.value())), when(fault));
        }
        assert_eq!(requested(&asking("Internal")), None);
        assert_eq!(requested(&asking("panic")), None);
        assert_eq!(requested(&HeaderMap::new()), None);
    }

    #[test]
    fn the_cause_names_the_header() {
        assert!(CAUSE.contains(HEADER), "{CAUSE}");
    }
}
