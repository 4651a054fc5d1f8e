//! A real collector process end to end: its reports arrive, its facts show in the
//! CLI, and when it goes quiet the aggregator flags it inactive.

use connwatch_tests::{Aggregator, Collector, Pki, eventually};
use std::time::Duration;

#[tokio::test]
async fn a_collector_reports_and_is_flagged_inactive_when_it_goes_quiet() {
    let root = tempfile::tempdir().expect("tempdir");
    let pki = Pki::init(root.path());
    let agg = Aggregator::start(root.path(), &pki, "[rules]\ninactive_after = \"2s\"\n");
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr");
    let tls = pki.collector("conn-a");
    let mut collector = Collector::start(
        root.path(),
        &agg,
        &tls,
        &format!("[[endpoint]]\nname = \"blocked\"\naddress = \"{closed}\"\ntimeout = \"500ms\"\n"),
    );

    let detail = eventually(
        Duration::from_secs(15),
        "conn-a's first reports",
        || async {
            let out = agg.cli(&pki, &["connector", "conn-a", "--json"]);
            if !out.status.success() {
                return None;
            }
            let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
            (v["latest"]["seq"].as_u64()? >= 2).then_some(v)
        },
    )
    .await;
    assert_eq!(detail["summary"]["active"], true);
    let codes: Vec<&str> = detail["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .map(|f| f["code"].as_str().expect("code"))
        .collect();
    assert_eq!(
        codes,
        ["endpoint-unreachable"],
        "the closed port is found, nothing else"
    );
    assert_eq!(detail["findings"][0]["evidence"][2]["value"], "refused");

    collector.kill();
    let finding = eventually(
        Duration::from_secs(15),
        "conn-a to be flagged inactive",
        || async {
            let v = agg.cli_json(&pki, &["connector", "conn-a"]);
            let inactive = v["findings"]
                .as_array()?
                .iter()
                .find(|f| f["code"] == "inactive")
                .cloned();
            inactive.filter(|_| v["summary"]["active"] == false)
        },
    )
    .await;
    assert_eq!(finding["severity"], "warning");
    assert!(
        finding["remediation"]
            .as_str()
            .expect("remediation")
            .contains("10 days")
    );
    let status = agg.cli_json(&pki, &["status"]);
    assert_eq!(status["groups"][0]["name"], "test");
    assert_eq!(status["groups"][0]["active"], 0);
    assert_eq!(status["groups"][0]["total"], 1);
}
