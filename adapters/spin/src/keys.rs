//! Remote key sets (`jwks_url`, `oidc_issuer`) kept in the key-value store, which is all Spin's
//! instances share: [`KvKeySets`] is the core's [`SharedKeySets`] on it.
//!
//! The core does the rest (`portcullis_core::jwks::shared`): a request that needs a fetch reads
//! the stored state first, claims the fetch by compare-and-swap if it still must fetch, and only
//! the claimant fetches; it publishes the result at once, and the other instances, polling the
//! store meanwhile, verify with it. So one fetch serves every concurrent instance and
//! `jwks_min_refresh_interval_s` holds across them. Nothing is written at the end of a request:
//! every write is a compare-and-swap on the text its writer read, so a slow instance cannot put
//! an older state back.
//!
//! States are stored under the core's key-set names, which include a fingerprint of the key
//! source: a policy that points a provider at another IdP never starts from the old IdP's keys.
//!
//! How exact the single flight is depends on the store's compare-and-swap
//! (`wasi:keyvalue/atomics`). Once a state exists, every swap compares against the value read,
//! which Spin's SQLite store (the default) and Redis do exactly. Creating the first state needs
//! more: SQLite's swap on an absent key is a plain upsert, which concurrent creators would all
//! win. So the first write goes through a guard key holding an 8-byte deadline, taken by
//! compare-and-swap, and only its holder creates the state. The guard is made with
//! `increment(key, 0)`, as the quota counters are; never on the state's own key, since
//! `increment` on a value that is not an 8-byte counter fails, and on Spin's SQLite store by
//! panicking in the host.

use std::sync::Arc;
use std::time::Duration;

use portcullis_core::jwks::shared::Pending;
use portcullis_core::{Event, Level, LogSink};
use portcullis_core::{SharedKeySets, SharedStoreError};
use spin_sdk::wit::wasi::keyvalue::atomics::{self, Cas, CasError};
use spin_sdk::wit::wasi::keyvalue::store::{Bucket, Error};
use wasi::clocks::monotonic_clock;

use crate::{io, store};

/// How long the right to create a key set's first state is held. Creating it takes two store
/// calls; a holder that dies only delays the next creator this long.
const CREATE_HOLD: Duration = Duration::from_secs(1);

fn key(name: &str) -> String {
    format!("{}keys:{name}", store::PREFIX)
}

fn guard_key(name: &str) -> String {
    format!("{}keys-create:{name}", store::PREFIX)
}

/// The core's shared key-set store on the component's key-value store.
#[derive(Debug)]
pub struct KvKeySets {
    bucket: Arc<Bucket>,
}

impl KvKeySets {
    /// Key sets in `bucket`.
    pub fn new(bucket: Arc<Bucket>) -> Self {
        KvKeySets { bucket }
    }

    fn get(&self, name: &str) -> Result<Option<String>, SharedStoreError> {
        let value = self.bucket.get(&key(name)).map_err(failed)?;
        // Text that is not UTF-8 is garbage to the core, which replaces it; it must be able to
        // name it to do so.
        Ok(value.map(|bytes| String::from_utf8_lossy(&bytes).into_owned()))
    }

    fn swap(
        &self,
        name: &str,
        expected: Option<&str>,
        text: &str,
    ) -> Result<bool, SharedStoreError> {
        let key = key(name);
        let cas = Cas::new(&self.bucket, &key).map_err(failed)?;
        // Read through the handle: this is the value the swap compares against.
        let current = cas.current().map_err(failed)?;
        let current = current.map(|bytes| String::from_utf8_lossy(&bytes).into_owned());
        match (current.as_deref(), expected) {
            (Some(current), Some(expected)) if current == expected => {}
            (None, None) => return self.create(name, &key, text),
            _ => return Ok(false),
        }
        match atomics::swap(cas, text.as_bytes()) {
            Ok(()) => Ok(true),
            Err(CasError::CasFailed(_)) => Ok(false),
            Err(CasError::StoreError(e)) => Err(failed(e)),
        }
    }

    /// Write the first state under `key`, if this instance wins the guard (see the module docs).
    fn create(&self, name: &str, key: &str, text: &str) -> Result<bool, SharedStoreError> {
        let guard = guard_key(name);
        let mut cas = Cas::new(&self.bucket, &guard).map_err(failed)?;
        let mut current = cas.current().map_err(failed)?;
        if current.is_none() {
            atomics::increment(&self.bucket, &guard, 0).map_err(failed)?;
            cas = Cas::new(&self.bucket, &guard).map_err(failed)?;
            current = cas.current().map_err(failed)?;
        }
        // An 8-byte deadline, or Redis's "0" from `increment`: no deadline.
        let held_until = current
            .and_then(|bytes| <[u8; 8]>::try_from(bytes).ok())
            .map_or(0, u64::from_le_bytes);
        let now = crate::now();
        if held_until > now.as_micros() {
            return Ok(false);
        }
        let until = now.saturating_add(CREATE_HOLD).as_micros();
        match atomics::swap(cas, &until.to_le_bytes()) {
            Ok(()) => {}
            Err(CasError::CasFailed(_)) => return Ok(false),
            Err(CasError::StoreError(e)) => return Err(failed(e)),
        }
        if self.bucket.get(key).map_err(failed)?.is_some() {
            return Ok(false);
        }
        self.bucket.set(key, text.as_bytes()).map_err(failed)?;
        Ok(true)
    }
}

impl SharedKeySets for KvKeySets {
    fn read<'a>(&'a self, name: &'a str) -> Pending<'a, Result<Option<String>, SharedStoreError>> {
        Box::pin(std::future::ready(self.get(name)))
    }

    fn replace<'a>(
        &'a self,
        name: &'a str,
        expected: Option<&'a str>,
        text: &'a str,
    ) -> Pending<'a, Result<bool, SharedStoreError>> {
        Box::pin(std::future::ready(self.swap(name, expected, text)))
    }

    fn pause(&self, step: Duration) -> Pending<'_, Duration> {
        Box::pin(async move {
            let started = monotonic_clock::now();
            io::sleep(step).await;
            Duration::from_nanos(monotonic_clock::now().saturating_sub(started))
        })
    }

    fn warn(&self, name: &str, why: &str) {
        let event = Event::new(crate::now(), Level::Warn, why).with("provider", provider(name));
        crate::Stdio.event(&event);
    }
}

fn failed(e: Error) -> SharedStoreError {
    SharedStoreError::new(store::describe(&e))
}

/// The provider's name from a key-set name (`{provider}:{fingerprint}`).
fn provider(name: &str) -> &str {
    name.rsplit_once(':').map_or(name, |(p, _)| p)
}
