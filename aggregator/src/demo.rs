//! `connwatch-aggregator demo`: a small fleet on this machine, end to end. It mints a
//! CA and certificates, starts a real aggregator (real sled folder) on loopback, starts
//! loopback listeners for the collectors to probe, and runs six real
//! `connwatch-collector` processes in two groups through the real mTLS gRPC path, with
//! real faults: a closed port, a trust certificate that expires in five days, a stopped
//! connector service, and a collector that is killed partway through.

use crate::cli::{Connect, table};
use crate::config::{Config, GroupConfig, RulesConfig, StoreConfig, Thresholds};
use anyhow::Context;
use connwatch_shared::identity::{Identity, Role};
use connwatch_shared::pki::{CertAuthority, LeafSpec};
use connwatch_shared::tls::TlsFiles;
use connwatch_shared::wire::{ListConnectorsRequest, StatusRequest, StatusResponse};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::process::{Child, Command};
use tokio_util::sync::CancellationToken;

/// Demo options.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// How long to run.
    pub duration: Duration,
    /// Print the final state as JSON instead of tables.
    pub json: bool,
    /// Working folder; a fresh temporary one when `None`.
    pub dir: Option<PathBuf>,
    /// Keep the working folder afterwards.
    pub keep: bool,
}

/// The collectors' cycle interval in the demo.
const INTERVAL: &str = "2s";
/// When the demo kills one collector.
const KILL_AT: Duration = Duration::from_secs(6);

struct Host {
    id: &'static str,
    group: &'static str,
    fault: Fault,
}

#[derive(PartialEq)]
enum Fault {
    None,
    ClosedPort,
    CertExpiring,
    ServiceStopped,
    GoesQuiet,
}

const HOSTS: [Host; 6] = [
    Host {
        id: "eu-west-1",
        group: "eu-west",
        fault: Fault::None,
    },
    Host {
        id: "eu-west-2",
        group: "eu-west",
        fault: Fault::ClosedPort,
    },
    Host {
        id: "eu-west-3",
        group: "eu-west",
        fault: Fault::CertExpiring,
    },
    Host {
        id: "us-east-1",
        group: "us-east",
        fault: Fault::None,
    },
    Host {
        id: "us-east-2",
        group: "us-east",
        fault: Fault::GoesQuiet,
    },
    Host {
        id: "us-east-3",
        group: "us-east",
        fault: Fault::ServiceStopped,
    },
];

/// Runs the demo; returns when the duration is over or `shutdown` fires.
pub async fn run(opts: DemoOptions, shutdown: CancellationToken) -> anyhow::Result<()> {
    let collector_bin = collector_binary()?;
    let (dir, temp) = match &opts.dir {
        Some(d) => (d.clone(), None),
        None => {
            let t = std::env::temp_dir().join(format!("connwatch-demo-{}", std::process::id()));
            (t.clone(), Some(t))
        }
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let say = |line: String| {
        if !opts.json {
            println!("{line}");
        }
    };
    say(format!("connwatch demo: working in {}", dir.display()));

    // Certificates: our CA with server, operator and collector certificates, and a
    // separate stand-in registration CA for the connectors' trust certificates.
    let certs = dir.join("certs");
    crate::ca::init(&certs, &[], true)?;
    let ca = CertAuthority::load(&certs)?;
    let trust_ca = CertAuthority::generate("connectorregistrationca.msappproxy.net (demo)")?;

    // The loopback "cloud service" the collectors test, and a port nobody listens on.
    let service = TcpListener::bind("127.0.0.1:0").await?;
    let service_addr = service.local_addr()?;
    tokio::spawn(async move {
        while let Ok((sock, _)) = service.accept().await {
            drop(sock);
        }
    });
    let closed_addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0")?;
        l.local_addr()?
    };

    // The aggregator, in this process, on a real sled folder.
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let agg_addr = listener.local_addr()?;
    let config = Config {
        file: dir.join("aggregator.toml"),
        listen: agg_addr,
        data_dir: dir.join("data"),
        tls: TlsFiles {
            ca: certs.join("ca.pem"),
            cert: certs.join("server.pem"),
            key: certs.join("server.key"),
        },
        tls_crl: None,
        rules: {
            let thresholds = Thresholds {
                inactive_after: Duration::from_secs(5),
                ..Thresholds::default()
            };
            RulesConfig {
                groups: ["eu-west", "us-east"]
                    .iter()
                    .map(|g| GroupConfig {
                        name: g.to_string(),
                        thresholds: thresholds.clone(),
                    })
                    .collect(),
                defaults: thresholds,
                ..RulesConfig::default()
            }
        },
        store: StoreConfig::default(),
        // The demo prints findings itself; alert log lines would repeat them.
        alert: crate::config::AlertConfig {
            log: false,
            ..Default::default()
        },
        metrics: Default::default(),
    };
    let agg_stop = CancellationToken::new();
    let aggregator = tokio::spawn(crate::server::serve(
        config,
        listener,
        agg_stop.clone(),
        std::sync::Arc::new(tokio::sync::Notify::new()),
        |_| {},
    ));

    // The collectors, as real processes.
    let mut children: Vec<(&str, Child)> = Vec::new();
    for host in &HOSTS {
        let id = Identity {
            role: Role::Collector,
            name: host.id.to_string(),
        };
        ca.issue(&LeafSpec::client(&id))?
            .write(&certs, &format!("collector-{}", host.id), true)?;
        let trust_days = if host.fault == Fault::CertExpiring {
            5
        } else {
            200
        };
        let trust = trust_ca.issue(&LeafSpec {
            common_name: format!("{} connector", host.id),
            ..LeafSpec::blank(false).valid_for(Duration::from_secs(trust_days * 86_400))
        })?;
        let trust_path = dir.join(format!("trust-{}.pem", host.id));
        std::fs::write(&trust_path, &trust.cert_pem)?;
        let endpoint = if host.fault == Fault::ClosedPort {
            closed_addr
        } else {
            service_addr
        };
        // The stand-in connector service is this demo process; a stopped service is a
        // pid file that points nowhere.
        let pid_file = dir.join(format!("{}.pid", host.id));
        if host.fault != Fault::ServiceStopped {
            std::fs::write(&pid_file, std::process::id().to_string())?;
        }
        let config_path = dir.join(format!("collector-{}.toml", host.id));
        std::fs::write(
            &config_path,
            collector_config(
                host,
                agg_addr.port(),
                &certs,
                &trust_path,
                &pid_file,
                endpoint,
                &dir.join(format!("spool-{}", host.id)),
            ),
        )?;
        let child = Command::new(&collector_bin)
            .args(["--log-level", "warn", "run", "--config"])
            .arg(&config_path)
            .kill_on_drop(true)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .with_context(|| format!("cannot start {}", collector_bin.display()))?;
        children.push((host.id, child));
    }
    say(format!(
        "aggregator on {agg_addr}; {} collectors in 2 groups reporting every {INTERVAL}; faults: closed port on eu-west-2, trust certificate expiring on eu-west-3, connector service stopped on us-east-3, and the collector on us-east-2 will be killed after {}s\n",
        HOSTS.len(),
        KILL_AT.as_secs()
    ));

    let connect = Connect {
        aggregator: format!("https://{agg_addr}"),
        certs: certs.clone(),
        operator: None,
        ca: None,
        cert: None,
        key: None,
        server_name: Some("localhost".into()),
        timeout: Duration::from_secs(5),
    };
    let started = tokio::time::Instant::now();
    let mut client = loop {
        match connect.client().await {
            Ok(c) => break c,
            Err(e) if started.elapsed() > Duration::from_secs(10) => return Err(e),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    };
    let mut seen = BTreeSet::new();
    let mut last_table = String::new();
    let mut killed = false;
    let end = started + opts.duration;
    let colour = table::colour() && !opts.json;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep_until(end) => break,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
        if !killed && started.elapsed() >= KILL_AT {
            if let Some((_, child)) = children.iter_mut().find(|(id, _)| *id == "us-east-2") {
                let _ = child.kill().await;
            }
            killed = true;
            say(format!(
                "[{:>4.1}s] killed the collector on us-east-2; it should turn inactive",
                started.elapsed().as_secs_f32()
            ));
        }
        let status = client
            .status(StatusRequest { max_findings: 0 })
            .await
            .map_err(crate::cli::explain)?
            .into_inner();
        let groups = table::groups(&status.groups, colour);
        if groups != last_table {
            say(format!(
                "[{:>4.1}s]\n{groups}",
                started.elapsed().as_secs_f32()
            ));
            last_table = groups;
        }
        for f in &status.findings {
            if seen.insert((f.code.clone(), f.subject.clone())) {
                say(format!(
                    "[{:>4.1}s] + {} {} on {}: {}",
                    started.elapsed().as_secs_f32(),
                    connwatch_proto::enum_names::severity_name(f.severity),
                    f.code,
                    f.subject,
                    f.summary
                ));
            }
        }
    }

    let status = client
        .status(StatusRequest { max_findings: 0 })
        .await
        .map_err(crate::cli::explain)?
        .into_inner();
    let connectors = client
        .list_connectors(ListConnectorsRequest::default())
        .await
        .map_err(crate::cli::explain)?
        .into_inner()
        .connectors;
    for (_, mut child) in children {
        let _ = child.kill().await;
    }
    agg_stop.cancel();
    aggregator.await.context("the aggregator task failed")??;
    if opts.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&final_json(&status, &connectors))?
        );
    } else {
        println!(
            "\nfinal state after {:.0}s\n{}",
            started.elapsed().as_secs_f32(),
            table::groups(&status.groups, colour)
        );
        print!("{}", table::findings(&status.findings, colour));
        println!(
            "\nnext: read one connector in full with `connwatch-aggregator connector <id>` against a running `serve` (see README)"
        );
    }
    if let Some(t) = temp
        && !opts.keep
    {
        let _ = std::fs::remove_dir_all(t);
    }
    Ok(())
}

fn final_json(
    status: &StatusResponse,
    connectors: &[connwatch_shared::wire::ConnectorSummary],
) -> serde_json::Value {
    serde_json::json!({
        "generated_at_ms": status.generated_at_ms,
        "groups": status.groups,
        "connectors": connectors,
        "findings": status.findings,
    })
}

fn collector_config(
    host: &Host,
    port: u16,
    certs: &Path,
    trust: &Path,
    pid_file: &Path,
    endpoint: std::net::SocketAddr,
    spool: &Path,
) -> String {
    format!(
        r#"group = "{group}"
interval = "{INTERVAL}"
jitter = "200ms"

[aggregator]
address = "https://127.0.0.1:{port}"
server_name = "localhost"
ca = "{ca}"
cert = "{cert}"
key = "{key}"

[[service]]
name = "WAPCSvc"
role = "connector"
pid_file = "{pid}"

[[endpoint]]
name = "cloud-service"
address = "{endpoint}"
timeout = "1s"
# The stand-in cloud service is on loopback: never through this host's proxy.
proxy = "direct"

[[trust_cert]]
path = "{trust}"

[host]
enabled = false

[spool]
dir = "{spool}"
"#,
        group = host.group,
        ca = certs.join("ca.pem").display(),
        cert = certs.join(format!("collector-{}.pem", host.id)).display(),
        key = certs.join(format!("collector-{}.key", host.id)).display(),
        pid = pid_file.display(),
        trust = trust.display(),
        spool = spool.display(),
    )
}

/// Finds `connwatch-collector` beside this executable.
fn collector_binary() -> anyhow::Result<PathBuf> {
    let me = std::env::current_exe().context("cannot find this executable's path")?;
    let name = format!("connwatch-collector{}", std::env::consts::EXE_SUFFIX);
    let mut candidates = vec![];
    if let Some(dir) = me.parent() {
        candidates.push(dir.join(&name));
        if let Some(up) = dir.parent() {
            candidates.push(up.join(&name));
        }
    }
    candidates
        .into_iter()
        .find(|p| p.is_file())
        .with_context(|| {
            format!(
                "the demo runs real collectors but {name} is not beside {}; build both with `cargo build --release`",
                me.display()
            )
        })
}
