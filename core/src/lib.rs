//! # portcullis-core
//!
//! Every decision Portcullis makes, and nothing else: no sockets, no clock, no runtime. The same
//! crate runs natively, in a Cloudflare Worker (`wasm32-unknown-unknown`) and in a Spin component
//! (`wasm32-wasip2`), so one policy file means the same everywhere.
//!
//! ## Calling protocol
//!
//! 1. At start-up (or when the policy changes), compile the policy file once:
//!    [`Policy::from_json`] either returns a policy in which every reference resolves and every
//!    schema and key parses, or every problem with its JSON pointer. Wrap it in a [`Gateway`].
//! 2. Per request, the adapter supplies the facts the core cannot know — the clock, a request id,
//!    the client address ([`RequestContext`]) — the body as a [`RequestBody`] and its
//!    [`CounterStore`], and calls [`Gateway::decide`].
//! 3. It carries out the [`Decision`]: send [`Forward::request`] to the origin (relaying the
//!    response after [`forward::prepare_response`]), or answer with [`Reject::to_response`].
//! 4. It writes one [`log::LogLine`].
//!
//! The phases, in the order they run, are documented on [`decision`]; each lives in its own
//! module named for what it decides.

#![warn(missing_docs)]

pub mod api_key;
pub mod authn;
pub mod authz;
pub mod body;
pub mod config;
pub mod cors;
pub mod decision;
pub mod fetch;
pub mod forward;
mod json;
pub mod jwks;
pub mod jwt;
pub mod log;
pub mod path;
pub mod problem;
pub mod quota;
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
    ConfigError, ConfigErrorKind, ConfigErrors, NoSecrets, Policy, SchemaCompilation, Secrets,
};
pub use decision::{Decision, Gateway, LogFacts, Outcome, RequestContext};
pub use fetch::{Fetch, FetchError, FetchResponse, NoFetch};
pub use forward::{Forward, ForwardBody};
pub use json::parse_strict as parse_json_strict;
pub use jwks::shared::{SharedKeySets, SharedStoreError};
pub use jwks::KeySetState;
pub use problem::{FieldError, Reject, RejectKind};
pub use quota::{CounterStore, MemoryStore, Rate, State, StoreError, Verdict};
pub use time::UnixTime;
