//! The views agree with the findings: the certificate listing judges with each group's
//! thresholds and issuers, and the reachability matrix shows what the TLS handshake
//! showed, not only that the port opened.

use connwatch_shared::wire::{ConnectOutcome, EndpointCheck, TlsResult, TrustCertificate};
use connwatch_tests::{Aggregator, Pki, cert_report, send_reports};

#[tokio::test]
async fn the_cert_listing_agrees_with_the_findings_under_group_thresholds() {
    let root = tempfile::tempdir().expect("tempdir");
    let pki = Pki::init(root.path());
    let agg = Aggregator::start(
        root.path(),
        &pki,
        "[[group]]\nname = \"test\"\ncert_warning = \"60d\"\ncert_critical = \"45d\"\nexpected_cert_issuers = [\"Contoso Registration\"]\n",
    );
    let issuer = "CN=Contoso Registration CA";
    let cases: [(&str, i64, &str, bool, &str); 5] = [
        ("c-ok", 200, issuer, true, "ok"),
        ("c-warn", 50, issuer, true, "warning"),
        ("c-crit", 40, issuer, true, "critical"),
        (
            "c-issuer",
            200,
            "CN=connectorregistrationca.msappproxy.net",
            true,
            "wrong-issuer",
        ),
        ("c-missing", 200, issuer, false, "missing"),
    ];
    for (id, days, cert_issuer, found, _) in cases {
        let mut r = cert_report(1, 1, days, "4905CC64B2D81BBED60962ECC5DCF63F643CCD55");
        r.trust_certs[0].issuer = cert_issuer.into();
        if !found {
            r.trust_certs[0] = TrustCertificate {
                source: "LocalMachine\\My".into(),
                error: "no certificate with that thumbprint".into(),
                ..Default::default()
            };
        }
        let acks = send_reports(&agg, &pki.collector(id), vec![r])
            .await
            .expect("stream");
        assert_eq!(acks[0].reason, "", "{id}");
    }
    let listed = agg.cli_json(&pki, &["certs"]);
    let table = agg.cli(&pki, &["certs"]);
    let text = String::from_utf8_lossy(&table.stdout).to_string();
    for (id, _, _, _, state) in cases {
        let row = listed
            .as_array()
            .and_then(|a| a.iter().find(|c| c["connector"] == id))
            .unwrap_or_else(|| panic!("{id} listed: {listed}"));
        assert_eq!(row["state"], state, "{id}: {row}");
        let line = text
            .lines()
            .find(|l| l.starts_with(id))
            .unwrap_or_else(|| panic!("{id} in the table:\n{text}"));
        assert!(line.contains(state), "{line}");
        // The connector's findings say the same.
        let detail = agg.cli_json(&pki, &["connector", id]);
        let findings: Vec<(String, String)> = detail["findings"]
            .as_array()
            .expect("findings")
            .iter()
            .map(|f| {
                (
                    f["code"].as_str().unwrap_or("").to_string(),
                    f["severity"].as_str().unwrap_or("").to_string(),
                )
            })
            .filter(|(code, _)| code.starts_with("trust-cert"))
            .collect();
        let expected: Vec<(&str, &str)> = match state {
            "ok" => vec![],
            "warning" => vec![("trust-cert-expiring", "warning")],
            "critical" => vec![("trust-cert-expiring", "critical")],
            "wrong-issuer" => vec![("trust-cert-issuer", "critical")],
            _ => vec![("trust-cert-missing", "critical")],
        };
        let got: Vec<(&str, &str)> = findings
            .iter()
            .map(|(c, s)| (c.as_str(), s.as_str()))
            .collect();
        assert_eq!(got, expected, "{id}");
    }
}

#[tokio::test]
async fn the_reachability_matrix_shows_the_tls_state() {
    let root = tempfile::tempdir().expect("tempdir");
    let pki = Pki::init(root.path());
    let agg = Aggregator::start(root.path(), &pki, "");
    let endpoint = |tls: TlsResult| EndpointCheck {
        name: "cloud-443".into(),
        address: "127.0.0.1:443".into(),
        required: true,
        outcome: ConnectOutcome::Ok as i32,
        tls: Some(tls),
        ..Default::default()
    };
    let fine = TlsResult {
        protocol: "TLSv1.3".into(),
        ..Default::default()
    };
    let old = TlsResult {
        version_too_old: true,
        error: "the server offers no TLS 1.2 or later".into(),
        ..Default::default()
    };
    let inspected = TlsResult {
        protocol: "TLSv1.3".into(),
        issuer_checked: true,
        issuer_expected: false,
        ..Default::default()
    };
    for (id, tls) in [("m-ok", fine), ("m-old", old), ("m-mitm", inspected)] {
        let mut r = connwatch_tests::report(1, 1);
        r.endpoints = vec![endpoint(tls)];
        send_reports(&agg, &pki.collector(id), vec![r])
            .await
            .expect("stream");
    }
    let g = agg.cli_json(&pki, &["group", "test"]);
    let outcome = |id: &str| {
        g["reachability"]
            .as_array()
            .and_then(|rows| rows.iter().find(|r| r["connector"] == id))
            .map(|r| r["outcomes"][0].as_str().unwrap_or("").to_string())
            .unwrap_or_default()
    };
    assert_eq!(outcome("m-ok"), "ok", "{g}");
    assert_eq!(outcome("m-old"), "tls-too-old", "{g}");
    assert_eq!(outcome("m-mitm"), "unexpected-ca", "{g}");
    let table = agg.cli(&pki, &["group", "test"]);
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(text.contains("unexpected-ca"), "{text}");
    assert!(text.lines().all(|l| l.chars().count() <= 100), "{text}");
}
