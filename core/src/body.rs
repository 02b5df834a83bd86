//! Request content: size, content type and coding, query and body schemas.
//!
//! Bodies the route does not inspect are streamed to the origin untouched. A route inspects the
//! body when it sets `max_body_bytes` or a `body_schema`; then the gateway reads at most
//! `max_body_bytes` (1 MiB by default for schema routes) and forwards exactly the bytes it checked.

use http::{header, request::Parts};

use crate::config::Route;
use crate::json;
use crate::problem::{BadRequestReason, FieldError, InvalidBodyReason, NoPolicyReason, Reject};

/// How the adapter hands the body to the core. The core asks for it only when the route inspects
/// it, and never reads more than `limit` bytes plus one.
#[allow(async_fn_in_trait)]
pub trait RequestBody {
    /// Read the whole body. Stop and return [`BodyError::TooLarge`] as soon as more than `limit`
    /// bytes have arrived.
    async fn read_to_limit(self, limit: u64) -> Result<Vec<u8>, BodyError>;
}

/// Why a body could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyError {
    /// More than the limit arrived.
    TooLarge,
    /// The client went away or sent a malformed body.
    Aborted,
}

/// What a runtime reads and throws away of a request body the gateway answered without reading
/// to the end (a 413 mid-stream, a 401 before the body): at most this many bytes, for at most
/// [`DRAIN_TIME`]. A connection that still holds unread body bytes cannot carry the next
/// request; a runtime that reuses it (workerd behind `wrangler dev`'s proxy) then fails that
/// next exchange. The bounds keep a client from holding the gateway with an endless upload: past
/// them the answer goes out and the connection is the runtime's to close.
pub const DRAIN_BYTES: u64 = 4 * 1024 * 1024;
/// How long a runtime spends draining an unread request body, at most (see [`DRAIN_BYTES`]).
pub const DRAIN_TIME: std::time::Duration = std::time::Duration::from_secs(2);

/// Bytes reserved up front when a body announces its size, at most. A size hint is a claim, not
/// a promise: reserving what it says would let one header allocate gigabytes.
pub const MAX_PREALLOCATION: u64 = 64 * 1024;

/// A body being read chunk by chunk up to a limit, as [`RequestBody::read_to_limit`] promises:
/// the runtime pushes each chunk as it arrives and stops at the first error, so an oversized
/// body costs at most the limit plus one chunk of memory. A [`LimitedBody::discarding`] one
/// counts the bytes of a body being drained, within [`DRAIN_BYTES`], and keeps none.
#[derive(Debug)]
pub struct LimitedBody {
    bytes: Vec<u8>,
    seen: u64,
    limit: u64,
    keep: bool,
}

impl LimitedBody {
    /// Nothing read yet, of at most `limit` bytes, with room for `size_hint` bytes (what the body
    /// claims to hold) reserved up to [`MAX_PREALLOCATION`].
    pub fn new(limit: u64, size_hint: u64) -> Self {
        let reserve = size_hint.min(limit).min(MAX_PREALLOCATION);
        LimitedBody {
            bytes: Vec::with_capacity(usize::try_from(reserve).unwrap_or(0)),
            seen: 0,
            limit,
            keep: true,
        }
    }

    /// Nothing read yet, of at most `limit` bytes, none of which will be kept.
    pub fn discarding(limit: u64) -> Self {
        LimitedBody {
            keep: false,
            ..LimitedBody::new(limit, 0)
        }
    }

    /// Append `chunk`, or [`BodyError::TooLarge`] (keeping nothing of it) if the body would then
    /// hold more than the limit.
    pub fn push(&mut self, chunk: &[u8]) -> Result<(), BodyError> {
        self.count(chunk.len())?;
        if self.keep {
            self.bytes.extend_from_slice(chunk);
        }
        Ok(())
    }

    /// [`LimitedBody::push`] for a chunk of `len` bytes that `fill` copies into place, for a
    /// runtime whose chunks live outside the WebAssembly memory (one copy instead of two).
    /// `fill` is given exactly `len` bytes, and is not called when nothing is kept.
    pub fn push_with(&mut self, len: usize, fill: impl FnOnce(&mut [u8])) -> Result<(), BodyError> {
        self.count(len)?;
        if self.keep {
            let start = self.bytes.len();
            self.bytes.resize(start + len, 0);
            fill(&mut self.bytes[start..]);
        }
        Ok(())
    }

    fn count(&mut self, len: usize) -> Result<(), BodyError> {
        let total = self.seen.saturating_add(len as u64);
        if total > self.limit {
            return Err(BodyError::TooLarge);
        }
        self.seen = total;
        Ok(())
    }

    /// The bytes read (none when discarding).
    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }
}

/// What the body phase needs from the adapter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BodyPlan {
    /// Pass the body through as a stream.
    Stream,
    /// Read up to `limit` bytes and check them.
    Inspect { limit: u64 },
}

/// Checks that need only the head: declared size, content type, query schema.
pub(crate) fn check_head(route: &Route, parts: &Parts) -> Result<BodyPlan, Reject> {
    let rules = &route.request;
    let declared = declared_length(parts)?;
    if let (Some(limit), Some(len)) = (rules.max_body_bytes, declared) {
        if len > limit {
            return Err(too_large(limit));
        }
    }
    let has_body = match declared {
        Some(len) => len > 0,
        None => parts.headers.contains_key(header::TRANSFER_ENCODING),
    };
    if !rules.content_types.is_empty() && (has_body || rules.body_schema.is_some()) {
        // Exactly one Content-Type field line: with two, the origin may parse the body as the
        // one that was not checked. (Runtimes that join repeats into one comma-separated value
        // get the same 415, since a list is no media type the route lists.)
        let mut values = parts.headers.get_all(header::CONTENT_TYPE).iter();
        let essence = match (values.next(), values.next()) {
            (Some(v), None) => v.to_str().ok().map(media_type_essence),
            _ => None,
        };
        let accepted = essence
            .as_deref()
            .is_some_and(|e| rules.content_types.iter().any(|c| c == e));
        if !accepted {
            return Err(Reject::unsupported_media_type(
                rules.content_types.clone(),
                "The request's Content-Type is not accepted on this route.",
            ));
        }
    }
    if rules.body_schema.is_some() && !identity_coded(parts) {
        return Err(Reject::unsupported_encoding(
            "The request body has a Content-Encoding; this route checks bodies as sent.",
        ));
    }
    crate::query::check(rules, parts.uri.query().unwrap_or(""))?;
    Ok(match (rules.body_schema.is_some(), rules.max_body_bytes) {
        (true, limit) => BodyPlan::Inspect {
            limit: limit.unwrap_or(DEFAULT_SCHEMA_BODY_LIMIT),
        },
        (false, Some(limit)) => BodyPlan::Inspect { limit },
        (false, None) => BodyPlan::Stream,
    })
}

/// The refusal for a route whose schema did not compile when first used: the gateway cannot
/// check the request, so it does not forward it (503 `no-policy`).
pub(crate) fn broken_schema() -> Reject {
    Reject::new(
        NoPolicyReason::InvalidSchema,
        "The gateway's policy cannot be applied to this route.",
    )
}

/// Body limit for schema-checked routes that set no `max_body_bytes`.
pub const DEFAULT_SCHEMA_BODY_LIMIT: u64 = 1 << 20;

fn declared_length(parts: &Parts) -> Result<Option<u64>, Reject> {
    let mut values = parts.headers.get_all(header::CONTENT_LENGTH).iter();
    let Some(first) = values.next() else {
        return Ok(None);
    };
    let bad = || {
        Reject::new(
            BadRequestReason::ContentLength,
            "Content-Length is malformed.",
        )
    };
    let parse = |v: &http::HeaderValue| -> Option<u64> {
        let s = v.to_str().ok()?;
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        s.parse().ok()
    };
    let len = parse(first).ok_or_else(bad)?;
    // Differing duplicates are a request-smuggling signature: refuse rather than pick one.
    for other in values {
        if parse(other) != Some(len) {
            return Err(bad());
        }
    }
    Ok(Some(len))
}

/// Whether the body carries no content coding but `identity`. A route that validates the body
/// checks the bytes as sent; an origin that honours `Content-Encoding: gzip` would decode them
/// into a document the schema never saw. Every `Content-Encoding` line and every list element
/// counts, in any case; an empty element is no coding.
fn identity_coded(parts: &Parts) -> bool {
    parts
        .headers
        .get_all(header::CONTENT_ENCODING)
        .iter()
        .all(|v| match v.to_str() {
            Ok(text) => text
                .split(',')
                .map(str::trim)
                .all(|coding| coding.is_empty() || coding.eq_ignore_ascii_case("identity")),
            Err(_) => false,
        })
}

/// `Application/JSON; charset=utf-8` -> `application/json`.
fn media_type_essence(value: &str) -> String {
    value
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

fn too_large(limit: u64) -> Reject {
    Reject::payload_too_large(limit, format!("The request body exceeds {limit} bytes."))
}

/// Read an inspected body through the adapter, mapping its failures to rejections.
pub(crate) async fn read<B: RequestBody>(
    body: B,
    limit: u64,
    _route: &Route,
) -> Result<Vec<u8>, Reject> {
    body.read_to_limit(limit).await.map_err(|e| match e {
        BodyError::TooLarge => too_large(limit),
        BodyError::Aborted => Reject::new(
            BadRequestReason::BodyAborted,
            "The request body could not be read.",
        ),
    })
}

/// Checks on the bytes of an inspected body.
pub(crate) fn check_body(route: &Route, bytes: &[u8]) -> Result<(), Reject> {
    let Some(schema) = &route.request.body_schema else {
        return Ok(());
    };
    let schema = schema.get().map_err(|_| broken_schema())?;
    let value = json::parse_strict(bytes).map_err(|e| {
        Reject::invalid_body(
            InvalidBodyReason::NotJson,
            vec![FieldError {
                pointer: String::new(),
                detail: e.to_string(),
            }],
            "The request body is not valid JSON.",
        )
    })?;
    let errors = schema.errors(&value);
    if errors.is_empty() {
        Ok(())
    } else {
        Err(Reject::invalid_body(
            InvalidBodyReason::Schema,
            errors,
            "The request body does not match the route's schema.",
        ))
    }
}

#[cfg(test)]
mod tests;
