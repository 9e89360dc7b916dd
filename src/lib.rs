//! xrayd: receives X-Ray segment datagrams over UDP and forwards them to AWS X-Ray.
//!
//! The data flows ingest → queue → batch → upload. The pure core (datagram validation, the byte
//! budget, batching decisions, retry schedule, request encoding, signing, config resolution) is
//! testable without sockets; the I/O edges (UDP ingest, HTTP upload) are thin.

pub mod aws;
pub mod batch;
pub mod bench;
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
pub mod stats;
pub mod telemetry;
pub mod upload;
