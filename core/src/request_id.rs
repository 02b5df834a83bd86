//! Request ids: 128 random bits, hex-encoded. The randomness comes from the adapter
//! (`getrandom`, `crypto.getRandomValues`, WASI random), never from the core.

/// The header carrying the request id: to the origin, and on every response.
pub const REQUEST_ID_HEADER: &str = "x-portcullis-request-id";

/// The request id for 16 random bytes.
pub fn from_random(bytes: [u8; 16]) -> String {
    hex::encode(bytes)
}
