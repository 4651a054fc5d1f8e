//! A fleet with every connector-level fault and every group-level condition, sent over
//! real mTLS gRPC: each code appears on the connector or group it belongs to, and
//! nowhere else; healthy connectors and groups have no findings at all.

use connwatch_shared::wire::{
    BackendCheck, ConnectOutcome, EndpointCheck, LogSignature, PresentedCertificate, ProbeError,
    ProxySettings, Report, ServiceRole, ServiceState, ServiceStatus, TlsResult, TrustCertificate,
    VersionInfo,
};
use connwatch_tests::{Aggregator, Pki, eventually, send_reports};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

const DAY: i64 = 86_400_000;

fn healthy(group: &str) -> Report {
    let now = connwatch_shared::time::now_ms();
    let service = |name: &str, role: ServiceRole| ServiceStatus {
        name: name.into(),
        role: role as i32,
        state: ServiceState::Running as i32,
        source: "test".into(),
        ..Default::default()
    };
    Report {
        seq: 1,
        epoch: 1,
        collected_at_ms: now,
        group: group.into(),
        services: vec![
            service("WAPCSvc", ServiceRole::Connector),
            service("WAPCUpdaterSvc", ServiceRole::Updater),
        ],
        trust_certs: vec![TrustCertificate {
            source: "trust.pem".into(),
            subject: "CN=connector".into(),
            issuer: "CN=connectorregistrationca.msappproxy.net".into(),
            thumbprint: "AB".into(),
            not_after_ms: now + 200 * DAY,
            found: true,
            thumbprint_matched: true,
            ..Default::default()
        }],
        endpoints: vec![EndpointCheck {
            name: "svc".into(),
            address: "127.0.0.1:443".into(),
            required: true,
            outcome: ConnectOutcome::Ok as i32,
            tls: Some(TlsResult {
                protocol: "TLSv1.3".into(),
                issuer_checked: true,
                issuer_expected: true,
                chain: vec![PresentedCertificate {
                    subject: "CN=svc".into(),
                    issuer: "CN=Expected Root".into(),
                    not_after_ms: now + DAY,
                }],
                ..Default::default()
            }),
            ..Default::default()
        }],
        backends: vec![BackendCheck {
            url: "http://app.internal/".into(),
            http_status: 200,
            ..Default::default()
        }],
        proxy: Some(ProxySettings {
            connector_proxy: "direct".into(),
            updater_proxy: "direct".into(),
            ..Default::default()
        }),
        version: Some(VersionInfo {
            connector_version: "1.5.0".into(),
            updater_version: "1.5.0".into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn with(group: &str, change: impl FnOnce(&mut Report)) -> Report {
    let mut r = healthy(group);
    change(&mut r);
    r
}

#[tokio::test]
async fn every_fault_is_found_where_it_is_and_nowhere_else() {
    let root = tempfile::tempdir().expect("tempdir");
    let pki = Pki::init(root.path());
    let groups = ["main", "faults", "dark", "thin", "split", "mixed"];
    let declared: String = groups
        .iter()
        .map(|g| format!("[[group]]\nname = \"{g}\"\n"))
        .collect();
    let agg = Aggregator::start(
        root.path(),
        &pki,
        // No start-up grace: the catalogue is checked as it stands once the aggregator
        // has heard from everyone, and a group of one (`nowhere`) is short of members
        // from its first report.
        &format!(
            "[rules]\ninactive_after = \"4s\"\nretire_after = \"10s\"\nstartup_grace = \"0s\"\n{declared}"
        ),
    );
    // Certificates first: issuing them is the slow part, and the timing below must
    // not depend on it.
    let ids = [
        "gone",
        "quiet",
        "h1",
        "h2",
        "f-ok1",
        "f-ok2",
        "svc-stopped",
        "upd-stopped",
        "cert-soon",
        "cert-expired",
        "cert-missing",
        "cert-issuer",
        "port-closed",
        "proxy-blocked",
        "tls-old",
        "tls-mitm",
        "backend-down",
        "proxy-diff",
        "old-version",
        "skewed",
        "log-error",
        "probe-err",
        "stray",
        "d1",
        "t1",
        "t2",
        "s1",
        "s2",
        "s3",
        "m1",
        "m2",
    ];
    let certs: BTreeMap<&str, _> = ids.iter().map(|id| (*id, pki.collector(id))).collect();
    let send = |id: &'static str, r: Report| {
        let tls = certs[id].clone();
        let agg = &agg;
        async move {
            let acks = send_reports(agg, &tls, vec![r]).await.expect("stream");
            assert_eq!(acks[0].reason, "", "{id} was rejected");
        }
    };

    // Timing: `gone` falls silent first and is retired by the time we look; `quiet`
    // later, so it is inactive but not retired.
    send("gone", healthy("faults")).await;
    tokio::time::sleep(Duration::from_millis(4500)).await;
    send("quiet", healthy("faults")).await;
    tokio::time::sleep(Duration::from_millis(6000)).await;

    let now = connwatch_shared::time::now_ms();
    let fleet: Vec<(&'static str, Report)> = vec![
        ("h1", healthy("main")),
        ("h2", healthy("main")),
        ("f-ok1", healthy("faults")),
        ("f-ok2", healthy("faults")),
        (
            "svc-stopped",
            with("faults", |r| {
                r.services[0].state = ServiceState::Stopped as i32
            }),
        ),
        (
            "upd-stopped",
            with("faults", |r| {
                r.services[1].state = ServiceState::NotInstalled as i32
            }),
        ),
        (
            "cert-soon",
            with("faults", |r| r.trust_certs[0].not_after_ms = now + 10 * DAY),
        ),
        (
            "cert-expired",
            with("faults", |r| r.trust_certs[0].not_after_ms = now - DAY),
        ),
        (
            "cert-missing",
            with("faults", |r| {
                r.trust_certs[0] = TrustCertificate {
                    source: "trust.pem".into(),
                    error: "cannot read trust.pem".into(),
                    ..Default::default()
                }
            }),
        ),
        (
            "cert-issuer",
            with("faults", |r| {
                r.trust_certs[0].issuer = "CN=Homemade CA".into()
            }),
        ),
        (
            "port-closed",
            with("faults", |r| {
                r.endpoints[0].outcome = ConnectOutcome::Refused as i32;
                r.endpoints[0].tls = None;
            }),
        ),
        (
            "proxy-blocked",
            with("faults", |r| {
                r.endpoints[0].outcome = ConnectOutcome::ProxyRefused as i32;
                r.endpoints[0].via = "proxy.contoso.local:8080".into();
                r.endpoints[0].proxy_status = "HTTP/1.1 403 Forbidden".into();
                r.endpoints[0].tls = None;
            }),
        ),
        (
            "tls-old",
            with("faults", |r| {
                if let Some(t) = r.endpoints[0].tls.as_mut() {
                    t.version_too_old = true;
                    t.protocol = "TLSv1.1".into();
                }
            }),
        ),
        (
            "tls-mitm",
            with("faults", |r| {
                if let Some(t) = r.endpoints[0].tls.as_mut() {
                    t.issuer_expected = false;
                    t.chain[0].issuer = "CN=Inspection Appliance CA".into();
                }
            }),
        ),
        (
            "backend-down",
            with("faults", |r| r.backends[0].http_status = 502),
        ),
        (
            "proxy-diff",
            with("faults", |r| {
                if let Some(p) = r.proxy.as_mut() {
                    p.updater_proxy = "http://proxy.internal:8080".into();
                }
            }),
        ),
        (
            "old-version",
            with("faults", |r| {
                if let Some(v) = r.version.as_mut() {
                    v.connector_version = "1.4.0".into();
                }
            }),
        ),
        (
            "skewed",
            with("faults", |r| r.collected_at_ms = now - 10 * 60_000),
        ),
        (
            "log-error",
            with("faults", |r| {
                r.log_signatures = vec![LogSignature {
                    id: "service-unreachable".into(),
                    count: 2,
                    last_line: "The connector was unable to connect to the service".into(),
                }]
            }),
        ),
        (
            "probe-err",
            with("faults", |r| {
                r.probe_errors = vec![ProbeError {
                    probe: "host".into(),
                    reason: "permission denied".into(),
                }]
            }),
        ),
        ("stray", healthy("nowhere")),
        (
            "d1",
            with("dark", |r| {
                r.services[0].state = ServiceState::Stopped as i32
            }),
        ),
        ("t1", healthy("thin")),
        (
            "t2",
            with("thin", |r| {
                r.services[0].state = ServiceState::Stopped as i32
            }),
        ),
        ("s1", healthy("split")),
        ("s2", healthy("split")),
        (
            "s3",
            with("split", |r| {
                r.endpoints[0].outcome = ConnectOutcome::TimedOut as i32;
                r.endpoints[0].tls = None;
            }),
        ),
        ("m1", healthy("mixed")),
        (
            "m2",
            with("mixed", |r| {
                if let Some(v) = r.version.as_mut() {
                    v.connector_version = "1.6.0".into();
                }
            }),
        ),
    ];
    for (id, r) in fleet {
        send(id, r).await;
    }

    let want: BTreeSet<(&str, &str)> = [
        ("inactive", "quiet"),
        ("service-not-running", "svc-stopped"),
        ("updater-not-running", "upd-stopped"),
        ("trust-cert-expiring", "cert-soon"),
        ("trust-cert-expired", "cert-expired"),
        ("trust-cert-missing", "cert-missing"),
        ("trust-cert-issuer", "cert-issuer"),
        ("endpoint-unreachable", "port-closed"),
        ("proxy-failed", "proxy-blocked"),
        ("tls-too-old", "tls-old"),
        ("tls-intercepted", "tls-mitm"),
        ("backend-unreachable", "backend-down"),
        ("proxy-mismatch", "proxy-diff"),
        ("version-behind", "old-version"),
        ("clock-skew", "skewed"),
        ("known-error-logged", "log-error"),
        ("probe-failed", "probe-err"),
        ("unassigned-connector", "stray"),
        ("group-no-redundancy", "nowhere"),
        ("service-not-running", "d1"),
        ("group-down", "dark"),
        ("service-not-running", "t2"),
        ("group-no-redundancy", "thin"),
        ("endpoint-unreachable", "s3"),
        ("group-split-reachability", "split"),
        ("version-behind", "m1"),
        ("group-mixed-versions", "mixed"),
        // The faults group itself: port-closed and proxy-blocked cannot reach svc while
        // others can, and old-version runs an older release than the rest.
        ("group-split-reachability", "faults"),
        ("group-mixed-versions", "faults"),
    ]
    .into_iter()
    .collect();

    let got = eventually(Duration::from_secs(10), "the fleet's findings", || async {
        let findings = agg.cli_json(&pki, &["findings"]);
        let got: BTreeSet<(String, String)> = findings
            .as_array()?
            .iter()
            .map(|f| {
                (
                    f["code"].as_str().unwrap_or("").to_string(),
                    f["subject"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect();
        (got.len() >= want.len()).then_some(got)
    })
    .await;
    let got: BTreeSet<(&str, &str)> = got.iter().map(|(c, s)| (c.as_str(), s.as_str())).collect();
    let missing: Vec<_> = want.difference(&got).collect();
    let extra: Vec<_> = got.difference(&want).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "missing {missing:?}\nunexpected {extra:?}"
    );

    // The retired connector has left the live views; the healthy ones are healthy.
    let list = agg.cli_json(&pki, &["connectors"]);
    let health: BTreeMap<&str, &str> = list
        .as_array()
        .expect("list")
        .iter()
        .map(|c| {
            (
                c["id"].as_str().unwrap_or(""),
                c["health"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert!(
        !health.contains_key("gone"),
        "retired connectors leave the live views"
    );
    for id in ["h1", "h2", "f-ok1", "f-ok2", "t1", "s1", "s2", "m2"] {
        assert_eq!(health.get(id), Some(&"healthy"), "{id}");
    }
    let main = agg.cli_json(&pki, &["group", "main"]);
    assert_eq!(main["summary"]["health"], "healthy");
    assert_eq!(main["findings"].as_array().map(Vec::len), Some(0));
    let split = agg.cli_json(&pki, &["group", "split"]);
    assert_eq!(split["endpoints"][0], "svc");
    let matrix: Vec<(String, String)> = split["reachability"]
        .as_array()
        .expect("matrix")
        .iter()
        .map(|r| {
            (
                r["connector"].as_str().unwrap_or("").into(),
                r["outcomes"][0].as_str().unwrap_or("").into(),
            )
        })
        .collect();
    assert!(
        matrix.contains(&("s3".into(), "timed-out".into())),
        "{matrix:?}"
    );
    assert!(matrix.contains(&("s1".into(), "ok".into())), "{matrix:?}");

    // Filters and the cert listing.
    let behind = agg.cli_json(&pki, &["connectors", "--finding", "version-behind"]);
    let ids: BTreeSet<&str> = behind
        .as_array()
        .expect("list")
        .iter()
        .map(|c| c["id"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(ids, ["m1", "old-version"].into_iter().collect());
    // Filtered rows still carry their own registry facts.
    let version_of = |rows: &serde_json::Value, id: &str| {
        let row = rows
            .as_array()
            .and_then(|r| r.iter().find(|c| c["id"] == id))
            .unwrap_or_else(|| panic!("{id} listed"));
        assert!(row["last_seen_ms"].as_i64().unwrap_or(0) > 0, "{row}");
        row["connector_version"].as_str().unwrap_or("").to_string()
    };
    assert_eq!(version_of(&behind, "old-version"), "1.4.0");
    assert_eq!(version_of(&behind, "m1"), "1.5.0");
    let mixed = agg.cli_json(&pki, &["connectors", "--group", "mixed"]);
    assert_eq!(version_of(&mixed, "m2"), "1.6.0");
    let unhealthy = agg.cli_json(&pki, &["connectors", "--group", "thin", "--unhealthy"]);
    assert_eq!(unhealthy[0]["id"], "t2");
    assert_eq!(unhealthy.as_array().map(Vec::len), Some(1));
    let certs = agg.cli_json(&pki, &["certs", "--expiring-within", "30d"]);
    let soon: Vec<&str> = certs
        .as_array()
        .expect("certs")
        .iter()
        .map(|c| c["connector"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(
        soon,
        ["cert-missing", "cert-expired", "cert-soon"],
        "missing first, then soonest expiry"
    );
    let critical = agg.cli_json(
        &pki,
        &[
            "findings",
            "--severity",
            "critical",
            "--code",
            "service-not-running",
        ],
    );
    assert_eq!(critical.as_array().map(Vec::len), Some(3));

    // check: critical findings exist, so exit 2.
    let check = agg.cli(&pki, &["check"]);
    assert_eq!(
        check.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&check.stdout)
    );
    assert!(String::from_utf8_lossy(&check.stdout).starts_with("CRITICAL:"));
}

#[tokio::test]
async fn check_exits_zero_on_a_healthy_fleet_and_one_with_warnings() {
    let root = tempfile::tempdir().expect("tempdir");
    let pki = Pki::init(root.path());
    let agg = Aggregator::start(root.path(), &pki, "[[group]]\nname = \"main\"\n");
    for id in ["a", "b"] {
        send_reports(&agg, &pki.collector(id), vec![healthy("main")])
            .await
            .expect("stream");
    }
    let ok = agg.cli(&pki, &["check"]);
    assert_eq!(
        ok.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&ok.stdout)
    );
    assert_eq!(agg.cli_json(&pki, &["check"])["status"], "ok");
    let mut r = healthy("main");
    r.seq = 2;
    r.trust_certs[0].not_after_ms = connwatch_shared::time::now_ms() + 20 * DAY;
    send_reports(&agg, &pki.collector("a"), vec![r])
        .await
        .expect("stream");
    let warn = agg.cli(&pki, &["check"]);
    assert_eq!(
        warn.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&warn.stdout)
    );
}
