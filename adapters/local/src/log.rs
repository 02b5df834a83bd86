//! The request log: one JSON line per request on standard output.

use std::io::Write;

use portcullis_core::log::LogLine;

/// Write `line` and a newline in one locked write, then flush.
///
/// One write under the lock keeps lines from concurrent requests whole; the flush makes each
/// line visible to a log shipper (or a test) as soon as the request is answered. A failed write
/// (a closed pipe) is dropped rather than failing the request: the client's answer matters more.
pub fn emit(line: &LogLine<'_>) {
    let mut text = line.to_json();
    text.push('\n');
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes());
    let _ = out.flush();
}
