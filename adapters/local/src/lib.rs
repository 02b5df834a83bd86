//! # portcullis
//!
//! The native adapter: it runs the core's decisions on tokio and hyper. Everything here is glue
//! (sockets, clocks, randomness, the connection pool, the log stream); every decision about a
//! request (routing, authentication, validation, quotas, which headers pass) is made by
//! [`portcullis_core`], so the native gateway and the wasm ones behave the same.

#![warn(missing_docs)]

pub mod body;
pub mod cli;
pub mod context;
pub mod demo;
pub mod echo;
pub mod fault;
pub mod fetch;
pub mod keys;
pub mod log;
pub mod policy_file;
pub mod serve;
pub mod signature;

pub use portcullis_host::connections;
