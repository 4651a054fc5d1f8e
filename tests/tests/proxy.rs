//! Endpoint checks through a real forward proxy (tinyproxy) on loopback: the connector's
//! `.exe.config` proxy with its bypass list, the proxy variables, per-endpoint
//! overrides, and each way a proxy can stop a check; then the aggregator's finding for
//! a check the proxy stopped.

use connwatch_shared::pki::LeafSpec;
use connwatch_tests::peers::{self, Tinyproxy, TlsServer};
use connwatch_tests::{Aggregator, Collector, Pki, bin, eventually, without_proxy_environment};
use serde_json::Value;
use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// Whether tinyproxy is here; says so loudly when it is not, so a skip never passes
/// unseen. Written to stderr itself, past the test harness's capture of `eprintln!`.
fn tinyproxy_installed(test: &str) -> bool {
    if peers::installed("tinyproxy") {
        return true;
    }
    let _ = writeln!(
        std::io::stderr(),
        "\n*** SKIPPED: tinyproxy not installed ({test}); scripts/install-test-deps installs it ***\n"
    );
    false
}

/// A TLS server for `localhost` and 127.0.0.1, with a certificate from the test CA.
fn tls_server(pki: &Pki) -> TlsServer {
    let files = pki.custom(
        "endpoint-server",
        &LeafSpec::server(&["localhost".into()], &["127.0.0.1".parse().expect("ip")]),
    );
    TlsServer::start(&files.cert, &files.key)
}

/// Runs `connwatch-collector probe --json` with `env` as its only proxy variables.
fn probe(config: &Path, env: &[(&str, String)]) -> Value {
    let mut command = Command::new(bin("connwatch-collector"));
    without_proxy_environment(&mut command);
    let out = command
        .envs(env.iter().map(|(k, v)| (k, v)))
        .args(["probe", "--json", "--config"])
        .arg(config)
        .output()
        .expect("run connwatch-collector probe");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON report")
}

fn endpoint<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["endpoints"]
        .as_array()
        .expect("endpoints")
        .iter()
        .find(|e| e["name"] == name)
        .unwrap_or_else(|| panic!("no endpoint {name} in {report}"))
}

/// A web server on loopback that answers every request `404`, in a thread of its own.
fn plain_http_server() -> std::net::SocketAddr {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    std::thread::spawn(move || {
        for sock in listener.incoming() {
            let Ok(mut sock) = sock else { continue };
            // The whole request head first: closing on a proxy still sending it would
            // reset the connection, and the proxy would answer 503 for the host.
            let mut head = Vec::new();
            let mut buf = [0u8; 2048];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                match sock.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
            }
            let _ = sock.write_all(
                b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            );
            let _ = sock.shutdown(std::net::Shutdown::Write);
        }
    });
    addr
}

fn endpoint_table(name: &str, address: &str, tls: bool, proxy: Option<&str>) -> String {
    let mut t =
        format!("[[endpoint]]\nname = \"{name}\"\naddress = \"{address}\"\ntimeout = \"2s\"\n");
    if tls {
        t.push_str("tls = true\nserver_name = \"localhost\"\n");
    }
    if let Some(p) = proxy {
        t.push_str(&format!("proxy = \"{p}\"\n"));
    }
    t
}

#[tokio::test]
async fn endpoint_checks_take_the_connectors_path_through_a_real_proxy() {
    if !tinyproxy_installed("endpoint_checks_take_the_connectors_path_through_a_real_proxy") {
        return;
    }
    let root = tempfile::tempdir().expect("tempdir");
    let pki = Pki::init(root.path());
    let server = tls_server(&pki);
    let port = server.addr.port();
    // CONNECT only to the TLS server's port; anything else is refused with 403.
    let proxy = Tinyproxy::start(root.path(), "proxy", &[port], None);
    let auth = Tinyproxy::start(root.path(), "auth", &[port], Some(("connector", "secret")));
    let denied_port = peers::free_port();
    let down = format!("http://127.0.0.1:{}", peers::free_port());
    let web = plain_http_server();

    // The connector's own file names the proxy; `localhost` bypasses it through a
    // regex over the URI, as .NET matches bypass entries.
    let exe_config = root
        .path()
        .join("ApplicationProxyConnectorService.exe.config");
    std::fs::write(
        &exe_config,
        format!(
            r#"<?xml version="1.0" encoding="utf-8"?>
<configuration>
  <system.net>
    <defaultProxy enabled="true" useDefaultCredentials="true">
      <bypasslist><add address="^https://localhost(:\d+)?$" /></bypasslist>
      <proxy usesystemdefault="false" proxyaddress="{}" bypassonlocal="false" />
    </defaultProxy>
  </system.net>
</configuration>"#,
            proxy.url()
        ),
    )
    .expect("write exe.config");
    let target = format!("127.0.0.1:{port}");
    let config = root.path().join("collector.toml");
    let mut text = format!(
        "group = \"eu\"\n[host]\nenabled = false\n[proxy]\nconnector_config = \"{}\"\nsystem = false\n",
        exe_config.display()
    );
    for table in [
        endpoint_table("through", &target, true, None),
        endpoint_table("bypassed", &format!("localhost:{port}"), true, None),
        endpoint_table("denied", &format!("127.0.0.1:{denied_port}"), true, None),
        endpoint_table("forwarded", &web.to_string(), false, None),
        endpoint_table("auth", &target, true, Some(&auth.url())),
        endpoint_table("proxy-down", &target, true, Some(&down)),
        endpoint_table("direct", &target, true, Some("direct")),
    ] {
        text.push_str(&table);
    }
    std::fs::write(&config, text).expect("write config");
    let report = probe(&config, &[]);
    let proxy_at = proxy.addr.to_string();

    let through = endpoint(&report, "through");
    assert_eq!(through["outcome"], "ok", "{through}");
    assert_eq!(through["via"], proxy_at.as_str());
    assert_eq!(through["tls"]["protocol"], "TLSv1.3", "{through}");
    assert!(
        through["tls"]["chain"][0]["subject"]
            .as_str()
            .is_some_and(|s| s.contains("localhost")),
        "the handshake ran through the tunnel: {through}"
    );

    let bypassed = endpoint(&report, "bypassed");
    assert_eq!(
        (&bypassed["outcome"], &bypassed["via"]),
        (&"ok".into(), &"direct".into())
    );
    assert_eq!(bypassed["tls"]["protocol"], "TLSv1.3");

    let denied = endpoint(&report, "denied");
    assert_eq!(denied["outcome"], "proxy-refused", "{denied}");
    assert_eq!(denied["via"], proxy_at.as_str());
    assert_eq!(denied["proxy_status"], "HTTP/1.1 403 Access violation");

    // A plain endpoint (a revocation host) is reached with a request the proxy
    // forwards, as the connector fetches it, not with CONNECT (refused to that port).
    let forwarded = endpoint(&report, "forwarded");
    assert_eq!(forwarded["outcome"], "ok", "{forwarded}");
    assert_eq!(forwarded["via"], proxy_at.as_str());

    let asked = endpoint(&report, "auth");
    assert_eq!(asked["outcome"], "proxy-auth-required", "{asked}");
    assert_eq!(asked["via"], auth.addr.to_string().as_str());
    assert!(
        asked["proxy_status"]
            .as_str()
            .is_some_and(|s| s.starts_with("HTTP/1.") && s.contains(" 407")),
        "{asked}"
    );
    assert!(
        asked["error"].as_str().is_some_and(|e| e.contains("Basic")),
        "{asked}"
    );

    let gone = endpoint(&report, "proxy-down");
    assert_eq!(gone["outcome"], "proxy-unreachable", "{gone}");
    assert!(
        gone["error"]
            .as_str()
            .is_some_and(|e| e.contains("refused")),
        "{gone}"
    );

    let direct = endpoint(&report, "direct");
    assert_eq!(
        (&direct["outcome"], &direct["via"]),
        (&"ok".into(), &"direct".into())
    );
    assert_eq!(direct["tls"]["protocol"], "TLSv1.3");
    assert_eq!(report["proxy"]["connector_proxy"], proxy.url().as_str());

    // Without a connector file, the proxy variables are the system proxy, and
    // no_proxy its bypass list.
    let plain = root.path().join("plain.toml");
    std::fs::write(
        &plain,
        format!(
            "group = \"eu\"\n[host]\nenabled = false\n{}{}",
            endpoint_table("through", &target, true, None),
            endpoint_table("bypassed", &format!("localhost:{port}"), true, None),
        ),
    )
    .expect("write config");
    let report = probe(
        &plain,
        &[
            ("https_proxy", proxy.url()),
            ("no_proxy", "localhost".to_string()),
        ],
    );
    let through = endpoint(&report, "through");
    assert_eq!(
        (&through["outcome"], &through["via"]),
        (&"ok".into(), &proxy_at.as_str().into())
    );
    let bypassed = endpoint(&report, "bypassed");
    assert_eq!(
        (&bypassed["outcome"], &bypassed["via"]),
        (&"ok".into(), &"direct".into())
    );
}

#[tokio::test]
async fn a_check_the_proxy_stops_is_a_proxy_finding_not_an_unreachable_endpoint() {
    if !tinyproxy_installed(
        "a_check_the_proxy_stops_is_a_proxy_finding_not_an_unreachable_endpoint",
    ) {
        return;
    }
    let root = tempfile::tempdir().expect("tempdir");
    let pki = Pki::init(root.path());
    let agg = Aggregator::start(root.path(), &pki, "");
    // Allows CONNECT to port 1 only, so the check of any real port is refused.
    let proxy = Tinyproxy::start(root.path(), "proxy", &[1], None);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let open = listener.local_addr().expect("addr");
    let tls = pki.collector("conn-p");
    let _collector = Collector::start(
        root.path(),
        &agg,
        &tls,
        &endpoint_table("cloud", &open.to_string(), true, Some(&proxy.url())),
    );
    let findings = eventually(Duration::from_secs(15), "conn-p's findings", || async {
        let out = agg.cli(&pki, &["connector", "conn-p", "--json"]);
        if !out.status.success() {
            return None;
        }
        let v: Value = serde_json::from_slice(&out.stdout).ok()?;
        let findings = v["findings"].as_array()?.clone();
        (!findings.is_empty()).then_some(findings)
    })
    .await;
    let codes: Vec<&str> = findings.iter().filter_map(|f| f["code"].as_str()).collect();
    assert_eq!(
        codes,
        ["proxy-failed"],
        "and no endpoint-unreachable: {findings:?}"
    );
    let f = &findings[0];
    assert_eq!(f["severity"], "critical");
    let evidence: Vec<(String, String)> = f["evidence"]
        .as_array()
        .expect("evidence")
        .iter()
        .map(|e| {
            (
                e["key"].as_str().unwrap_or("").to_string(),
                e["value"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    let has = |k: &str, v: &str| evidence.contains(&(k.to_string(), v.to_string()));
    assert!(has("proxy", &proxy.addr.to_string()), "{evidence:?}");
    assert!(
        has("proxy_status", "HTTP/1.1 403 Access violation"),
        "{evidence:?}"
    );
    assert!(has("cause", "proxy-refused"), "{evidence:?}");
    drop(listener);
}
