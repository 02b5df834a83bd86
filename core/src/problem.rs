//! Every response the gateway makes itself: RFC 9457 `application/problem+json`.
//!
//! [`Reject`] says what went wrong; [`Problem::from_reject`] is the one place that turns it into
//! a status, a problem type and a title. The match is exhaustive, so a new kind of rejection does
//! not compile until it has its own row here.

use std::borrow::Cow;

use http::{header, HeaderValue, Response, StatusCode};
use serde::Serialize;

/// Media type of every gateway-generated error body.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// Why the gateway refused to forward a request (or could not finish forwarding it).
#[derive(Debug, Clone)]
pub struct Reject {
    /// What went wrong, with the typed facts the response needs.
    pub kind: RejectKind,
    /// A short, stable, machine-readable reason for logs (`token_expired`, `schema`, …).
    pub reason: &'static str,
    /// Human text for the problem's `detail`. Never contains secrets, tokens or body values.
    pub detail: Cow<'static, str>,
}

impl PartialEq for Reject {
    /// Two rejections are the same when they have the same kind and reason; wording may change.
    fn eq(&self, other: &Self) -> bool {
        self.kind == other.kind && self.reason == other.reason
    }
}

/// The kinds of rejection, one problem type each.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(missing_docs)] // variant fields are named for what they hold
pub enum RejectKind {
    /// The request target is not a path the gateway will interpret (400).
    BadPath,
    /// The request is malformed in a way that is not about the path (400).
    BadRequest,
    /// No route has this path (404).
    NotFound,
    /// A route has this path but not this method (405); the methods that would match.
    MethodNotAllowed { allow: Vec<String> },
    /// Credentials missing or invalid (401); one `WWW-Authenticate` challenge per scheme.
    Unauthenticated { challenges: Vec<String> },
    /// Valid credentials that lack a required scope or claim (403).
    Forbidden,
    /// Body larger than the route allows (413).
    PayloadTooLarge { limit: u64 },
    /// Content type not listed for the route (415).
    UnsupportedMediaType { accepted: Vec<String> },
    /// Body is not JSON or does not satisfy the route's schema (422).
    InvalidBody { errors: Vec<FieldError> },
    /// Query string does not satisfy the route's query schema (422).
    InvalidQuery { errors: Vec<FieldError> },
    /// Over quota (429), with the headers that tell the client when to come back.
    QuotaExceeded {
        retry_after_s: u64,
        policy: String,
        state: String,
    },
    /// The counter store failed and the quota fails closed (503).
    StoreUnavailable,
    /// The gateway has no valid policy to decide with (503).
    NoPolicy,
    /// The gateway has no usable keys for the token's provider (503).
    KeysUnavailable,
    /// The origin could not be reached or broke the exchange (502).
    OriginUnreachable,
    /// The origin did not answer within its `timeout_ms` (504).
    OriginTimeout,
    /// Handling the request failed in a way that is a bug in the gateway (500).
    Internal,
}

/// One failing location in a body or query: a JSON pointer into the instance and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    /// JSON pointer (RFC 6901) of the failing value in the request, `""` for the root.
    pub pointer: String,
    /// What is wrong there. Never echoes the value itself.
    pub detail: String,
}

impl Reject {
    /// A rejection of `kind` with a fixed reason and detail.
    pub fn new(
        kind: RejectKind,
        reason: &'static str,
        detail: impl Into<Cow<'static, str>>,
    ) -> Self {
        Reject {
            kind,
            reason,
            detail: detail.into(),
        }
    }

    /// Status, problem slug and title for this rejection: the table of every gateway problem.
    pub fn describe(&self) -> (StatusCode, &'static str, &'static str) {
        use RejectKind::*;
        match &self.kind {
            BadPath => (StatusCode::BAD_REQUEST, "bad-path", "Request path rejected"),
            BadRequest => (StatusCode::BAD_REQUEST, "bad-request", "Malformed request"),
            NotFound => (StatusCode::NOT_FOUND, "not-found", "No route for this path"),
            MethodNotAllowed { .. } => (
                StatusCode::METHOD_NOT_ALLOWED,
                "method-not-allowed",
                "Method not allowed on this route",
            ),
            Unauthenticated { .. } => (
                StatusCode::UNAUTHORIZED,
                "unauthenticated",
                "Missing or invalid credentials",
            ),
            Forbidden => (
                StatusCode::FORBIDDEN,
                "forbidden",
                "Credentials lack a required scope or claim",
            ),
            PayloadTooLarge { .. } => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload-too-large",
                "Request body too large",
            ),
            UnsupportedMediaType { .. } => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported-media-type",
                "Content type not accepted on this route",
            ),
            InvalidBody { .. } => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid-body",
                "Request body failed validation",
            ),
            InvalidQuery { .. } => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid-query",
                "Query string failed validation",
            ),
            QuotaExceeded { .. } => (
                StatusCode::TOO_MANY_REQUESTS,
                "quota-exceeded",
                "Quota exceeded",
            ),
            StoreUnavailable => (
                StatusCode::SERVICE_UNAVAILABLE,
                "quota-store-unavailable",
                "Quota store unavailable",
            ),
            NoPolicy => (
                StatusCode::SERVICE_UNAVAILABLE,
                "no-policy",
                "Gateway has no valid policy",
            ),
            KeysUnavailable => (
                StatusCode::SERVICE_UNAVAILABLE,
                "keys-unavailable",
                "Signing keys unavailable",
            ),
            OriginUnreachable => (
                StatusCode::BAD_GATEWAY,
                "origin-unreachable",
                "Origin unreachable",
            ),
            OriginTimeout => (
                StatusCode::GATEWAY_TIMEOUT,
                "origin-timeout",
                "Origin timed out",
            ),
            Internal => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "Internal gateway error",
            ),
        }
    }

    /// The problem slug (`unauthenticated`, …), also the log's decision reason family.
    pub fn slug(&self) -> &'static str {
        self.describe().1
    }

    /// The HTTP status this rejection is answered with.
    pub fn status(&self) -> StatusCode {
        self.describe().0
    }

    /// The complete `application/problem+json` response, headers included.
    pub fn to_response(&self, request_id: &str) -> Response<String> {
        let (status, slug, title) = self.describe();
        let errors = match &self.kind {
            RejectKind::InvalidBody { errors } | RejectKind::InvalidQuery { errors } => {
                Some(errors.as_slice())
            }
            _ => None,
        };
        let body = ProblemBody {
            kind: format!("{PROBLEM_TYPE_BASE}{slug}"),
            title,
            status: status.as_u16(),
            detail: &self.detail,
            request_id,
            errors,
        };
        // Serialising plain strings and numbers cannot fail; the fallback keeps that promise honest.
        let text = serde_json::to_string(&body).unwrap_or_else(|_| String::from("{}"));
        let mut response = Response::new(text);
        *response.status_mut() = status;
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if let Ok(v) = HeaderValue::from_str(request_id) {
            headers.insert(crate::forward::REQUEST_ID_HEADER, v);
        }
        match &self.kind {
            RejectKind::MethodNotAllowed { allow } => {
                if let Ok(v) = HeaderValue::from_str(&allow.join(", ")) {
                    headers.insert(header::ALLOW, v);
                }
            }
            RejectKind::Unauthenticated { challenges } => {
                for c in challenges {
                    if let Ok(v) = HeaderValue::from_str(c) {
                        headers.append(header::WWW_AUTHENTICATE, v);
                    }
                }
            }
            RejectKind::UnsupportedMediaType { accepted } => {
                if let Ok(v) = HeaderValue::from_str(&accepted.join(", ")) {
                    headers.insert("accept-post", v);
                }
            }
            RejectKind::QuotaExceeded {
                retry_after_s,
                policy,
                state,
            } => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(*retry_after_s));
                if let Ok(v) = HeaderValue::from_str(policy) {
                    headers.insert("ratelimit-policy", v);
                }
                if let Ok(v) = HeaderValue::from_str(state) {
                    headers.insert("ratelimit", v);
                }
            }
            _ => {}
        }
        response
    }
}

/// Problem `type` URIs are `urn:portcullis:problem:<slug>`: stable names that need no web page to exist.
pub const PROBLEM_TYPE_BASE: &str = "urn:portcullis:problem:";

#[derive(Serialize)]
struct ProblemBody<'a> {
    #[serde(rename = "type")]
    kind: String,
    title: &'static str,
    status: u16,
    detail: &'a str,
    request_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    errors: Option<&'a [FieldError]>,
}
