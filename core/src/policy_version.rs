//! The policy's version: a short name for what a policy says, not how its file is written.
//!
//! An operator asks "which policy decided this request?" and "did that change take?". The
//! answer is the SHA-256 of the document's RFC 8785 (JCS) canonical form, first 6 bytes as 12
//! lower-case hex digits: re-indenting the file or reordering its keys keeps the version, and any
//! change to a value makes a new one. Access lines and audit events carry it as `policy`.

use std::fmt;

use serde::{Serialize, Serializer};
use serde_json::Value;
use sha2::{Digest, Sha256};

/// A policy's version (see the module docs). Shown and serialised as 12 hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PolicyVersion([u8; 6]);

impl PolicyVersion {
    /// The version of a parsed policy document.
    pub fn of(document: &Value) -> PolicyVersion {
        // A `Value` holds only finite numbers and valid strings, which JCS always accepts; should
        // it ever refuse one, the compact serialisation still names this document alone.
        let canonical =
            serde_jcs::to_vec(document).unwrap_or_else(|_| document.to_string().into_bytes());
        let digest = Sha256::digest(&canonical);
        let mut short = [0u8; 6];
        short.copy_from_slice(&digest[..6]);
        PolicyVersion(short)
    }

    /// The version of a policy text, if it is JSON at all (a text that is not has no canonical
    /// form, so no version).
    pub fn of_text(text: &str) -> Option<PolicyVersion> {
        serde_json::from_str::<Value>(text)
            .ok()
            .map(|v| Self::of(&v))
    }
}

impl fmt::Display for PolicyVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for PolicyVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PolicyVersion({self})")
    }
}

impl Serialize for PolicyVersion {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn version(text: &str) -> String {
        PolicyVersion::of_text(text).expect("JSON").to_string()
    }

    #[test]
    fn layout_and_key_order_do_not_change_the_version() {
        let a = version(r#"{"version":1,"routes":[{"id":"a","path":"/x"}],"origins":{}}"#);
        let b = version(
            "{\n  \"origins\": {},\n  \"routes\": [ { \"path\": \"/x\", \"id\": \"a\" } ],\n  \"version\": 1.0\n}",
        );
        assert_eq!(a, b);
        assert_eq!(a.len(), 12);
        assert!(a
            .bytes()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
    }

    #[test]
    fn any_change_of_a_value_or_of_array_order_does() {
        let base = version(r#"{"routes":[{"id":"a"},{"id":"b"}],"limit":10}"#);
        for other in [
            r#"{"routes":[{"id":"b"},{"id":"a"}],"limit":10}"#,
            r#"{"routes":[{"id":"a"},{"id":"b"}],"limit":11}"#,
            r#"{"routes":[{"id":"a"},{"id":"b"}],"limit":"10"}"#,
            r#"{"routes":[{"id":"a"},{"id":"b"}]}"#,
        ] {
            assert_ne!(version(other), base, "{other}");
        }
    }

    #[test]
    fn the_version_is_the_hash_of_the_rfc_8785_form() {
        // RFC 8785 §3.2.3: keys sorted by UTF-16 code units, numbers in ECMAScript form.
        let text = r#"{"b": 1e2, "a": [true, null, "\u00e9"]}"#;
        let canonical = "{\"a\":[true,null,\"\u{e9}\"],\"b\":100}";
        let expected = hex::encode(&Sha256::digest(canonical.as_bytes())[..6]);
        assert_eq!(version(text), expected);
        assert_eq!(PolicyVersion::of_text("not json"), None);
    }
}
