//! AWS plumbing shared by every outbound call: signing, credentials, endpoints.

pub mod credentials;
pub mod endpoint;
pub mod sigv4;
