//! Where the core's records go natively: one JSON access line per request on standard output,
//! one JSON line per operator event on standard error ([`portcullis_host::output`] writes them
//! whole). What the lines say is the core's.

use portcullis_core::log::Tally;
use portcullis_core::{Event, LogSink};
use portcullis_host::output;

pub use portcullis_host::output::{batch_this_thread, unbatch_this_thread};

/// The native log sink: access lines on stdout (batched per serving thread, see
/// [`output::emit`]), operator events on stderr as JSON (as text with `--log-format text`), each
/// in one locked write; both counted in the
/// process's metrics (`/metrics` on the admin listener).
#[derive(Debug, Clone, Copy, Default)]
pub struct Sink;

impl LogSink for Sink {
    fn access(&self, line: &str) {
        output::emit(line);
    }

    fn event(&self, event: &Event) {
        if let Some(metrics) = portcullis_metrics::enabled() {
            metrics.event(event);
        }
        match output::text() {
            true => output::emit_error(&format!("portcullis: {}", event.text)),
            false => output::emit_error(&event.to_json()),
        }
    }

    fn tally(&self, tally: &Tally) {
        if let Some(metrics) = portcullis_metrics::enabled() {
            metrics.tally(tally);
        }
    }
}

/// An operator event the process raised outside a request's record (the core builds it).
pub fn event(event: &Event) {
    Sink.event(event);
}
