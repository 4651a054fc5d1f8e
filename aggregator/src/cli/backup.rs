//! `backup` (from a running aggregator, over gRPC) and `restore` (into a stopped
//! aggregator's empty store).

use super::{Connect, explain};
use crate::backup;
use crate::config::Config;
use crate::store::Store;
use anyhow::Context;
use connwatch_shared::wire::BackupRequest;
use connwatch_shared::wire::admin_client::AdminClient;
use std::io::Write;
use std::path::Path;

/// Streams a backup from the aggregator into `out` (via a temporary file, checked,
/// then renamed), and says what it wrote.
pub async fn backup(connect: &Connect, out: &Path) -> anyhow::Result<String> {
    let channel = connect.channel().await?;
    let mut client = AdminClient::new(channel).max_decoding_message_size(4 << 20);
    let mut stream = client
        .backup(BackupRequest {})
        .await
        .map_err(explain)?
        .into_inner();
    let tmp = out.with_extension("partial");
    let mut file =
        std::fs::File::create(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
    let mut bytes = Vec::new();
    while let Some(chunk) = stream.message().await.map_err(explain)? {
        file.write_all(&chunk.data)
            .with_context(|| format!("cannot write {}", tmp.display()))?;
        bytes.extend_from_slice(&chunk.data);
    }
    file.sync_all()
        .with_context(|| format!("cannot sync {}", tmp.display()))?;
    let records = backup::read(&bytes).with_context(|| {
        format!(
            "the backup received is incomplete; {} was kept for inspection",
            tmp.display()
        )
    })?;
    std::fs::rename(&tmp, out)
        .with_context(|| format!("cannot rename {} to {}", tmp.display(), out.display()))?;
    Ok(format!(
        "backup of {} records ({} bytes) written to {}",
        records.len(),
        bytes.len(),
        out.display()
    ))
}

/// Loads a backup into the configured store, which must be new or empty; the
/// aggregator must be stopped (sled admits one process per store).
pub async fn restore(config: &Config, input: &Path) -> anyhow::Result<String> {
    let bytes = std::fs::read(input).with_context(|| format!("cannot read {}", input.display()))?;
    let records =
        backup::read(&bytes).with_context(|| format!("{} cannot be restored", input.display()))?;
    let store = Store::open(&config.data_dir, config.store.cache_bytes).with_context(|| {
        "restore needs the aggregator stopped: stop `connwatch-aggregator serve`, then run restore again"
    })?;
    let n = store
        .restore(&records)
        .await
        .with_context(|| format!("restoring into {}", config.data_dir.display()))?;
    Ok(format!(
        "restored {n} records into {}; start the aggregator, and collectors will resend what came after the backup",
        config.data_dir.display()
    ))
}
