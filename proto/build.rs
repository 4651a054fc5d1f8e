//! Generates the gRPC code from `connwatch/v1/*.proto` with protox, so building needs no
//! system `protoc`. Messages derive `serde::Serialize` so the CLI can print them as JSON;
//! enum fields are written as their short lower-case names rather than numbers.

use std::path::PathBuf;

/// Enum-typed fields and the serializer that turns their number into a name.
const ENUM_FIELDS: &[(&str, &str)] = &[
    ("connwatch.v1.ServiceStatus.role", "service_role"),
    ("connwatch.v1.ServiceStatus.state", "service_state"),
    ("connwatch.v1.ServiceStatus.start_type", "start_type"),
    ("connwatch.v1.EndpointCheck.outcome", "connect_outcome"),
    ("connwatch.v1.Ack.outcome", "ack_outcome"),
    ("connwatch.v1.Finding.severity", "severity"),
    ("connwatch.v1.GroupSummary.health", "health"),
    ("connwatch.v1.ConnectorSummary.health", "health"),
    ("connwatch.v1.ListFindingsRequest.min_severity", "severity"),
    ("connwatch.v1.Alert.severity", "severity"),
];

/// 64-bit ids written as JSON strings: random ones pass 2^53, beyond which jq and
/// JavaScript round a JSON number to a different id.
const U64_ID_FIELDS: &[&str] = &[
    "connwatch.v1.Report.epoch",
    "connwatch.v1.HistoryEntry.epoch",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "connwatch/v1/report.proto",
        "connwatch/v1/ingest.proto",
        "connwatch/v1/query.proto",
        "connwatch/v1/admin.proto",
        "connwatch/v1/alerts.proto",
    ];
    for file in files {
        println!("cargo:rerun-if-changed={file}");
    }
    let fds = protox::compile(files, ["."])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    let descriptor_path = out.join("connwatch_descriptor.bin");
    std::fs::write(&descriptor_path, prost::Message::encode_to_vec(&fds))?;
    let mut builder = tonic_prost_build::configure()
        .file_descriptor_set_path(&descriptor_path)
        .skip_protoc_run()
        .message_attribute(".connwatch.v1", "#[derive(serde::Serialize)]")
        // Written out so a server can send rows it encoded earlier (see listing.rs).
        .extern_path(
            ".connwatch.v1.ListConnectorsResponse",
            "crate::listing::ListConnectorsResponse",
        );
    for (field, func) in ENUM_FIELDS {
        builder = builder.field_attribute(
            field,
            format!("#[serde(serialize_with = \"crate::enum_names::{func}\")]"),
        );
    }
    for field in U64_ID_FIELDS {
        builder = builder.field_attribute(
            field,
            "#[serde(serialize_with = \"crate::json::u64_string\")]",
        );
    }
    builder.compile_fds(fds)?;
    Ok(())
}
