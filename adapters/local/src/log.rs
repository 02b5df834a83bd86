//! Where the core's records go natively: one JSON access line per request on standard output,
//! one JSON line per operator event on standard error. What the lines say is the core's.

use std::cell::RefCell;
use std::io::Write;

use portcullis_core::{Event, Level, LogSink};

use crate::context;

/// Write `line` and a newline to standard output.
///
/// Lines are written whole (one write per line, or per batch of whole lines, under the lock), so
/// lines from concurrent requests never interleave. On a thread that called [`batch_this_thread`]
/// (the serving threads), lines are collected and written together once the thread's current
/// event-loop turn is over, so a line reaches a log shipper (or a test) within that turn rather
/// than at once; elsewhere each line is written and flushed at once. A failed write (a closed
/// pipe) is dropped rather than failing the request: the client's answer matters more.
pub fn emit(line: &str) {
    let mut text = String::with_capacity(line.len() + 1);
    text.push_str(line);
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

/// The native log sink: access lines on stdout (batched per serving thread, see [`emit`]),
/// operator events on stderr, each in one locked write so lines never interleave.
#[derive(Debug, Clone, Copy, Default)]
pub struct Sink;

impl LogSink for Sink {
    fn access(&self, line: &str) {
        emit(line);
    }

    fn event(&self, event: &Event) {
        let mut text = event.to_json();
        text.push('\n');
        let mut err = std::io::stderr().lock();
        let _ = err.write_all(text.as_bytes());
        let _ = err.flush();
    }
}

/// An operator event of the native process itself (not of a request): at `level`, now.
pub fn event(level: Level, text: impl Into<String>) {
    Sink.event(&Event::new(context::now(), level, text));
}
