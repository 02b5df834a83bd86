//! How a section's raw struct holds what the document said, and how problems are collected.
//!
//! Raw structs are deserialised with serde, yet nothing in them can make deserialisation fail:
//! each field is a [`Json<T>`], which holds the typed value or records that the document held
//! something else, and keys that no field takes are gathered in [`Unknown`] instead of refused.
//! A section's validation then reports every problem with the pointer of its field, so one
//! reading finds all of them rather than stopping at serde's first error, and the message for a
//! wrong type names what the field wants.

use std::borrow::Cow;

use serde::de::{DeserializeOwned, IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_json::Value;

use super::super::{Capabilities, ConfigError, ConfigErrorKind, ConfigWarning, SchemaCompilation};

/// A field of a raw struct: `None` when its key is absent, otherwise what the document held.
///
/// Not an `Option<T>`, which serde fills with `None` for an explicit `null` too: `null` is a value
/// of the wrong type, and taking it for an absent field would let `"body_schema": null` drop a
/// schema without a word. Raw structs are `#[serde(default)]`, so an absent key is `Field(None)`.
#[derive(Debug)]
pub(super) struct Field<T>(pub(super) Option<T>);

impl<T> Default for Field<T> {
    fn default() -> Self {
        Field(None)
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Field<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        T::deserialize(d).map(|t| Field(Some(t)))
    }
}

/// A field that was present: typed as the raw struct wants, or of another JSON type.
#[derive(Debug, Clone)]
pub(super) enum Json<T> {
    Ok(T),
    /// Not a `T`. `number` tells a number out of range (or fractional) from a non-number.
    Wrong {
        number: bool,
    },
}

/// A list of strings, each element kept apart so that a bad one is reported at its index.
pub(super) type Strings = Json<Vec<Json<String>>>;

impl<T: DeserializeOwned> Json<T> {
    pub(super) fn from_value(value: Value) -> Json<T> {
        let number = value.is_number();
        match T::deserialize(value) {
            Ok(t) => Json::Ok(t),
            Err(_) => Json::Wrong { number },
        }
    }
}

impl<'de, T: DeserializeOwned> Deserialize<'de> for Json<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Value::deserialize(d).map(Json::from_value)
    }
}

/// The keys of an object that none of its raw struct's fields took, in document order.
///
/// Every raw struct has one (`#[serde(flatten)] unknown: Unknown`) and its validation hands it
/// to [`Reader::unknown`]: a typo must not silently weaken policy.
#[derive(Debug, Default)]
pub(super) struct Unknown(Vec<String>);

impl<'de> Deserialize<'de> for Unknown {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Keys;
        impl<'de> Visitor<'de> for Keys {
            type Value = Unknown;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Unknown, A::Error> {
                let mut keys = Vec::new();
                while let Some(key) = map.next_key::<String>()? {
                    map.next_value::<IgnoredAny>()?;
                    keys.push(key);
                }
                Ok(Unknown(keys))
            }
        }
        d.deserialize_map(Keys)
    }
}

/// An object of named entries (`origins`, `auth`, `quotas`), in document order.
#[derive(Debug)]
pub(super) struct Named<T>(pub(super) Vec<(String, T)>);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Named<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Entries<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for Entries<T> {
            type Value = Named<T>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an object of named entries")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Named<T>, A::Error> {
                let mut entries = Vec::with_capacity(map.size_hint().unwrap_or(0));
                while let Some(entry) = map.next_entry::<String, T>()? {
                    entries.push(entry);
                }
                Ok(Named(entries))
            }
        }
        d.deserialize_map(Entries(std::marker::PhantomData))
    }
}

/// `base` + `/` + escaped `token` (RFC 6901).
pub(super) fn ptr(base: &str, token: &str) -> String {
    let mut p = String::with_capacity(base.len() + token.len() + 1);
    p.push_str(base);
    p.push('/');
    for c in token.chars() {
        match c {
            '~' => p.push_str("~0"),
            '/' => p.push_str("~1"),
            c => p.push(c),
        }
    }
    p
}

/// `base` + `/` + `index`.
pub(super) fn at_index(base: &str, index: usize) -> String {
    format!("{base}/{index}")
}

/// Collects problems (and warnings) while a policy is read.
pub(super) struct Reader {
    pub(super) errors: Vec<ConfigError>,
    pub(super) warnings: Vec<ConfigWarning>,
    pub(super) schemas: SchemaCompilation,
    /// What the runtime loading the policy can carry out; fields it cannot are refused.
    pub(super) capabilities: Capabilities,
}

impl Reader {
    /// Something valid that likely does not do what was meant: reported, never fatal.
    pub(super) fn warn(
        &mut self,
        pointer: impl Into<String>,
        message: impl Into<Cow<'static, str>>,
    ) {
        self.warnings.push(ConfigWarning {
            pointer: pointer.into(),
            message: message.into(),
        });
    }

    pub(super) fn err(&mut self, pointer: impl Into<String>, kind: ConfigErrorKind) {
        self.errors.push(ConfigError {
            pointer: pointer.into(),
            kind,
        });
    }

    pub(super) fn invalid(
        &mut self,
        pointer: impl Into<String>,
        why: impl Into<Cow<'static, str>>,
    ) {
        self.err(pointer, ConfigErrorKind::Invalid(why.into()));
    }

    /// A `cors` setting's problems, their pointers made absolute under `at`.
    pub(super) fn cors_errors(&mut self, at: &str, errors: Vec<crate::cors::CorsError>) {
        for e in errors {
            self.invalid(format!("{at}{}", e.at), e.kind.to_string());
        }
    }

    fn wrong_type(&mut self, at: &str, expected: &'static str) {
        self.err(at, ConfigErrorKind::WrongType { expected });
    }

    /// A problem count to compare with later: "did reading this part find anything wrong?"
    pub(super) fn mark(&self) -> usize {
        self.errors.len()
    }

    /// Whether no problem has been found since `mark`.
    pub(super) fn clean_since(&self, mark: usize) -> bool {
        self.errors.len() == mark
    }

    /// Report every key of the object at `at` that its raw struct does not know.
    pub(super) fn unknown(&mut self, unknown: Unknown, at: &str) {
        for key in unknown.0 {
            self.err(ptr(at, &key), ConfigErrorKind::UnknownField);
        }
    }

    /// `field` of the object at `at`, reporting it missing if absent.
    pub(super) fn required<T>(&mut self, field: Option<T>, at: &str, key: &str) -> Option<T> {
        if field.is_none() {
            self.err(ptr(at, key), ConfigErrorKind::Missing);
        }
        field
    }

    /// An object-typed value (a raw struct), or a wrong-type problem.
    pub(super) fn object<T>(&mut self, v: Json<T>, at: &str) -> Option<T> {
        match v {
            Json::Ok(t) => Some(t),
            Json::Wrong { .. } => {
                self.wrong_type(at, "an object");
                None
            }
        }
    }

    pub(super) fn string(&mut self, v: Json<String>, at: &str) -> Option<String> {
        match v {
            Json::Ok(s) => Some(s),
            Json::Wrong { .. } => {
                self.wrong_type(at, "a string");
                None
            }
        }
    }

    pub(super) fn nonempty_string(&mut self, v: Json<String>, at: &str) -> Option<String> {
        let s = self.string(v, at)?;
        if s.is_empty() {
            self.invalid(at, "must not be empty");
            return None;
        }
        Some(s)
    }

    pub(super) fn integer(&mut self, v: Json<u64>, at: &str, min: u64, max: u64) -> Option<u64> {
        match v {
            Json::Ok(n) if (min..=max).contains(&n) => Some(n),
            Json::Ok(_) | Json::Wrong { number: true } => {
                self.invalid(at, format!("must be an integer from {min} to {max}"));
                None
            }
            Json::Wrong { number: false } => {
                self.wrong_type(at, "an integer");
                None
            }
        }
    }

    pub(super) fn array<T>(&mut self, v: Json<Vec<T>>, at: &str) -> Option<Vec<T>> {
        match v {
            Json::Ok(items) => Some(items),
            Json::Wrong { .. } => {
                self.wrong_type(at, "an array");
                None
            }
        }
    }

    /// A list of non-empty strings; `nonempty` makes an empty list an error.
    pub(super) fn strings(&mut self, v: Strings, at: &str, nonempty: bool) -> Option<Vec<String>> {
        let items = self.array(v, at)?;
        if nonempty && items.is_empty() {
            self.invalid(at, "must list at least one entry");
            return None;
        }
        let mut out = Vec::with_capacity(items.len());
        let mut ok = true;
        for (i, item) in items.into_iter().enumerate() {
            match self.nonempty_string(item, &at_index(at, i)) {
                Some(s) => out.push(s),
                None => ok = false,
            }
        }
        ok.then_some(out)
    }
}
