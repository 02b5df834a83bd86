//! The client's request body as the core sees it: the Worker's `ReadableStream`, handed to the
//! origin's `fetch` untouched, or read up to a limit when the route inspects it. The raw stream
//! is kept rather than the `worker` crate's `Body`, which cancels it when dropped (under workerd,
//! cancelling a body answered early can drop the exchange). Left unread, it breaks the next
//! exchange instead: workerd refuses reads once the response is sent, and the connection still
//! holding the bytes fails the next request on it (under `wrangler dev`, a 503 "worker restarted
//! mid-request"). So what is left is [`drain`]ed first, within the core's bounds.

use portcullis_core::body::{LimitedBody, DRAIN_BYTES, DRAIN_TIME};
use portcullis_core::time::within;
use portcullis_core::{BodyError, RequestBody};
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;
use worker::Delay;

/// The Worker's request body: a stream, or none (GET, HEAD, empty).
#[derive(Debug)]
pub struct ClientBody(pub Option<web_sys::ReadableStream>);

impl RequestBody for ClientBody {
    async fn read_to_limit(self, limit: u64) -> Result<Vec<u8>, BodyError> {
        read_limited(self.0, limit).await
    }
}

/// All of `stream` (none: empty), or [`BodyError::TooLarge`] as soon as more than `limit` bytes
/// have arrived: the client's body, and the body of a key-set fetch.
pub async fn read_limited(
    stream: Option<web_sys::ReadableStream>,
    limit: u64,
) -> Result<Vec<u8>, BodyError> {
    match stream {
        Some(stream) => read(stream, LimitedBody::new(limit, 0)).await,
        None => Ok(Vec::new()),
    }
}

/// Read and discard what is left of the client's body after the gateway answered without it, for
/// at most [`DRAIN_BYTES`] and [`DRAIN_TIME`]. A stream handed on to the origin (locked) or with
/// nothing left costs nothing.
pub async fn drain(stream: Option<web_sys::ReadableStream>) {
    if let Some(stream) = stream.filter(|s| !s.locked()) {
        let discard = LimitedBody::discarding(DRAIN_BYTES);
        let _ = within(Delay::from(DRAIN_TIME), read(stream, discard)).await;
    }
}

/// [`read_all`] under a reader lock that is released, not cancelled: an early answer leaves the
/// rest of the body to [`drain`].
async fn read(stream: web_sys::ReadableStream, out: LimitedBody) -> Result<Vec<u8>, BodyError> {
    let reader: web_sys::ReadableStreamDefaultReader = stream
        .get_reader()
        .dyn_into()
        .map_err(|_| BodyError::Aborted)?;
    let result = read_all(&reader, out).await;
    reader.release_lock();
    result
}

/// Read `reader` to its end into `out`, or until `out` refuses a chunk as too large.
async fn read_all(
    reader: &web_sys::ReadableStreamDefaultReader,
    mut out: LimitedBody,
) -> Result<Vec<u8>, BodyError> {
    let aborted = |_: JsValue| BodyError::Aborted;
    loop {
        let chunk = JsFuture::from(reader.read()).await.map_err(aborted)?;
        let done = js_sys::Reflect::get(&chunk, &"done".into()).map_err(aborted)?;
        if done.as_bool() == Some(true) {
            return Ok(out.into_bytes());
        }
        let value = js_sys::Reflect::get(&chunk, &"value".into()).map_err(aborted)?;
        let bytes = value.dyn_into::<js_sys::Uint8Array>().map_err(aborted)?;
        out.push_with(bytes.length() as usize, |into| bytes.copy_to(into))?;
    }
}
