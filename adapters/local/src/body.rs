//! Bodies crossing the gateway: the client's, handed to the core, and the ones sent on.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::{BodyExt, Either, Full};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use portcullis_core::body::LimitedBody;
use portcullis_core::{BodyError, ForwardBody, RequestBody};

use portcullis_host::relay_body::OriginBody;

/// The client's request body as the core sees it.
///
/// A newtype because the core's [`RequestBody`] trait and hyper's [`Incoming`] both live in other
/// crates; it also keeps the stream untouched, so a route that does not inspect bodies gets
/// exactly what the client sent, unbuffered.
#[derive(Debug)]
pub struct ClientBody(pub Incoming);

impl RequestBody for ClientBody {
    async fn read_to_limit(self, limit: u64) -> Result<Vec<u8>, BodyError> {
        read_limited(self.0, limit).await
    }
}

/// Read `body` to its end, giving up with [`BodyError::TooLarge`] as soon as more than `limit`
/// bytes have arrived, so an oversized body costs at most `limit` plus one frame of memory
/// (the core's [`LimitedBody`], which also caps what a size hint reserves).
///
/// Generic over the body type so the limit logic can be tested without a socket.
pub async fn read_limited<B>(mut body: B, limit: u64) -> Result<Vec<u8>, BodyError>
where
    B: Body + Unpin,
    B::Data: AsRef<[u8]>,
{
    let mut out = LimitedBody::new(limit, body.size_hint().lower());
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|_| BodyError::Aborted)?;
        // Trailers carry no body bytes; the core has no use for them.
        if let Ok(data) = frame.into_data() {
            out.push(data.as_ref())?;
        }
    }
    Ok(out.into_bytes())
}

/// A body the gateway sends to an origin (or the echo origin to the gateway): the client's,
/// relayed untouched as it arrives ([`Upload`]), or bytes the gateway holds. One type keeps the
/// pooled client to a single concrete body type.
pub type RelayBody = Either<Upload, Full<Bytes>>;

/// The client's body streamed to the origin, frame by frame as it arrives, noting whether it
/// broke off: when the exchange with the origin then fails, that was the client's doing (it hung
/// up mid-upload, or its chunked framing was invalid), not the origin's.
#[derive(Debug)]
pub struct Upload {
    inner: Incoming,
    broke: Arc<AtomicBool>,
}

/// Whether an [`Upload`] broke off; readable after the body was handed to the client.
#[derive(Debug, Clone, Default)]
pub struct UploadWatch(Arc<AtomicBool>);

impl UploadWatch {
    /// Whether the client's body failed before its end.
    pub fn broke(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

impl Body for Upload {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        if let Poll::Ready(Some(Err(_))) = &polled {
            this.broke.store(true, Ordering::Relaxed);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A body the gateway sends to a client: the origin's, relayed and watched ([`OriginBody`]), or
/// bytes the gateway holds (problem documents).
pub type ResponseBody = Either<OriginBody, Full<Bytes>>;

/// The body to send to the origin for the core's [`ForwardBody`], and a watch on whether the
/// client's stream broke off on the way (never, for a body the core already read).
pub fn to_origin(body: ForwardBody<ClientBody>) -> (RelayBody, UploadWatch) {
    let watch = UploadWatch::default();
    let body = match body {
        ForwardBody::Stream(ClientBody(inner)) => Either::Left(Upload {
            inner,
            broke: Arc::clone(&watch.0),
        }),
        ForwardBody::Buffered(bytes) => Either::Right(Full::new(Bytes::from(bytes))),
    };
    (body, watch)
}

/// A body the gateway wrote itself (problem documents, the echo origin's answers), as either
/// of the body types above.
pub fn full<S>(bytes: impl Into<Bytes>) -> Either<S, Full<Bytes>> {
    Either::Right(Full::new(bytes.into()))
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::pin::Pin;
    use std::task::{Context, Poll};

    use hyper::body::Frame;

    use super::*;

    /// A body that arrives in the given chunks, then optionally fails.
    struct Chunks(VecDeque<Result<Bytes, &'static str>>);

    fn chunks(parts: &[&[u8]], fail_at_end: bool) -> Chunks {
        let mut items: VecDeque<_> = parts
            .iter()
            .map(|p| Ok(Bytes::copy_from_slice(p)))
            .collect();
        if fail_at_end {
            items.push_back(Err("connection reset"));
        }
        Chunks(items)
    }

    impl Body for Chunks {
        type Data = Bytes;
        type Error = &'static str;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            Poll::Ready(self.0.pop_front().map(|item| item.map(Frame::data)))
        }
    }

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        match tokio::runtime::Builder::new_current_thread().build() {
            Ok(rt) => rt.block_on(f),
            Err(e) => panic!("no runtime: {e}"),
        }
    }

    /// Chunked bodies, read up to a limit: what arrives, whether the stream then breaks, the
    /// limit, and what the reader gives.
    #[test]
    fn reads_up_to_the_limit_and_no_further() {
        type Case = (
            &'static [&'static [u8]],
            bool,
            u64,
            Result<Vec<u8>, BodyError>,
        );
        let hello: &[&[u8]] = &[b"hello ", b"world"];
        let cases: [Case; 5] = [
            (hello, false, 11, Ok(b"hello world".to_vec())),
            (hello, false, 10, Err(BodyError::TooLarge)),
            (&[b"x"], false, 0, Err(BodyError::TooLarge)),
            // The failure queued after the oversized chunk would be `Aborted` if the reader went
            // on.
            (&[b"0123456789", b"x"], true, 10, Err(BodyError::TooLarge)),
            (&[b"part"], true, 100, Err(BodyError::Aborted)),
        ];
        for (parts, fail_at_end, limit, want) in cases {
            let got = block_on(read_limited(chunks(parts, fail_at_end), limit));
            assert_eq!(
                got, want,
                "{parts:?} (then failing: {fail_at_end}) within {limit}"
            );
        }
    }

    #[test]
    fn an_empty_body_is_empty() {
        let got = block_on(read_limited(Full::new(Bytes::new()), 0));
        assert_eq!(got, Ok(Vec::new()));
    }

    #[test]
    fn a_huge_limit_does_not_preallocate_it() {
        let got = block_on(read_limited(Full::new(Bytes::from_static(b"{}")), u64::MAX));
        assert_eq!(got, Ok(b"{}".to_vec()));
    }

    #[test]
    fn buffered_bodies_are_sent_as_is() {
        let (body, watch) = to_origin(ForwardBody::Buffered(b"checked".to_vec()));
        assert_eq!(body.size_hint().exact(), Some(7));
        assert!(!watch.broke());
    }
}
