//! JSON Schemas for bodies and query strings, compiled once when the policy loads.

use serde_json::Value;

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
