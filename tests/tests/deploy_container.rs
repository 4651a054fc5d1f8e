//! The container files hang together, checked without a Docker engine (none runs on
//! the test machine, and no image is built here): every file compose mounts exists
//! in deploy/ and lands where the process inside reads it; the Dockerfile is
//! multi-stage, runs as a non-root user and keeps the store on a volume at the
//! `data_dir` of the container config, which passes --check-config (tests/config.rs
//! runs it with the other examples). compose.yaml is read line by line: it is kept in
//! the plain block style this check understands.

use std::path::{Path, PathBuf};

fn container(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy/container")
        .join(name)
}

fn read(name: &str) -> String {
    std::fs::read_to_string(container(name)).expect("read")
}

/// `(service, source, target)` for every bind mount (`- ./x:/y[:ro]`) in compose.yaml.
fn bind_mounts(compose: &str) -> Vec<(String, String, String)> {
    let mut service = String::new();
    let mut mounts = Vec::new();
    for line in compose.lines() {
        if let Some(name) = line.strip_prefix("  ").and_then(|l| l.strip_suffix(':'))
            && !name.starts_with(' ')
        {
            service = name.to_string();
        }
        let Some(item) = line.trim().strip_prefix("- ") else {
            continue;
        };
        let item = item.trim_matches('"');
        if !item.starts_with('.') {
            continue;
        }
        let mut parts = item.split(':');
        let (Some(source), Some(target)) = (parts.next(), parts.next()) else {
            panic!("a bind mount without a target: {line}");
        };
        mounts.push((service.clone(), source.to_string(), target.to_string()));
    }
    mounts
}

#[test]
fn compose_mounts_files_that_exist_where_the_services_read_them() {
    let compose = read("compose.yaml");
    let mounts = bind_mounts(&compose);
    let find = |service: &str, target: &str| -> PathBuf {
        let (_, source, _) = mounts
            .iter()
            .find(|(s, _, t)| s == service && t == target)
            .unwrap_or_else(|| panic!("{service} mounts nothing at {target}: {mounts:?}"));
        container(source)
    };
    let aggregator_config = find("aggregator", "/etc/connwatch/aggregator.toml");
    assert_eq!(aggregator_config, container("./aggregator.toml"));
    let prometheus = find("prometheus", "/etc/prometheus/prometheus.yml");
    let rules = find("prometheus", "/etc/prometheus/connwatch.rules.yml");
    let alertmanager = find("alertmanager", "/etc/alertmanager/alertmanager.yml");
    for file in [&aggregator_config, &prometheus, &rules, &alertmanager] {
        assert!(file.is_file(), "{} is mounted but missing", file.display());
    }
    // Prometheus resolves rule_files against its config's folder: the rules must be
    // mounted beside it under the name prometheus.yml uses.
    let prom_text = std::fs::read_to_string(&prometheus).expect("read");
    assert!(prom_text.contains("  - connwatch.rules.yml"), "{prom_text}");
    // The containers share the aggregator's network namespace, so the examples'
    // loopback addresses are right; the aggregator config must agree.
    assert!(prom_text.contains("127.0.0.1:9464") && prom_text.contains("127.0.0.1:9093"));
    let config = std::fs::read_to_string(&aggregator_config).expect("read");
    assert!(config.contains("listen = \"127.0.0.1:9464\""));
    assert!(config.contains("url = \"http://127.0.0.1:9093\""));
    assert_eq!(
        compose.matches("network_mode: service:aggregator").count(),
        2
    );
    // The certificates folder is the operator's to create (`ca init`); it is mounted
    // where the config's [tls] paths point.
    let (_, certs, _) = mounts
        .iter()
        .find(|(s, _, t)| s == "aggregator" && t == "/etc/connwatch/certs")
        .expect("certs mount");
    assert_eq!(certs, "./certs");
    assert!(config.contains("ca = \"/etc/connwatch/certs/ca.pem\""));
    // The store is on a named volume at the config's data_dir.
    assert!(compose.contains("- connwatch-data:/var/lib/connwatch"));
    assert!(config.contains("data_dir = \"/var/lib/connwatch\""));
}

#[test]
fn the_image_is_multi_stage_non_root_with_the_store_on_a_volume() {
    let docker = read("Dockerfile");
    let stages: Vec<&str> = docker.lines().filter(|l| l.starts_with("FROM ")).collect();
    assert_eq!(stages.len(), 2, "{stages:?}");
    assert!(stages[0].ends_with(" AS build"));
    assert!(docker.contains("COPY --from=build"));
    let user = docker
        .lines()
        .find_map(|l| l.strip_prefix("USER "))
        .expect("a USER line");
    assert!(
        !user.starts_with("0") && !user.starts_with("root"),
        "{user}"
    );
    assert!(docker.contains("VOLUME [\"/var/lib/connwatch\"]"));
    assert!(docker.contains("--chown=65532:65532 /out/var/lib/connwatch /var/lib/connwatch"));
    assert!(docker.contains("\"--config\", \"/etc/connwatch/aggregator.toml\""));
    // The build context is the repository root; it must not ship build output.
    let ignore = std::fs::read_to_string(container("../../.dockerignore")).expect("read");
    for line in ["target", ".git"] {
        assert!(
            ignore.lines().any(|l| l == line),
            ".dockerignore lacks {line}"
        );
    }
    // The rust image must be able to build the workspace: at least its rust-version.
    let manifest = std::fs::read_to_string(container("../../Cargo.toml")).expect("read");
    let need = manifest
        .lines()
        .find_map(|l| l.strip_prefix("rust-version = \""))
        .and_then(|v| v.strip_suffix('"'))
        .expect("rust-version");
    let have = stages[0]
        .strip_prefix("FROM rust:")
        .and_then(|v| v.split('-').next())
        .expect("a rust:<version> build image");
    let parse =
        |v: &str| -> Vec<u32> { v.split('.').map(|n| n.parse().expect("number")).collect() };
    assert!(
        parse(have) >= parse(need),
        "rust {have} < rust-version {need}"
    );
}
