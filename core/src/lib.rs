//! # portcullis-core
//!
//! Every decision Portcullis makes, and nothing else: no sockets, no clock, no runtime. The same
//! crate runs natively, in a Cloudflare Worker (`wasm32-unknown-unknown`) and in a Spin component
//! (`wasm32-wasip2`), so one policy file means the same everywhere.
//!
//! ## Calling protocol
//!
//! 1. The policy: a [`PolicyStore`] takes whatever the runtime read from its source (a file,
//!    KV) and says which [`Gateway`] is live: first load, reload after `config_ttl_s`, the last
//!    good policy kept when a new one is invalid, and the key-set fetch a fresh policy needs
//!    before its first request. [`Policy::from_json`] compiles a text once: every reference
//!    resolves and every schema and key parses, or every problem comes back with its pointer.
//! 2. Per request, the adapter supplies the facts the core cannot know — the clock, a request id,
//!    the peer address ([`RequestContext`]; the client's is found from it, see [`client_ip`]) —
//!    the body as a [`RequestBody`], its
//!    [`CounterStore`] and [`Fetch`], and calls [`Gateway::exchange`].
//! 3. It carries out the [`Step`]: write the [`Answer`], or send the [`Outbound`] request and
//!    hand what the origin did to [`Pending::finish`], which says what to relay.
//! 4. It hands the [`Record`] (the access line and operator events) to its [`LogSink`].
//!
//! The phases, in the order they run, are documented on [`decision`]; each lives in its own
//! module named for what it decides.

#![warn(missing_docs)]

pub mod analytics;
pub mod api_key;
pub mod authn;
pub mod authz;
pub mod body;
pub mod client_ip;
pub mod config;
pub mod context;
pub mod cors;
pub mod decision;
pub mod event;
pub mod exchange;
pub mod fault;
pub mod fetch;
pub mod forward;
#[cfg(feature = "fuzzing")]
pub mod fuzz;
#[cfg(test)]
mod generated_docs;
pub mod ip_rules;
mod json;
pub mod jwks;
pub mod jwt;
pub mod key_upkeep;
pub mod kv;
pub mod lockout;
pub mod log;
pub mod message;
pub mod networks;
pub mod origin;
pub mod origin_signing;
pub mod path;
pub mod policy_report;
pub mod policy_store;
pub mod policy_version;
pub mod problem;
pub mod query;
pub mod quota;
pub mod ratelimit;
pub mod request_id;
pub mod route;
pub mod schema;
pub mod signature;
#[cfg(feature = "testing")]
pub mod testing;
pub mod time;
pub mod token_cache;

pub use body::{BodyError, RequestBody};
pub use config::{
    Capabilities, ConfigError, ConfigErrorKind, ConfigErrors, ConfigWarning, NoSecrets,
    OnStoreError, OriginTls, Policy, SchemaCompilation, Secrets,
};
pub use context::RequestContext;
pub use decision::{Decision, Gateway, LogFacts, Outcome};
pub use event::{Event, Kind, Level, LogSink};
pub use exchange::{Answer, OriginResult, Outbound, Pending, Record, Relay, Step};
pub use fetch::{Fetch, FetchError, FetchResponse, NoFetch};
pub use forward::{Forward, ForwardBody};
pub use json::parse_strict as parse_json_strict;
pub use jwks::shared::{SharedKeySets, SharedStoreError};
pub use jwks::KeySetState;
pub use policy_store::{PolicyRead, PolicyStore};
pub use policy_version::PolicyVersion;
pub use problem::{FieldError, ProblemType, Reason, Reject, RejectKind};
pub use quota::{CounterStore, MemoryStore, QuotaKey, Rate, Spend, State, StoreError, Verdict};
pub use time::{Clock, FixedClock, UnixTime};
