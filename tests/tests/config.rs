//! The example configs in deploy/ pass `--check-config` once their certificate paths
//! point at real files; broken configs fail naming the file, the key and the fix; and
//! `probe` runs the example collector config without an aggregator.

use connwatch_tests::{Pki, bin};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn deploy(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy")
        .join(name)
}

/// Copies an example config into `root`, pointing /etc/connwatch and /var/lib paths
/// there, and lays out the certificates it names.
fn localise(root: &Path, pki: &Pki, example: &str) -> PathBuf {
    let text = std::fs::read_to_string(deploy(example)).expect("read example");
    let etc = root.join("etc");
    let certs = etc.join("certs");
    std::fs::create_dir_all(&certs).expect("mkdir");
    let tls = pki.collector("conn-01");
    for (from, to) in [
        (pki.dir.join("ca.pem"), "ca.pem"),
        (pki.dir.join("server.pem"), "server.pem"),
        (pki.dir.join("server.key"), "server.key"),
        (tls.cert.clone(), "collector.pem"),
        (tls.key.clone(), "collector.key"),
    ] {
        std::fs::copy(from, certs.join(to)).expect("copy cert");
    }
    // The Windows example's paths are literal strings under C:\ProgramData\connwatch.
    let text = text
        .replace(
            r"C:\ProgramData\connwatch\certs\",
            r"C:\ProgramData\connwatch\certs/",
        )
        .replace(r"C:\ProgramData\connwatch\", &format!("{}/", etc.display()))
        .replace("/etc/connwatch/", &format!("{}/", etc.display()))
        .replace(
            "/var/lib/connwatch",
            &root.join("data").display().to_string(),
        );
    let path = etc.join(example.replace('/', "-"));
    std::fs::write(&path, text).expect("write");
    path
}

fn run(binary: &str, args: &[&str], config: &Path) -> Output {
    let mut command = Command::new(bin(binary));
    // The system proxy is read from these; the tests expect none.
    connwatch_tests::without_proxy_environment(&mut command);
    command
        .args(args)
        .arg("--config")
        .arg(config)
        .output()
        .expect("run")
}

#[test]
fn every_example_config_passes_check_config() {
    let root = tempfile::tempdir().expect("tempdir");
    let pki = Pki::init(root.path());
    for (binary, command, example) in [
        ("connwatch-aggregator", "serve", "aggregator.example.toml"),
        ("connwatch-collector", "run", "collector.example.toml"),
        ("connwatch-collector", "run", "windows/collector.toml"),
        ("connwatch-aggregator", "serve", "container/aggregator.toml"),
    ] {
        let config = localise(root.path(), &pki, example);
        let out = run(binary, &[command, "--check-config"], &config);
        assert!(
            out.status.success(),
            "{example}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(String::from_utf8_lossy(&out.stdout).contains(": ok"));
    }
}

#[test]
fn the_aggregator_example_sends_to_no_sink_a_new_user_lacks_and_names_missing_files() {
    let text = std::fs::read_to_string(deploy("aggregator.example.toml")).expect("read");
    for section in ["[[alert.webhook]]", "[alert.alertmanager]"] {
        assert!(
            !text.lines().any(|l| l.trim() == section),
            "{section} is enabled in the example"
        );
        assert!(
            text.contains(&format!("# {section}")),
            "{section} is documented"
        );
    }
    let root = tempfile::tempdir().expect("tempdir");
    let pki = Pki::init(root.path());
    let config = localise(root.path(), &pki, "aggregator.example.toml");
    let good = std::fs::read_to_string(&config).expect("read");
    std::fs::write(
        &config,
        good.replacen("/certs/server.pem", "/certs/missing.pem", 1),
    )
    .expect("write");
    let out = run(
        "connwatch-aggregator",
        &["serve", "--check-config"],
        &config,
    );
    assert_eq!(out.status.code(), Some(3));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("`tls.cert`") && err.contains("missing.pem"),
        "{err}"
    );
}

#[test]
fn the_windows_example_names_only_windows_paths() {
    let text = std::fs::read_to_string(deploy("windows/collector.toml")).expect("read");
    for line in text.lines().filter(|l| l.contains(" = '")) {
        let path = line.split('\'').nth(1).expect("a quoted path");
        assert!(path.starts_with(r"C:\"), "not a Windows path: {line}");
    }
    assert!(!text.contains("/etc/") && !text.contains("/var/"));
}

#[test]
fn broken_configs_name_the_file_the_key_and_the_fix() {
    let root = tempfile::tempdir().expect("tempdir");
    let pki = Pki::init(root.path());
    let config = localise(root.path(), &pki, "collector.example.toml");
    let good = std::fs::read_to_string(&config).expect("read");
    for (from, to, needles) in [
        (
            "interval = \"30s\"",
            "interval = \"often\"",
            &["`interval`", "30s"][..],
        ),
        (
            "address = \"https://",
            "address = \"http://",
            &["aggregator.address", "https://"][..],
        ),
        (
            "name = \"login\"\n",
            "name = \"login\"\nport = 443\n",
            &["unknown field", "port"][..],
        ),
        (
            "/certs/collector.pem",
            "/certs/missing.pem",
            &["missing.pem", "ca issue", "`aggregator.cert`"][..],
        ),
    ] {
        assert!(good.contains(from), "example lacks {from}");
        std::fs::write(&config, good.replacen(from, to, 1)).expect("write");
        let out = run("connwatch-collector", &["run", "--check-config"], &config);
        assert_eq!(out.status.code(), Some(3), "{to}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("collector.example.toml") || err.contains("missing.pem"),
            "{err}"
        );
        for n in needles {
            assert!(err.contains(n), "error for `{to}` lacks {n}: {err}");
        }
    }
}

#[test]
fn probe_runs_the_example_config_without_an_aggregator() {
    let root = tempfile::tempdir().expect("tempdir");
    let pki = Pki::init(root.path());
    let config = localise(root.path(), &pki, "collector.example.toml");
    // No network here: point the endpoints at loopback so the run is quick and real.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let open = listener.local_addr().expect("addr").to_string();
    let text = std::fs::read_to_string(&config)
        .expect("read")
        .replace("login.microsoftonline.com:443", &open)
        .replace("login.microsoftonline.com:80", "127.0.0.1:1")
        .replace("timeout = \"3s\"", "timeout = \"1s\"");
    std::fs::write(&config, text).expect("write");
    let out = run("connwatch-collector", &["probe", "--json"], &config);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(report["group"], "eu-west");
    let outcomes: Vec<&str> = report["endpoints"]
        .as_array()
        .expect("endpoints")
        .iter()
        .map(|e| e["outcome"].as_str().expect("outcome"))
        .collect();
    // The open port accepts but never speaks TLS: the handshake times out.
    assert_eq!(outcomes, ["timed-out", "refused"]);
    let tls = &report["endpoints"][0]["tls"];
    assert!(
        tls["error"]
            .as_str()
            .expect("tls error")
            .contains("handshake"),
        "{tls}"
    );
    assert!(
        report["endpoints"][1]["tls"].is_null(),
        "port 80 is not TLS"
    );
    assert_eq!(report["proxy"]["system_proxy"], "direct");
    assert!(report["host"]["disk_total_bytes"].as_u64().expect("disk") > 0);
    assert_eq!(report["services"][0]["name"], "WAPCSvc");
    assert_eq!(report["services"][0]["state"], "stopped");
    assert_eq!(report["trust_certs"][0]["found"], false);
    assert!(report["host"]["hostname"].is_string());

    let table = run("connwatch-collector", &["probe"], &config);
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(
        text.contains("endpoint") && text.contains("refused") && text.contains("WAPCSvc"),
        "{text}"
    );
}
