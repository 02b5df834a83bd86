//! The key-value store: Spin's `default` store, through `wasi:keyvalue@0.2.0-draft2`.
//!
//! What Portcullis keeps there, besides the policy under `config` (or the key named by the Spin
//! variable `config_key`):
//!
//! | key | value |
//! | --- | --- |
//! | `portcullis:policy-checked` | the SHA-256 of the policy text last validated in full, and by which build |
//! | `portcullis:keys:{provider}:{source}` | a remote key set's state (JSON), see [`crate::keys`] |
//! | `portcullis:keys-create:{provider}:{source}` | until when one instance alone may write that state's first value, see [`crate::keys`] |
//! | `portcullis:quota:{quota}\|{by}\|{subject digest}` | one quota key's GCRA state, see [`crate::quota`] |
//! | `portcullis:quota-sweep` | when the next sweep of expired quota keys may run |

use spin_sdk::wit::wasi::keyvalue::store::{self, Bucket};

/// The store every key lives in. It must be listed in the component's `key_value_stores`.
pub const STORE: &str = "default";

/// Prefix of every key Portcullis writes, so they never collide with the policy key or yours.
pub const PREFIX: &str = "portcullis:";

/// The store, or why it could not be opened.
pub fn open() -> Result<Bucket, String> {
    store::open(STORE).map_err(|e| describe(&e))
}

/// A store error as text for the operator's log.
pub fn describe(e: &store::Error) -> String {
    match e {
        store::Error::NoSuchStore => {
            format!("no key-value store named {STORE:?} (list it in key_value_stores)")
        }
        store::Error::AccessDenied => format!("access to key-value store {STORE:?} denied"),
        store::Error::Other(why) => format!("key-value store: {why}"),
    }
}
