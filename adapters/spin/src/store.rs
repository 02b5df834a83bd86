//! The key-value store: Spin's `default` store, through `wasi:keyvalue@0.2.0-draft2` and its
//! atomics, as the core's [`AtomicStore`]. What the core keeps there, and how it counts and
//! coordinates through it, is `portcullis_core::kv`'s: quota counters, remote key sets, the
//! policy store's memo.

use std::fmt;
use std::sync::Arc;

use portcullis_core::kv::{AtomicStore, Swap};
use spin_sdk::wit::wasi::keyvalue::atomics::{self, Cas, CasError};
use spin_sdk::wit::wasi::keyvalue::store::{self, Bucket};

/// The store every key lives in. It must be listed in the component's `key_value_stores`.
pub const STORE: &str = "default";

/// The store, shared by the request and the gateway's key sets.
#[derive(Debug, Clone)]
pub struct Kv(Arc<Bucket>);

/// The store, or why it could not be opened.
pub fn open() -> Result<Kv, String> {
    store::open(STORE)
        .map(|b| Kv(Arc::new(b)))
        .map_err(|e| KvError(e).to_string())
}

/// A store error, as the operator's log reads it.
#[derive(Debug)]
pub struct KvError(store::Error);

impl fmt::Display for KvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            store::Error::NoSuchStore => {
                write!(
                    f,
                    "no key-value store named {STORE:?} (list it in key_value_stores)"
                )
            }
            store::Error::AccessDenied => write!(f, "access to key-value store {STORE:?} denied"),
            store::Error::Other(why) => write!(f, "key-value store: {why}"),
        }
    }
}

impl AtomicStore for Kv {
    type Cas = Cas;
    type Error = KvError;

    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        self.0.get(key).map_err(KvError)
    }

    fn set(&self, key: &str, value: &[u8]) -> Result<(), KvError> {
        self.0.set(key, value).map_err(KvError)
    }

    fn delete(&self, key: &str) -> Result<(), KvError> {
        self.0.delete(key).map_err(KvError)
    }

    fn keys(&self) -> Result<Vec<String>, KvError> {
        Ok(self.0.list_keys(None).map_err(KvError)?.keys)
    }

    fn create(&self, key: &str) -> Result<(), KvError> {
        atomics::increment(&self.0, key, 0)
            .map(drop)
            .map_err(KvError)
    }

    fn watch(&self, key: &str) -> Result<Cas, KvError> {
        Cas::new(&self.0, key).map_err(KvError)
    }

    fn current(&self, cas: &Cas) -> Result<Option<Vec<u8>>, KvError> {
        cas.current().map_err(KvError)
    }

    fn swap(&self, cas: Cas, value: &[u8]) -> Result<(), Swap<Cas, KvError>> {
        atomics::swap(cas, value).map_err(|e| match e {
            CasError::CasFailed(fresh) => Swap::Changed(fresh),
            CasError::StoreError(e) => Swap::Failed(KvError(e)),
        })
    }
}
