//! Route matching: the first route in file order whose path and method match wins.
//!
//! Templates are literal segments, `{name}` (exactly one non-empty segment) and a final
//! `{*name}` (one or more segments). Matching is on the [`NormalPath`], byte for byte and
//! case-sensitive, so a route can only be reached by the one spelling of its path. `HEAD` is
//! allowed wherever `GET` is, and listed in `Allow` there.

use http::Method;

use crate::config::{Policy, Route};
use crate::path::NormalPath;
use crate::problem::{NotFoundReason, Reject};

/// A compiled path template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    segments: Vec<Segment>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    Param,
    Rest,
}

impl Template {
    /// Parse a template such as `/v1/orders/{id}` or `/files/{*rest}`.
    pub fn parse(text: &str) -> Result<Template, String> {
        if text == "/" {
            return Ok(Template {
                segments: vec![Segment::Literal(String::new())],
            });
        }
        let Some(body) = text.strip_prefix('/') else {
            return Err("a route path starts with '/'".into());
        };
        let parts: Vec<&str> = body.split('/').collect();
        let mut segments = Vec::with_capacity(parts.len());
        let mut names = Vec::new();
        for (i, part) in parts.iter().enumerate() {
            if let Some(inner) = part.strip_prefix('{').and_then(|p| p.strip_suffix('}')) {
                let (rest, name) = match inner.strip_prefix('*') {
                    Some(n) => (true, n),
                    None => (false, inner),
                };
                if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
                {
                    return Err(format!(
                        "parameter \"{part}\" needs a name of letters, digits and '_'"
                    ));
                }
                if names.contains(&name) {
                    return Err(format!("parameter \"{name}\" appears twice"));
                }
                names.push(name);
                if rest && i + 1 != parts.len() {
                    return Err("a {*rest} parameter must be the last segment".into());
                }
                segments.push(if rest { Segment::Rest } else { Segment::Param });
            } else {
                if part.is_empty() {
                    return Err(
                        "a route path has no empty segments ('//' or a trailing '/')".into(),
                    );
                }
                if part.contains('{') || part.contains('}') {
                    return Err(format!("segment \"{part}\" mixes text and a parameter; a parameter is a whole segment"));
                }
                let normal = crate::path::normalise(&format!("/{part}"))
                    .map_err(|_| format!("segment \"{part}\" is not a normalised path segment (no empty, '.' or '..' segments, no trailing '/')"))?;
                if normal.as_str()[1..] != **part {
                    return Err(format!(
                        "segment \"{part}\" is not in normal form; write it as \"{}\"",
                        &normal.as_str()[1..]
                    ));
                }
                segments.push(Segment::Literal((*part).to_owned()));
            }
        }
        Ok(Template { segments })
    }

    /// Whether `path` matches this template.
    pub fn matches(&self, path: &NormalPath) -> bool {
        let mut segs = path.segments();
        for seg in &self.segments {
            match seg {
                Segment::Rest => {
                    // One or more segments remain; normal paths have no empty ones.
                    return segs.next().is_some_and(|s| !s.is_empty());
                }
                Segment::Param => match segs.next() {
                    Some(s) if !s.is_empty() => {}
                    _ => return false,
                },
                Segment::Literal(lit) => match segs.next() {
                    Some(s) if s == lit => {}
                    _ => return false,
                },
            }
        }
        segs.next().is_none()
    }
}

/// The route a request was matched to.
#[derive(Debug, Clone, Copy)]
pub struct Routed<'p> {
    /// The matched route.
    pub route: &'p Route,
    /// Its index in file order.
    pub index: usize,
}

/// Whether `route` takes `method`: a method it lists, or `HEAD` where it lists `GET` (RFC 9110
/// §9.3.2: a `HEAD` is the `GET` without the body, so refusing it would only break clients). The
/// request is forwarded as `HEAD`, so the origin sends no body.
fn allows(route: &Route, method: &Method) -> bool {
    route.methods.contains(method)
        || (*method == Method::HEAD && route.methods.contains(&Method::GET))
}

/// Select the first route whose path and method match. A path that matches only under other
/// methods is a 405 listing them; no path match is a 404.
pub(crate) fn select<'p>(
    policy: &'p Policy,
    path: &NormalPath,
    method: &Method,
) -> Result<Routed<'p>, Reject> {
    let mut allow: Vec<String> = Vec::new();
    for (index, route) in policy.routes.iter().enumerate() {
        if !route.template.matches(path) {
            continue;
        }
        if allows(route, method) {
            return Ok(Routed { route, index });
        }
        for m in &route.methods {
            let implied = (*m == Method::GET && !route.methods.contains(&Method::HEAD))
                .then_some(Method::HEAD);
            for m in std::iter::once(m).chain(implied.as_ref()) {
                if !allow.iter().any(|a| a == m.as_str()) {
                    allow.push(m.as_str().to_owned());
                }
            }
        }
    }
    if allow.is_empty() {
        Err(Reject::new(
            NotFoundReason::NoRoute,
            "No route matches this path.",
        ))
    } else {
        Err(Reject::method_not_allowed(
            allow,
            "This path exists, but not for this method.",
        ))
    }
}

#[cfg(test)]
mod tests;
