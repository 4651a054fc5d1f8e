//! A full disk under the store: the aggregator stops acknowledging (so collectors keep
//! their reports), keeps answering queries, says why in its log and in `status`, and
//! once space returns, takes the resent reports with nothing acknowledged lost.
//!
//! Needs root to mount a small tmpfs; elsewhere it says so and passes vacuously.

use connwatch_tests::{Aggregator, Pki, report, send_reports, stored};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

struct Mount(PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn mount_tmpfs(at: &Path, size: &str) -> Option<Mount> {
    std::fs::create_dir_all(at).ok()?;
    let ok = Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
        .arg(at)
        .status()
        .is_ok_and(|s| s.success());
    ok.then(|| Mount(at.to_path_buf()))
}

/// Writes zeros until the file system refuses; returns the filler's path.
fn fill(dir: &Path) -> PathBuf {
    let path = dir.join("filler");
    let mut f = std::fs::File::create(&path).expect("create filler");
    let chunk = vec![0u8; 64 * 1024];
    while f.write_all(&chunk).is_ok() {}
    let _ = f.sync_all();
    path
}

fn heavy(seq: u64) -> connwatch_shared::wire::Report {
    let mut r = report(11, seq);
    r.endpoints = (0..40)
        .map(|i| connwatch_shared::wire::EndpointCheck {
            name: format!("e{i}"),
            address: "127.0.0.1:1".into(),
            error: "z".repeat(4000),
            ..Default::default()
        })
        .collect();
    r
}

#[tokio::test]
async fn a_full_disk_stops_acks_keeps_queries_and_recovers_without_loss() {
    let root = tempfile::tempdir().expect("tempdir");
    let Some(mount) = mount_tmpfs(&root.path().join("tfs"), "64m") else {
        eprintln!("SKIPPED: cannot mount a tmpfs here (not root?); the disk-full test needs one");
        return;
    };
    let pki = Pki::init(root.path());
    std::fs::create_dir_all(mount.0.join("data")).expect("mkdir");
    std::os::unix::fs::symlink(mount.0.join("data"), root.path().join("data")).expect("symlink");
    let agg = Aggregator::start(root.path(), &pki, "");
    let tls = pki.collector("disk");
    let acks = send_reports(&agg, &tls, (1..=5).map(heavy).collect())
        .await
        .expect("first reports");
    assert_eq!(acks.len(), 5);

    let filler = fill(&mount.0);
    // A full disk shows either as a failed flush (the stream ends `unavailable`) or as
    // a flush that does not finish (no ack comes); either way nothing is acknowledged.
    let mut first_refused = None;
    for seq in 6..=60 {
        let attempt = tokio::time::timeout(
            Duration::from_secs(8),
            send_reports(&agg, &tls, vec![heavy(seq)]),
        )
        .await;
        match attempt {
            Ok(Ok(acks)) if acks.len() == 1 => continue,
            Ok(Err(status)) => {
                assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
                assert!(
                    status.message().contains("not acknowledged"),
                    "{}",
                    status.message()
                );
                first_refused = Some(seq);
                break;
            }
            _ => {
                first_refused = Some(seq);
                break;
            }
        }
    }
    let first_refused = first_refused.expect("a full disk stops acknowledgements");

    // Queries are still answered, and say why ingest stopped.
    let s = agg.cli_json(&pki, &["status"]);
    let problem = s["ingest_problem"].as_str().unwrap_or("");
    assert!(problem.contains("cannot commit"), "{s}");
    let check = agg.cli(&pki, &["check"]);
    assert_eq!(
        check.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&check.stdout)
    );
    assert!(agg.log().contains("commit failed"), "the log says so");

    // Space returns. sled does not recover from a failed flush in the same process,
    // so the aggregator stops with the restart exit code and a supervisor (here, the
    // test) starts it again; then the resends are taken and nothing acked was lost.
    std::fs::remove_file(filler).expect("free space");
    let mut agg = agg;
    let mut code = None;
    for _ in 0..300 {
        code = agg.exit_code();
        if code.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let code =
        code.unwrap_or_else(|| panic!("the aggregator did not stop for a restart:\n{}", agg.log()));
    assert_eq!(code, 75, "EX_TEMPFAIL asks for a restart");
    agg.restart();
    let acks = send_reports(
        &agg,
        &tls,
        (first_refused..=first_refused + 2).map(heavy).collect(),
    )
    .await
    .expect("ingest resumes after the restart");
    assert_eq!(acks.len(), 3);
    let rows = stored(&agg, &pki, "disk");
    let want: Vec<(u64, u64)> = (1..=first_refused + 2).map(|s| (11, s)).collect();
    assert_eq!(
        rows, want,
        "every acknowledged report, then the resends, once each"
    );
    let s = agg.cli_json(&pki, &["status"]);
    assert_eq!(
        s["ingest_problem"].as_str().unwrap_or(""),
        "",
        "the problem clears"
    );
    assert!(!agg.log().contains("panicked"), "{}", agg.log());
    drop(agg);
}
