//! `backup` copies a running aggregator's store into a checksummed file while ingest
//! goes on; `restore` loads it into a new store that serves the same history; damaged
//! backups and a running server are refused with what to do.

use connwatch_tests::{Aggregator, Pki, bin, report, send_reports, stored};
use std::process::Command;

#[tokio::test]
async fn a_backup_restores_into_a_new_store_and_damage_is_refused() {
    let root = tempfile::tempdir().expect("tempdir");
    let pki = Pki::init(root.path());
    let mut agg = Aggregator::start(root.path(), &pki, "");
    let tls = pki.collector("keep");
    send_reports(&agg, &tls, (1..=50).map(|s| report(3, s)).collect())
        .await
        .expect("reports");
    let file = root.path().join("store.cwbackup");
    let out = agg.cli(&pki, &["backup", "--out", file.to_str().expect("path")]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("records"));
    // Ingest goes on after the backup; these are not in it.
    send_reports(&agg, &tls, (51..=60).map(|s| report(3, s)).collect())
        .await
        .expect("reports");

    // Restoring while the server holds the store is refused with the reason.
    let restore = |config: &std::path::Path, input: &std::path::Path| {
        Command::new(bin("connwatch-aggregator"))
            .args(["restore", "--config"])
            .arg(config)
            .arg("--in")
            .arg(input)
            .output()
            .expect("run restore")
    };
    let busy = restore(&agg.config, &file);
    assert_eq!(busy.status.code(), Some(3));
    assert!(
        String::from_utf8_lossy(&busy.stderr).contains("stop"),
        "{}",
        String::from_utf8_lossy(&busy.stderr)
    );

    // A damaged copy is refused.
    let mut bytes = std::fs::read(&file).expect("read");
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    let damaged = root.path().join("damaged.cwbackup");
    std::fs::write(&damaged, &bytes).expect("write");
    agg.terminate();
    let fresh = root.path().join("restored.toml");
    let text = std::fs::read_to_string(&agg.config)
        .expect("config")
        .replace("data_dir = \"data\"", "data_dir = \"restored-data\"");
    std::fs::write(&fresh, text).expect("write");
    let bad = restore(&fresh, &damaged);
    assert_eq!(bad.status.code(), Some(3));
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("checksum"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );

    // The good copy restores and serves exactly what it held.
    let ok = restore(&fresh, &file);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let again = restore(&fresh, &file);
    assert_eq!(
        again.status.code(),
        Some(3),
        "restoring over data is refused"
    );
    let restored = Aggregator::spawn(&fresh).expect("start on the restored store");
    let rows = stored(&restored, &pki, "keep");
    assert_eq!(rows, (1..=50).map(|s| (3, s)).collect::<Vec<_>>());
}
