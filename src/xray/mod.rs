//! X-Ray's API: the signed client ([`client`]) and the wire format of the calls xrayd makes,
//! PutTraceSegments ([`segments`]) and PutTelemetryRecords ([`telemetry_records`]). The upload
//! stage, telemetry and the sampling proxy call X-Ray through here; the generic AWS plumbing
//! under it (signing, credentials, the HTTP client) is in [`crate::aws`].

pub mod client;
pub mod segments;
pub mod telemetry_records;
