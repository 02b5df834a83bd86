//! JSON Schemas for bodies and query strings: compiled when the policy loads, or, for runtimes
//! that compile the policy on every request, when a route first needs them ([`RouteSchema`]).

use std::sync::OnceLock;

use serde_json::Value;

use crate::config::{ConfigError, ConfigErrorKind};
use crate::problem::FieldError;

/// Most failing locations listed in one 422; the rest are summarised.
pub const MAX_REPORTED_ERRORS: usize = 16;

/// A compiled JSON Schema.
pub struct Schema {
    validator: jsonschema::Validator,
}

impl std::fmt::Debug for Schema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Schema")
    }
}

impl Schema {
    /// Compile `schema`. Remote `$ref`s are not fetched (the core does no I/O), so a schema that
    /// needs one fails here, at load time, rather than at request time.
    /// On failure: the JSON pointer within `schema` of the offending keyword, and why. (For a
    /// schema that breaks the meta-schema, the meta-schema's *instance* is the user's schema.)
    pub fn compile(schema: &Value) -> Result<Schema, (String, String)> {
        jsonschema::validator_for(schema)
            .map(|validator| Schema { validator })
            .map_err(|e| {
                (
                    e.instance_path().to_string(),
                    format!("invalid JSON Schema: {}", e.masked()),
                )
            })
    }

    /// Whether `instance` is valid (the fast path).
    pub fn is_valid(&self, instance: &Value) -> bool {
        self.validator.is_valid(instance)
    }

    /// Every failing location in `instance` (up to [`MAX_REPORTED_ERRORS`]), empty when valid.
    /// Messages never contain the instance's values, which may be personal data or secrets.
    pub fn errors(&self, instance: &Value) -> Vec<FieldError> {
        if self.validator.is_valid(instance) {
            return Vec::new();
        }
        let mut out = Vec::new();
        for e in self
            .validator
            .iter_errors(instance)
            .take(MAX_REPORTED_ERRORS)
        {
            out.push(FieldError {
                pointer: e.instance_path().to_string(),
                detail: e.masked().to_string(),
            });
        }
        out
    }
}

/// A route's `body_schema` or `query_schema`, with where it sits in the policy.
///
/// Compiled at load by [`crate::Policy::from_json`], so a broken schema is reported with every
/// other problem. With [`crate::config::SchemaCompilation::OnFirstUse`] it is compiled by the
/// first request that needs it instead; if that fails, the request is refused (503) and the
/// problem, with its JSON pointer, goes to the adapter's log.
pub struct RouteSchema {
    /// The schema document, kept until it is compiled.
    source: Value,
    /// The JSON pointer of the schema in the policy file.
    pointer: String,
    compiled: OnceLock<Result<Schema, ConfigError>>,
}

impl std::fmt::Debug for RouteSchema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RouteSchema")
            .field("pointer", &self.pointer)
            .field("compiled", &self.compiled.get().map(Result::is_ok))
            .finish()
    }
}

impl RouteSchema {
    /// Compile `source` now; on failure, the problem with its pointer under `pointer`.
    pub(crate) fn compile_now(source: &Value, pointer: &str) -> Result<RouteSchema, ConfigError> {
        let schema = Self::compile(source, pointer)?;
        Ok(RouteSchema {
            source: Value::Null,
            pointer: pointer.to_owned(),
            compiled: OnceLock::from(Ok(schema)),
        })
    }

    /// Keep `source` to compile on first use.
    pub(crate) fn deferred(source: Value, pointer: &str) -> RouteSchema {
        RouteSchema {
            source,
            pointer: pointer.to_owned(),
            compiled: OnceLock::new(),
        }
    }

    fn compile(source: &Value, at: &str) -> Result<Schema, ConfigError> {
        Schema::compile(source).map_err(|(pointer, why)| ConfigError {
            pointer: format!("{at}{pointer}"),
            kind: ConfigErrorKind::Invalid(why.into()),
        })
    }

    /// The compiled schema, compiling it first if it was deferred. The outcome is kept, so a
    /// broken schema costs one compilation per policy, not one per request.
    pub fn get(&self) -> Result<&Schema, &ConfigError> {
        self.compiled
            .get_or_init(|| Self::compile(&self.source, &self.pointer))
            .as_ref()
    }
}
