//! The key-value store behind `fermyon:spin/key-value` and `wasi:keyvalue`: the `default` store,
//! in memory or in a SQLite file, shared by every instance (each request gets a fresh instance,
//! so this is the only state that outlives a request).
//!
//! The SQLite file uses the table layout of Spin's own default store (`spin_key_value`, columns
//! `store`, `key`, `value`), so the same `--state-dir` works with either host. Counters written
//! by `increment` are 8-byte little-endian integers, as in Spin.
//!
//! Compare-and-swap is real: a swap succeeds only if the stored value (or its absence) still
//! equals what the caller last read. Spin's SQLite store is weaker in one case: when the key was
//! absent at `current()`, its swap is an unconditional upsert, so concurrent creators can all
//! "succeed" there. A component that must be exact on real Spin cannot rely on a CAS that starts
//! from an absent key.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use anyhow::Context;

/// The only store label that exists without a runtime config file.
pub const DEFAULT_STORE: &str = "default";

/// A key-value store. Errors are messages for the guest (`error::other`).
pub trait Backend: Send + Sync {
    /// The value of `key`, if any.
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, String>;
    /// Set `key` to `value`.
    fn set(&self, key: &str, value: &[u8]) -> Result<(), String>;
    /// Remove `key` (no error if absent).
    fn delete(&self, key: &str) -> Result<(), String>;
    /// Every key.
    fn keys(&self) -> Result<Vec<String>, String>;
    /// Atomically: if the stored value equals `expected` (`None` = absent), store `new` and
    /// return true; otherwise change nothing and return false.
    fn compare_and_swap(
        &self,
        key: &str,
        expected: Option<&[u8]>,
        new: &[u8],
    ) -> Result<bool, String>;
    /// Atomically add `delta` to the 8-byte little-endian counter at `key` (absent = 0).
    fn increment(&self, key: &str, delta: i64) -> Result<i64, String>;
}

fn counter(value: Option<&[u8]>) -> Result<i64, String> {
    match value {
        None => Ok(0),
        Some(bytes) => <[u8; 8]>::try_from(bytes)
            .map(i64::from_le_bytes)
            .map_err(|_| {
                format!(
                    "increment: the value is {} bytes, not an 8-byte counter",
                    bytes.len()
                )
            }),
    }
}

/// Open the default store: SQLite in `state_dir/sqlite_key_value.db`, or memory without one.
pub fn open(state_dir: Option<&Path>) -> anyhow::Result<Arc<dyn Backend>> {
    match state_dir {
        None => Ok(Arc::new(Memory::default())),
        Some(dir) => {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            Ok(Arc::new(Sqlite::open(
                &dir.join("sqlite_key_value.db"),
                DEFAULT_STORE,
            )?))
        }
    }
}

/// A map behind a mutex.
#[derive(Debug, Default)]
pub struct Memory {
    map: Mutex<BTreeMap<String, Vec<u8>>>,
}

impl Memory {
    fn map(&self) -> Result<std::sync::MutexGuard<'_, BTreeMap<String, Vec<u8>>>, String> {
        self.map
            .lock()
            .map_err(|_| "key-value store lock poisoned".to_owned())
    }
}

impl Backend for Memory {
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, String> {
        Ok(self.map()?.get(key).cloned())
    }

    fn set(&self, key: &str, value: &[u8]) -> Result<(), String> {
        self.map()?.insert(key.to_owned(), value.to_vec());
        Ok(())
    }

    fn delete(&self, key: &str) -> Result<(), String> {
        self.map()?.remove(key);
        Ok(())
    }

    fn keys(&self) -> Result<Vec<String>, String> {
        Ok(self.map()?.keys().cloned().collect())
    }

    fn compare_and_swap(
        &self,
        key: &str,
        expected: Option<&[u8]>,
        new: &[u8],
    ) -> Result<bool, String> {
        let mut map = self.map()?;
        if map.get(key).map(Vec::as_slice) != expected {
            return Ok(false);
        }
        map.insert(key.to_owned(), new.to_vec());
        Ok(true)
    }

    fn increment(&self, key: &str, delta: i64) -> Result<i64, String> {
        let mut map = self.map()?;
        let value = counter(map.get(key).map(Vec::as_slice))?
            .checked_add(delta)
            .ok_or("increment: overflow")?;
        map.insert(key.to_owned(), value.to_le_bytes().to_vec());
        Ok(value)
    }
}

/// One store (`label`) in a SQLite file, one connection behind a mutex (so every operation,
/// and each compare-and-swap as a whole, is serialised within this process).
pub struct Sqlite {
    conn: Mutex<rusqlite::Connection>,
    label: String,
}

impl Sqlite {
    /// Open (or create) the file and its table.
    pub fn open(path: &Path, label: &str) -> anyhow::Result<Sqlite> {
        let conn = rusqlite::Connection::open(path)
            .with_context(|| format!("opening {}", path.display()))?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS spin_key_value (
               store TEXT NOT NULL,
               key   TEXT NOT NULL,
               value BLOB NOT NULL,
               PRIMARY KEY (store, key)
             );",
        )
        .with_context(|| format!("creating the key-value table in {}", path.display()))?;
        Ok(Sqlite {
            conn: Mutex::new(conn),
            label: label.to_owned(),
        })
    }

    fn with<T>(
        &self,
        f: impl FnOnce(&mut rusqlite::Connection) -> rusqlite::Result<T>,
    ) -> Result<T, String> {
        let mut conn = self
            .conn
            .lock()
            .map_err(|_| "key-value store lock poisoned".to_owned())?;
        f(&mut conn).map_err(|e| format!("sqlite: {e}"))
    }

    fn read(
        conn: &rusqlite::Connection,
        label: &str,
        key: &str,
    ) -> rusqlite::Result<Option<Vec<u8>>> {
        use rusqlite::OptionalExtension;
        conn.prepare_cached("SELECT value FROM spin_key_value WHERE store = ?1 AND key = ?2")?
            .query_row([label, key], |row| row.get(0))
            .optional()
    }

    fn write(
        conn: &rusqlite::Connection,
        label: &str,
        key: &str,
        value: &[u8],
    ) -> rusqlite::Result<()> {
        conn.prepare_cached(
            "INSERT INTO spin_key_value (store, key, value) VALUES (?1, ?2, ?3)
             ON CONFLICT (store, key) DO UPDATE SET value = excluded.value",
        )?
        .execute(rusqlite::params![label, key, value])?;
        Ok(())
    }
}

impl Backend for Sqlite {
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, String> {
        self.with(|c| Self::read(c, &self.label, key))
    }

    fn set(&self, key: &str, value: &[u8]) -> Result<(), String> {
        self.with(|c| Self::write(c, &self.label, key, value))
    }

    fn delete(&self, key: &str) -> Result<(), String> {
        self.with(|c| {
            c.prepare_cached("DELETE FROM spin_key_value WHERE store = ?1 AND key = ?2")?
                .execute([&self.label, key])
                .map(drop)
        })
    }

    fn keys(&self) -> Result<Vec<String>, String> {
        self.with(|c| {
            c.prepare_cached("SELECT key FROM spin_key_value WHERE store = ?1 ORDER BY key")?
                .query_map([&self.label], |row| row.get(0))?
                .collect()
        })
    }

    fn compare_and_swap(
        &self,
        key: &str,
        expected: Option<&[u8]>,
        new: &[u8],
    ) -> Result<bool, String> {
        self.with(|c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            if Self::read(&tx, &self.label, key)?.as_deref() != expected {
                return Ok(false);
            }
            Self::write(&tx, &self.label, key, new)?;
            tx.commit()?;
            Ok(true)
        })
    }

    fn increment(&self, key: &str, delta: i64) -> Result<i64, String> {
        let mut outcome = Ok(0);
        self.with(|c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let current = Self::read(&tx, &self.label, key)?;
            outcome = counter(current.as_deref()).and_then(|v| {
                v.checked_add(delta)
                    .ok_or_else(|| "increment: overflow".to_owned())
            });
            if let Ok(value) = outcome {
                Self::write(&tx, &self.label, key, &value.to_le_bytes())?;
                tx.commit()?;
            }
            Ok(())
        })?;
        outcome
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exercise(store: &dyn Backend) {
        assert_eq!(store.get("a"), Ok(None));
        store.set("a", b"1").expect("set");
        assert_eq!(store.get("a"), Ok(Some(b"1".to_vec())));
        assert_eq!(store.compare_and_swap("a", Some(b"0"), b"2"), Ok(false));
        assert_eq!(store.compare_and_swap("a", None, b"2"), Ok(false));
        assert_eq!(store.compare_and_swap("a", Some(b"1"), b"2"), Ok(true));
        assert_eq!(store.get("a"), Ok(Some(b"2".to_vec())));
        assert_eq!(store.compare_and_swap("new", None, b"x"), Ok(true));
        assert_eq!(store.compare_and_swap("new", None, b"y"), Ok(false));
        assert_eq!(store.increment("n", 5), Ok(5));
        assert_eq!(store.increment("n", -2), Ok(3));
        assert!(store.increment("a", 1).is_err(), "not a counter");
        assert_eq!(store.keys(), Ok(vec!["a".into(), "n".into(), "new".into()]));
        store.delete("a").expect("delete");
        store.delete("a").expect("delete twice");
        assert_eq!(store.get("a"), Ok(None));
    }

    #[test]
    fn memory_store() {
        exercise(&Memory::default());
    }

    #[test]
    fn sqlite_store_persists() {
        let dir = std::env::temp_dir().join(format!("spin-host-kv-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        {
            let store = open(Some(&dir)).expect("open");
            exercise(store.as_ref());
        }
        let store = open(Some(&dir)).expect("reopen");
        assert_eq!(store.get("new"), Ok(Some(b"x".to_vec())));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn concurrent_cas_admits_each_value_once() {
        let store: Arc<dyn Backend> = Arc::new(Memory::default());
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let store = store.clone();
                std::thread::spawn(move || {
                    let mut wins = 0;
                    for _ in 0..200 {
                        loop {
                            let cur = store.get("c").expect("get");
                            let n = counter(cur.as_deref()).expect("counter");
                            let next = (n + 1).to_le_bytes();
                            if store
                                .compare_and_swap("c", cur.as_deref(), &next)
                                .expect("cas")
                            {
                                wins += 1;
                                break;
                            }
                        }
                    }
                    wins
                })
            })
            .collect();
        let wins: i32 = handles.into_iter().map(|h| h.join().expect("thread")).sum();
        assert_eq!(wins, 1600);
        assert_eq!(store.increment("c", 0), Ok(1600));
    }
}
