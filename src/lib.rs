//! xrayd: receives X-Ray segment datagrams over UDP and forwards them to AWS X-Ray.
//!
//! The data flows ingest → queue/budget → batch → upload. The pure core (datagram validation, the byte
//! budget, batching decisions, retry schedule, request encoding, signing, config resolution) is
//! testable without sockets; the I/O edges (UDP ingest, HTTP upload) are thin.
//!
//! Modules, in the order of the data flow, then what stands beside it:
//! - [`ingest`]: the UDP socket, recvmmsg, datagram rules; [`segment`]: the accepted document;
//!   [`queue`]: the bounded ring; [`budget`]: admission, charging and release, eviction, the
//!   large-body allowance; [`batch`]: batching; [`upload`]: uploader threads, backlog, retry, sinks.
//! - [`xray`]: X-Ray's API, the client and the wire format (PutTraceSegments,
//!   PutTelemetryRecords); [`aws`]: signing, credentials, endpoints, region, the signed HTTP client.
//! - [`proxy`]: the TCP port (sampling proxy, `/healthz`, `/readyz`, `/metrics`); [`telemetry`],
//!   [`metrics`], [`health`]: what the daemon says about itself; [`stats`]: every counter;
//!   [`demo`]: `xrayd demo`, one segment sent the way an SDK sends it.
//! - [`config`]: flags (one parser for every command), config files, settings; [`log`], [`json`]:
//!   output helpers; [`daemon`]: the wiring. The benchmark harness is its own crate (harness/).

/// xrayd's version, as `xrayd -v`, the start-up line, the user agent and `/metrics` give it.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

pub mod aws;
pub mod batch;
pub mod budget;
pub mod config;
pub mod daemon;
pub mod demo;
pub mod health;
pub mod ingest;
pub mod json;
pub mod log;
pub mod metrics;
pub mod proxy;
pub mod queue;
pub mod segment;
pub mod stats;
pub mod telemetry;
pub mod upload;
pub mod xray;
