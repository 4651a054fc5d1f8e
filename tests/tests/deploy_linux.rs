//! The systemd units in deploy/linux/ are valid to systemd itself (`systemd-analyze
//! verify`, with the units' ExecStart pointing at the freshly built binaries), keep
//! the hardening the README promises, and score as well hardened in `systemd-analyze
//! security`; install.sh is valid shell.

use connwatch_tests::bin;
use std::path::{Path, PathBuf};
use std::process::Command;

fn deploy(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy/linux")
        .join(name)
}

const UNITS: [&str; 2] = [
    "connwatch-aggregator.service",
    "connwatch-collector.service",
];

/// Copies the units into `dir` with `/usr/local/bin/` replaced by the folder of the
/// built binaries, since `verify` checks that every ExecStart names an executable.
fn localise(dir: &Path) -> Vec<PathBuf> {
    let bin_dir = bin("connwatch-aggregator")
        .parent()
        .expect("bin folder")
        .display()
        .to_string();
    UNITS
        .iter()
        .map(|unit| {
            let text = std::fs::read_to_string(deploy(unit)).expect("read unit");
            let path = dir.join(unit);
            std::fs::write(&path, text.replace("/usr/local/bin", &bin_dir)).expect("write");
            path
        })
        .collect()
}

#[test]
fn units_pass_systemd_analyze_verify_without_a_warning() {
    let dir = tempfile::tempdir().expect("tempdir");
    for unit in localise(dir.path()) {
        // --man=no: Documentation= names the man pages install.sh puts in place, which
        // are not installed on the test machine.
        let out = Command::new("systemd-analyze")
            .args(["verify", "--man=no"])
            .arg(&unit)
            .output()
            .expect("systemd-analyze (Debian package systemd) runs");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{}: {stderr}", unit.display());
        // Unknown or misspelt keys are only warnings to verify, so demand silence.
        assert!(stderr.trim().is_empty(), "{}: {stderr}", unit.display());
    }
}

#[test]
fn units_are_hardened() {
    let dir = tempfile::tempdir().expect("tempdir");
    for unit in localise(dir.path()) {
        let text = std::fs::read_to_string(&unit).expect("read");
        for line in [
            "User=connwatch",
            "NoNewPrivileges=yes",
            "ProtectSystem=strict",
            "ProtectHome=yes",
            "PrivateTmp=yes",
            "CapabilityBoundingSet=\n",
            "Restart=",
            "StateDirectory=connwatch",
            "ExecStartPre=",
        ] {
            assert!(text.contains(line), "{} lacks {line}", unit.display());
        }
        // An overall exposure above 2.5 (of 10) fails: the units must stay locked down.
        let out = Command::new("systemd-analyze")
            .args(["security", "--offline=yes", "--threshold=25"])
            .arg(&unit)
            .current_dir(dir.path())
            .output()
            .expect("systemd-analyze security");
        assert!(
            out.status.success(),
            "{}: {}{}",
            unit.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn install_script_is_valid_shell() {
    let out = Command::new("bash")
        .arg("-n")
        .arg(deploy("install.sh"))
        .output()
        .expect("bash");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
