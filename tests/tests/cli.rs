//! The operator CLI and the binaries' command lines: JSON that parses, tables that
//! fit, help that helps, exit codes scripts can use, and errors that say what to do.

use connwatch_tests::{Aggregator, Pki, bin, report, send_reports};
use std::path::Path;
use std::process::Command;

#[tokio::test]
async fn queries_print_json_and_tables() {
    let root = tempfile::tempdir().expect("tempdir");
    let pki = Pki::init(root.path());
    // No start-up grace: the lone member is short of the group's two from the start.
    let agg = Aggregator::start(
        root.path(),
        &pki,
        "[rules]\nstartup_grace = \"0s\"\n[[group]]\nname = \"test\"\n",
    );
    send_reports(&agg, &pki.collector("c1"), vec![report(1, 1), report(1, 2)])
        .await
        .expect("reports");

    let status = agg.cli_json(&pki, &["status"]);
    assert_eq!(status["groups"][0]["name"], "test");
    assert_eq!(status["groups"][0]["health"], "warning");
    assert_eq!(status["groups"][0]["worst_finding"], "group-no-redundancy");
    let list = agg.cli_json(&pki, &["connectors", "--group", "test"]);
    assert_eq!(list[0]["id"], "c1");
    assert_eq!(list[0]["health"], "healthy");
    let one = agg.cli_json(&pki, &["connector", "c1"]);
    assert_eq!(one["latest"]["seq"], 2);
    let history = agg.cli_json(&pki, &["history", "c1", "--since", "1h"]);
    assert_eq!(history["entries"].as_array().expect("entries").len(), 2);

    let table = agg.cli(&pki, &["status"]);
    assert!(table.status.success());
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(text.starts_with("GROUP"), "{text}");
    assert!(text.contains("group-no-redundancy"), "{text}");
    assert!(!text.contains('\x1b'), "no colours when not on a terminal");
    assert!(text.lines().all(|l| l.chars().count() <= 100), "{text}");

    let missing = agg.cli(&pki, &["connector", "nope"]);
    assert_eq!(missing.status.code(), Some(4), "not found has its own code");
    let err = String::from_utf8_lossy(&missing.stderr);
    assert!(
        err.contains("no connector `nope`") && err.contains("connwatch-aggregator connectors"),
        "{err}"
    );
}

#[test]
fn an_unreachable_aggregator_is_explained() {
    let root = tempfile::tempdir().expect("tempdir");
    let pki = Pki::init(root.path());
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let out = Command::new(bin("connwatch-aggregator"))
        .args([
            "status",
            "--aggregator",
            &format!("https://127.0.0.1:{port}"),
            "--certs",
        ])
        .arg(&pki.dir)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(3));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot reach the aggregator") && err.contains("serve"),
        "{err}"
    );
}

#[test]
fn help_lists_the_commands() {
    for (binary, words) in [
        (
            "connwatch-aggregator",
            &[
                "serve",
                "status",
                "connectors",
                "connector",
                "history",
                "ca",
                "demo",
            ][..],
        ),
        ("connwatch-collector", &["run", "probe"][..]),
    ] {
        let out = Command::new(bin(binary))
            .arg("--help")
            .output()
            .expect("run");
        assert!(out.status.success());
        let text = String::from_utf8_lossy(&out.stdout);
        for w in words {
            assert!(
                text.contains(&format!("  {w} ")),
                "{binary} --help lacks {w}:\n{text}"
            );
        }
    }
    let out = Command::new(bin("connwatch-aggregator"))
        .arg("--version")
        .output()
        .expect("run");
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("connwatch-aggregator "));
}

/// Runs the CLI against `agg` with exactly `args` (no address or certificates added).
fn cli_raw(args: &[&str], certs: &Path) -> std::process::Output {
    Command::new(bin("connwatch-aggregator"))
        .args(args)
        .arg("--certs")
        .arg(certs)
        .env_remove("CONNWATCH_AGGREGATOR")
        .env_remove("CONNWATCH_OPERATOR")
        .output()
        .expect("run")
}

#[tokio::test]
async fn the_address_needs_no_scheme_and_named_operator_certificates_are_found() {
    let root = tempfile::tempdir().expect("tempdir");
    let pki = Pki::init(root.path());
    let agg = Aggregator::start(root.path(), &pki, "");
    let addr = agg.addr.to_string();
    let plain = cli_raw(&["status", "--aggregator", &addr], &pki.dir);
    assert!(
        plain.status.success(),
        "host:port without https://: {}",
        String::from_utf8_lossy(&plain.stderr)
    );
    // A folder with only certificates from `ca issue --role operator`.
    let mine = root.path().join("mine");
    for name in ["alice", "bob"] {
        let out = Command::new(bin("connwatch-aggregator"))
            .args(["ca", "issue", "--role", "operator", "--name", name, "--dir"])
            .arg(&pki.dir)
            .arg("--out")
            .arg(&mine)
            .output()
            .expect("issue");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        if name == "alice" {
            std::fs::copy(pki.dir.join("ca.pem"), mine.join("ca.pem")).expect("copy");
            let only = cli_raw(&["status", "--aggregator", &addr], &mine);
            assert!(
                only.status.success(),
                "the only operator-NAME.pem: {}",
                String::from_utf8_lossy(&only.stderr)
            );
        }
    }
    let two = cli_raw(&["status", "--aggregator", &addr], &mine);
    assert_eq!(two.status.code(), Some(3));
    assert!(
        String::from_utf8_lossy(&two.stderr).contains("--operator"),
        "{}",
        String::from_utf8_lossy(&two.stderr)
    );
    let chosen = cli_raw(
        &["status", "--aggregator", &addr, "--operator", "bob"],
        &mine,
    );
    assert!(
        chosen.status.success(),
        "{}",
        String::from_utf8_lossy(&chosen.stderr)
    );
}

#[test]
fn a_bad_log_level_is_a_usage_error() {
    for binary in ["connwatch-aggregator", "connwatch-collector"] {
        let out = Command::new(bin(binary))
            .args(["--log-level", "verbose", "completions", "bash"])
            .output()
            .expect("run");
        assert_eq!(out.status.code(), Some(2), "{binary}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("verbose") && err.contains("debug"),
            "{binary}: {err}"
        );
    }
}

#[test]
fn help_documents_the_exit_codes() {
    let out = Command::new(bin("connwatch-aggregator"))
        .arg("--help")
        .output()
        .expect("run");
    let text = String::from_utf8_lossy(&out.stdout);
    for code in ["3 the command failed", "4 no such connector"] {
        assert!(text.contains(code), "--help lacks `{code}`:\n{text}");
    }
}

#[tokio::test]
async fn check_leaves_silenced_findings_out() {
    let root = tempfile::tempdir().expect("tempdir");
    let pki = Pki::init(root.path());
    let agg = Aggregator::start(root.path(), &pki, "");
    let mut r = report(1, 1);
    r.probe_errors = vec![connwatch_shared::wire::ProbeError {
        probe: "log".into(),
        reason: "cannot read the log".into(),
    }];
    send_reports(&agg, &pki.collector("c1"), vec![r])
        .await
        .expect("reports");
    // A probe that could not run: a warning.
    assert_eq!(agg.cli(&pki, &["check"]).status.code(), Some(1));
    let add = agg.cli(
        &pki,
        &[
            "silence",
            "add",
            "--match",
            "code=probe-failed",
            "--for",
            "1h",
        ],
    );
    assert!(
        add.status.success(),
        "{}",
        String::from_utf8_lossy(&add.stderr)
    );
    let check = agg.cli(&pki, &["check"]);
    let text = String::from_utf8_lossy(&check.stdout);
    assert_eq!(check.status.code(), Some(0), "{text}");
    assert!(text.contains("1 silenced"), "{text}");
    assert_eq!(agg.cli_json(&pki, &["check"])["silenced"], 1);
}

#[tokio::test]
async fn epochs_are_json_strings() {
    let root = tempfile::tempdir().expect("tempdir");
    let pki = Pki::init(root.path());
    let agg = Aggregator::start(root.path(), &pki, "");
    let epoch = u64::MAX - 12_345;
    send_reports(&agg, &pki.collector("c1"), vec![report(epoch, 1)])
        .await
        .expect("reports");
    let history = agg.cli_json(&pki, &["history", "c1"]);
    assert_eq!(history["entries"][0]["epoch"], epoch.to_string());
    let one = agg.cli_json(&pki, &["connector", "c1"]);
    assert_eq!(one["latest"]["epoch"], epoch.to_string());
    assert_eq!(connwatch_tests::stored(&agg, &pki, "c1"), [(epoch, 1)]);
}
