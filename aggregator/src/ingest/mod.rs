//! Ingest: the gRPC `Ingest` service that receives collectors' report streams, and the
//! single writer that commits them to the store in groups.

pub mod route;
pub mod service;
pub mod writer;
