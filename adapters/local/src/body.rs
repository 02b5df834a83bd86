//! Bodies crossing the gateway: the client's, handed to the core, and the ones sent on.

use bytes::Bytes;
use http_body_util::{BodyExt, Either, Full};
use hyper::body::{Body, Incoming};
use portcullis_core::body::LimitedBody;
use portcullis_core::{BodyError, ForwardBody, RequestBody};

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

/// A body the gateway sends: a stream relayed untouched, or bytes the gateway holds.
///
/// One type for both directions (requests to the origin, responses to the client) keeps the
/// pooled client and the server to a single concrete body type each.
pub type RelayBody = Either<Incoming, Full<Bytes>>;

/// The body to send to the origin for the core's [`ForwardBody`].
pub fn to_origin(body: ForwardBody<ClientBody>) -> RelayBody {
    match body {
        ForwardBody::Stream(ClientBody(stream)) => Either::Left(stream),
        ForwardBody::Buffered(bytes) => Either::Right(Full::new(Bytes::from(bytes))),
    }
}

/// A body the gateway wrote itself (problem documents, the echo origin's answers).
pub fn full(bytes: impl Into<Bytes>) -> RelayBody {
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
        let body = to_origin(ForwardBody::Buffered(b"checked".to_vec()));
        assert_eq!(body.size_hint().exact(), Some(7));
    }
}
