//! The logs: one JSON line per request on standard output, and one JSON line per operator event
//! (a key-set refresh, a warning raised while deciding) on standard error.

use std::cell::RefCell;
use std::io::Write;

use portcullis_core::jwks::KeyEvent;
use portcullis_core::log::LogLine;
use serde_json::{json, Map, Value};

use crate::context;

/// Write `line` and a newline to standard output.
///
/// Lines are written whole (one write per line, or per batch of whole lines, under the lock), so
/// lines from concurrent requests never interleave. On a thread that called [`batch_this_thread`]
/// (the serving threads), lines are collected and written together once the thread's current
/// event-loop turn is over, so a line reaches a log shipper (or a test) within that turn rather
/// than at once; elsewhere each line is written and flushed at once. A failed write (a closed
/// pipe) is dropped rather than failing the request: the client's answer matters more.
pub fn emit(line: &LogLine<'_>) {
    let mut text = line.to_json();
    text.push('\n');
    let batched = BATCH.with_borrow_mut(|batch| {
        let Some(batch) = batch else {
            return false;
        };
        batch.text.extend_from_slice(text.as_bytes());
        if batch.text.len() >= BATCH_BYTES {
            write_out(&mut batch.text);
        } else if !batch.flush_scheduled {
            batch.flush_scheduled = true;
            tokio::task::spawn_local(async {
                tokio::task::yield_now().await;
                flush_this_thread();
            });
        }
        true
    });
    if !batched {
        write_out(&mut text.into_bytes());
    }
}

/// A batch is written as soon as it holds this much, whatever the turn.
const BATCH_BYTES: usize = 32 * 1024;

/// Log lines collected on one serving thread.
struct Batch {
    text: Vec<u8>,
    flush_scheduled: bool,
}

thread_local! {
    static BATCH: RefCell<Option<Batch>> = const { RefCell::new(None) };
}

/// Collect this thread's log lines and write them once per event-loop turn: one system call
/// (and one acquisition of the stdout lock that every serving thread shares) per batch instead of
/// per request. Must be called inside a `tokio::task::LocalSet`, which the flush is spawned on;
/// call [`unbatch_this_thread`] when the thread stops serving.
pub fn batch_this_thread() {
    BATCH.with_borrow_mut(|batch| {
        batch.get_or_insert_with(|| Batch {
            text: Vec::with_capacity(BATCH_BYTES),
            flush_scheduled: false,
        });
    });
}

/// Write whatever this thread has collected.
pub fn flush_this_thread() {
    BATCH.with_borrow_mut(|batch| {
        if let Some(batch) = batch {
            batch.flush_scheduled = false;
            write_out(&mut batch.text);
        }
    });
}

/// Write whatever this thread has collected and go back to writing each line at once.
pub fn unbatch_this_thread() {
    if let Some(mut batch) = BATCH.take() {
        write_out(&mut batch.text);
    }
}

fn write_out(text: &mut Vec<u8>) {
    if text.is_empty() {
        return;
    }
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text);
    let _ = out.flush();
    text.clear();
}

/// How much an operator event matters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// Routine: a key set was refreshed.
    Info,
    /// Needs attention: a refresh failed, a key was skipped.
    Warn,
}

impl Level {
    fn as_str(self) -> &'static str {
        match self {
            Level::Info => "info",
            Level::Warn => "warn",
        }
    }

    /// The level of a key-set event: only a successful refresh is routine.
    pub fn of(event: &KeyEvent) -> Level {
        match event {
            KeyEvent::Refreshed { .. } => Level::Info,
            KeyEvent::RefreshFailed { .. } | KeyEvent::SkippedKey { .. } => Level::Warn,
        }
    }
}

/// The JSON line for an operator event: `time`, `level`, the given context fields, `event`.
pub fn event_line(level: Level, fields: &[(&str, &str)], event: &str) -> String {
    let mut line = Map::new();
    line.insert("time".into(), json!(context::now().to_rfc3339()));
    line.insert("level".into(), json!(level.as_str()));
    for (name, value) in fields {
        line.insert((*name).into(), json!(value));
    }
    line.insert("event".into(), json!(event));
    Value::Object(line).to_string()
}

/// Write an operator event to stderr, as one line in one locked write.
pub fn event(level: Level, fields: &[(&str, &str)], event: &str) {
    let mut text = event_line(level, fields, event);
    text.push('\n');
    let mut err = std::io::stderr().lock();
    let _ = err.write_all(text.as_bytes());
    let _ = err.flush();
}

/// Log what happened to provider `provider`'s key set.
pub fn key_event(provider: &str, key_event: &KeyEvent) {
    event(
        Level::of(key_event),
        &[("provider", provider)],
        &key_event.to_string(),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_line_is_one_json_object_with_every_field() {
        let line = event_line(
            Level::Warn,
            &[("provider", "idp \"main\"")],
            "key set refresh failed, keeping the last good set: timed out",
        );
        assert!(!line.contains('\n'));
        let value: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert_eq!(value["level"], "warn");
        assert_eq!(value["provider"], "idp \"main\"");
        assert!(
            value["time"].as_str().is_some_and(|t| t.ends_with('Z')),
            "{line}"
        );
        assert!(value["event"]
            .as_str()
            .is_some_and(|e| e.starts_with("key set refresh failed")));
    }

    #[test]
    fn only_a_refresh_is_routine() {
        assert_eq!(Level::of(&KeyEvent::Refreshed { keys: 2 }), Level::Info);
        assert_eq!(
            Level::of(&KeyEvent::RefreshFailed { reason: "x".into() }),
            Level::Warn
        );
        assert_eq!(
            Level::of(&KeyEvent::SkippedKey {
                index: 0,
                reason: "x".into()
            }),
            Level::Warn
        );
    }
}
