//! The collector's footprint: `connwatch-collector run` doing a 20-check cycle every
//! `interval` against a real aggregator, beside Debian's prometheus-node-exporter
//! (scraped once per cycle) and prometheus-blackbox-exporter (20 probes per cycle,
//! the same loopback targets), all watched over the same window. CPU at a 30 s
//! interval is extrapolated from the CPU per cycle.

use crate::Bed;
use crate::fixture::{Aggregator, anon_rss_bytes, cpu_seconds, rss_bytes, sibling_binary};
use anyhow::Context;
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The interval the targets are stated for.
const REFERENCE_INTERVAL_S: f64 = 30.0;
/// TCP endpoints, TLS endpoints and HTTP backends in the 20-check cycle; with two
/// services, a trust certificate, a log, two versions, host and proxy that makes 20.
const TCP_CHECKS: usize = 6;
const TLS_CHECKS: usize = 4;
const HTTP_CHECKS: usize = 2;

/// A child process killed when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn spawn(program: &Path, args: &[String], log: &Path) -> anyhow::Result<Proc> {
    let log = std::fs::File::create(log)?;
    Ok(Proc(
        Command::new(program)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .with_context(|| format!("cannot start {}", program.display()))?,
    ))
}

/// A minimal HTTP/1.0 GET; returns the response size.
async fn http_get(addr: SocketAddr, path: String) -> anyhow::Result<usize> {
    let io = async {
        let mut s = tokio::net::TcpStream::connect(addr).await?;
        s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
            .await?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await?;
        anyhow::Ok(buf.len())
    };
    tokio::time::timeout(Duration::from_secs(10), io).await?
}

async fn wait_listening(addr: SocketAddr) -> bool {
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(10) {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

fn which(name: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join(name))
            .find(|c| c.is_file())
    })
}

struct Watch {
    pid: u32,
    cpu0: f64,
}

impl Watch {
    fn new(pid: u32) -> Watch {
        Watch {
            pid,
            cpu0: cpu_seconds(pid).unwrap_or(0.0),
        }
    }
    fn json(&self, cycles: f64, seconds: f64) -> Value {
        let cpu = cpu_seconds(self.pid).unwrap_or(f64::NAN) - self.cpu0;
        let (rss, hwm) = rss_bytes(self.pid).unwrap_or_default();
        json!({
            "rss_bytes": rss,
            "peak_rss_bytes": hwm,
            "anon_rss_bytes": anon_rss_bytes(self.pid).unwrap_or_default(),
            "cpu_s": cpu,
            "cpu_ms_per_cycle": cpu * 1000.0 / cycles.max(1.0),
            "cpu_percent_at_measured_interval": cpu * 100.0 / seconds,
            "cpu_percent_at_30s": cpu / cycles.max(1.0) * 100.0 / REFERENCE_INTERVAL_S,
        })
    }
}

/// Runs the scenario for `window` with cycles every `interval`.
pub async fn run(bed: &Bed, interval: Duration, window: Duration) -> anyhow::Result<Value> {
    let root = bed.dir.path().join("footprint");
    std::fs::create_dir_all(&root)?;
    let agg = Aggregator::start(&root, &bed.pki)?;
    // Loopback targets: a TCP listener that accepts and closes.
    let target = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let target_addr = target.local_addr()?;
    let acceptor = tokio::spawn(async move {
        while let Ok((s, _)) = target.accept().await {
            drop(s);
        }
    });

    let node_port = free_port()?;
    let node_addr: SocketAddr = ([127, 0, 0, 1], node_port).into();
    let node = match which("prometheus-node-exporter") {
        Some(p) => Some(spawn(
            &p,
            &[format!("--web.listen-address=127.0.0.1:{node_port}")],
            &root.join("node-exporter.log"),
        )?),
        None => None,
    };
    let bb_port = free_port()?;
    let bb_addr: SocketAddr = ([127, 0, 0, 1], bb_port).into();
    let bb_config = root.join("blackbox.yml");
    std::fs::write(
        &bb_config,
        "modules:\n  tcp_connect:\n    prober: tcp\n    timeout: 3s\n  tls_connect:\n    prober: tcp\n    timeout: 3s\n    tcp:\n      tls: true\n      tls_config:\n        insecure_skip_verify: true\n  http_2xx:\n    prober: http\n    timeout: 5s\n",
    )?;
    let blackbox = match which("prometheus-blackbox-exporter") {
        Some(p) => Some(spawn(
            &p,
            &[
                format!("--config.file={}", bb_config.display()),
                format!("--web.listen-address=127.0.0.1:{bb_port}"),
            ],
            &root.join("blackbox-exporter.log"),
        )?),
        None => None,
    };

    // The collector: 20 checks against the same targets.
    let cert = bed.pki.collector("footprint-000")?;
    cert.write(&root, "collector", true)?;
    let log_file = root.join("connector.log");
    std::fs::write(
        &log_file,
        "2026-01-01 00:00:00 Information Connector started.\n",
    )?;
    let version_file = root.join("version.txt");
    std::fs::write(&version_file, "1.5.3437.0\n")?;
    let mut config = format!(
        "group = \"footprint\"\ninterval = \"{}ms\"\njitter = \"10ms\"\n[aggregator]\naddress = \"{}\"\nserver_name = \"localhost\"\nca = \"{ca}\"\ncert = \"{dir}/collector.pem\"\nkey = \"{dir}/collector.key\"\n[spool]\ndir = \"{dir}/spool\"\n[host]\nenabled = true\n[proxy]\nsystem = true\n[log]\nfile = \"{log}\"\n[version.connector]\nfile = \"{ver}\"\n[version.updater]\nfile = \"{ver}\"\n[[trust_cert]]\npath = \"{ca}\"\n[[service]]\nname = \"WAPCSvc\"\nrole = \"connector\"\nprocess = \"connwatch-aggregator\"\n[[service]]\nname = \"WAPCUpdaterSvc\"\nrole = \"updater\"\nprocess = \"prometheus-node-exporter\"\n",
        interval.as_millis(),
        agg.url(),
        ca = bed.pki.dir.join("ca.pem").display(),
        dir = root.display(),
        log = log_file.display(),
        ver = version_file.display(),
    );
    for i in 0..TCP_CHECKS {
        config.push_str(&format!(
            "[[endpoint]]\nname = \"tcp-{i}\"\naddress = \"{target_addr}\"\nrequired = {}\n",
            i < 2
        ));
    }
    for i in 0..TLS_CHECKS {
        config.push_str(&format!(
            "[[endpoint]]\nname = \"tls-{i}\"\naddress = \"{}\"\ntls = true\nserver_name = \"localhost\"\nrequired = false\n",
            agg.addr
        ));
    }
    for _ in 0..HTTP_CHECKS {
        config.push_str(&format!("[[backend]]\nurl = \"http://{node_addr}/\"\n"));
    }
    let config_path = root.join("collector.toml");
    std::fs::write(&config_path, config)?;
    let collector = spawn(
        &sibling_binary("connwatch-collector")?,
        &[
            "--log-level".into(),
            "warn".into(),
            "run".into(),
            "--config".into(),
            config_path.display().to_string(),
        ],
        &root.join("collector.log"),
    )?;

    let node_up = node.is_some() && wait_listening(node_addr).await;
    let bb_up = blackbox.is_some() && wait_listening(bb_addr).await;
    // One cycle of warm-up so start-up costs are not counted.
    let cycle = |n: u32| async move {
        if node_up {
            let _ = http_get(node_addr, "/metrics".into()).await;
        }
        if bb_up {
            let mut probes = Vec::new();
            for i in 0..(TCP_CHECKS + TLS_CHECKS + HTTP_CHECKS + 8) {
                let path = match i {
                    i if i < TCP_CHECKS + 8 => {
                        format!("/probe?module=tcp_connect&target={target_addr}")
                    }
                    i if i < TCP_CHECKS + 8 + TLS_CHECKS => {
                        format!("/probe?module=tls_connect&target={}", agg.addr)
                    }
                    _ => format!("/probe?module=http_2xx&target=http://{node_addr}/"),
                };
                probes.push(http_get(bb_addr, path));
            }
            let _ = futures::future::join_all(probes).await;
        }
        n
    };
    cycle(0).await;
    tokio::time::sleep(interval).await;
    let watches = [
        Some(Watch::new(collector.0.id())),
        node.as_ref().map(|p| Watch::new(p.0.id())),
        blackbox.as_ref().map(|p| Watch::new(p.0.id())),
    ];
    let started = Instant::now();
    let mut cycles = 0u32;
    let mut tick = tokio::time::interval(interval);
    while started.elapsed() < window {
        tick.tick().await;
        cycles = cycle(cycles).await + 1;
    }
    let seconds = started.elapsed().as_secs_f64();
    let cycles_f = seconds / interval.as_secs_f64();
    let [c, n, b] = watches.map(|w| w.map_or(Value::Null, |w| w.json(cycles_f, seconds)));
    drop(collector);
    let hung = hung_cycle(&root, target_addr).await?;
    acceptor.abort();
    Ok(json!({
        "interval_ms": interval.as_millis() as u64,
        "window_s": seconds,
        "cycles": cycles,
        "checks_per_cycle": 20,
        "collector": c,
        "node_exporter": n,
        "blackbox_exporter": b,
        "node_exporter_found": node_up,
        "blackbox_exporter_found": bb_up,
        "hung_cycle": hung,
    }))
}

/// The timeout of the hung check in [`hung_cycle`].
const HUNG_TIMEOUT: Duration = Duration::from_secs(1);
/// Runs of [`hung_cycle`].
const HUNG_RUNS: usize = 5;

/// A cycle of 20 endpoint checks where one never answers (a listener that accepts and
/// never speaks TLS), each under a 1 s timeout: `connwatch-collector probe` must end
/// within the slowest timeout plus 50 ms, not the sum. Timed from process start to
/// exit, so start-up and printing count against it.
async fn hung_cycle(root: &Path, open: SocketAddr) -> anyhow::Result<Value> {
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let silent_addr = silent.local_addr()?;
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = silent.accept().await {
            held.push(s);
        }
    });
    let mut config = format!(
        "group = \"hung\"\n[spool]\ndir = \"{}/hung-spool\"\n",
        root.display()
    );
    for i in 0..19 {
        config.push_str(&format!(
            "[[endpoint]]\nname = \"tcp-{i}\"\naddress = \"{open}\"\ntimeout = \"1s\"\n"
        ));
    }
    config.push_str(&format!(
        "[[endpoint]]\nname = \"silent\"\naddress = \"{silent_addr}\"\ntls = true\nserver_name = \"localhost\"\ntimeout = \"{}ms\"\n",
        HUNG_TIMEOUT.as_millis()
    ));
    let path = root.join("hung.toml");
    std::fs::write(&path, config)?;
    let binary = sibling_binary("connwatch-collector")?;
    let mut runs_ms = Vec::new();
    for _ in 0..HUNG_RUNS {
        let started = Instant::now();
        let out = tokio::process::Command::new(&binary)
            .args(["probe", "--json", "--config"])
            .arg(&path)
            .output()
            .await
            .context("cannot run connwatch-collector probe")?;
        runs_ms.push(started.elapsed().as_secs_f64() * 1000.0);
        anyhow::ensure!(
            out.status.success() || out.status.code() == Some(1),
            "probe failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    holder.abort();
    runs_ms.sort_by(f64::total_cmp);
    Ok(json!({
        "checks": 20,
        "timeout_ms": HUNG_TIMEOUT.as_millis() as u64,
        "sum_of_timeouts_ms": 20 * HUNG_TIMEOUT.as_millis() as u64,
        "runs_ms": runs_ms,
        "median_ms": runs_ms[HUNG_RUNS / 2],
        "max_ms": runs_ms[HUNG_RUNS - 1],
    }))
}
