//! The policy, read from the key-value store on every request.
//!
//! Spin gives every request a fresh instance, so nothing compiled survives in memory. To keep
//! each request's start-up small, a policy text is validated in full (every JSON Schema compiled)
//! only the first time it is seen: its SHA-256 is then recorded in the store, and later requests
//! compile only the schemas of the route they match ([`SchemaCompilation::OnFirstUse`]). Should a
//! schema fail anyway (a build with a different validator), that request gets 503, the record is
//! dropped, and the next request validates in full again, refusing the policy as a whole.
//!
//! A value that does not parse or validate, a missing key and an unreadable store all mean
//! 503 `no-policy` for every request, with each problem logged to stderr with its JSON pointer.

use portcullis_core::{Gateway, Policy, SchemaCompilation, Secrets};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use spin_sdk::wit::wasi::keyvalue::store::Bucket;

use crate::store;

/// The store key read when the Spin variable [`KEY_VARIABLE`] is not set.
pub const DEFAULT_KEY: &str = "config";
/// The Spin variable that names the policy's store key.
pub const KEY_VARIABLE: &str = "config_key";
/// Where the digest of the last fully validated policy is recorded.
const CHECKED_KEY: &str = "portcullis:policy-checked";
/// Which build validated it: a different build validates again.
const BUILD: &str = concat!(env!("CARGO_PKG_NAME"), " ", env!("CARGO_PKG_VERSION"));

/// Why there is no policy to decide with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoadError {
    /// The store could not be opened or read.
    Store(String),
    /// The key holds nothing.
    Missing(String),
    /// The text did not parse or validate: every problem, with its JSON pointer.
    Invalid(Vec<String>),
}

/// The record of a fully validated policy text.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
struct Checked {
    sha256: String,
    by: String,
}

/// Read the policy from `bucket` and compile it.
pub fn load(bucket: &Bucket) -> Result<Gateway, LoadError> {
    let key = spin_sdk::variables::get(KEY_VARIABLE).unwrap_or_else(|_| DEFAULT_KEY.to_owned());
    let bytes = bucket
        .get(&key)
        .map_err(|e| LoadError::Store(format!("reading key {key:?}: {}", store::describe(&e))))?
        .ok_or_else(|| {
            LoadError::Missing(format!("key {key:?} in store {:?} is empty", store::STORE))
        })?;
    let text = String::from_utf8(bytes).map_err(|_| {
        LoadError::Invalid(vec![format!(
            "(document): key {key:?} does not hold UTF-8 text"
        )])
    })?;
    let this = Checked {
        sha256: hex::encode(Sha256::digest(text.as_bytes())),
        by: BUILD.to_owned(),
    };
    let checked = bucket
        .get(CHECKED_KEY)
        .ok()
        .flatten()
        .and_then(|b| serde_json::from_slice::<Checked>(&b).ok())
        .is_some_and(|c| c == this);
    let schemas = if checked {
        SchemaCompilation::OnFirstUse
    } else {
        SchemaCompilation::AtLoad
    };
    let policy = Policy::from_json_with(&text, &SpinVariables, schemas)
        .map_err(|errors| LoadError::Invalid(errors.0.iter().map(|e| e.to_string()).collect()))?;
    if !checked {
        if let Ok(record) = serde_json::to_vec(&this) {
            if let Err(e) = bucket.set(CHECKED_KEY, &record) {
                // Only costs the next request a full validation.
                crate::event(
                    "warn",
                    &[],
                    &format!(
                        "recording the validated policy failed: {}",
                        store::describe(&e)
                    ),
                );
            }
        }
    }
    Ok(Gateway::new(policy))
}

/// Drop the record that the current policy was validated, after one of its schemas failed on
/// first use: the next request validates in full and refuses the policy with every problem.
pub fn forget_check(bucket: &Bucket) {
    let _ = bucket.delete(CHECKED_KEY);
}

/// `secret_env` names as Spin variables: `"secret_env": "HS_SECRET"` reads variable `hs_secret`
/// (Spin variable names are lower case). The component must map each one in `spin.toml`.
pub struct SpinVariables;

impl Secrets for SpinVariables {
    fn get(&self, name: &str) -> Option<String> {
        spin_sdk::variables::get(&name.to_ascii_lowercase()).ok()
    }
}
