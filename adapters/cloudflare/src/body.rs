//! The client's request body as the core sees it: the Worker's `ReadableStream`, handed to the
//! origin's `fetch` untouched, or read up to a limit when the route inspects it.
//!
//! The raw stream is kept rather than the `worker` crate's `Body`: that one takes a reader lock
//! at once and cancels the stream when dropped, and relays through a Rust-pulled copy. Under
//! workerd, cancelling a request body the Worker answered early (413, 415, 401…) can make the
//! runtime drop the exchange; an untouched stream is simply left unread.

use portcullis_core::{BodyError, RequestBody};
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;

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
    let Some(stream) = stream else {
        return Ok(Vec::new());
    };
    let reader: web_sys::ReadableStreamDefaultReader = stream
        .get_reader()
        .dyn_into()
        .map_err(|_| BodyError::Aborted)?;
    let result = read_all(&reader, limit).await;
    // Released, not cancelled: an early answer leaves the rest of the body to the runtime.
    reader.release_lock();
    result
}

async fn read_all(
    reader: &web_sys::ReadableStreamDefaultReader,
    limit: u64,
) -> Result<Vec<u8>, BodyError> {
    let mut out = Vec::new();
    loop {
        let chunk = JsFuture::from(reader.read())
            .await
            .map_err(|_| BodyError::Aborted)?;
        let done = js_sys::Reflect::get(&chunk, &JsValue::from_str("done"))
            .map_err(|_| BodyError::Aborted)?;
        if done.as_bool() == Some(true) {
            return Ok(out);
        }
        let value = js_sys::Reflect::get(&chunk, &JsValue::from_str("value"))
            .map_err(|_| BodyError::Aborted)?;
        let bytes = value
            .dyn_into::<js_sys::Uint8Array>()
            .map_err(|_| BodyError::Aborted)?;
        let total = (out.len() as u64).saturating_add(u64::from(bytes.length()));
        if total > limit {
            return Err(BodyError::TooLarge);
        }
        let start = out.len();
        out.resize(start + bytes.length() as usize, 0);
        bytes.copy_to(&mut out[start..]);
    }
}
