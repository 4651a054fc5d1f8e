//! Fixtures for the end-to-end tests: a test PKI, the real `connwatch-aggregator` and
//! `connwatch-collector` binaries started as processes on loopback, a raw gRPC client
//! that can present any certificate, and `eventually` for awaiting conditions.
//!
//! The binaries must be built first (`cargo build --bins`); `scripts/test` does that.

use anyhow::{Context, bail};
use connwatch_shared::identity::{Identity, Role};
use connwatch_shared::pki::{CertAuthority, IssuedCert, LeafSpec};
use connwatch_shared::tls::TlsFiles;
use connwatch_shared::wire::ingest_client::IngestClient;
use connwatch_shared::wire::query_client::QueryClient;
use connwatch_shared::wire::{Ack, Report};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint};

pub mod peers;
pub mod wine;

/// The path of one of the workspace's binaries, built beside the test executable.
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test> -> target/<profile>/<name>
    let dir = exe.parent().and_then(Path::parent).expect("target folder");
    let path = dir.join(name);
    assert!(
        path.is_file(),
        "{} is missing: build the binaries first with `cargo build --bins` (scripts/test does)",
        path.display()
    );
    path
}

/// Waits until `check` returns `Some`, polling every 50 ms, or panics after `timeout`
/// with `what`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if start.elapsed() > timeout {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A test PKI made with the aggregator's own `ca init`, plus in-process minting for
/// certificates the CLI would never issue (wrong CA, expired, no SAN, two SANs).
pub struct Pki {
    /// The folder with ca.pem, server.pem, operator.pem and the rest.
    pub dir: PathBuf,
    ca: CertAuthority,
}

/// Runs `connwatch-aggregator ca <sub> --dir <dir> <args>`, which must succeed;
/// returns what it printed.
fn ca_command(dir: &Path, sub: &str, args: &[&std::ffi::OsStr]) -> String {
    let out = Command::new(bin("connwatch-aggregator"))
        .args(["ca", sub, "--dir"])
        .arg(dir)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run ca {sub}: {e}"));
    assert!(
        out.status.success(),
        "ca {sub} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

impl Pki {
    /// Runs `connwatch-aggregator ca init --dir <dir>/certs`.
    pub fn init(root: &Path) -> Pki {
        let dir = root.join("certs");
        ca_command(&dir, "init", &[]);
        let ca = CertAuthority::load(&dir).expect("load the CA ca init made");
        Pki { dir, ca }
    }

    /// Runs `connwatch-aggregator ca revoke --dir <dir> --cert <cert>`; returns what
    /// it printed.
    pub fn revoke(&self, cert: &Path) -> String {
        ca_command(
            &self.dir,
            "revoke",
            &[std::ffi::OsStr::new("--cert"), cert.as_os_str()],
        )
    }

    /// Issues a collector certificate with `ca issue`; returns its files.
    pub fn collector(&self, name: &str) -> TlsFiles {
        let out = Command::new(bin("connwatch-aggregator"))
            .args([
                "ca",
                "issue",
                "--role",
                "collector",
                "--name",
                name,
                "--force",
                "--dir",
            ])
            .arg(&self.dir)
            .output()
            .expect("run ca issue");
        assert!(
            out.status.success(),
            "ca issue failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        self.files(&format!("collector-{name}"))
    }

    /// The operator certificate `ca init` made.
    pub fn operator(&self) -> TlsFiles {
        self.files("operator")
    }

    /// Writes an arbitrary certificate signed by this CA under `stem`.
    pub fn custom(&self, stem: &str, spec: &LeafSpec) -> TlsFiles {
        let issued = self.ca.issue(spec).expect("issue");
        self.write(stem, &issued)
    }

    /// Writes a certificate for `identity` signed by a different CA.
    pub fn foreign(&self, stem: &str, identity: &Identity) -> TlsFiles {
        let other = CertAuthority::generate("some other CA").expect("ca");
        let issued = other.issue(&LeafSpec::client(identity)).expect("issue");
        self.write(stem, &issued)
    }

    fn write(&self, stem: &str, issued: &IssuedCert) -> TlsFiles {
        issued.write(&self.dir, stem, true).expect("write");
        self.files(stem)
    }

    fn files(&self, stem: &str) -> TlsFiles {
        TlsFiles {
            ca: self.dir.join("ca.pem"),
            cert: self.dir.join(format!("{stem}.pem")),
            key: self.dir.join(format!("{stem}.key")),
        }
    }
}

/// A `connwatch-aggregator serve` process.
pub struct Aggregator {
    child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its config file.
    pub config: PathBuf,
    /// Where `/metrics` is served, when `[metrics]` is configured.
    pub metrics: Option<SocketAddr>,
}

impl Aggregator {
    /// Writes a config under `root` and starts the aggregator on a free loopback port.
    pub fn start(root: &Path, pki: &Pki, extra: &str) -> Aggregator {
        let config = Aggregator::write_config(root, pki, extra);
        Aggregator::spawn(&config).expect("aggregator starts")
    }

    /// Writes `root/aggregator.toml`: loopback on a free port, store in `root/data`,
    /// the PKI's server certificate; `extra` follows the `[tls]` keys. Returns its path.
    pub fn write_config(root: &Path, pki: &Pki, extra: &str) -> PathBuf {
        let config = root.join("aggregator.toml");
        std::fs::write(
            &config,
            format!(
                "listen = \"127.0.0.1:0\"\ndata_dir = \"data\"\n[tls]\nca = \"{ca}\"\ncert = \"{cert}\"\nkey = \"{key}\"\n{extra}",
                ca = pki.dir.join("ca.pem").display(),
                cert = pki.dir.join("server.pem").display(),
                key = pki.dir.join("server.key").display(),
            ),
        )
        .expect("write config");
        config
    }

    /// Sends SIGHUP: reload the TLS files.
    pub fn hangup(&self) {
        let status = Command::new("kill")
            .args(["-HUP", &self.pid().to_string()])
            .status()
            .expect("kill");
        assert!(status.success(), "kill -HUP failed");
    }

    /// The ids `connectors --json` lists.
    pub fn connector_ids(&self, pki: &Pki) -> Vec<String> {
        let list = self.cli_json(pki, &["connectors"]);
        list.as_array()
            .expect("a list of connectors")
            .iter()
            .map(|c| c["id"].as_str().expect("id").to_string())
            .collect()
    }

    /// The sequence numbers `history ID --json` lists, oldest first.
    pub fn history_seqs(&self, pki: &Pki, id: &str) -> Vec<u64> {
        let history = self.cli_json(pki, &["history", id]);
        history["entries"]
            .as_array()
            .expect("entries")
            .iter()
            .map(|e| e["seq"].as_u64().expect("seq"))
            .collect()
    }

    /// Starts `serve --config <config>` and waits for its "listening on" line. Its
    /// log is appended to `aggregator.log` beside the config (see [`Aggregator::log`]).
    pub fn spawn(config: &Path) -> anyhow::Result<Aggregator> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(config.with_file_name("aggregator.log"))
            .context("open the aggregator log")?;
        let mut child = Command::new(bin("connwatch-aggregator"))
            .args(["--log-level", "info", "serve", "--config"])
            .arg(config)
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .context("spawn aggregator")?;
        let stdout = child.stdout.take().context("stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let mut metrics = None;
        let addr = loop {
            match lines.next() {
                Some(Ok(line)) => {
                    if let Some(a) = line
                        .strip_prefix("connwatch-aggregator metrics on http://")
                        .and_then(|a| a.strip_suffix("/metrics"))
                    {
                        metrics = Some(a.parse().context("metrics address")?);
                    }
                    if let Some(a) = line.strip_prefix("connwatch-aggregator listening on ") {
                        break a.parse().context("address")?;
                    }
                }
                _ => {
                    let status = child.wait()?;
                    bail!("the aggregator exited ({status}) before listening");
                }
            }
        };
        // Keep draining stdout so the process never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Ok(Aggregator {
            child,
            addr,
            config: config.to_path_buf(),
            metrics,
        })
    }

    /// Everything the aggregator (and its restarts) logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.config.with_file_name("aggregator.log")).unwrap_or_default()
    }

    /// Its process id, for sending signals.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// The exit code, once it has exited by itself.
    pub fn exit_code(&mut self) -> Option<i32> {
        self.child.try_wait().ok().flatten().and_then(|s| s.code())
    }

    /// `https://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// Kills it with SIGKILL: no shutdown, no final flush.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends SIGTERM and waits for a clean exit.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        signal(self.child.id(), libc::SIGTERM);
        self.child.wait().expect("wait")
    }

    /// Starts it again on the same port with the same config, after `kill` or
    /// `terminate`.
    pub fn restart(&mut self) {
        let text = std::fs::read_to_string(&self.config).expect("read config");
        // Only the gRPC address: it is the first `listen` in the file.
        let text = text.replacen(
            "listen = \"127.0.0.1:0\"",
            &format!("listen = \"{}\"", self.addr),
            1,
        );
        std::fs::write(&self.config, text).expect("write config");
        let started = Instant::now();
        // The port may linger briefly; retry for a few seconds.
        loop {
            match Aggregator::spawn(&self.config) {
                Ok(a) => {
                    *self = a;
                    return;
                }
                Err(e) if started.elapsed() > Duration::from_secs(10) => panic!("restart: {e:#}"),
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }

    /// Runs an operator CLI command against this aggregator with `pki`'s operator
    /// certificate.
    pub fn cli(&self, pki: &Pki, args: &[&str]) -> Output {
        Command::new(bin("connwatch-aggregator"))
            .args(args)
            .arg("--aggregator")
            .arg(self.url())
            .arg("--certs")
            .arg(&pki.dir)
            .output()
            .expect("run the CLI")
    }

    /// Runs a CLI command with `--json`, checks it succeeded and parses its output.
    pub fn cli_json(&self, pki: &Pki, args: &[&str]) -> serde_json::Value {
        let mut all = args.to_vec();
        all.push("--json");
        let out = self.cli(pki, &all);
        assert!(
            out.status.success(),
            "{args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "{args:?} printed invalid JSON ({e}): {}",
                String::from_utf8_lossy(&out.stdout)
            )
        })
    }
}

impl Drop for Aggregator {
    fn drop(&mut self) {
        self.kill();
    }
}

fn signal(pid: u32, sig: i32) {
    let Ok(pid) = i32::try_from(pid) else { return };
    let status = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status();
    assert!(
        status.is_ok_and(|s| s.success()),
        "kill -{sig} {pid} failed"
    );
}

/// The variables a collector reads for the system proxy off Windows.
pub const PROXY_VARIABLES: [&str; 8] = [
    "HTTPS_PROXY",
    "https_proxy",
    "HTTP_PROXY",
    "http_proxy",
    "ALL_PROXY",
    "all_proxy",
    "NO_PROXY",
    "no_proxy",
];

/// Clears the proxy variables for a collector: its endpoint checks follow the system
/// proxy, and a test's loopback endpoints must not depend on the machine's.
pub fn without_proxy_environment(command: &mut Command) {
    for var in PROXY_VARIABLES {
        command.env_remove(var);
    }
}

/// A `connwatch-collector run` process.
pub struct Collector {
    child: Child,
    config: PathBuf,
}

/// What a collector's spool state file says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SpoolState {
    /// The epoch of its sequence numbers.
    pub epoch: u64,
    /// The last sequence number it assigned.
    pub last_seq: u64,
    /// The highest sequence number the aggregator acknowledged.
    pub acked_seq: u64,
    /// Reports dropped because the spool was full.
    pub dropped: u64,
}

impl Collector {
    /// Writes a collector config under `root` for the certificate's connector and
    /// starts it, reporting every 500 ms.
    pub fn start(root: &Path, agg: &Aggregator, tls: &TlsFiles, extra: &str) -> Collector {
        Collector::start_with(root, agg, tls, "500ms", extra)
    }

    /// As [`Collector::start`], with a chosen interval. `extra` is TOML appended right
    /// after the `[spool]` table's `dir`: bare keys (`max_kb = 8`) bound the spool,
    /// tables (`[[endpoint]]`) add probes.
    pub fn start_with(
        root: &Path,
        agg: &Aggregator,
        tls: &TlsFiles,
        interval: &str,
        extra: &str,
    ) -> Collector {
        let config = root.join(format!(
            "collector-{}.toml",
            tls.cert.file_stem().and_then(|s| s.to_str()).unwrap_or("c")
        ));
        std::fs::write(
            &config,
            format!(
                "group = \"test\"\ninterval = \"{interval}\"\njitter = \"10ms\"\n[aggregator]\naddress = \"{url}\"\nserver_name = \"localhost\"\nca = \"{ca}\"\ncert = \"{cert}\"\nkey = \"{key}\"\ndrain_rate = 1000\n[spool]\ndir = \"{spool}\"\n{extra}\n",
                url = agg.url(),
                ca = tls.ca.display(),
                cert = tls.cert.display(),
                key = tls.key.display(),
                spool = config.with_extension("spool").display(),
            ),
        )
        .expect("write collector config");
        let child = Collector::spawn(&config);
        Collector { child, config }
    }

    fn spawn(config: &Path) -> Child {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(config.with_extension("log"))
            .expect("open the collector log");
        let mut command = Command::new(bin("connwatch-collector"));
        without_proxy_environment(&mut command);
        command
            .args(["--log-level", "info", "run", "--config"])
            .arg(config)
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("spawn collector")
    }

    /// Kills it with SIGKILL.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends SIGTERM and waits: it stops probing and delivers what it holds (5 s at most).
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        signal(self.child.id(), libc::SIGTERM);
        self.child.wait().expect("wait")
    }

    /// Starts it again with the same config and spool.
    pub fn restart(&mut self) {
        self.child = Collector::spawn(&self.config);
    }

    /// Reads its spool's state file.
    pub fn spool_state(&self) -> SpoolState {
        let path = self.config.with_extension("spool").join("state");
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let mut s = SpoolState::default();
        for line in text.lines() {
            if let Some((k, v)) = line.split_once('=') {
                let v = v.trim().parse().unwrap_or(0);
                match k {
                    "epoch" => s.epoch = v,
                    "last_seq" => s.last_seq = v,
                    "acked_seq" => s.acked_seq = v,
                    "dropped" => s.dropped = v,
                    _ => {}
                }
            }
        }
        s
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.config.with_extension("log")).unwrap_or_default()
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The (epoch, seq) pairs the aggregator stored for `connector`, as `history` lists
/// them (oldest first).
pub fn stored(agg: &Aggregator, pki: &Pki, connector: &str) -> Vec<(u64, u64)> {
    let out = agg.cli(pki, &["history", connector, "--limit", "100000", "--json"]);
    if !out.status.success() {
        return Vec::new();
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    v["entries"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|e| {
                    (
                        // Epochs are JSON strings: jq and JavaScript would round them.
                        e["epoch"]
                            .as_str()
                            .and_then(|s| s.parse().ok())
                            .unwrap_or(0),
                        e["seq"].as_u64().unwrap_or(0),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Opens a channel to `agg` presenting `tls`; errors are returned, not panicked, so
/// tests can assert on refusals.
pub async fn channel(agg: &Aggregator, tls: &TlsFiles) -> anyhow::Result<Channel> {
    connwatch_shared::tls::install_crypto_provider();
    let material = tls.load()?;
    Ok(Endpoint::from_shared(agg.url())?
        .tls_config(material.client_config("localhost"))?
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(10))
        .connect()
        .await?)
}

/// A query client presenting `tls`.
pub async fn query_client(
    agg: &Aggregator,
    tls: &TlsFiles,
) -> anyhow::Result<QueryClient<Channel>> {
    Ok(QueryClient::new(channel(agg, tls).await?))
}

/// Sends `reports` on one ingest stream and collects one ack per report.
pub async fn send_reports(
    agg: &Aggregator,
    tls: &TlsFiles,
    reports: Vec<Report>,
) -> Result<Vec<Ack>, tonic::Status> {
    let channel = channel(agg, tls)
        .await
        .map_err(|e| tonic::Status::unavailable(format!("{e:#}")))?;
    let mut client = IngestClient::new(channel);
    let (tx, rx) = mpsc::channel(reports.len().max(1));
    let n = reports.len();
    for r in reports {
        tx.send(r)
            .await
            .map_err(|_| tonic::Status::internal("send"))?;
    }
    let mut acks = client.stream(ReceiverStream::new(rx)).await?.into_inner();
    let mut out = Vec::new();
    while out.len() < n {
        match acks.message().await? {
            Some(a) => out.push(a),
            None => break,
        }
    }
    drop(tx);
    Ok(out)
}

/// A plausible report with `seq` in `epoch`, collected now.
pub fn report(epoch: u64, seq: u64) -> Report {
    Report {
        seq,
        epoch,
        collected_at_ms: connwatch_shared::time::now_ms(),
        group: "test".into(),
        collector_version: "test".into(),
        ..Default::default()
    }
}

/// A report like [`report`] carrying one trust certificate that expires in
/// `days_left` days, with thumbprint `thumbprint`.
pub fn cert_report(epoch: u64, seq: u64, days_left: i64, thumbprint: &str) -> Report {
    let mut r = report(epoch, seq);
    let now = connwatch_shared::time::now_ms();
    r.trust_certs = vec![connwatch_shared::wire::TrustCertificate {
        source: "LocalMachine\\My".into(),
        subject: "CN=connector".into(),
        issuer: "CN=connectorregistrationca.msappproxy.net".into(),
        thumbprint: thumbprint.into(),
        not_before_ms: now - 86_400_000,
        not_after_ms: now + days_left * 86_400_000,
        found: true,
        thumbprint_matched: true,
        ..Default::default()
    }];
    r
}

/// The identity of a collector named `name`.
pub fn collector_id(name: &str) -> Identity {
    Identity {
        role: Role::Collector,
        name: name.into(),
    }
}
