//! What the core keeps in a key-value store with compare-and-swap, for runtimes whose instances
//! share nothing else (Spin, where every request runs in a fresh instance): quota counters
//! ([`counters`]), remote key sets ([`key_sets`]) and the policy with its store's memo
//! ([`policy`]).
//!
//! The adapter only implements [`AtomicStore`] on its store (on Spin, `wasi:keyvalue` with its
//! atomics); every algorithm over it (the compare-and-swap loops, creating a key exactly once,
//! sweeping expired state) lives here, so each runtime that has such a store counts and
//! coordinates the same way. What is kept, all under [`PREFIX`] so that nothing collides with the
//! operator's own keys:
//!
//! | key | value |
//! | --- | --- |
//! | the policy key (the operator's) | the policy text, read by [`policy::apply`] |
//! | `portcullis:policy-checked` | the SHA-256 of the policy text last validated in full, of the one last refused (with its problems' digest and when), and by which build ([`policy::MEMO_KEY`]) |
//! | `portcullis:keys:{provider}:{source}` | a remote key set's state (JSON), see [`key_sets`] |
//! | `portcullis:keys-create:{provider}:{source}` | until when one instance alone may write that state's first value, see [`key_sets`] |
//! | `portcullis:quota:{quota}\|{by}\|{subject digest}` | one quota key's GCRA state, see [`counters`] |
//! | `portcullis:quota-sweep` | when the next sweep of expired quota keys may run |
//!
//! ## Creating a key exactly once
//!
//! Stores differ on a swap on a key that holds nothing: Spin's SQLite store turns it into a plain
//! upsert, which two instances could both win. So a key is first created with
//! [`AtomicStore::create`] (an increment by zero: atomic everywhere, and it leaves an existing
//! value as it is), and the swap then compares against that. With that, counting and claiming
//! are exact on Spin's SQLite store and on Redis (`WATCH`/`MULTI`); other backends give whatever
//! their compare-and-swap promises.

use std::fmt;

pub mod counters;
pub mod key_sets;
pub mod policy;

/// Prefix of every key the core writes, so they never collide with the policy key or yours.
pub const PREFIX: &str = "portcullis:";

/// A key-value store with compare-and-swap, as `wasi:keyvalue/atomics@0.2.0-draft2` offers it.
/// Calls are synchronous, as they are in WASI 0.2: the host's store timeouts apply.
pub trait AtomicStore {
    /// A compare-and-swap handle on one key: what the key held when it was watched.
    type Cas;
    /// Why a call failed, as the operator should read it.
    type Error: fmt::Display;

    /// The value under `key`, if any.
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, Self::Error>;
    /// Store `value` under `key`, whatever it held.
    fn set(&self, key: &str, value: &[u8]) -> Result<(), Self::Error>;
    /// Remove `key` (nothing to remove is no error).
    fn delete(&self, key: &str) -> Result<(), Self::Error>;
    /// The keys in the store.
    fn keys(&self) -> Result<Vec<String>, Self::Error>;
    /// Create `key` as a counter at zero (8 bytes, little-endian, or the store's own form) if it
    /// holds nothing, atomically, and leave an existing value as it is: an increment by zero.
    /// On a value that is not a counter it fails (or worse: never call it on one).
    fn create(&self, key: &str) -> Result<(), Self::Error>;
    /// A handle on `key` for a later [`AtomicStore::swap`].
    fn watch(&self, key: &str) -> Result<Self::Cas, Self::Error>;
    /// What `cas` saw: the value the swap compares against.
    fn current(&self, cas: &Self::Cas) -> Result<Option<Vec<u8>>, Self::Error>;
    /// Store `value` if the key still holds what `cas` saw.
    fn swap(&self, cas: Self::Cas, value: &[u8]) -> Result<(), Swap<Self::Cas, Self::Error>>;
}

/// Why an [`AtomicStore::swap`] stored nothing.
#[derive(Debug)]
pub enum Swap<C, E> {
    /// The key changed since it was watched; the handle sees its new value.
    Changed(C),
    /// The store failed.
    Failed(E),
}

/// An instant or counter as stored: 8 bytes, little-endian, the width an increment uses.
fn encode_u64(value: u64) -> [u8; 8] {
    value.to_le_bytes()
}

/// A stored instant or counter; anything that is not 8 bytes (such as Redis's `"0"` from an
/// increment) is none.
fn decode_u64(bytes: &[u8]) -> Option<u64> {
    Some(u64::from_le_bytes(bytes.try_into().ok()?))
}

#[cfg(test)]
mod tests;
