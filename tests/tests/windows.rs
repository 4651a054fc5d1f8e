//! The Windows stage: the collector's Windows exe under Wine on a connector host laid
//! out as the connector's installer lays it out, in both install layouts. It checks
//! every fact `probe --json` reads on the Windows defaults, streams over mTLS to the
//! Linux aggregator, and sees each fault appear and clear in the aggregator's CLI.
//! Skipped loudly where Wine or the exe is missing; `scripts/test` requires it.

use connwatch_shared::pki::{CertAuthority, IssuedCert, LeafSpec};
use connwatch_tests::wine::{self, Layout, WineHost, exe_config, z_path};
use connwatch_tests::{Aggregator, Pki, eventually};
use std::time::Duration;

/// Counts the facts checked, so the stage can say how many it proved.
#[derive(Default)]
struct Facts {
    checked: usize,
}

impl Facts {
    fn eq(&mut self, what: &str, got: &serde_json::Value, want: impl Into<serde_json::Value>) {
        let want = want.into();
        assert_eq!(got, &want, "{what}");
        self.checked += 1;
    }

    fn holds(&mut self, what: &str, ok: bool) {
        assert!(ok, "{what}");
        self.checked += 1;
    }
}

/// A trust certificate as the registration service issues it, valid for `days`
/// from now (negative: expired that long ago).
fn trust_cert(days: i64) -> IssuedCert {
    let ca = CertAuthority::generate("connectorregistrationca.msappproxy.net").expect("ca");
    let mut spec = LeafSpec::blank(false);
    spec.common_name = "0f3c2b1a-9d8e-4f7a-b6c5-d4e3f2a1b0c9".into();
    let now = time::OffsetDateTime::now_utc();
    spec.not_before = now - time::Duration::days(200);
    spec.not_after = now + time::Duration::days(days);
    ca.issue(&spec).expect("issue the trust certificate")
}

fn not_after_ms(cert: &IssuedCert) -> i64 {
    let (_, parsed) =
        x509_parser::parse_x509_certificate(&cert.cert_der).expect("parse the trust certificate");
    parsed.validity().not_after.timestamp() * 1000
}

/// The report's facts for a healthy host of `layout`, every one of them.
fn check_healthy(
    facts: &mut Facts,
    report: &serde_json::Value,
    layout: Layout,
    thumbprint: &str,
    cert: &IssuedCert,
    store: &str,
) {
    for (i, (name, role)) in [("WAPCSvc", "connector"), ("WAPCUpdaterSvc", "updater")]
        .iter()
        .enumerate()
    {
        let s = &report["services"][i];
        facts.eq("service name", &s["name"], *name);
        facts.eq("service role", &s["role"], *role);
        facts.eq(&format!("{name} state"), &s["state"], "running");
        facts.eq(&format!("{name} start type"), &s["start_type"], "automatic");
        facts.eq(&format!("{name} source"), &s["source"], "scm");
        facts.holds(
            &format!("{name} has a pid"),
            s["pid"].as_u64().is_some_and(|p| p > 0),
        );
    }
    let v = &report["version"];
    facts.eq("connector version", &v["connector_version"], "1.5.3829.0");
    facts.eq("updater version", &v["updater_version"], "1.5.3829.1");
    facts.eq("install layout", &v["layout"], layout.id());
    let t = &report["trust_certs"][0];
    facts.eq("trust cert found", &t["found"], true);
    facts.eq("trust cert source", &t["source"], store);
    facts.eq("thumbprint", &t["thumbprint"], thumbprint);
    facts.eq("expected thumbprint", &t["expected_thumbprint"], thumbprint);
    facts.eq("thumbprint matched", &t["thumbprint_matched"], true);
    facts.holds(
        "issuer is the registration CA",
        t["issuer"]
            .as_str()
            .is_some_and(|i| i.contains("connectorregistrationca.msappproxy.net")),
    );
    facts.eq("expiry", &t["not_after_ms"], not_after_ms(cert));
    facts.eq("trust cert error", &t["error"], "");
    let p = &report["proxy"];
    facts.eq("connector proxy", &p["connector_proxy"], "");
    facts.eq("connector uses default", &p["connector_uses_default"], true);
    facts.eq("updater proxy", &p["updater_proxy"], "");
    facts.eq("updater uses default", &p["updater_uses_default"], true);
    facts.eq("system proxy", &p["system_proxy"], "direct");
    facts.holds(
        "hostname",
        report["host"]["hostname"]
            .as_str()
            .is_some_and(|h| !h.is_empty()),
    );
    facts.eq(
        "no probe errors",
        &report["probe_errors"],
        serde_json::json!([]),
    );
    facts.eq(
        "no log signatures",
        &report["log_signatures"],
        serde_json::json!([]),
    );
}

/// A healthy connector host of `layout` with a trust certificate valid for 300 days in
/// the machine store or Network Service's; the certificate and its thumbprint.
fn seeded_host(
    root: &std::path::Path,
    tools: &wine::WineTools,
    layout: Layout,
    user_store: bool,
) -> (WineHost, IssuedCert, String) {
    let host = WineHost::new(root, tools);
    host.install_connector(layout, "1.5.3829.0", "1.5.3829.1");
    let cert = trust_cert(300);
    let thumbprint = host.register_trust_cert(layout, &cert.cert_der, user_store);
    (host, cert, thumbprint)
}

/// The config of a collector left on the Windows defaults but for the endpoints,
/// which point at a loopback port (there is no internet here).
fn defaults_config(endpoint: &str, extra: &str) -> String {
    format!(
        "group = \"test\"\ninterval = \"1s\"\njitter = \"10ms\"\n{extra}\n[[endpoint]]\nname = \"loopback\"\naddress = \"{endpoint}\"\ntimeout = \"1s\"\n"
    )
}

#[test]
fn a_host_of_the_previous_layout_is_read_on_the_defaults() {
    let Some(tools) = wine::tools_or_skip("a_host_of_the_previous_layout_is_read_on_the_defaults")
    else {
        return;
    };
    let root = tempfile::tempdir().expect("tempdir");
    let layout = Layout::AppProxy;
    // Before 1.5.3829.0 most connectors kept the certificate in Network Service's store.
    let (host, cert, thumbprint) = seeded_host(root.path(), &tools, layout, true);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let endpoint = listener.local_addr().expect("addr").to_string();
    host.write(
        "connwatch-test\\probe.toml",
        defaults_config(&endpoint, "").as_bytes(),
    );

    let report = host.probe("connwatch-test\\probe.toml");
    let mut facts = Facts::default();
    check_healthy(
        &mut facts,
        &report,
        layout,
        &thumbprint,
        &cert,
        "NetworkService\\My",
    );
    facts.eq("endpoint", &report["endpoints"][0]["outcome"], "ok");
    eprintln!(
        "windows stage: {} facts checked on a host of the app-proxy layout",
        facts.checked
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_current_host_is_healthy_on_the_defaults_and_each_fault_shows() {
    let Some(tools) =
        wine::tools_or_skip("a_current_host_is_healthy_on_the_defaults_and_each_fault_shows")
    else {
        return;
    };
    let root = tempfile::tempdir().expect("tempdir");
    let layout = Layout::PrivateNetwork;
    let (host, cert, thumbprint) = seeded_host(root.path(), &tools, layout, false);

    let pki = Pki::init(root.path());
    let agg = Aggregator::start(
        root.path(),
        &pki,
        "[[group]]\nname = \"test\"\nmin_healthy = 1\n[rules]\ninactive_after = \"30s\"\n",
    );
    let endpoint = agg.url().trim_start_matches("https://").to_string();
    let tls = pki.collector("wine-host");
    let aggregator = format!(
        "[aggregator]\naddress = \"{}\"\nserver_name = \"localhost\"\nca = '{}'\ncert = '{}'\nkey = '{}'\n[spool]\ndir = 'C:\\connwatch-test\\spool'\n",
        agg.url(),
        z_path(&tls.ca),
        z_path(&tls.cert),
        z_path(&tls.key),
    );
    let config = defaults_config(&endpoint, &aggregator);
    host.write("connwatch-test\\collector.toml", config.as_bytes());

    // Every fact, once, from probe --json on the defaults.
    let mut facts = Facts::default();
    let report = host.probe("connwatch-test\\collector.toml");
    check_healthy(
        &mut facts,
        &report,
        layout,
        &thumbprint,
        &cert,
        "LocalMachine\\My",
    );
    facts.eq("endpoint", &report["endpoints"][0]["outcome"], "ok");

    // Then streamed over mTLS: no finding on the healthy host.
    let mut collector = host.spawn_collector(
        &["run", "--config", "C:\\connwatch-test\\collector.toml"],
        &root.path().join("wine-collector.log"),
    );
    let codes = |agg: &Aggregator| -> Option<(u64, Vec<String>)> {
        let out = agg.cli(&pki, &["connector", "wine-host", "--json"]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        let seq = v["latest"]["seq"].as_u64()?;
        let codes = v["findings"]
            .as_array()?
            .iter()
            .filter_map(|f| f["code"].as_str().map(String::from))
            .collect();
        Some((seq, codes))
    };
    let healthy = eventually(
        Duration::from_secs(60),
        "the Wine collector's first reports",
        || async { codes(&agg).filter(|(seq, _)| *seq >= 2) },
    )
    .await;
    if !healthy.1.is_empty() {
        let out = agg.cli(&pki, &["connector", "wine-host"]);
        panic!(
            "a healthy host has findings at the aggregator:\n{}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    facts.checked += 1;
    let seen = |want: &'static str, present: bool| {
        let agg = &agg;
        let codes = &codes;
        async move {
            eventually(
                Duration::from_secs(30),
                &format!("{want} to {}", if present { "appear" } else { "clear" }),
                || async {
                    let (_, now) = codes(agg)?;
                    (now.iter().any(|c| c == want) == present).then_some(now)
                },
            )
            .await
        }
    };

    // The connector service stopped, then started again.
    host.stop_service("WAPCSvc");
    seen("service-not-running", true).await;
    host.ok(&["sc", "start", "WAPCSvc"]);
    seen("service-not-running", false).await;
    facts.checked += 2;

    // The updater disabled and stopped.
    host.ok(&[
        "C:\\connwatch-test\\fake-service.exe",
        "--disable",
        "WAPCUpdaterSvc",
    ]);
    host.stop_service("WAPCUpdaterSvc");
    seen("updater-not-running", true).await;
    // Then removed altogether: still the updater's finding, now as not installed.
    host.ok(&["sc", "delete", "WAPCUpdaterSvc"]);
    let removed = eventually(
        Duration::from_secs(30),
        "the updater to be gone",
        || async {
            let v = agg.cli_json(&pki, &["connector", "wine-host"]);
            let state = v["latest"]["services"][1]["state"].as_str()?.to_string();
            (state == "not-installed").then_some(v)
        },
    )
    .await;
    facts.holds(
        "a removed updater is updater-not-running",
        removed["findings"]
            .as_array()
            .is_some_and(|f| f.iter().any(|f| f["code"] == "updater-not-running")),
    );
    host.add_service("WAPCUpdaterSvc");
    seen("updater-not-running", false).await;
    facts.checked += 2;

    // TrustSettings.xml names a certificate the store does not have.
    host.write_trust_settings(layout, "4905CC64B2D81BBED60962ECC5DCF63F643CCD55", false);
    seen("trust-cert-missing", true).await;
    host.write_trust_settings(layout, &thumbprint, false);
    seen("trust-cert-missing", false).await;
    facts.checked += 2;

    // A certificate inside the warning window, then an expired one.
    let expiring = trust_cert(5);
    host.register_trust_cert(layout, &expiring.cert_der, false);
    seen("trust-cert-expiring", true).await;
    let expired = trust_cert(-3);
    host.register_trust_cert(layout, &expired.cert_der, false);
    seen("trust-cert-expired", true).await;
    host.write_trust_settings(layout, &thumbprint, false);
    seen("trust-cert-expired", false).await;
    facts.checked += 3;

    // The connector told to use a proxy while the updater follows the system's
    // default, which goes direct.
    let [connector_config, _] = layout.exe_configs();
    host.write(
        connector_config,
        exe_config(Some("http://proxy.contoso.com:8080")).as_bytes(),
    );
    seen("proxy-mismatch", true).await;
    host.write(connector_config, exe_config(None).as_bytes());
    seen("proxy-mismatch", false).await;
    facts.checked += 2;

    let _ = collector.kill();
    let _ = collector.wait();
    eprintln!(
        "windows stage: {} facts checked on a host of the private-network layout",
        facts.checked
    );
}

#[test]
fn the_service_installs_runs_stops_and_fails_loudly() {
    let Some(tools) = wine::tools_or_skip("the_service_installs_runs_stops_and_fails_loudly")
    else {
        return;
    };
    let root = tempfile::tempdir().expect("tempdir");
    let host = WineHost::new(root.path(), &tools);
    // Reports go nowhere (a closed port): the service runs and spools them.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr");
    let pki = Pki::init(root.path());
    let tls = pki.collector("wine-service");
    let config = format!(
        "group = \"test\"\ninterval = \"1s\"\nendpoint = []\n[aggregator]\naddress = \"https://{closed}\"\nserver_name = \"localhost\"\nca = '{}'\ncert = '{}'\nkey = '{}'\n[spool]\ndir = 'C:\\connwatch-test\\spool'\n",
        z_path(&tls.ca),
        z_path(&tls.cert),
        z_path(&tls.key),
    );
    host.write("connwatch-test\\service.toml", config.as_bytes());
    let service = |args: &[&str]| {
        let mut all = vec![wine::EXE, "service"];
        all.extend_from_slice(args);
        host.run(&all)
    };
    let text = |out: &std::process::Output| {
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    };
    let state = || {
        let out = host.run(&["sc", "query", "connwatch-collector"]);
        let out = String::from_utf8_lossy(&out.stdout).into_owned();
        ["RUNNING", "STOPPED", "PENDING"]
            .into_iter()
            .find(|s| out.contains(s))
            .unwrap_or("not installed")
    };

    let installed = service(&[
        "install",
        "--config",
        "C:\\connwatch-test\\service.toml",
        "--log-dir",
        "C:\\connwatch-test\\logs",
        "--account",
        "LocalSystem",
    ]);
    assert!(wine::succeeded(&installed), "install: {}", text(&installed));
    let events = std::fs::read_to_string(host.c_drive("connwatch-test\\eventcreate.log"))
        .expect("install registers the event source through eventcreate");
    assert!(
        events.contains("/T INFORMATION /SO connwatch-collector"),
        "{events}"
    );
    assert_eq!(state(), "STOPPED");

    let started = service(&["start"]);
    assert!(wine::succeeded(&started), "start: {}", text(&started));
    assert!(text(&started).contains("is running"), "{}", text(&started));
    assert_eq!(state(), "RUNNING");
    let stopped = service(&["stop"]);
    assert!(wine::succeeded(&stopped), "stop: {}", text(&stopped));
    assert_eq!(state(), "STOPPED");
    let log = std::fs::read_to_string(host.c_drive("connwatch-test\\logs\\collector.log"))
        .expect("the service wrote collector.log");
    assert!(log.contains("service starting"), "{log}");
    assert!(!log.contains('\u{1b}'), "no colour codes in the log file");

    // A config broken after install: the service dies at once, and `start` says why.
    host.write(
        "connwatch-test\\service.toml",
        b"group = \"test\"\ninterval = \"soon\"\n",
    );
    let failed = service(&["start"]);
    let said = text(&failed);
    assert_eq!(
        failed.status.code(),
        Some(3),
        "start of a dying service: {said}"
    );
    assert!(said.contains("exit code 3"), "{said}");
    assert!(said.contains("`soon` is not a duration"), "{said}");
    assert!(said.contains("collector.log"), "{said}");
    let log = std::fs::read_to_string(host.c_drive("connwatch-test\\logs\\collector.log"))
        .expect("collector.log");
    assert!(log.contains("`soon` is not a duration"), "logged: {log}");
    let events = std::fs::read_to_string(host.c_drive("connwatch-test\\eventcreate.log"))
        .expect("the error went to the event log through eventcreate");
    assert!(
        events.contains("/SO connwatch-collector") && events.contains("`soon` is not a duration"),
        "{events}"
    );

    host.write("connwatch-test\\service.toml", config.as_bytes());
    let removed = service(&["uninstall"]);
    assert!(wine::succeeded(&removed), "uninstall: {}", text(&removed));
    assert_eq!(state(), "not installed");
    eprintln!("windows stage: the service installed, ran, stopped, failed loudly and was removed");
}
