//! The Prometheus and Alertmanager examples in deploy/ pass their own tools' checks.

use std::path::{Path, PathBuf};
use std::process::Command;

fn deploy(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy")
        .join(name)
}

#[test]
fn prometheus_and_alertmanager_examples_pass_promtool_and_amtool() {
    for (tool, args, file) in [
        ("promtool", &["check", "config"][..], "prometheus.yml"),
        ("promtool", &["check", "rules"][..], "connwatch.rules.yml"),
        ("amtool", &["check-config"][..], "alertmanager.yml"),
    ] {
        let out = Command::new(tool)
            .args(args)
            .arg(deploy(file))
            .output()
            .unwrap_or_else(|e| panic!("{tool} ({e}); scripts/install-test-deps installs it"));
        assert!(
            out.status.success(),
            "{tool} {file}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
