//! The origin's response body on its way to the client: relayed frame by frame as it arrives
//! (never held whole, so a body of any size costs the gateway a few buffers), and watched, so
//! that an origin that stops sending or breaks the connection mid-body ends the client's
//! response instead of leaving it hanging, with an operator event that says what happened.
//!
//! The head of the response is bounded by the origin's `timeout_ms` (see `serve::relay`); the
//! body by the same duration between one piece and the next: the gateway waits that long for
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
use portcullis_core::event::error_chain;
use portcullis_core::Level;
use tokio::time::{Instant, Sleep};

use crate::log;

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
            RelayError::Broken(e) => write!(f, "{}", error_chain(e)),
            RelayError::Stalled(idle) => write!(f, "no bytes for {} ms", idle.as_millis()),
        }
    }
}

impl std::error::Error for RelayError {}

/// The origin's body, relayed as it comes, ended with a [`RelayError`] (and an event) if the
/// origin breaks it off or stalls for longer than `idle`.
#[derive(Debug)]
pub struct OriginBody {
    inner: Incoming,
    idle: Duration,
    stall: Pin<Box<Sleep>>,
    /// Whether the stall timer runs: set when the origin has nothing yet, cleared by a frame.
    waiting: bool,
    relayed: u64,
    request_id: String,
}

impl OriginBody {
    /// Relay `inner`, the body of the response to request `request_id`, allowing `idle`
    /// between pieces.
    pub fn new(inner: Incoming, idle: Duration, request_id: &str) -> Self {
        OriginBody {
            inner,
            idle,
            stall: Box::pin(tokio::time::sleep(idle)),
            waiting: false,
            relayed: 0,
            request_id: request_id.to_owned(),
        }
    }

    /// End the relay with `error`, telling the operator.
    fn fail(&self, error: RelayError) -> Poll<Option<Result<Frame<Bytes>, RelayError>>> {
        let what = match error {
            RelayError::Broken(_) => "broken off",
            RelayError::Stalled(_) => "stalled",
        };
        log::request_event(
            Level::Warn,
            &self.request_id,
            format!(
                "origin response {what} after {} body bytes ({error}); the client's \
                 connection is closed",
                self.relayed
            ),
        );
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
