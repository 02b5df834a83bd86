//! Which client headers reach the origin, and which requests are refused for their headers.
//!
//! An origin reads more from a request than its method and path: frameworks honour headers that
//! override the method or the path, trust headers that claim to come from a proxy, and read
//! whichever copy of a repeated header they meet first. Each of those is a way to make the
//! origin act on something other than what the policy admitted. [`CLASSES`] is the one table of
//! them: for each class, the headers it covers, what the gateway does about it ([`Treatment`]),
//! and why. [`screen`] refuses a request the table refuses and [`forwarded`] decides, header by
//! header, what the origin gets; both read the table, and `docs/security.md` is rendered from it
//! ([`classes_markdown`]), so the rule, the code and the docs are the same thing.
//!
//! Names are compared as origins compare them: case-insensitively, and with `_` read as `-`,
//! because CGI, WSGI, Rack and PHP origins turn `X_HTTP_Method_Override` and
//! `X-HTTP-Method-Override` into the same variable. A header counts when it is present at all:
//! an empty value is still a method override, and an empty second line is still a second line.
//!
//! On top of the table, a policy may name the only client headers the origin receives
//! ([`AllowList`], `"forward_headers": {"allow": [...]}`). The table still applies to what an
//! allow list lets through: allow-listing a header the table removes or refuses changes nothing,
//! and `check` warns about it ([`AllowList::warnings`]).

use std::borrow::Cow;

use http::{header, HeaderMap, HeaderName};

use crate::config::Policy;
use crate::forward::RESERVED_PREFIX;
use crate::problem::{BadRequestReason, Reject};

/// What the gateway does with a class of headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Treatment {
    /// Never forwarded.
    Removed,
    /// Never forwarded as the client sent it: the gateway sends its own value instead.
    Replaced,
    /// The request is refused (400) when it carries one at all, whatever its value.
    Refused(BadRequestReason),
    /// The request is refused (400) when one of these occurs more than once or holds a list.
    Once(BadRequestReason),
    /// The request is refused (400) when `Connection` names one of these.
    NotNominated(BadRequestReason),
    /// The request is refused (400) unless this is a single `chunked` without `Content-Length`.
    OnlyChunked(BadRequestReason),
}

impl Treatment {
    /// Whether headers of this class never reach the origin as the client sent them.
    fn removes(self) -> bool {
        matches!(self, Treatment::Removed | Treatment::Replaced)
    }

    /// The treatment as the docs' table shows it.
    fn describe(self) -> String {
        let reason = |r: BadRequestReason| {
            let r: crate::problem::Reason = r.into();
            format!("400 `{}`", r.slug())
        };
        match self {
            Treatment::Removed => "removed".to_owned(),
            Treatment::Replaced => "replaced by the gateway's".to_owned(),
            Treatment::Refused(r) => format!("refused: {}", reason(r)),
            Treatment::Once(r) => format!("refused when repeated or a list: {}", reason(r)),
            Treatment::NotNominated(r) => format!("refused when named: {}", reason(r)),
            Treatment::OnlyChunked(r) => format!("refused unless one `chunked`: {}", reason(r)),
        }
    }
}

/// The headers a class covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Name {
    /// This name (lower case, with `-`).
    Exact(&'static str),
    /// Every name that starts with this (lower case, with `-`).
    Prefix(&'static str),
    /// Every API-key provider's `header`.
    ApiKeys,
    /// Every header the request's `Connection` names.
    NamedByConnection,
}

/// One class of headers: its name, what it covers, what is done about it, and why.
#[derive(Debug, Clone, Copy)]
pub struct HeaderClass {
    /// The class, as the docs name it.
    pub class: &'static str,
    /// The headers it covers.
    pub names: &'static [Name],
    /// What the gateway does about them.
    pub treatment: Treatment,
    /// Why: what an origin would do with them otherwise.
    pub why: &'static str,
}

use BadRequestReason as Bad;
use Name::{ApiKeys, Exact, NamedByConnection, Prefix};

/// The headers a client sends that the gateway reads itself and that the origin must see exactly
/// as checked, or not at all.
const READ_ONCE: &[Name] = &[
    Exact("host"),
    Exact("content-type"),
    Exact("content-length"),
    Exact("authorization"),
    ApiKeys,
];

/// Headers that claim to come from the gateway.
const GATEWAY_IDENTITY: &[Name] = &[Prefix(RESERVED_PREFIX)];

/// Headers about one connection, not the message (RFC 9110 §7.6.1), plus the upgrade and proxy
/// headers that act like them. Dropped from responses too.
const HOP_BY_HOP: &[Name] = &[
    Exact("connection"),
    Exact("keep-alive"),
    Exact("te"),
    Exact("trailer"),
    Exact("transfer-encoding"),
    Exact("upgrade"),
    Exact("http2-settings"),
    Exact("proxy"),
    Prefix("proxy-"),
    Exact("expect"),
];

/// Every class of client header that can change how an origin reads the method, path, host,
/// client identity or body, in the order [`screen`] checks them.
pub const CLASSES: &[HeaderClass] = &[
    HeaderClass {
        class: "Method override",
        names: &[
            Exact("x-http-method-override"),
            Exact("x-http-method"),
            Exact("x-method-override"),
        ],
        treatment: Treatment::Refused(Bad::MethodOverride),
        why: "Frameworks that honour them run the named method instead of the request's, one \
              the route's `methods` never admitted. Removing the header would silently run a \
              method the client did not mean, so the request is refused.",
    },
    HeaderClass {
        class: "URL rewrite",
        names: &[
            Exact("x-original-url"),
            Exact("x-original-uri"),
            Exact("x-rewrite-url"),
        ],
        treatment: Treatment::Refused(Bad::UrlOverride),
        why: "IIS, Symfony and others serve the path they name instead of the request's, which \
              is not the path the gateway matched and authorised.",
    },
    HeaderClass {
        class: "Read once",
        names: READ_ONCE,
        treatment: Treatment::Once(Bad::HeaderRepeated),
        why: "The gateway routes, checks or authenticates one value. A second field line, or a \
              list in one (a comma outside a quoted string; in `Authorization`, a second \
              credential such as `Bearer a, Basic b`), is a value the origin may read instead; \
              an empty line counts. Checked after the route's own rules, so routes that read the \
              credential answer 401 (`authorization_malformed`, `api_key_repeated`), routes that \
              list content types 415, and differing `Content-Length`s are 400 `content_length`.",
    },
    HeaderClass {
        class: "Read once, named in `Connection`",
        names: READ_ONCE,
        treatment: Treatment::NotNominated(Bad::ConnectionOption),
        why: "A header `Connection` names is not forwarded, so the origin would get the request \
              without what the gateway checked: a body checked as JSON without its \
              `Content-Type`, a verified token dropped.",
    },
    HeaderClass {
        class: "Transfer-Encoding",
        names: &[Exact("transfer-encoding")],
        treatment: Treatment::OnlyChunked(Bad::TransferEncoding),
        why: "The gateway and the origin must agree where the body ends. One `chunked` is read \
              alike by every hop; any other coding (bytes the gateway cannot read), a list, a \
              repeat, or a `Content-Length` beside it is a request-smuggling shape \
              (RFC 9112 §6.1). The gateway sends its own framing.",
    },
    HeaderClass {
        class: "Gateway identity",
        names: GATEWAY_IDENTITY,
        treatment: Treatment::Replaced,
        why: "They claim to come from the gateway: origins trust `x-portcullis-consumer` and \
              `x-portcullis-route` as its word. Every client copy is removed, and the gateway \
              sends its own request id, route and consumer.",
    },
    HeaderClass {
        class: "Set by the gateway",
        names: &[
            Exact("host"),
            Exact("x-forwarded-host"),
            Exact("x-forwarded-for"),
        ],
        treatment: Treatment::Replaced,
        why: "The origin gets its own `Host`, and the client's as `X-Forwarded-Host`. \
              `X-Forwarded-For` is the client's address followed by the trusted proxies \
              (`client_ip`) it came through, the peer last: only addresses the gateway or a \
              proxy it trusts vouched for. Whatever the client wrote left of its own address is \
              dropped; without `client_ip` it is the peer address alone, and when the runtime \
              reports no address it is not sent at all.",
    },
    HeaderClass {
        class: "Forwarding claims",
        names: &[
            Exact("forwarded"),
            Prefix("x-forwarded-"),
            Exact("x-real-ip"),
            Exact("x-client-ip"),
            Exact("client-ip"),
            Exact("true-client-ip"),
            Exact("x-cluster-client-ip"),
            Exact("cf-connecting-ip"),
            Exact("fastly-client-ip"),
            Exact("x-originating-ip"),
            Exact("x-remote-ip"),
            Exact("x-remote-addr"),
            Exact("x-host"),
        ],
        treatment: Treatment::Removed,
        why: "They tell the origin the client's address, scheme, host, port or path prefix, \
              which only a proxy in front of the gateway could vouch for, and the gateway trusts \
              none: the client wrote them. (`X-Forwarded-For` and `X-Forwarded-Host` are the \
              gateway's own, as above.)",
    },
    HeaderClass {
        class: "Hop-by-hop and upgrade",
        names: HOP_BY_HOP,
        treatment: Treatment::Removed,
        why: "They are about the client's connection to the gateway, which makes its own to the \
              origin (RFC 9110 §7.6.1). Relayed, `Upgrade` and `HTTP2-Settings` could switch the \
              origin connection to WebSocket or h2c, a tunnel whose later requests no policy \
              sees; `Proxy` becomes `HTTP_PROXY` in CGI origins (httpoxy); `Proxy-Authorization` \
              is a credential for a proxy; the gateway answers `Expect: 100-continue` itself.",
    },
    HeaderClass {
        class: "Named in `Connection`",
        names: &[NamedByConnection],
        treatment: Treatment::Removed,
        why: "Hop-by-hop because the client says so (RFC 9110 §7.6.1).",
    },
    HeaderClass {
        class: "Credentials for the gateway",
        names: &[ApiKeys],
        treatment: Treatment::Removed,
        why: "An API key is a secret between the client and the gateway; the origin learns the \
              consumer from `x-portcullis-consumer`.",
    },
];

/// `name` as origins compare it: lower case, `_` read as `-`.
fn canonical(name: &str) -> Cow<'_, str> {
    if name.bytes().any(|b| b == b'_' || b.is_ascii_uppercase()) {
        Cow::Owned(
            name.bytes()
                .map(|b| match b {
                    b'_' => '-',
                    b => b.to_ascii_lowercase() as char,
                })
                .collect(),
        )
    } else {
        Cow::Borrowed(name)
    }
}

/// What names a request's headers are matched against besides the table's literals.
struct Known<'a> {
    api_keys: &'a [HeaderName],
    /// Canonical names `Connection` lists.
    nominated: &'a [String],
}

impl Known<'_> {
    /// Whether canonical `name` is covered by `pattern`.
    fn covers(&self, pattern: Name, name: &str) -> bool {
        match pattern {
            Exact(n) => name == n,
            Prefix(p) => name.starts_with(p),
            ApiKeys => self.api_keys.iter().any(|h| canonical(h.as_str()) == name),
            NamedByConnection => self.nominated.iter().any(|n| n == name),
        }
    }

    fn in_class(&self, class: &HeaderClass, name: &str) -> bool {
        self.in_names(class.names, name)
    }

    fn in_names(&self, names: &[Name], name: &str) -> bool {
        names.iter().any(|&p| self.covers(p, name))
    }
}

/// The canonical names in every `Connection` line of a message.
pub(crate) fn nominated(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .flat_map(|v| list_elements(v.as_bytes()))
        .filter_map(|t| std::str::from_utf8(trim(t)).ok())
        .filter(|t| !t.is_empty())
        .map(|t| canonical(t).into_owned())
        .collect()
}

/// Refuse a request whose headers the table refuses (400). Runs after the route's own header
/// rules (authentication, content type), whose more specific answers come first.
pub(crate) fn screen(policy: &Policy, headers: &HeaderMap) -> Result<(), Reject> {
    let nominated = nominated(headers);
    let known = Known {
        api_keys: &policy.api_key_headers,
        nominated: &nominated,
    };
    for class in CLASSES {
        let failed = match class.treatment {
            Treatment::Removed | Treatment::Replaced => None,
            Treatment::Refused(reason) => headers
                .keys()
                .any(|n| known.in_class(class, &canonical(n.as_str())))
                .then_some(reason),
            Treatment::Once(reason) => (!read_once(&known, class, headers)).then_some(reason),
            Treatment::NotNominated(reason) => known
                .nominated
                .iter()
                .any(|n| known.in_class(class, n))
                .then_some(reason),
            Treatment::OnlyChunked(reason) => {
                (!only_chunked(&known, class, headers)).then_some(reason)
            }
        };
        if let Some(reason) = failed {
            return Err(Reject::new(reason, refusal_detail(reason)));
        }
    }
    Ok(())
}

fn refusal_detail(reason: BadRequestReason) -> &'static str {
    match reason {
        Bad::MethodOverride => "The request carries a method-override header.",
        Bad::UrlOverride => "The request carries a URL-rewrite header.",
        Bad::HeaderRepeated => "A header the gateway reads once is repeated or holds a list.",
        Bad::ConnectionOption => "Connection names a header the gateway reads once.",
        Bad::TransferEncoding => "Transfer-Encoding must be a single 'chunked'.",
        _ => "The request's headers are ambiguous.",
    }
}

/// Whether every header of `class` occurs at most once, as one value.
fn read_once(known: &Known<'_>, class: &HeaderClass, headers: &HeaderMap) -> bool {
    let mut seen: Vec<Cow<'_, str>> = Vec::new();
    for (name, value) in headers {
        let canon = canonical(name.as_str());
        if !known.in_class(class, &canon) {
            continue;
        }
        if seen.contains(&canon) {
            return false;
        }
        let listed = if canon == "authorization" {
            several_credentials(value.as_bytes())
        } else {
            list_elements(value.as_bytes()).nth(1).is_some()
        };
        if listed {
            return false;
        }
        seen.push(canon);
    }
    true
}

/// Whether `Transfer-Encoding`, if present, is one line holding one `chunked`, with no
/// `Content-Length` beside it.
fn only_chunked(known: &Known<'_>, class: &HeaderClass, headers: &HeaderMap) -> bool {
    let mut lines = headers
        .iter()
        .filter(|(n, _)| known.in_class(class, &canonical(n.as_str())))
        .map(|(_, v)| v);
    match (lines.next(), lines.next()) {
        (None, _) => true,
        (Some(v), None) => {
            trim(v.as_bytes()).eq_ignore_ascii_case(b"chunked")
                && !headers.contains_key(header::CONTENT_LENGTH)
        }
        (Some(_), Some(_)) => false,
    }
}

/// Whether the origin may receive the client's header `name`: the table does not remove it, and
/// the allow list in force (if any) names it. `Content-Length` is framing, not content: it is
/// kept whatever the allow list says.
pub(crate) fn forwarded(
    policy: &Policy,
    allow: Option<&AllowList>,
    nominated: &[String],
    name: &HeaderName,
) -> bool {
    let canon = canonical(name.as_str());
    let known = Known {
        api_keys: &policy.api_key_headers,
        nominated,
    };
    let removed = CLASSES
        .iter()
        .any(|class| class.treatment.removes() && known.in_class(class, &canon));
    if removed {
        return false;
    }
    match allow {
        Some(list) => *name == header::CONTENT_LENGTH || list.allows(name.as_str()),
        None => true,
    }
}

/// Whether the origin's response header `name` may be relayed to the client: not hop-by-hop, not
/// named in the response's `Connection` (`nominated`, from [`nominated`]), not claiming to come
/// from the gateway. The same names as for requests, so the two directions cannot drift.
pub(crate) fn relayed_from_origin(nominated: &[String], name: &HeaderName) -> bool {
    let canon = canonical(name.as_str());
    let known = Known {
        api_keys: &[],
        nominated,
    };
    !known.in_names(HOP_BY_HOP, &canon)
        && !known.in_names(GATEWAY_IDENTITY, &canon)
        && !known.covers(NamedByConnection, &canon)
}

/// The elements of a comma-separated header value (RFC 9110 §5.6.1), split only at commas
/// outside quoted strings, untrimmed. A value without a comma is one element.
pub(crate) fn list_elements(value: &[u8]) -> impl Iterator<Item = &[u8]> + '_ {
    let mut rest = Some(value);
    std::iter::from_fn(move || {
        let v = rest?;
        let mut quoted = false;
        let mut escaped = false;
        for (i, &b) in v.iter().enumerate() {
            match b {
                _ if escaped => escaped = false,
                b'\\' if quoted => escaped = true,
                b'"' => quoted = !quoted,
                b',' if !quoted => {
                    rest = Some(&v[i + 1..]);
                    return Some(&v[..i]);
                }
                _ => {}
            }
        }
        rest = None;
        Some(v)
    })
}

/// Whether one `Authorization` value holds more than one credential: after the first, a list
/// element that is not an `auth-param` (`name=value`) starts another scheme (`Bearer a, Basic b`,
/// or a leading `, Bearer a`). Digest-style parameters (`Digest realm="a", nonce="b"`) are one.
pub(crate) fn several_credentials(value: &[u8]) -> bool {
    // The first element is the first credential even when empty: `, Bearer t` is one scheme
    // the gateway cannot read and one an origin that trims the list would.
    let mut credentials = 1;
    for element in list_elements(value)
        .skip(1)
        .map(trim)
        .filter(|e| !e.is_empty())
    {
        let name = element.iter().take_while(|b| is_tchar(**b)).count();
        let param = name > 0 && trim(&element[name..]).first() == Some(&b'=');
        if !param {
            credentials += 1;
        }
    }
    credentials > 1
}

/// RFC 9110 `tchar`.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn trim(v: &[u8]) -> &[u8] {
    let start = v.iter().position(|b| !matches!(b, b' ' | b'\t'));
    let end = v.iter().rposition(|b| !matches!(b, b' ' | b'\t'));
    match (start, end) {
        (Some(s), Some(e)) => &v[s..=e],
        _ => &[],
    }
}

/// `"forward_headers": {"allow": [...]}`: the only client headers the origin receives, besides
/// `Content-Length` (framing) and the gateway's own. Entries are header names, or a prefix
/// ending in `*` (`x-request-*`); they match case-insensitively, and `_` is not `-` here: an
/// allow list names exactly what passes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowList {
    entries: Vec<Allowed>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Allowed {
    Name(String),
    Prefix(String),
}

impl Allowed {
    fn text(&self) -> String {
        match self {
            Allowed::Name(n) => n.clone(),
            Allowed::Prefix(p) => format!("{p}*"),
        }
    }
}

/// Why an allow-list entry is not one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AllowError {
    /// Not a header name nor a prefix of one ending in `*`.
    NotAName,
    /// The entry is listed twice (in any case).
    Duplicate,
}

impl std::fmt::Display for AllowError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            AllowError::NotAName => {
                "must be a header name, or the start of one followed by `*` (\"x-request-*\")"
            }
            AllowError::Duplicate => "listed twice",
        })
    }
}

impl AllowList {
    /// An allow list of `entries`; the error of each bad one, by index.
    pub fn new(entries: &[String]) -> Result<AllowList, Vec<(usize, AllowError)>> {
        let mut list = Vec::with_capacity(entries.len());
        let mut errors = Vec::new();
        for (i, entry) in entries.iter().enumerate() {
            let lower = entry.to_ascii_lowercase();
            let parsed = match lower.strip_suffix('*') {
                Some(prefix) if valid_name(prefix) => Allowed::Prefix(prefix.to_owned()),
                Some(_) => {
                    errors.push((i, AllowError::NotAName));
                    continue;
                }
                None if valid_name(&lower) => Allowed::Name(lower),
                None => {
                    errors.push((i, AllowError::NotAName));
                    continue;
                }
            };
            if list.contains(&parsed) {
                errors.push((i, AllowError::Duplicate));
            } else {
                list.push(parsed);
            }
        }
        if errors.is_empty() {
            Ok(AllowList { entries: list })
        } else {
            Err(errors)
        }
    }

    /// Whether the list names header `name` (lower case, as a [`HeaderName`] is).
    pub fn allows(&self, name: &str) -> bool {
        self.entries.iter().any(|e| match e {
            Allowed::Name(n) => n.eq_ignore_ascii_case(name),
            Allowed::Prefix(p) => name.len() >= p.len() && name[..p.len()].eq_ignore_ascii_case(p),
        })
    }

    /// For each entry (by index) that covers headers the table removes or refuses whatever the
    /// list says, why it has no effect there. `api_keys` are the policy's API-key headers.
    pub fn warnings(&self, api_keys: &[HeaderName]) -> Vec<(usize, String)> {
        let known = Known {
            api_keys,
            nominated: &[],
        };
        let mut out = Vec::new();
        for (i, entry) in self.entries.iter().enumerate() {
            let hits: Vec<String> = CLASSES
                .iter()
                .filter(|c| {
                    matches!(
                        c.treatment,
                        Treatment::Removed | Treatment::Replaced | Treatment::Refused(_)
                    )
                })
                .filter(|c| c.names.iter().any(|&n| overlaps(&known, entry, n)))
                .map(|c| {
                    let what = match c.treatment {
                        Treatment::Refused(_) => "requests with them are refused",
                        Treatment::Replaced => "the gateway sends its own",
                        _ => "removed",
                    };
                    format!("{} ({what})", c.class.replace('`', ""))
                })
                .collect();
            if !hits.is_empty() {
                out.push((
                    i,
                    format!(
                        "\"{}\" names headers the gateway never forwards from a client, whatever \
                         the allow list says: {}",
                        entry.text(),
                        hits.join("; ")
                    ),
                ));
            }
        }
        out
    }
}

/// A header name without `*` (which only ends a prefix entry). `*` alone is no name: it would
/// be no allow list at all.
fn valid_name(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| is_tchar(b) && b != b'*')
}

/// Whether allow-list `entry` covers any header `pattern` covers.
fn overlaps(known: &Known<'_>, entry: &Allowed, pattern: Name) -> bool {
    let names: Vec<Cow<'_, str>> = match pattern {
        Exact(n) => vec![Cow::Borrowed(n)],
        ApiKeys => known
            .api_keys
            .iter()
            .map(|h| canonical(h.as_str()))
            .collect(),
        NamedByConnection => Vec::new(),
        Prefix(p) => {
            return match entry {
                Allowed::Name(n) => canonical(n).starts_with(p),
                Allowed::Prefix(q) => {
                    let q = canonical(q);
                    q.starts_with(p) || p.starts_with(q.as_ref())
                }
            }
        }
    };
    names.iter().any(|n| match entry {
        Allowed::Name(e) => canonical(e) == *n,
        Allowed::Prefix(q) => n.starts_with(canonical(q).as_ref()),
    })
}

/// The docs' table of header classes, as markdown: one row per [`HeaderClass`], in table order.
pub fn classes_markdown() -> String {
    let mut out =
        String::from("| class | headers | treatment | why |\n| --- | --- | --- | --- |\n");
    for c in CLASSES {
        let names: Vec<String> = c
            .names
            .iter()
            .map(|n| match n {
                Exact(n) => format!("`{n}`"),
                Prefix(p) => format!("`{p}*`"),
                ApiKeys => "each API-key provider's `header`".to_owned(),
                NamedByConnection => "every header `Connection` names".to_owned(),
            })
            .collect();
        out.push_str(&format!(
            "| {} | {} | {} | {} |\n",
            c.class,
            names.join(", "),
            c.treatment.describe(),
            c.why.replace('|', "\\|"),
        ));
    }
    out
}

#[cfg(test)]
mod tests;
