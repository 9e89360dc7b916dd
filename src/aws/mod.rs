//! AWS plumbing shared by every outbound call: signing, credentials, endpoints.

pub mod cache;
pub mod chain;
pub mod container;
pub mod credentials;
pub mod endpoint;
pub mod fetch;
pub(crate) mod http;
pub mod imds;
pub mod process;
pub mod profile;
pub mod region;
pub mod sigv4;
pub mod sts;
