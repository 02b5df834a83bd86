//! What the adapter knows about a request besides the HTTP message itself.
//!
//! Its own module because both the driver ([`crate::decision`]) and the phases that need these
//! facts (`quota`, `forward`) read it: phases never import the driver.

use std::net::IpAddr;

use crate::time::UnixTime;

/// What the adapter knows about a request besides the HTTP message itself.
#[derive(Debug, Clone)]
pub struct RequestContext {
    /// The adapter's clock when the request arrived.
    pub now: UnixTime,
    /// The id the adapter generated for this request (see [`crate::request_id`]).
    pub request_id: String,
    /// The client's address as the runtime reports it (the TCP peer natively,
    /// `CF-Connecting-IP` on Workers, `spin-client-addr` on Spin). Used by `by: "ip"` quotas.
    pub client_ip: Option<IpAddr>,
}
