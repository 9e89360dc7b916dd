//! AWS plumbing shared by every outbound call: signing, credentials, endpoints, the signed HTTP
//! client with its DNS cache, and reading AWS error answers. It depends on neither X-Ray's API
//! ([`crate::xray`]) nor the pipeline stages.

pub mod cache;
pub mod chain;
pub mod container;
pub mod credentials;
pub mod dns;
pub mod endpoint;
pub mod error_type;
pub mod fetch;
pub(crate) mod http;
pub mod imds;
pub mod process;
pub mod profile;
pub mod region;
pub mod signed;
pub mod sigv4;
pub mod sso;
pub mod sso_cache;
pub mod sts;
