//! Identity comes from the client certificate: reports land under the certificate's
//! connector id, roles are enforced both ways, and certificates from another CA,
//! expired ones and ones without (or with two) identities are refused with nothing
//! written.

use connwatch_shared::identity::{Identity, Role};
use connwatch_shared::pki::LeafSpec;
use connwatch_shared::wire::{AckOutcome, StatusRequest};
use connwatch_tests::{Aggregator, Pki, collector_id, query_client, report, send_reports};
use std::time::Duration;

#[tokio::test]
async fn reports_are_stored_under_the_certificate_identity_only() {
    let root = tempfile::tempdir().expect("tempdir");
    let pki = Pki::init(root.path());
    let agg = Aggregator::start(root.path(), &pki, "");
    let alpha = pki.collector("alpha");
    // The report names another group and carries no id: nothing in it can move it to
    // another connector.
    let mut r = report(1, 1);
    r.group = "beta-group".into();
    let acks = send_reports(&agg, &alpha, vec![r]).await.expect("stream");
    assert_eq!(acks[0].outcome, AckOutcome::Stored as i32);
    assert_eq!(agg.connector_ids(&pki), ["alpha"]);
}

#[tokio::test]
async fn roles_are_enforced_both_ways() {
    let root = tempfile::tempdir().expect("tempdir");
    let pki = Pki::init(root.path());
    let agg = Aggregator::start(root.path(), &pki, "");
    let collector = pki.collector("alpha");
    let mut q = query_client(&agg, &collector)
        .await
        .expect("TLS accepts a valid collector");
    let err = q
        .status(StatusRequest::default())
        .await
        .expect_err("collector cannot query");
    assert_eq!(err.code(), tonic::Code::PermissionDenied);
    assert!(
        err.message().contains("operator certificate"),
        "{}",
        err.message()
    );

    let err = send_reports(&agg, &pki.operator(), vec![report(1, 1)])
        .await
        .expect_err("operator cannot send reports");
    assert_eq!(err.code(), tonic::Code::PermissionDenied);
    assert!(
        err.message().contains("collector certificate"),
        "{}",
        err.message()
    );
    let list = agg.cli_json(&pki, &["connectors"]);
    assert_eq!(list.as_array().expect("list").len(), 0, "nothing written");
}

#[tokio::test]
async fn bad_certificates_are_refused_and_write_nothing() {
    let root = tempfile::tempdir().expect("tempdir");
    let pki = Pki::init(root.path());
    let agg = Aggregator::start(root.path(), &pki, "");
    let foreign = pki.foreign("foreign", &collector_id("mallory"));
    let expired = pki.custom("expired", &{
        let mut spec = LeafSpec::client(&collector_id("old"));
        spec.not_before = time::OffsetDateTime::now_utc() - time::Duration::days(30);
        spec.not_after = time::OffsetDateTime::now_utc() - time::Duration::days(1);
        spec
    });
    let no_san = pki.custom("nosan", &LeafSpec::blank(false));
    let two = pki.custom("two", &{
        let mut spec = LeafSpec::client(&collector_id("one"));
        spec.uris.push(
            Identity {
                role: Role::Collector,
                name: "two".into(),
            }
            .san_uri(),
        );
        spec
    });
    for (name, tls, want) in [
        ("another CA", &foreign, None),
        ("expired", &expired, None),
        ("no identity SAN", &no_san, Some("no connwatch identity")),
        ("two identity SANs", &two, Some("2 connwatch identities")),
    ] {
        let result = tokio::time::timeout(
            Duration::from_secs(15),
            send_reports(&agg, tls, vec![report(1, 1)]),
        )
        .await
        .expect("refusal is prompt");
        let err = result.expect_err(name);
        match want {
            // Refused in the TLS handshake: the connection never carries a request.
            // Depending on when the server's alert lands, the client sees the connect
            // fail (unavailable, unknown) or the connection close under the request
            // (cancelled).
            None => assert!(
                matches!(
                    err.code(),
                    tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::Cancelled
                ),
                "{name}: {err:?}"
            ),
            Some(text) => {
                assert_eq!(err.code(), tonic::Code::Unauthenticated, "{name}: {err:?}");
                assert!(err.message().contains(text), "{name}: {}", err.message());
            }
        }
    }
    let list = agg.cli_json(&pki, &["connectors"]);
    assert_eq!(
        list.as_array().expect("list").len(),
        0,
        "refused clients wrote nothing"
    );
}

#[tokio::test]
async fn revoked_certificates_are_refused_and_a_reload_picks_up_new_revocations() {
    let root = tempfile::tempdir().expect("tempdir");
    let pki = Pki::init(root.path());
    let alpha = pki.collector("alpha");
    let beta = pki.collector("beta");
    let said = pki.revoke(&beta.cert);
    assert!(said.contains("crl.pem lists 1"), "{said}");
    let crl = pki.dir.join("crl.pem");
    let agg = Aggregator::start(root.path(), &pki, &format!("crl = \"{}\"\n", crl.display()));

    let acks = send_reports(&agg, &alpha, vec![report(1, 1)])
        .await
        .expect("alpha is not revoked");
    assert_eq!(acks[0].outcome, AckOutcome::Stored as i32);
    send_reports(&agg, &beta, vec![report(1, 1)])
        .await
        .expect_err("beta is revoked");

    // Revoking again is harmless; revoking alpha takes effect on reload.
    assert!(pki.revoke(&beta.cert).contains("already revoked"));
    assert!(pki.revoke(&alpha.cert).contains("crl.pem lists 2"));
    agg.hangup();
    // Until the reload lands alpha may still get in; once refused, it stays refused.
    connwatch_tests::eventually(Duration::from_secs(10), "alpha refused", || async {
        send_reports(&agg, &alpha, vec![report(1, 2)])
            .await
            .is_err()
            .then_some(())
    })
    .await;
    let before = agg.history_seqs(&pki, "alpha");
    send_reports(&agg, &alpha, vec![report(1, 50)])
        .await
        .expect_err("alpha stays refused");
    assert_eq!(agg.connector_ids(&pki), ["alpha"], "nothing from beta");
    let after = agg.history_seqs(&pki, "alpha");
    assert_eq!(after, before, "nothing from alpha after its revocation");
    assert!(!after.contains(&50));
}

#[test]
fn a_broken_revocation_list_fails_the_config_check_naming_the_file() {
    let root = tempfile::tempdir().expect("tempdir");
    let pki = Pki::init(root.path());
    let crl = root.path().join("crl.pem");
    std::fs::write(&crl, "not a list").expect("write");
    let config = Aggregator::write_config(root.path(), &pki, "crl = \"crl.pem\"\n");
    let out = std::process::Command::new(connwatch_tests::bin("connwatch-aggregator"))
        .args(["serve", "--check-config", "--config"])
        .arg(&config)
        .output()
        .expect("run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(err.contains(&crl.display().to_string()), "{err}");
    assert!(err.contains("ca revoke"), "{err}");
}
