//! Trust-certificate alerts reach a real Alertmanager through its v2 API with the
//! connector, group, thumbprint, expiry, days left and the remediation; renewing the
//! certificate resolves the alert there; a silence from the CLI takes it out of
//! Alertmanager and `alerts` shows it silenced; removing the silence brings it back.

use connwatch_tests::peers::Alertmanager;
use connwatch_tests::{Aggregator, Pki, cert_report, eventually, send_reports};
use std::time::{Duration, Instant};

const FILTER: &str = "alertname=\"ConnwatchTrustCertExpiring\"";

#[tokio::test]
async fn expiring_trust_certificate_alerts_in_alertmanager_resolves_and_can_be_silenced() {
    let root = tempfile::tempdir().expect("tempdir");
    let pki = Pki::init(root.path());
    let am = Alertmanager::start(root.path());
    let agg = Aggregator::start(
        root.path(),
        &pki,
        &format!(
            "[alert]\nevaluate_every = \"200ms\"\n[alert.alertmanager]\nurl = \"{}\"\nresend_every = \"1s\"\n",
            am.url()
        ),
    );
    let alpha = pki.collector("alpha");
    let wait = Duration::from_secs(15);

    let sent = Instant::now();
    send_reports(&agg, &alpha, vec![cert_report(1, 1, 20, "AA11")])
        .await
        .expect("report in the warning window");
    let alert = eventually(wait, "the alert in Alertmanager", || async {
        am.alerts(&[FILTER]).into_iter().next()
    })
    .await;
    eprintln!(
        "certificate in window -> alert in Alertmanager: {:?}",
        sent.elapsed()
    );
    assert_eq!(alert["labels"]["connector"], "alpha");
    assert_eq!(alert["labels"]["group"], "test");
    assert_eq!(alert["labels"]["severity"], "warning");
    assert_eq!(alert["labels"]["code"], "trust-cert-expiring");
    assert_eq!(alert["status"]["state"], "active");
    let notes = &alert["annotations"];
    assert_eq!(notes["thumbprint"], "AA11");
    assert!(
        notes["days_left"] == "19" || notes["days_left"] == "20",
        "{notes}"
    );
    assert!(
        notes["not_after"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z'))
    );
    assert!(
        notes["remediation"]
            .as_str()
            .is_some_and(|r| r.contains("re-registered")),
        "{notes}"
    );
    assert!(
        alert["generatorURL"]
            .as_str()
            .is_some_and(|u| u.contains("/alerts/"))
    );

    // Renewed: 200 days left. Alertmanager no longer lists it.
    let renewed = Instant::now();
    send_reports(&agg, &alpha, vec![cert_report(1, 2, 200, "BB22")])
        .await
        .expect("renewed report");
    eventually(wait, "the alert to end in Alertmanager", || async {
        am.alerts(&[FILTER]).is_empty().then_some(())
    })
    .await;
    eprintln!(
        "certificate renewed -> alert ended in Alertmanager: {:?}",
        renewed.elapsed()
    );
    let listed = agg.cli_json(&pki, &["alerts"]);
    let ours = listed["alerts"]
        .as_array()
        .expect("alerts")
        .iter()
        .find(|a| a["code"] == "trust-cert-expiring")
        .cloned()
        .expect("the resolved alert is still listed");
    assert_eq!(ours["status"], "resolved");

    // It comes back (a new episode), then an operator silences it for the group.
    send_reports(&agg, &alpha, vec![cert_report(1, 3, 20, "AA11")])
        .await
        .expect("report in the window again");
    eventually(wait, "the alert to fire again", || async {
        (!am.alerts(&[FILTER]).is_empty()).then_some(())
    })
    .await;
    let out = agg.cli(
        &pki,
        &[
            "silence",
            "add",
            "--match",
            "code=trust-cert-expiring",
            "--match",
            "group=test",
            "--for",
            "7d",
            "--comment",
            "renewal booked",
            "--json",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let silence: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let id = silence["id"].as_str().expect("id").to_string();
    assert_eq!(silence["created_by"], "admin");
    eventually(wait, "the silenced alert to leave Alertmanager", || async {
        am.alerts(&[FILTER]).is_empty().then_some(())
    })
    .await;
    let listed = agg.cli_json(&pki, &["alerts"]);
    let ours = listed["alerts"]
        .as_array()
        .expect("alerts")
        .iter()
        .find(|a| a["code"] == "trust-cert-expiring")
        .cloned()
        .expect("listed");
    assert_eq!(ours["status"], "firing");
    assert_eq!(ours["silenced_by"], id.as_str());
    assert_eq!(listed["silences"][0]["id"], id.as_str());
    let table = agg.cli(&pki, &["alerts"]);
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(
        text.contains("silenced") && text.contains("alertmanager"),
        "{text}"
    );

    let silences = agg.cli_json(&pki, &["silence", "list"]);
    assert_eq!(silences["silences"][0]["comment"], "renewal booked");
    let out = agg.cli(&pki, &["silence", "remove", &id]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    eventually(wait, "the alert back in Alertmanager", || async {
        (!am.alerts(&[FILTER]).is_empty()).then_some(())
    })
    .await;
    let out = agg.cli(&pki, &["silence", "remove", &id]);
    assert_eq!(out.status.code(), Some(4));
    assert!(String::from_utf8_lossy(&out.stderr).contains("silence list"));
}
