//! Every response the gateway makes itself: RFC 9457 `application/problem+json`.
//!
//! The [`reasons!`] table below is the one place that says, for every reason the gateway refuses
//! a request, its log slug, its problem type, its status and what it means to a user. The README's
//! table of reasons is rendered from it (a unit test fails when the two differ), so the docs
//! cannot drift from the code.
//!
//! [`Reject`] says what went wrong. It is built only by its constructors, each of which takes a
//! reason of one problem type (a [`PlainReason`] for [`Reject::new`], or the data that problem
//! type's headers need), so a reason cannot be sent with another type's status.

use std::borrow::Cow;

use http::{header, HeaderValue, Response, StatusCode};
use serde::Serialize;

use crate::ratelimit::RateLimit;

/// Media type of every gateway-generated error body.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// Problem `type` URIs are `urn:portcullis:problem:<slug>`: stable names that need no web page to exist.
pub const PROBLEM_TYPE_BASE: &str = "urn:portcullis:problem:";

/// Defines [`ProblemType`], [`Reason`], one reason enum per problem type, and their tables.
///
/// Each problem type is `Name "slug" STATUS "title", SubEnum plain|data { reasons }`. `plain`
/// types carry no facts beyond the reason, so their reasons implement [`PlainReason`] and are
/// built with [`Reject::new`]; `data` types have a constructor of their own on [`Reject`].
macro_rules! reasons {
    ($(
        $problem:ident $pslug:literal $status:ident $title:literal, $sub:ident $shape:ident {
            $( $reason:ident $rslug:literal $meaning:literal, )+
        }
    )+) => {
        /// The kinds of problem the gateway answers with, one `type` URI each.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum ProblemType {
            $(
                #[doc = concat!("`", $pslug, "`: ", $title, ".")]
                $problem,
            )+
        }

        impl ProblemType {
            /// Every problem type, in table order.
            pub const ALL: &'static [ProblemType] = &[$(ProblemType::$problem),+];

            /// The slug in `urn:portcullis:problem:<slug>`, also the log reason's first half.
            pub const fn slug(self) -> &'static str {
                match self { $(ProblemType::$problem => $pslug,)+ }
            }

            /// The status every rejection of this type is answered with.
            pub const fn status(self) -> StatusCode {
                match self { $(ProblemType::$problem => StatusCode::$status,)+ }
            }

            /// The problem's `title`: the same for every occurrence of the type (RFC 9457 §3.1.4).
            pub const fn title(self) -> &'static str {
                match self { $(ProblemType::$problem => $title,)+ }
            }
        }

        /// Every reason the gateway refuses a request, one per distinct cause it logs.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Reason {
            $($(
                #[doc = concat!("`", $rslug, "`: ", $meaning)]
                $reason,
            )+)+
        }

        impl Reason {
            /// Every reason, in table order.
            pub const ALL: &'static [Reason] = &[$($(Reason::$reason,)+)+];

            /// The log slug (`token_expired`, …). Log pipelines match on it: never rename one.
            pub const fn slug(self) -> &'static str {
                match self { $($(Reason::$reason => $rslug,)+)+ }
            }

            /// The problem type this reason is always answered with.
            pub const fn problem_type(self) -> ProblemType {
                match self { $($(Reason::$reason => ProblemType::$problem,)+)+ }
            }

            /// One sentence for users: what the caller did (or what the gateway lacks).
            pub const fn meaning(self) -> &'static str {
                match self { $($(Reason::$reason => $meaning,)+)+ }
            }
        }

        $(
            #[doc = concat!("The reasons answered with `", $pslug, "`.")]
            #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
            pub enum $sub {
                $(
                    #[doc = concat!("`", $rslug, "`: ", $meaning)]
                    $reason,
                )+
            }

            impl From<$sub> for Reason {
                fn from(r: $sub) -> Reason {
                    match r { $($sub::$reason => Reason::$reason,)+ }
                }
            }

            reasons!(@shape $shape $sub $problem);
        )+
    };
    (@shape plain $sub:ident $problem:ident) => {
        impl PlainReason for $sub {
            const KIND: RejectKind = RejectKind::$problem;
        }
    };
    (@shape data $sub:ident $problem:ident) => {};
}

/// A reason whose problem type carries no facts besides the reason, so [`Reject::new`] can
/// build it from the reason alone. Implemented only by the [`reasons!`] table.
pub trait PlainReason: Into<Reason> {
    /// The rejection kind every reason of this type has.
    const KIND: RejectKind;
}

reasons! {
    BadPath "bad-path" BAD_REQUEST "Request path rejected", BadPathReason plain {
        PathTooLong "path_too_long" "The request path is longer than the gateway accepts.",
        NotAbsolute "not_absolute" "The request path does not start with `/`.",
        BadEscape "bad_escape" "The request path has a `%` not followed by two hex digits.",
        EncodedSlash "encoded_slash" "The request path has an encoded `/` (`%2F`), which origins disagree on.",
        EncodedBackslash "encoded_backslash" "The request path has an encoded `\\` (`%5C`), which origins disagree on.",
        ControlChar "control_char" "The request path has a control character, raw or percent-encoded.",
        Backslash "backslash" "The request path has a `\\`, which some origins read as `/`.",
        BadChar "bad_char" "The request path has a character that must be percent-encoded.",
        EmptySegment "empty_segment" "The request path has an empty segment (`//` or a trailing `/`).",
        DotSegment "dot_segment" "The request path has a `.` or `..` segment.",
    }
    BadRequest "bad-request" BAD_REQUEST "Malformed request", BadRequestReason plain {
        ContentLength "content_length" "The `Content-Length` header is not a decimal number, or copies of it disagree.",
        BodyAborted "body_aborted" "The client stopped sending the body before it was complete.",
        QueryEncoding "query_encoding" "The query string is not valid percent-encoded UTF-8.",
        QueryRepeated "query_repeated" "The query string repeats a parameter that the route's `query_schema` does not declare a list (`\"type\": \"array\"`), so the origin could read another value than the one checked.",
        MethodOverride "method_override" "The request carries a method-override header (`X-HTTP-Method-Override`, `X-HTTP-Method`, `X-Method-Override`), which would make the origin run a method the route never admitted.",
        UrlOverride "url_override" "The request carries a URL-rewrite header (`X-Original-URL`, `X-Original-URI`, `X-Rewrite-URL`), which would make the origin serve another path than the one matched.",
        HeaderRepeated "header_repeated" "A header the gateway reads once (`Host`, `Content-Type`, `Content-Length`, `Authorization`, an API-key header) is repeated or holds a list, so the origin could read another value than the one checked.",
        ConnectionOption "connection_option" "`Connection` names a header the gateway reads once, which would then not reach the origin as checked.",
        TransferEncoding "transfer_encoding" "`Transfer-Encoding` is anything but one `chunked`, or comes with a `Content-Length`: a request-smuggling shape.",
        Malformed "bad_request" "The runtime could not turn the request into HTTP the gateway can read.",
    }
    NotFound "not-found" NOT_FOUND "No route for this path", NotFoundReason plain {
        NoRoute "no_route" "No route in the policy matches the request path.",
    }
    MethodNotAllowed "method-not-allowed" METHOD_NOT_ALLOWED "Method not allowed on this route", MethodNotAllowedReason data {
        Method "method" "A route matches the path but not the method; `Allow` lists the methods that would.",
    }
    Unauthenticated "unauthenticated" UNAUTHORIZED "Missing or invalid credentials", UnauthenticatedReason data {
        MissingCredentials "missing_credentials" "The route requires credentials and the request carries none it accepts.",
        AuthorizationMalformed "authorization_malformed" "The `Authorization` header is not a single `Bearer <token>` (it is repeated, or holds a second credential).",
        TokenMalformed "token_malformed" "The bearer token is not a well-formed JWT (its header repeats a key, for one).",
        TokenAlg "token_alg" "The token's `alg` is `none`, unknown, or not accepted by the provider.",
        TokenKid "token_kid" "The token's `kid` names no key of the provider.",
        TokenNoKey "token_no_key" "The provider has no key that can verify the token's `alg`.",
        TokenSignature "token_signature" "The token's signature does not verify.",
        TokenClaims "token_claims" "The token's claims are not a JSON object of the expected shape (or repeat a key).",
        TokenNoExp "token_no_exp" "The token has no `exp` claim.",
        TokenExpired "token_expired" "The token's `exp` has passed (beyond the provider's leeway).",
        TokenNbf "token_nbf" "The token's `nbf` is in the future (beyond the provider's leeway).",
        TokenIssuer "token_issuer" "The token's `iss` is not the provider's issuer.",
        TokenAudience "token_audience" "The token's `aud` names none of the provider's audiences.",
        TokenNoSub "token_no_sub" "The token has no string claim naming the consumer (the provider's consumer claim, `sub` by default).",
        ApiKeyRepeated "api_key_repeated" "The API key header was sent more than once.",
        ApiKeyInvalid "api_key_invalid" "The API key is not one the provider knows.",
    }
    Forbidden "forbidden" FORBIDDEN "Credentials lack a required scope or claim", ForbiddenReason plain {
        NoPrincipal "no_principal" "The route requires an authenticated caller and none was established.",
        Scope "scope" "The credentials lack a scope the route requires.",
        Claim "claim" "The credentials lack a claim the route requires, or carry another value.",
    }
    IpRefused "ip-refused" FORBIDDEN "Client address not admitted", IpRefusedReason plain {
        IpDenied "ip_denied" "The client address is in a network that an `ip.deny` list of the policy or the route names.",
        IpNotAllowed "ip_not_allowed" "The policy or the route has an `ip.allow` list, and the client address is in none of its networks.",
        IpUnknown "ip_unknown" "An `ip` rule applies and the runtime reported no client address, so none can be admitted.",
    }
    PayloadTooLarge "payload-too-large" PAYLOAD_TOO_LARGE "Request body too large", PayloadTooLargeReason data {
        BodySize "body_size" "The body is larger than the route's `max_body_bytes`.",
    }
    UnsupportedMediaType "unsupported-media-type" UNSUPPORTED_MEDIA_TYPE "Content type not accepted on this route", UnsupportedMediaTypeReason data {
        ContentType "content_type" "The `Content-Type` is not one the route lists (or is repeated); `Accept-Post` lists those it does.",
        ContentEncoding "content_encoding" "The body has a `Content-Encoding` other than `identity` on a route that validates the body: the origin would decode it into something the schema never saw.",
    }
    InvalidBody "invalid-body" UNPROCESSABLE_ENTITY "Request body failed validation", InvalidBodyReason data {
        NotJson "not_json" "The body is not strict JSON (syntax errors, duplicate keys).",
        Schema "schema" "The body is JSON but does not satisfy the route's schema; `errors` says where.",
    }
    InvalidQuery "invalid-query" UNPROCESSABLE_ENTITY "Query string failed validation", InvalidQueryReason data {
        QuerySchema "query_schema" "The query string does not satisfy the route's query schema; `errors` says where.",
    }
    QuotaExceeded "quota-exceeded" TOO_MANY_REQUESTS "Quota exceeded", QuotaExceededReason data {
        Quota "quota" "A quota on the route is used up; `Retry-After` says when to come back.",
    }
    LockedOut "locked-out" TOO_MANY_REQUESTS "Too many failed authentications", LockedOutReason data {
        Lockout "lockout" "The client address had `failures` requests refused with 401 under the route's `lockout`, and is blocked for `block_s` without anything being verified; `Retry-After` says when the block ends.",
    }
    StoreUnavailable "quota-store-unavailable" SERVICE_UNAVAILABLE "Quota store unavailable", StoreUnavailableReason plain {
        StoreError "store_error" "The quota store failed and the quota is set to refuse rather than admit uncounted.",
    }
    NoPolicy "no-policy" SERVICE_UNAVAILABLE "Gateway has no valid policy", NoPolicyReason plain {
        NoValidPolicy "no_policy" "The gateway has not loaded a valid policy, so it decides nothing.",
        InvalidSchema "invalid_schema" "The route's schema, compiled on first use, turned out broken.",
    }
    KeysUnavailable "keys-unavailable" SERVICE_UNAVAILABLE "Signing keys unavailable", KeysUnavailableReason plain {
        NoKeys "keys_unavailable" "The identity provider's signing keys could not be fetched, so the token cannot be judged.",
    }
    OriginUnreachable "origin-unreachable" BAD_GATEWAY "Origin unreachable", OriginUnreachableReason plain {
        Unreachable "origin_unreachable" "The origin could not be reached, or broke the exchange.",
    }
    OriginTimeout "origin-timeout" GATEWAY_TIMEOUT "Origin timed out", OriginTimeoutReason plain {
        TimedOut "origin_timeout" "The origin did not send its response headers within its `timeout_ms`.",
    }
    CorsRefused "cors-refused" FORBIDDEN "CORS preflight refused", CorsRefusedReason plain {
        CorsOrigin "cors_origin" "A CORS preflight came from an origin the route's `cors` does not allow (or its `Origin` is repeated or malformed).",
        CorsMethod "cors_method" "A CORS preflight asked for a method the route's `cors` does not allow (or its `Access-Control-Request-Method` is repeated or malformed).",
        CorsHeader "cors_header" "A CORS preflight asked for a request header the route's `cors` does not allow.",
    }
    Internal "internal" INTERNAL_SERVER_ERROR "Internal gateway error", InternalReason plain {
        InternalError "internal_error" "Handling the request failed in a way that is a bug in the gateway; the log line says where.",
    }
}

/// Why the gateway refused to forward a request (or could not finish forwarding it).
///
/// Built only by its constructors, so its reason and kind always belong to one problem type.
#[derive(Debug, Clone)]
pub struct Reject {
    kind: RejectKind,
    reason: Reason,
    detail: Cow<'static, str>,
}

impl PartialEq for Reject {
    /// Two rejections are the same when they have the same kind and reason; wording may change.
    fn eq(&self, other: &Self) -> bool {
        self.kind == other.kind && self.reason == other.reason
    }
}

/// The facts a rejection's response needs besides its reason: one variant per [`ProblemType`].
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
    /// The client address is refused by an IP rule (403).
    IpRefused,
    /// Body larger than the route allows (413).
    PayloadTooLarge { limit: u64 },
    /// Content type not listed for the route (415).
    UnsupportedMediaType { accepted: Vec<String> },
    /// Body is not JSON or does not satisfy the route's schema (422).
    InvalidBody { errors: Vec<FieldError> },
    /// Query string does not satisfy the route's query schema (422).
    InvalidQuery { errors: Vec<FieldError> },
    /// Over quota (429): when to come back, and the quota that refused.
    QuotaExceeded {
        retry_after_s: u64,
        rate_limit: RateLimit,
    },
    /// The client address is blocked after failed authentications (429): when it ends.
    LockedOut { retry_after_s: u64 },
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
    /// A CORS preflight the route's policy does not allow (403).
    CorsRefused,
    /// Handling the request failed in a way that is a bug in the gateway (500).
    Internal,
}

impl RejectKind {
    /// The problem type this kind's facts belong to.
    pub fn problem_type(&self) -> ProblemType {
        use RejectKind::*;
        match self {
            BadPath => ProblemType::BadPath,
            BadRequest => ProblemType::BadRequest,
            NotFound => ProblemType::NotFound,
            MethodNotAllowed { .. } => ProblemType::MethodNotAllowed,
            Unauthenticated { .. } => ProblemType::Unauthenticated,
            Forbidden => ProblemType::Forbidden,
            IpRefused => ProblemType::IpRefused,
            PayloadTooLarge { .. } => ProblemType::PayloadTooLarge,
            UnsupportedMediaType { .. } => ProblemType::UnsupportedMediaType,
            InvalidBody { .. } => ProblemType::InvalidBody,
            InvalidQuery { .. } => ProblemType::InvalidQuery,
            QuotaExceeded { .. } => ProblemType::QuotaExceeded,
            LockedOut { .. } => ProblemType::LockedOut,
            StoreUnavailable => ProblemType::StoreUnavailable,
            NoPolicy => ProblemType::NoPolicy,
            KeysUnavailable => ProblemType::KeysUnavailable,
            OriginUnreachable => ProblemType::OriginUnreachable,
            OriginTimeout => ProblemType::OriginTimeout,
            CorsRefused => ProblemType::CorsRefused,
            Internal => ProblemType::Internal,
        }
    }
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
    /// A rejection for a reason whose problem type needs no other facts.
    pub fn new<R: PlainReason>(reason: R, detail: impl Into<Cow<'static, str>>) -> Self {
        Self::of(R::KIND, reason.into(), detail)
    }

    /// 405: the path exists, but only for the methods in `allow`.
    pub fn method_not_allowed(allow: Vec<String>, detail: impl Into<Cow<'static, str>>) -> Self {
        Self::of(
            RejectKind::MethodNotAllowed { allow },
            MethodNotAllowedReason::Method.into(),
            detail,
        )
    }

    /// 401, with one `WWW-Authenticate` challenge per scheme the route accepts.
    pub fn unauthenticated(
        reason: UnauthenticatedReason,
        challenges: Vec<String>,
        detail: impl Into<Cow<'static, str>>,
    ) -> Self {
        Self::of(
            RejectKind::Unauthenticated { challenges },
            reason.into(),
            detail,
        )
    }

    /// 413: the body is (or would be) larger than `limit` bytes.
    pub fn payload_too_large(limit: u64, detail: impl Into<Cow<'static, str>>) -> Self {
        Self::of(
            RejectKind::PayloadTooLarge { limit },
            PayloadTooLargeReason::BodySize.into(),
            detail,
        )
    }

    /// 415: the content type is not one of `accepted`.
    pub fn unsupported_media_type(
        accepted: Vec<String>,
        detail: impl Into<Cow<'static, str>>,
    ) -> Self {
        Self::of(
            RejectKind::UnsupportedMediaType { accepted },
            UnsupportedMediaTypeReason::ContentType.into(),
            detail,
        )
    }

    /// 415: the body has a content coding the route cannot check; only `identity` is accepted.
    pub fn unsupported_encoding(detail: impl Into<Cow<'static, str>>) -> Self {
        Self::of(
            RejectKind::UnsupportedMediaType {
                accepted: Vec::new(),
            },
            UnsupportedMediaTypeReason::ContentEncoding.into(),
            detail,
        )
    }

    /// 422 for the body, with where it failed.
    pub fn invalid_body(
        reason: InvalidBodyReason,
        errors: Vec<FieldError>,
        detail: impl Into<Cow<'static, str>>,
    ) -> Self {
        Self::of(RejectKind::InvalidBody { errors }, reason.into(), detail)
    }

    /// 422 for the query string, with where it failed.
    pub fn invalid_query(errors: Vec<FieldError>, detail: impl Into<Cow<'static, str>>) -> Self {
        Self::of(
            RejectKind::InvalidQuery { errors },
            InvalidQueryReason::QuerySchema.into(),
            detail,
        )
    }

    /// 429: the client address is locked out for `retry_after_s` more seconds.
    pub fn locked_out(retry_after_s: u64, detail: impl Into<Cow<'static, str>>) -> Self {
        Self::of(
            RejectKind::LockedOut { retry_after_s },
            LockedOutReason::Lockout.into(),
            detail,
        )
    }

    /// 429: `rate_limit` refused; the client may retry after `retry_after_s` seconds.
    pub fn quota_exceeded(
        retry_after_s: u64,
        rate_limit: RateLimit,
        detail: impl Into<Cow<'static, str>>,
    ) -> Self {
        Self::of(
            RejectKind::QuotaExceeded {
                retry_after_s,
                rate_limit,
            },
            QuotaExceededReason::Quota.into(),
            detail,
        )
    }

    /// The quota that refused, for a 429.
    pub fn quota(&self) -> Option<&str> {
        match &self.kind {
            RejectKind::QuotaExceeded { rate_limit, .. } => Some(&rate_limit.name),
            _ => None,
        }
    }

    fn of(kind: RejectKind, reason: Reason, detail: impl Into<Cow<'static, str>>) -> Self {
        debug_assert_eq!(kind.problem_type(), reason.problem_type());
        Reject {
            kind,
            reason,
            detail: detail.into(),
        }
    }

    /// The facts the response carries besides the reason.
    pub fn kind(&self) -> &RejectKind {
        &self.kind
    }

    /// Why, as logged.
    pub fn reason(&self) -> Reason {
        self.reason
    }

    /// Human text for the problem's `detail`. Never contains secrets, tokens or body values.
    pub fn detail(&self) -> &str {
        &self.detail
    }

    /// This rejection's problem type (from its reason, via the table).
    pub fn problem_type(&self) -> ProblemType {
        self.reason.problem_type()
    }

    /// Status, problem slug and title for this rejection.
    pub fn describe(&self) -> (StatusCode, &'static str, &'static str) {
        let t = self.problem_type();
        (t.status(), t.slug(), t.title())
    }

    /// The problem slug (`unauthenticated`, …), also the log's decision reason family.
    pub fn slug(&self) -> &'static str {
        self.problem_type().slug()
    }

    /// The HTTP status this rejection is answered with.
    pub fn status(&self) -> StatusCode {
        self.problem_type().status()
    }

    /// The log line's `reason`: `<problem-slug>:<reason-slug>`, e.g. `unauthenticated:token_expired`.
    pub fn log_reason(&self) -> String {
        format!("{}:{}", self.slug(), self.reason.slug())
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
            headers.insert(crate::request_id::REQUEST_ID_HEADER, v);
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
                if self.reason == Reason::ContentEncoding {
                    // RFC 7694 §3: the codings the server would accept.
                    headers.insert(
                        header::ACCEPT_ENCODING,
                        HeaderValue::from_static("identity"),
                    );
                } else if let Ok(v) = HeaderValue::from_str(&accepted.join(", ")) {
                    headers.insert("accept-post", v);
                }
            }
            RejectKind::LockedOut { retry_after_s } => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(*retry_after_s));
            }
            RejectKind::QuotaExceeded {
                retry_after_s,
                rate_limit,
            } => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(*retry_after_s));
                if let Ok(v) = HeaderValue::from_str(&rate_limit.policy().to_string()) {
                    headers.insert("ratelimit-policy", v);
                }
                if let Ok(v) = HeaderValue::from_str(&rate_limit.state().to_string()) {
                    headers.insert("ratelimit", v);
                }
            }
            _ => {}
        }
        response
    }
}

/// The README's table of reasons, as markdown: one row per [`Reason`], in table order.
pub fn reasons_markdown() -> String {
    let mut out =
        String::from("| reason | problem type | status | meaning |\n| --- | --- | --- | --- |\n");
    for r in Reason::ALL {
        let t = r.problem_type();
        out.push_str(&format!(
            "| `{}` | `{PROBLEM_TYPE_BASE}{}` | {} | {} |\n",
            r.slug(),
            t.slug(),
            t.status().as_u16(),
            r.meaning().replace('|', "\\|"),
        ));
    }
    out
}

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

#[cfg(test)]
mod tests;
