//! Ingest: UDP datagrams in, validated documents out.

pub mod datagram;
