//! With no `[alert]` codes configured, every critical finding alerts: a missing trust
//! certificate fires at once, an unreachable required endpoint is pending for its
//! hold (a minute) and fires after it.

use connwatch_shared::wire::{ConnectOutcome, EndpointCheck, TrustCertificate};
use connwatch_tests::{Aggregator, Pki, eventually, report, send_reports};
use std::time::Duration;

#[tokio::test]
async fn critical_findings_alert_with_the_default_config() {
    let root = tempfile::tempdir().expect("tempdir");
    let pki = Pki::init(root.path());
    // Only the evaluation interval differs from the defaults, to see it soon.
    let agg = Aggregator::start(root.path(), &pki, "[alert]\nevaluate_every = \"100ms\"\n");

    let mut closed = report(1, 1);
    closed.endpoints = vec![EndpointCheck {
        name: "cloud".into(),
        address: "127.0.0.1:9".into(),
        required: true,
        outcome: ConnectOutcome::Refused as i32,
        error: "Connection refused (os error 111)".into(),
        ..Default::default()
    }];
    let mut missing = report(1, 1);
    missing.trust_certs = vec![TrustCertificate {
        source: "LocalMachine\\My".into(),
        found: false,
        error: "no certificate with the thumbprint in the store".into(),
        ..Default::default()
    }];
    send_reports(&agg, &pki.collector("alpha"), vec![closed])
        .await
        .expect("alpha's report");
    send_reports(&agg, &pki.collector("beta"), vec![missing])
        .await
        .expect("beta's report");

    let want = [
        ("endpoint-unreachable", "alpha", "pending"),
        ("trust-cert-missing", "beta", "firing"),
    ];
    let got = eventually(Duration::from_secs(15), "both alerts", || async {
        let listed = agg.cli_json(&pki, &["alerts"]);
        let got: Vec<(String, String, String)> = listed["alerts"]
            .as_array()?
            .iter()
            .map(|a| {
                let s = |k: &str| a[k].as_str().unwrap_or("").to_string();
                (s("code"), s("subject"), s("status"))
            })
            .collect();
        want.iter()
            .all(|(c, s, st)| {
                got.iter()
                    .any(|g| (g.0.as_str(), g.1.as_str(), g.2.as_str()) == (*c, *s, *st))
            })
            .then_some(got)
    })
    .await;
    // Both members are down, so their group is too; nothing else alerts.
    let mut codes: Vec<&str> = got.iter().map(|(c, _, _)| c.as_str()).collect();
    codes.sort();
    assert_eq!(
        codes,
        ["endpoint-unreachable", "group-down", "trust-cert-missing"],
        "{got:?}"
    );
}
