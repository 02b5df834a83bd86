//! Remote key sets (`jwks_url`, `oidc_issuer`) kept in an [`AtomicStore`], which is all the
//! instances share: [`KvKeySets`] is the core's [`SharedKeySets`] on it.
//!
//! [`crate::jwks::shared`] does the rest: a request that needs a fetch reads the stored state
//! first, claims the fetch by compare-and-swap if it still must fetch, and only the claimant
//! fetches; it publishes the result at once, and the other instances, polling the store
//! meanwhile, verify with it. So one fetch serves every concurrent instance and
//! `jwks_min_refresh_interval_s` holds across them. Nothing is written at the end of a request:
//! every write is a compare-and-swap on the text its writer read, so a slow instance cannot put
//! an older state back.
//!
//! States are stored under the core's key-set names, which include a fingerprint of the key
//! source: a policy that points a provider at another IdP never starts from the old IdP's keys.
//!
//! How exact the single flight is depends on the store's compare-and-swap. Once a state exists,
//! every swap compares against the value read, which Spin's SQLite store (the default) and Redis
//! do exactly. Creating the first state needs more (see [`super`]): so the first write goes
//! through a guard key holding an 8-byte deadline, taken by compare-and-swap, and only its holder
//! creates the state. The guard is made with [`AtomicStore::create`], as the quota counters are;
//! never on the state's own key, since an increment on a value that is not an 8-byte counter
//! fails, and on Spin's SQLite store by panicking in the host.

use std::fmt;
use std::time::Duration;

use super::{decode_u64, encode_u64, AtomicStore, Swap, PREFIX};
use crate::event::{Event, Kind, Level, LogSink};
use crate::jwks::shared::{Pending, SharedKeySets, SharedStoreError};
use crate::time::Clock;

/// How long the right to create a key set's first state is held. Creating it takes two store
/// calls; a holder that dies only delays the next creator this long.
pub const CREATE_HOLD: Duration = Duration::from_secs(1);

/// What the key sets need from the instance besides the store: its wall clock (for the create
/// guard's deadline and the events), its log (for warnings), and its own timer.
pub trait Instance: Clock + LogSink + Send + Sync + fmt::Debug {
    /// Sleep about `step` on the calling request's own timer, and return how long it actually
    /// slept (see [`SharedKeySets::pause`]).
    fn pause(&self, step: Duration) -> Pending<'_, Duration>;
}

fn key(name: &str) -> String {
    format!("{PREFIX}keys:{name}")
}

fn guard_key(name: &str) -> String {
    format!("{PREFIX}keys-create:{name}")
}

/// The core's shared key-set store on an [`AtomicStore`].
#[derive(Debug)]
pub struct KvKeySets<S, I> {
    store: S,
    instance: I,
}

impl<S: AtomicStore, I: Instance> KvKeySets<S, I> {
    /// Key sets in `store`, for requests running in `instance`.
    pub fn new(store: S, instance: I) -> Self {
        KvKeySets { store, instance }
    }

    fn get(&self, name: &str) -> Result<Option<String>, SharedStoreError> {
        let value = self.store.get(&key(name)).map_err(failed)?;
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
        let cas = self.store.watch(&key).map_err(failed)?;
        // Read through the handle: this is the value the swap compares against.
        let current = self.store.current(&cas).map_err(failed)?;
        let current = current.map(|bytes| String::from_utf8_lossy(&bytes).into_owned());
        match (current.as_deref(), expected) {
            (Some(current), Some(expected)) if current == expected => {}
            (None, None) => return self.create(name, &key, text),
            _ => return Ok(false),
        }
        swapped(self.store.swap(cas, text.as_bytes()))
    }

    /// Write the first state under `key`, if this instance wins the guard (see the module docs).
    fn create(&self, name: &str, key: &str, text: &str) -> Result<bool, SharedStoreError> {
        let store = &self.store;
        let guard = guard_key(name);
        let mut cas = store.watch(&guard).map_err(failed)?;
        let mut current = store.current(&cas).map_err(failed)?;
        if current.is_none() {
            store.create(&guard).map_err(failed)?;
            cas = store.watch(&guard).map_err(failed)?;
            current = store.current(&cas).map_err(failed)?;
        }
        // An 8-byte deadline, or Redis's "0" from the increment: no deadline.
        let held_until = current.as_deref().and_then(decode_u64).unwrap_or(0);
        let now = self.instance.now();
        if held_until > now.as_micros() {
            return Ok(false);
        }
        let until = now.saturating_add(CREATE_HOLD).as_micros();
        if !swapped(store.swap(cas, &encode_u64(until)))? {
            return Ok(false);
        }
        if store.get(key).map_err(failed)?.is_some() {
            return Ok(false);
        }
        store.set(key, text.as_bytes()).map_err(failed)?;
        Ok(true)
    }
}

impl<S, I> SharedKeySets for KvKeySets<S, I>
where
    S: AtomicStore + Send + Sync + fmt::Debug,
    I: Instance,
{
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
        self.instance.pause(step)
    }

    fn warn(&self, name: &str, why: &str) {
        let event = Event::new(
            self.instance.now(),
            Level::Warn,
            Kind::KeySetStoreFailed,
            why,
        )
        .with("provider", provider(name));
        self.instance.event(&event);
    }
}

/// Whether a swap stored its value: a changed key is `false`, a failed store an error.
fn swapped<C, E: fmt::Display>(result: Result<(), Swap<C, E>>) -> Result<bool, SharedStoreError> {
    match result {
        Ok(()) => Ok(true),
        Err(Swap::Changed(_)) => Ok(false),
        Err(Swap::Failed(e)) => Err(failed(e)),
    }
}

fn failed(e: impl fmt::Display) -> SharedStoreError {
    SharedStoreError::new(e.to_string())
}

/// The provider's name from a key-set name (`{provider}:{fingerprint}`).
fn provider(name: &str) -> &str {
    name.rsplit_once(':').map_or(name, |(p, _)| p)
}
