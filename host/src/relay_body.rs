//! An origin's response body on its way to the client: relayed frame by frame as it arrives
//! (never held whole, so a body of any size costs the gateway a few buffers), and watched, so
//! that an origin that stops sending or breaks the connection mid-body ends the client's
//! response instead of leaving it hanging, and says what happened.
//!
//! The head of the response is bounded by the caller (Portcullis: the origin's `timeout_ms`);
//! the body by a duration between one piece and the next: the gateway waits that long for
//! more bytes, counted only while it is waiting on the origin (a slow client is not the
//! origin's stall). A body that keeps moving is relayed however long it takes. When the body
//! breaks off or stalls, the client's connection is closed: the status and headers are already
//! sent, so closing is the only way left to tell the client its response is incomplete.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use tokio::time::{Instant, Sleep};

/// Why a relayed body ended early.
#[derive(Debug)]
pub enum RelayError {
    /// The origin broke the body off: reset the connection, closed it early, framed it wrongly.
    Broken(hyper::Error),
    /// No bytes from the origin for this long.
    Stalled(Duration),
}

impl fmt::Display for RelayError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RelayError::Broken(e) => write!(f, "{e}"),
            RelayError::Stalled(idle) => write!(f, "no bytes for {} ms", idle.as_millis()),
        }
    }
}

impl std::error::Error for RelayError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            RelayError::Broken(e) => std::error::Error::source(e),
            RelayError::Stalled(_) => None,
        }
    }
}

/// Told once when a relayed body ends early: why, and how many body bytes had been relayed.
pub type OnBreak = Box<dyn FnOnce(&RelayError, u64) + Send>;

/// The origin's body, relayed as it comes, ended with a [`RelayError`] (told to its
/// [`OnBreak`]) if the origin breaks it off or stalls for longer than `idle`.
pub struct OriginBody {
    inner: Incoming,
    idle: Duration,
    stall: Pin<Box<Sleep>>,
    /// Whether the stall timer runs: set when the origin has nothing yet, cleared by a frame.
    waiting: bool,
    relayed: u64,
    on_break: Option<OnBreak>,
}

impl fmt::Debug for OriginBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OriginBody")
            .field("idle", &self.idle)
            .field("relayed", &self.relayed)
            .finish_non_exhaustive()
    }
}

impl OriginBody {
    /// Relay `inner`, allowing `idle` between pieces; `on_break` hears of an early end.
    pub fn new(inner: Incoming, idle: Duration, on_break: OnBreak) -> Self {
        OriginBody {
            inner,
            idle,
            stall: Box::pin(tokio::time::sleep(idle)),
            waiting: false,
            relayed: 0,
            on_break: Some(on_break),
        }
    }

    /// End the relay with `error`, telling whoever asked to hear of it.
    fn fail(&mut self, error: RelayError) -> Poll<Option<Result<Frame<Bytes>, RelayError>>> {
        if let Some(on_break) = self.on_break.take() {
            on_break(&error, self.relayed);
        }
        Poll::Ready(Some(Err(error)))
    }
}

impl Body for OriginBody {
    type Data = Bytes;
    type Error = RelayError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, RelayError>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                this.waiting = false;
                if let Some(data) = frame.data_ref() {
                    this.relayed += data.len() as u64;
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(error))) => this.fail(RelayError::Broken(error)),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => {
                if !this.waiting {
                    this.waiting = true;
                    let deadline = Instant::now() + this.idle;
                    this.stall.as_mut().reset(deadline);
                }
                match this.stall.as_mut().poll(cx) {
                    Poll::Ready(()) => this.fail(RelayError::Stalled(this.idle)),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
