//! The process's output: lines on standard output (batched per serving thread) and on standard
//! error, each written whole, so lines from concurrent requests never interleave. What the lines
//! say is the handler's.

use std::cell::RefCell;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};

/// Whether process lines and events are written as text (`--log-format text`), not JSON.
static TEXT: AtomicBool = AtomicBool::new(false);

/// Write the process's own lines as text (`portcullis: MESSAGE`) instead of JSON objects.
pub fn set_text(text: bool) {
    TEXT.store(text, Ordering::Relaxed);
}

/// Whether stderr is text rather than JSON lines.
pub fn text() -> bool {
    TEXT.load(Ordering::Relaxed)
}

/// A line about the process itself rather than a request (it listens, it could not accept):
/// a JSON object with `time`, `level` (`warn` when `warn`, else `info`), `event`, the `fields`
/// and `message`, as operator events are; or `portcullis: MESSAGE` when [`set_text`].
pub fn notice(warn: bool, event: &str, message: &str, fields: &[(&str, &str)]) {
    if text() {
        return emit_error(&format!("portcullis: {message}"));
    }
    let now = chrono::DateTime::<chrono::Utc>::from(std::time::SystemTime::now())
        .to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let level = if warn { "warn" } else { "info" };
    // In the operator events' order (time, level, event, fields, message), so both read alike.
    let (head, tail) = (
        [("time", now.as_str()), ("level", level), ("event", event)],
        [("message", message)],
    );
    let members = head.iter().chain(fields).chain(tail.iter());
    let body: Vec<String> = members
        .map(|(name, value)| format!("{}:{}", quoted(name), quoted(value)))
        .collect();
    emit_error(&format!("{{{}}}", body.join(",")));
}

fn quoted(text: &str) -> String {
    serde_json::Value::from(text).to_string()
}

/// Write `line` and a newline to standard output.
///
/// Lines are written whole (one write per line, or per batch of whole lines, under the lock), so
/// lines from concurrent requests never interleave. On a thread that called [`batch_this_thread`]
/// (the serving threads), lines are collected and written together once the thread's current
/// event-loop turn is over, so a line reaches a log shipper (or a test) within that turn rather
/// than at once; elsewhere each line is written and flushed at once. A failed write (a closed
/// pipe) is dropped rather than failing the request: the client's answer matters more.
pub fn emit(line: &str) {
    BATCH.with_borrow_mut(|batch| match batch {
        Some(batch) => batch.push(line),
        None => write_whole(std::io::stdout().lock(), &[line.as_bytes(), b"\n"].concat()),
    });
}

/// A batch is written as soon as it holds this much, whatever the turn.
const BATCH_BYTES: usize = 32 * 1024;

/// Log lines collected on one serving thread.
struct Batch {
    text: Vec<u8>,
    flush_scheduled: bool,
}

impl Batch {
    /// Collect `line`: written at once if the batch is now full, else by a flush at the end of
    /// this event-loop turn.
    fn push(&mut self, line: &str) {
        self.text.extend_from_slice(line.as_bytes());
        self.text.push(b'\n');
        if self.text.len() >= BATCH_BYTES {
            self.write_out();
        } else if !self.flush_scheduled {
            self.flush_scheduled = true;
            tokio::task::spawn_local(async {
                tokio::task::yield_now().await;
                flush_this_thread();
            });
        }
    }

    fn write_out(&mut self) {
        if !self.text.is_empty() {
            write_whole(std::io::stdout().lock(), &self.text);
            self.text.clear();
        }
    }
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
            batch.write_out();
        }
    });
}

/// Write whatever this thread has collected and go back to writing each line at once.
pub fn unbatch_this_thread() {
    if let Some(mut batch) = BATCH.take() {
        batch.write_out();
    }
}

/// `text` in one write to the locked stream `out`, flushed. A failed write (a closed pipe) is
/// dropped: see [`emit`].
fn write_whole(mut out: impl Write, text: &[u8]) {
    let _ = out.write_all(text);
    let _ = out.flush();
}

/// Write `line` and a newline to standard error in one locked write, flushed.
pub fn emit_error(line: &str) {
    write_whole(std::io::stderr().lock(), &[line.as_bytes(), b"\n"].concat());
}
