//! # portcullis-host
//!
//! What workerd and the Spin runtime are to the edge adapters, for `portcullis serve`: a small
//! HTTP/1 and HTTP/2 (over TLS) host that accepts connections, holds them within limits (header timeout, connection
//! cap, open-file limit), spreads them over one single-threaded loop per core, shuts down
//! gracefully on SIGINT/SIGTERM, says when to reload the policy (SIGHUP, a watched file), and relays origin bodies under a stall watch. It knows nothing
//! of policy: every request is handed to a [`Handler`], which for Portcullis is the native
//! adapter's glue around the core.

#![warn(missing_docs)]

pub mod admin;
pub mod connections;
pub mod listen;
pub mod options;
pub mod output;
pub mod relay_body;
pub mod reload;
pub mod serve;
pub mod signals;
pub mod tls;

pub use connections::{Connections, Settings};
pub use serve::{run, run_per_core, Handler};
pub use signals::Signals;
