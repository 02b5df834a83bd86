//! Waiting without blocking the instance: WASI pollables as futures, deadlines, and body streams.
//!
//! One request runs per instance, but within it several things wait at once (the origin's
//! response, the client's body going up, a deadline), so nothing here uses the blocking WASI
//! calls. Every wait registers a pollable with Spin's executor (`spin_executor`), which polls them
//! all with `wasi:io/poll` and re-polls the request's future when one is ready.

use std::task::Poll;
use std::time::Duration;

use spin_executor::CancelOnDropToken;
use spin_sdk::http::OutgoingBody;
use wasi::clocks::monotonic_clock;
use wasi::io::poll::Pollable;
use wasi::io::streams::{InputStream, OutputStream, StreamError};

/// Largest chunk read or spliced at once.
const CHUNK: u64 = 64 * 1024;

/// Resolve once the pollable `subscribe` returns is ready. `subscribe` is called on every poll,
/// since the executor consumes the pollables it finds ready.
pub async fn ready(subscribe: impl Fn() -> Pollable) {
    until(subscribe, Pollable::ready).await
}

/// Resolve once `done` holds for a fresh pollable from `subscribe`, registering that pollable
/// with the executor to be woken when it may.
async fn until(subscribe: impl Fn() -> Pollable, done: impl Fn(&Pollable) -> bool) {
    // Dropping a registration's token withdraws it: replacing it on every poll keeps them from
    // piling up, and it is dropped with this future when a caller stops waiting.
    let mut registration: Option<CancelOnDropToken> = None;
    std::future::poll_fn(move |cx| {
        let pollable = subscribe();
        if done(&pollable) {
            drop(registration.take());
            return Poll::Ready(());
        }
        let token = spin_executor::push_waker_and_get_token(pollable, cx.waker().clone());
        drop(registration.replace(token.into()));
        Poll::Pending
    })
    .await
}

/// Resolve after `duration` on the monotonic clock.
///
/// The clock decides, not the timer's `ready`: hosts on wasmtime 44 and later answer "not ready"
/// the first time a timer made after its deadline is asked, and a fresh timer is made on every
/// poll, so asking the timer would never end the wait.
pub async fn sleep(duration: Duration) {
    let deadline = monotonic_clock::now().saturating_add(nanos(duration));
    until(
        || monotonic_clock::subscribe_instant(deadline),
        |_| monotonic_clock::now() >= deadline,
    )
    .await
}

/// `duration` in nanoseconds, saturating (WASI durations are `u64` nanoseconds).
pub fn nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

/// Write `body` with `write`, then finish it if `write` says it succeeded. A body left
/// unfinished is dropped, which the host takes as an aborted message (so the peer never takes a
/// short body for a complete one).
pub async fn fill(body: OutgoingBody, write: impl AsyncFnOnce(&OutputStream) -> bool) {
    let Ok(stream) = body.write() else {
        return;
    };
    let written = write(&stream).await;
    // The stream is the body's child resource: it must go before the body is finished.
    drop(stream);
    if written {
        let _ = OutgoingBody::finish(body, None);
    }
}

/// Why a stream copy stopped early.
#[derive(Debug)]
pub enum CopyError {
    /// Reading the source failed (the peer went away or sent a malformed body).
    Read(String),
    /// Writing the destination failed.
    Write(String),
}

/// Read the next chunk, or `None` at the end of the stream.
pub async fn read_chunk(input: &InputStream) -> Result<Option<Vec<u8>>, String> {
    loop {
        match input.read(CHUNK) {
            Ok(chunk) if chunk.is_empty() => ready(|| input.subscribe()).await,
            Ok(chunk) => return Ok(Some(chunk)),
            Err(StreamError::Closed) => return Ok(None),
            Err(StreamError::LastOperationFailed(e)) => return Err(e.to_debug_string()),
        }
    }
}

/// Write all of `bytes`, waiting for the stream to accept them, then flush.
pub async fn write_all(output: &OutputStream, mut bytes: &[u8]) -> Result<(), String> {
    let failed = describe;
    while !bytes.is_empty() {
        let permitted = output.check_write().map_err(failed)?;
        if permitted == 0 {
            ready(|| output.subscribe()).await;
            continue;
        }
        let n = usize::try_from(permitted)
            .unwrap_or(usize::MAX)
            .min(bytes.len());
        output.write(&bytes[..n]).map_err(failed)?;
        bytes = &bytes[n..];
    }
    output.flush().map_err(failed)?;
    // Wait for the flush to complete, so an error in it is seen here.
    loop {
        match output.check_write() {
            Ok(0) => ready(|| output.subscribe()).await,
            Ok(_) => return Ok(()),
            Err(e) => return Err(failed(e)),
        }
    }
}

/// Copy `input` to `output` until `input` ends, in the host (`splice`), never holding more than
/// one chunk. Returns the number of bytes copied.
pub async fn copy(input: &InputStream, output: &OutputStream) -> Result<u64, CopyError> {
    let mut total = 0u64;
    loop {
        let permitted = match output.check_write() {
            Ok(0) => {
                ready(|| output.subscribe()).await;
                continue;
            }
            Ok(n) => n,
            Err(e) => return Err(CopyError::Write(describe(e))),
        };
        match output.splice(input, permitted.min(CHUNK)) {
            Ok(0) => ready(|| input.subscribe()).await,
            Ok(n) => total = total.saturating_add(n),
            // `splice` reports the input's end as `closed`: the copy is complete.
            Err(StreamError::Closed) => break,
            Err(StreamError::LastOperationFailed(e)) => {
                // Either side may have failed; a closed or failing input is the usual cause.
                return Err(CopyError::Read(e.to_debug_string()));
            }
        }
    }
    output.flush().map_err(|e| CopyError::Write(describe(e)))?;
    Ok(total)
}

fn describe(e: StreamError) -> String {
    match e {
        StreamError::Closed => "stream closed".to_owned(),
        StreamError::LastOperationFailed(e) => e.to_debug_string(),
    }
}
