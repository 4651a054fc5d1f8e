//! The operator CLI and the binaries' command lines: JSON that parses, tables that
//! fit, help that helps, exit codes scripts can use, and errors that say what to do.

use connwatch_tests::{Aggregator, Pki, bin, report, send_reports};
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
    assert_eq!(missing.status.code(), Some(3));
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
