//! The client's request body as the core sees it: `wasi:http`'s incoming body stream, spliced to
//! the origin untouched, or read up to a limit when the route inspects it.

use portcullis_core::body::LimitedBody;
use portcullis_core::{BodyError, RequestBody};
use spin_sdk::http::IncomingRequest;
use spin_sdk::wit::wasi::http0_2_0::types::IncomingBody;
use wasi::io::streams::InputStream;

use crate::io;

/// The client's body. Empty when the host gave none.
pub struct ClientBody {
    // Declared before `_body`: the stream is a child resource and must be dropped first.
    stream: Option<InputStream>,
    _body: Option<IncomingBody>,
}

impl ClientBody {
    /// Take the body out of `request` (its head has been read already).
    pub fn of(request: &IncomingRequest) -> Self {
        let body = request.consume().ok();
        let stream = body.as_ref().and_then(|b| b.stream().ok());
        ClientBody {
            stream,
            _body: body,
        }
    }

    /// The stream to splice to the origin, if there is a body at all.
    pub fn stream(&self) -> Option<&InputStream> {
        self.stream.as_ref()
    }
}

impl std::fmt::Debug for ClientBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClientBody")
    }
}

impl RequestBody for ClientBody {
    async fn read_to_limit(self, limit: u64) -> Result<Vec<u8>, BodyError> {
        match &self.stream {
            Some(stream) => read_limited(stream, limit).await,
            None => Ok(Vec::new()),
        }
    }
}

/// All of `stream`, or [`BodyError::TooLarge`] as soon as more than `limit` bytes have arrived
/// (the core's [`LimitedBody`]): the client's body, and the body of a key-set fetch.
pub async fn read_limited(stream: &InputStream, limit: u64) -> Result<Vec<u8>, BodyError> {
    let mut out = LimitedBody::new(limit, 0);
    while let Some(chunk) = io::read_chunk(stream)
        .await
        .map_err(|_| BodyError::Aborted)?
    {
        out.push(&chunk)?;
    }
    Ok(out.into_bytes())
}
