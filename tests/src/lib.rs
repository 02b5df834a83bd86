//! The Portcullis conformance suite: vectors as data (`tests/vectors/*.json`) and one runner that
//! talks to a gateway only over HTTP, so the same vectors run against every adapter.
//!
//! - [`vector`]: the file format.
//! - [`origin`]: the recording origin the gateway forwards to.
//! - [`client`]: a raw HTTP/1.1 client that sends request targets byte-exact.
//! - [`target`]: how a gateway is started for a config ([`target::NativeTarget`] for the binary).
//! - [`runner`]: placeholders, comparison and reports.
//! - [`idp`]: the test identity provider (JWKS, OIDC discovery) that scenarios switch.
//! - [`jose`]: test keys and token signing, used by the `mint` binary.
//!
//! Typical use (see `tests/native.rs`):
//!
//! ```no_run
//! use portcullis_conformance::{runner, target, vector};
//! let bin = target::locate_native_binary()?;
//! let mut native = target::NativeTarget::new(bin)?;
//! let files = vector::vector_files(&portcullis_conformance::vectors_dir())?;
//! let reports = runner::run_files(&mut native, &files, &runner::XFail::none(), "127.0.0.1:0")?;
//! # Ok::<(), anyhow::Error>(())
//! ```

pub mod client;
pub mod client_h2;
pub mod idp;
pub mod jose;
pub mod latency;
pub mod origin;
pub mod runner;
pub mod target;
pub mod target_spin;
pub mod target_workers;
pub mod vector;

use std::path::PathBuf;

/// This crate's directory (`tests/`).
pub fn suite_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `tests/vectors/`.
pub fn vectors_dir() -> PathBuf {
    suite_dir().join("vectors")
}
