//! The connwatch wire contract: message types and gRPC stubs generated from
//! `proto/connwatch/v1`. Messages serialize to JSON (for `--json` output) with enum
//! fields written as short names such as `running` or `critical`.

#![allow(missing_docs)]

/// Package `connwatch.v1`.
#[allow(clippy::doc_lazy_continuation, clippy::large_enum_variant)]
pub mod v1 {
    tonic::include_proto!("connwatch.v1");
    pub use crate::listing::ListConnectorsResponse;
}

pub mod enum_names;
pub mod json;
pub mod listing;

/// The encoded file descriptor set, served by gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("connwatch_descriptor");
