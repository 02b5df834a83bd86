//! Signed forwarding: origin lockdown.
//!
//! A gateway protects nothing if a caller can reach the origin directly. With `"sign"` on an
//! origin, every request the gateway forwards there carries
//! `x-portcullis-signature: t=<unix seconds>,v1=<hex HMAC-SHA256>`, so the origin can refuse
//! whatever did not come through the gateway, and whatever is older than a window it picks. The
//! MAC covers what the origin acts on: the method, the path and query it receives, the request
//! id, the consumer and, when the gateway read the body, the body's SHA-256. The algorithm,
//! test vectors and verification code for origins are in `docs/origin-verification.md`; a client's
//! own `x-portcullis-signature` never reaches the origin (every `x-portcullis-*` is the
//! gateway's).

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

/// The header the origin checks.
pub const HEADER: &str = "x-portcullis-signature";

/// What stands for the body's digest when the gateway streamed the body unread.
pub const UNSIGNED_PAYLOAD: &str = "UNSIGNED-PAYLOAD";

/// What stands for the consumer on a route without authentication.
pub const NO_CONSUMER: &str = "-";

/// The keys of one origin. Only `current` signs; `previous` is validated at load so that an
/// operator rotating keys learns at once that the old one is still set for the origins that
/// accept either, and is never used by the gateway itself.
#[derive(Clone)]
pub struct SigningKeys {
    current: Vec<u8>,
    previous: Option<Vec<u8>>,
}

impl std::fmt::Debug for SigningKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKeys")
            .field("current", &"<secret>")
            .field("previous", &self.previous.as_ref().map(|_| "<secret>"))
            .finish()
    }
}

impl SigningKeys {
    /// Keys from the secrets' UTF-8 bytes (the loader has checked they are at least 32 long).
    pub fn new(current: String, previous: Option<String>) -> Self {
        SigningKeys {
            current: current.into_bytes(),
            previous: previous.map(String::into_bytes),
        }
    }

    /// Whether a previous key is configured (for `check`'s report).
    pub fn rotating(&self) -> bool {
        self.previous.is_some()
    }

    /// The header value for `request`, signed with the current key.
    pub fn sign(&self, request: &Signed<'_>) -> String {
        header_value(&self.current, request)
    }
}

/// The facts a signature covers, as the origin receives them.
#[derive(Debug, Clone, Copy)]
pub struct Signed<'a> {
    /// When the gateway signed, in Unix seconds.
    pub t: u64,
    /// The method sent to the origin.
    pub method: &'a str,
    /// The path (with the origin's base path) and `?query` when there is one, as sent.
    pub path_and_query: &'a str,
    /// The request id (also in `x-portcullis-request-id`).
    pub request_id: &'a str,
    /// The authenticated consumer; `None` on a public route.
    pub consumer: Option<&'a str>,
    /// The body the gateway buffered, when it did (a route with `body_schema` or
    /// `max_body_bytes`); `None` when it streamed the body unread.
    pub body: Option<&'a [u8]>,
}

/// The string the MAC is computed over: `v1`, the timestamp, the method, the path and query,
/// the request id, the consumer (`-` when none) and the body's lower-case hex SHA-256 (or
/// `UNSIGNED-PAYLOAD`), joined by `\n`, with no trailing newline.
pub fn canonical(request: &Signed<'_>) -> String {
    let body = request.body.map_or_else(
        || UNSIGNED_PAYLOAD.to_owned(),
        |b| hex::encode(Sha256::digest(b)),
    );
    [
        "v1",
        &request.t.to_string(),
        request.method,
        request.path_and_query,
        request.request_id,
        request.consumer.unwrap_or(NO_CONSUMER),
        &body,
    ]
    .join("\n")
}

/// `t=<t>,v1=<hex HMAC-SHA256(secret, canonical)>`.
pub fn header_value(secret: &[u8], request: &Signed<'_>) -> String {
    format!(
        "t={},v1={}",
        request.t,
        hex::encode(mac(secret, &canonical(request)))
    )
}

fn mac(secret: &[u8], text: &str) -> Vec<u8> {
    // HMAC takes a key of any length; the loader insists on at least 32 bytes.
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) else {
        return Vec::new();
    };
    mac.update(text.as_bytes());
    mac.finalize().into_bytes().to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(body: Option<&'static [u8]>) -> Signed<'static> {
        Signed {
            t: 1_750_000_000,
            method: "POST",
            path_and_query: "/base/v1/orders?dry_run=true",
            request_id: "0123456789abcdef0123456789abcdef",
            consumer: Some("alice"),
            body,
        }
    }

    #[test]
    fn the_canonical_string_is_the_documented_lines() {
        assert_eq!(
            canonical(&request(None)),
            "v1\n1750000000\nPOST\n/base/v1/orders?dry_run=true\n0123456789abcdef0123456789abcdef\nalice\nUNSIGNED-PAYLOAD"
        );
        let public = Signed {
            consumer: None,
            ..request(Some(b""))
        };
        assert!(canonical(&public)
            .ends_with("\n-\ne3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"));
    }

    #[test]
    fn every_covered_fact_changes_the_signature() {
        let key = b"0123456789abcdef0123456789abcdef";
        let base = request(Some(b"{\"sku\":\"A-1\"}"));
        let signed = header_value(key, &base);
        assert!(signed.starts_with("t=1750000000,v1="));
        assert_eq!(signed.len(), "t=1750000000,v1=".len() + 64);
        let variants = [
            Signed {
                t: base.t + 1,
                ..base
            },
            Signed {
                method: "PUT",
                ..base
            },
            Signed {
                path_and_query: "/base/v1/orders",
                ..base
            },
            Signed {
                request_id: "x",
                ..base
            },
            Signed {
                consumer: Some("mallory"),
                ..base
            },
            Signed {
                consumer: None,
                ..base
            },
            Signed {
                body: Some(b"{\"sku\":\"A-2\"}"),
                ..base
            },
            Signed { body: None, ..base },
        ];
        for variant in variants {
            assert_ne!(header_value(key, &variant), signed, "{variant:?}");
        }
        assert_ne!(
            header_value(b"another key, also 32 bytes long!", &base),
            signed
        );
    }

    #[test]
    fn keys_never_show_in_debug_output() {
        let keys = SigningKeys::new("s".repeat(40), Some("p".repeat(40)));
        let shown = format!("{keys:?}");
        assert!(!shown.contains("sss") && !shown.contains("ppp"), "{shown}");
    }
}
