//! Config problems, each named by the JSON pointer of the offending field.

use std::borrow::Cow;
use std::fmt;

/// One problem in a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// JSON pointer (RFC 6901) of the offending field; `""` is the whole document.
    pub pointer: String,
    /// What is wrong with it.
    pub kind: ConfigErrorKind,
}

/// What is wrong with a config field.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(missing_docs)] // variant fields are named for what they hold
pub enum ConfigErrorKind {
    /// The text is not JSON (or has a duplicate key); line and column are 1-based.
    Syntax {
        line: usize,
        column: usize,
        message: String,
    },
    /// A field this version of the config does not know. Typos must not silently weaken policy.
    UnknownField,
    /// A required field is absent.
    Missing,
    /// The field has the wrong JSON type.
    WrongType { expected: &'static str },
    /// The field's value is not acceptable, and why.
    Invalid(Cow<'static, str>),
    /// The field names an origin, provider or quota that does not exist.
    UnknownReference { what: &'static str, name: String },
    /// The same id or key appears twice.
    Duplicate,
    /// A `secret_env` names a variable the runtime does not have (or it is too short).
    Secret(Cow<'static, str>),
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let at = if self.pointer.is_empty() {
            "(document)"
        } else {
            &self.pointer
        };
        write!(f, "{at}: {}", self.kind)
    }
}

impl fmt::Display for ConfigErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigErrorKind::Syntax {
                line,
                column,
                message,
            } => {
                write!(
                    f,
                    "not valid JSON at line {line} column {column}: {message}"
                )
            }
            ConfigErrorKind::UnknownField => f.write_str("unknown field"),
            ConfigErrorKind::Missing => f.write_str("required field is missing"),
            ConfigErrorKind::WrongType { expected } => write!(f, "expected {expected}"),
            ConfigErrorKind::Invalid(why) => f.write_str(why),
            ConfigErrorKind::UnknownReference { what, name } => {
                write!(f, "no {what} named \"{name}\"")
            }
            ConfigErrorKind::Duplicate => f.write_str("duplicate"),
            ConfigErrorKind::Secret(why) => f.write_str(why),
        }
    }
}

/// Every problem found in a config, in document order. Never empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Something in a valid policy that likely does not do what was meant. Never fatal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigWarning {
    /// JSON pointer (RFC 6901) of the field it is about.
    pub pointer: String,
    /// What is likely wrong, and what to do instead.
    pub message: Cow<'static, str>,
}

impl fmt::Display for ConfigWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let at = if self.pointer.is_empty() {
            "(document)"
        } else {
            &self.pointer
        };
        write!(f, "{at}: warning: {}", self.message)
    }
}
