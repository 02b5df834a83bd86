//! Path normalisation: one spelling per path, and refusal of anything two parsers could read
//! differently.
//!
//! Gateways are bypassed when they and the origin disagree on what a path means
//! (`/admin/..%2fpublic`, `/public/%2e%2e/admin`, `\`, `//`). Portcullis does not try to resolve
//! such paths: it refuses them with 400. What remains is decoded only where decoding cannot change
//! meaning (unreserved characters, RFC 3986 §2.3) and has its percent-escapes in upper case, so
//! the path that is matched is exactly the path the origin receives.

use crate::problem::{BadPathReason, Reject};

/// Longest accepted path, in bytes.
pub const MAX_PATH_BYTES: usize = 8 * 1024;

/// A path in normal form: starts with `/`, no empty, `.` or `..` segments, no encoded `/` or `\`,
/// no control characters, unreserved characters decoded, other escapes in upper case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NormalPath(String);

impl NormalPath {
    /// The normalised path.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Its segments, without the leading `/` (the root path has one empty segment).
    pub fn segments(&self) -> std::str::Split<'_, char> {
        self.0[1..].split('/')
    }
}

fn reject(reason: BadPathReason, detail: &'static str) -> Reject {
    Reject::new(reason, detail)
}

fn hex_value(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// Bytes allowed unescaped in a path segment (RFC 3986 `pchar` minus `%`).
fn is_pchar(b: u8) -> bool {
    is_unreserved(b)
        || matches!(
            b,
            b'!' | b'$'
                | b'&'
                | b'\''
                | b'('
                | b')'
                | b'*'
                | b'+'
                | b','
                | b';'
                | b'='
                | b':'
                | b'@'
        )
}

/// Normalise a request path (the part of the target before `?`).
pub fn normalise(raw: &str) -> Result<NormalPath, Reject> {
    let bytes = raw.as_bytes();
    if bytes.len() > MAX_PATH_BYTES {
        return Err(reject(
            BadPathReason::PathTooLong,
            "The request path is too long.",
        ));
    }
    if bytes.first() != Some(&b'/') {
        return Err(reject(
            BadPathReason::NotAbsolute,
            "The request path must start with '/'.",
        ));
    }
    let mut out = String::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        match b {
            b'%' => {
                let (Some(hi), Some(lo)) = (
                    bytes.get(i + 1).copied().and_then(hex_value),
                    bytes.get(i + 2).copied().and_then(hex_value),
                ) else {
                    return Err(reject(
                        BadPathReason::BadEscape,
                        "The request path has a malformed percent-escape.",
                    ));
                };
                let decoded = hi * 16 + lo;
                match decoded {
                    b'/' => {
                        return Err(reject(
                            BadPathReason::EncodedSlash,
                            "The request path has an encoded '/'.",
                        ))
                    }
                    b'\\' => {
                        return Err(reject(
                            BadPathReason::EncodedBackslash,
                            "The request path has an encoded '\\'.",
                        ))
                    }
                    0x00..=0x1f | 0x7f => {
                        return Err(reject(
                            BadPathReason::ControlChar,
                            "The request path has a control character.",
                        ))
                    }
                    d if is_unreserved(d) => out.push(d as char),
                    _ => {
                        out.push('%');
                        out.push(char::from(b"0123456789ABCDEF"[usize::from(hi)]));
                        out.push(char::from(b"0123456789ABCDEF"[usize::from(lo)]));
                    }
                }
                i += 3;
                continue;
            }
            b'\\' => {
                return Err(reject(
                    BadPathReason::Backslash,
                    "The request path has a '\\'.",
                ))
            }
            b'/' => out.push('/'),
            0x00..=0x1f | 0x7f => {
                return Err(reject(
                    BadPathReason::ControlChar,
                    "The request path has a control character.",
                ))
            }
            b if is_pchar(b) => out.push(b as char),
            _ => {
                return Err(reject(
                    BadPathReason::BadChar,
                    "The request path has a character that must be percent-encoded.",
                ))
            }
        }
        i += 1;
    }
    if out != "/" {
        for segment in out[1..].split('/') {
            match segment {
                "" => {
                    return Err(reject(
                        BadPathReason::EmptySegment,
                        "The request path has an empty segment ('//' or a trailing '/').",
                    ))
                }
                "." | ".." => {
                    return Err(reject(
                        BadPathReason::DotSegment,
                        "The request path has a '.' or '..' segment.",
                    ))
                }
                _ => {}
            }
        }
    }
    Ok(NormalPath(out))
}

#[cfg(test)]
mod tests;
