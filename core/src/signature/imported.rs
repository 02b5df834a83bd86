//! Keys imported into a crypto library, kept for the next check: importing parses and validates
//! a key every time (WebCrypto's `importKey`), and a key set's few keys verify every token.

use std::collections::HashMap;

use super::scheme::PublicKey;
use crate::jwt::Algorithm;

/// Imported keys by the algorithm they were imported for and the whole public key
/// ([`PublicKey::id`]), at most a fixed number, the least recently used evicted first.
#[derive(Debug)]
pub struct ImportedKeys<K> {
    entries: HashMap<Vec<u8>, (K, u64)>,
    capacity: usize,
    clock: u64,
}

impl<K: Clone> ImportedKeys<K> {
    /// An empty cache for at most `capacity` keys (at least one).
    pub fn new(capacity: usize) -> Self {
        ImportedKeys {
            entries: HashMap::new(),
            capacity: capacity.max(1),
            clock: 0,
        }
    }

    /// The key imported for `alg` from `public`, if kept.
    pub fn get(&mut self, alg: Algorithm, public: &PublicKey) -> Option<K> {
        self.clock += 1;
        let (key, used) = self.entries.get_mut(&public.id(alg))?;
        *used = self.clock;
        Some(key.clone())
    }

    /// Keep `key`, imported for `alg` from `public`, evicting the least recently used key if
    /// the cache is full.
    pub fn insert(&mut self, alg: Algorithm, public: &PublicKey, key: K) {
        self.clock += 1;
        let id = public.id(alg);
        if self.entries.len() >= self.capacity && !self.entries.contains_key(&id) {
            let oldest = self
                .entries
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(id, _)| id.clone());
            if let Some(oldest) = oldest {
                self.entries.remove(&oldest);
            }
        }
        self.entries.insert(id, (key, self.clock));
    }

    /// How many keys are kept.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> PublicKey {
        PublicKey::Ed25519([byte; 32])
    }

    #[test]
    fn keys_are_kept_per_algorithm_and_the_least_recently_used_goes_first() {
        let mut cache = ImportedKeys::new(2);
        assert!(cache.is_empty());
        cache.insert(Algorithm::EdDSA, &key(1), "one");
        cache.insert(Algorithm::EdDSA, &key(2), "two");
        assert_eq!(cache.get(Algorithm::EdDSA, &key(1)), Some("one"));
        assert_eq!(cache.get(Algorithm::RS256, &key(1)), None);
        // Two was used longest ago.
        cache.insert(Algorithm::EdDSA, &key(3), "three");
        assert_eq!(cache.len(), 2);
        assert_eq!(cache.get(Algorithm::EdDSA, &key(2)), None);
        assert_eq!(cache.get(Algorithm::EdDSA, &key(1)), Some("one"));
        // Replacing a kept key evicts nothing.
        cache.insert(Algorithm::EdDSA, &key(3), "three again");
        assert_eq!(cache.get(Algorithm::EdDSA, &key(1)), Some("one"));
        assert_eq!(cache.get(Algorithm::EdDSA, &key(3)), Some("three again"));
    }
}
