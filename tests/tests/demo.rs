//! The README's first command: the demo shows both groups, six connectors and the
//! planted faults, and `--json` is valid JSON with the catalogue's codes.

use connwatch_tests::bin;
use std::process::Command;
use std::time::{Duration, Instant};

#[test]
fn the_demo_finds_the_planted_faults() {
    let started = Instant::now();
    let out = Command::new(bin("connwatch-aggregator"))
        .args(["demo", "--duration", "16s", "--json"])
        .output()
        .expect("run the demo");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(started.elapsed() < Duration::from_secs(60));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("demo --json is JSON");
    assert_eq!(v["groups"].as_array().expect("groups").len(), 2);
    assert_eq!(v["connectors"].as_array().expect("connectors").len(), 6);
    let found: Vec<(String, String)> = v["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .map(|f| {
            (
                f["code"].as_str().unwrap_or("").to_string(),
                f["subject"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    for want in [
        ("endpoint-unreachable", "eu-west-2"),
        ("trust-cert-expiring", "eu-west-3"),
        ("service-not-running", "us-east-3"),
        ("inactive", "us-east-2"),
    ] {
        assert!(
            found.iter().any(|(c, s)| c == want.0 && s == want.1),
            "missing {want:?} in {found:?}"
        );
    }
    for healthy in ["eu-west-1", "us-east-1"] {
        assert!(
            !found.iter().any(|(_, s)| s == healthy),
            "{healthy} should have no findings: {found:?}"
        );
    }
}
