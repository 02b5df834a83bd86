//! # portcullis-counters
//!
//! Where `portcullis serve` keeps quota counts. The policy file never says: the store is
//! deployment, chosen with `--counter-store`, so one policy means the same on every runtime.
//!
//! - `memory` (the default): exact within one process, lost on restart.
//! - Redis or Valkey ([`redis_store`]): exact across every gateway that names the same store,
//!   one script call per request, on the server's clock.
//!
//! When the store fails, a quota's `on_store_error` decides, or, where the quota says nothing,
//! `--counter-store-on-error` (fail closed unless the operator chose `allow`).

#![warn(missing_docs)]

pub mod location;
pub mod redis_store;

use std::time::Duration;

use portcullis_core::Verdict;
use portcullis_core::{CounterStore, MemoryStore, OnStoreError, Rate, Spend, StoreError, UnixTime};

pub use location::{Location, LocationError};
pub use redis_store::RedisStore;

/// `serve`'s counter-store options.
#[derive(Debug, Clone, clap::Args)]
pub struct CounterOptions {
    /// Where quota counts live: `memory` (this process only) or a Redis / Valkey every gateway
    /// shares: `redis://HOST:PORT/DB`, `rediss://…` (TLS), `redis+sentinel://HOST:PORT/MASTER`,
    /// `redis+cluster://H1:P1,H2:P2,H3:P3`. See docs/scaling.md.
    #[arg(
        long,
        value_name = "URL",
        env = "PORTCULLIS_COUNTER_STORE",
        default_value = "memory"
    )]
    pub counter_store: String,
    /// Prefix of every key the gateway writes to the store.
    #[arg(long, value_name = "PREFIX", default_value = "portcullis:")]
    pub counter_store_prefix: String,
    /// How long one call to the store may take before the request is treated as a store failure.
    #[arg(long, value_name = "MS", default_value_t = 50, value_parser = clap::value_parser!(u64).range(1..=60_000))]
    pub counter_store_timeout_ms: u64,
    /// What a store failure does to quotas whose policy leaves `on_store_error` out: `deny`
    /// (503, nothing forwarded) or `allow` (the quota is skipped for that request).
    #[arg(long, value_name = "ACTION", default_value = "deny", value_parser = ["deny", "allow"])]
    pub counter_store_on_error: String,
}

impl Default for CounterOptions {
    fn default() -> Self {
        CounterOptions {
            counter_store: "memory".into(),
            counter_store_prefix: "portcullis:".into(),
            counter_store_timeout_ms: 50,
            counter_store_on_error: "deny".into(),
        }
    }
}

/// The store `serve` counts in.
#[derive(Debug)]
pub enum Counters {
    /// This process alone.
    Memory(MemoryStore),
    /// A Redis or Valkey shared by every gateway.
    Redis(Box<RedisStore>),
}

impl Counters {
    /// The store `options` name, announced on stderr (`counter_store`, without any password).
    /// A Redis store is given [`redis_store::WARM_UP`] to answer a first `PING`, so that the
    /// readiness line normally means quotas can be counted; a store that is down by then does not
    /// stop the gateway (requests get `on_store_error` and `/readyz` says why until it answers).
    /// Only a malformed location fails here.
    pub async fn open(options: &CounterOptions) -> Result<Counters, String> {
        let location = Location::parse(&options.counter_store).map_err(|e| e.to_string())?;
        let at = location.describe();
        let note = format!("quota counts in {at}");
        portcullis_host::output::notice(false, "counter_store", &note, &[("store", &at)]);
        if location == Location::Memory {
            return Ok(Counters::Memory(MemoryStore::new()));
        }
        let settings = redis_store::Settings {
            prefix: options.counter_store_prefix.clone(),
            timeout: Duration::from_millis(options.counter_store_timeout_ms),
            on_error: match options.counter_store_on_error.as_str() {
                "allow" => OnStoreError::Allow,
                _ => OnStoreError::Deny,
            },
        };
        let store = RedisStore::open(&location, settings)?;
        if let Err(why) = store.warm_up().await {
            let note = format!("counter store {at} not answering yet: {why}; retrying");
            portcullis_host::output::notice(
                true,
                "counter_store_unavailable",
                &note,
                &[("store", &at)],
            );
        }
        Ok(Counters::Redis(Box::new(store)))
    }

    /// Whether the store can count now, for `/readyz`: memory always can; Redis must answer.
    pub async fn ready(&self) -> Result<(), String> {
        match self {
            Counters::Memory(_) => Ok(()),
            Counters::Redis(store) => store
                .ping()
                .await
                .map_err(|e| format!("counter store: {e}")),
        }
    }
}

impl CounterStore for Counters {
    async fn apply(&self, key: &str, rate: Rate, now: UnixTime) -> Result<Verdict, StoreError> {
        match self {
            Counters::Memory(store) => store.apply_now(key, rate, now),
            Counters::Redis(store) => {
                let spend = Spend {
                    key: portcullis_core::QuotaKey::from_text(key),
                    rate,
                };
                let mut results = store.spend_all(std::slice::from_ref(&spend)).await;
                results.pop().unwrap_or(Err(StoreError::Corrupt))
            }
        }
    }

    async fn peek(&self, key: &str, rate: Rate, now: UnixTime) -> Result<Verdict, StoreError> {
        match self {
            Counters::Memory(store) => store.peek_now(key, rate, now),
            Counters::Redis(store) => {
                let spend = Spend {
                    key: portcullis_core::QuotaKey::from_text(key),
                    rate,
                };
                store.peek(&spend).await
            }
        }
    }

    async fn apply_all(&self, spends: &[Spend], now: UnixTime) -> Vec<Result<Verdict, StoreError>> {
        match self {
            Counters::Memory(store) => store.apply_all_now(spends, now),
            Counters::Redis(store) => store.spend_all(spends).await,
        }
    }

    fn on_error(&self) -> OnStoreError {
        match self {
            Counters::Memory(_) => OnStoreError::Deny,
            Counters::Redis(store) => store.on_error(),
        }
    }
}
