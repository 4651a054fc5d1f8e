//! What every scenario needs: a CA with in-process minted certificates, the real
//! `connwatch-aggregator serve` process on a loopback port with a generated config, and
//! a process's CPU time, memory and folder sizes read from `/proc` and the filesystem.

use anyhow::{Context, bail};
use connwatch_shared::identity::{Identity, Role};
use connwatch_shared::pki::{CertAuthority, IssuedCert, LeafSpec};
use std::io::{BufRead, BufReader};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use tonic::transport::{Certificate, ClientTlsConfig, Identity as TlsIdentity, ServerTlsConfig};

/// Linux reports CPU times in `/proc/<pid>/stat` in ticks of 1/100 s (USER_HZ).
const TICKS_PER_SECOND: f64 = 100.0;
/// How long a spawned aggregator may take to say it listens.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// The binary `name` built beside this executable (`target/<profile>/`), whether this
/// is the bench binary or a test executable under `deps/`.
pub fn sibling_binary(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("cannot find this executable's path")?;
    for dir in exe.ancestors().skip(1).take(2) {
        let candidate = dir.join(name);
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    bail!(
        "{name} is not built beside {}: run `cargo build --workspace --bins` (with --release for figures)",
        exe.display()
    )
}

/// A CA, the aggregator's server certificate and an operator certificate, written to
/// `<dir>/certs`; collector identities are minted in memory on demand.
pub struct Pki {
    /// Where ca.pem, server.pem/.key and operator.pem/.key are.
    pub dir: PathBuf,
    ca: CertAuthority,
    server: IssuedCert,
    /// The operator's certificate, for queries.
    pub operator: IssuedCert,
}

impl Pki {
    /// Makes the CA and writes its files under `root/certs`.
    pub fn create(root: &Path) -> anyhow::Result<Pki> {
        let dir = root.join("certs");
        let ca = CertAuthority::generate("connwatch bench CA")?;
        ca.save(&dir, true)?;
        let server = ca.issue(&LeafSpec::server(
            &["localhost".to_string()],
            &[IpAddr::V4(Ipv4Addr::LOCALHOST)],
        ))?;
        server.write(&dir, "server", true)?;
        let operator = ca.issue(&LeafSpec::client(&Identity {
            role: Role::Operator,
            name: "bench".into(),
        }))?;
        Ok(Pki {
            dir,
            ca,
            server,
            operator,
        })
    }

    /// A collector certificate for connector `name`.
    pub fn collector(&self, name: &str) -> anyhow::Result<IssuedCert> {
        Ok(self.ca.issue(&LeafSpec::client(&Identity {
            role: Role::Collector,
            name: name.into(),
        }))?)
    }

    /// The client TLS config presenting `cert`.
    pub fn client_tls(&self, cert: &IssuedCert) -> ClientTlsConfig {
        ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(self.ca.cert_pem()))
            .identity(TlsIdentity::from_pem(&cert.cert_pem, &cert.key_pem))
            .domain_name("localhost")
    }

    /// The server TLS config the aggregator uses: our server certificate, client
    /// certificates required and chained to the CA.
    pub fn server_tls(&self) -> ServerTlsConfig {
        ServerTlsConfig::new()
            .identity(TlsIdentity::from_pem(
                &self.server.cert_pem,
                &self.server.key_pem,
            ))
            .client_ca_root(Certificate::from_pem(self.ca.cert_pem()))
    }
}

/// Mints `names.len()` collector certificates on all cores (key generation dominates).
pub async fn mint_collectors(
    pki: &std::sync::Arc<Pki>,
    names: Vec<String>,
) -> anyhow::Result<Vec<(String, IssuedCert)>> {
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
    let chunk = names.len().div_ceil(workers).max(1);
    let mut tasks = Vec::new();
    for part in names.chunks(chunk) {
        let part = part.to_vec();
        let pki = pki.clone();
        tasks.push(tokio::task::spawn_blocking(move || {
            part.into_iter()
                .map(|n| pki.collector(&n).map(|c| (n, c)))
                .collect::<anyhow::Result<Vec<_>>>()
        }));
    }
    let mut out = Vec::with_capacity(names.len());
    for t in tasks {
        out.extend(t.await.context("minting panicked")??);
    }
    Ok(out)
}

/// A running `connwatch-aggregator serve`; killed when dropped.
pub struct Aggregator {
    child: Child,
    /// Its gRPC address.
    pub addr: SocketAddr,
    /// Its store folder.
    pub data_dir: PathBuf,
}

impl Aggregator {
    /// Writes a config under `root` (store in `root/data`) and starts the release or
    /// debug binary beside this one, waiting until it listens.
    pub fn start(root: &Path, pki: &Pki) -> anyhow::Result<Aggregator> {
        Aggregator::start_with(root, pki, "")
    }

    /// [`Aggregator::start`] with more lines for the config's `[store]` table.
    pub fn start_with(root: &Path, pki: &Pki, store: &str) -> anyhow::Result<Aggregator> {
        std::fs::create_dir_all(root).context("cannot create the aggregator's folder")?;
        let data_dir = root.join("data");
        let config = root.join("aggregator.toml");
        std::fs::write(
            &config,
            format!(
                "listen = \"127.0.0.1:0\"\ndata_dir = \"{data}\"\n[tls]\nca = \"{dir}/ca.pem\"\ncert = \"{dir}/server.pem\"\nkey = \"{dir}/server.key\"\n[store]\ncache_mb = 64\n{store}[alert]\nlog = false\n",
                data = data_dir.display(),
                dir = pki.dir.display(),
            ),
        )
        .context("cannot write the aggregator config")?;
        let log = std::fs::File::create(root.join("aggregator.log"))
            .context("cannot create the aggregator log")?;
        let mut child = Command::new(sibling_binary("connwatch-aggregator")?)
            .args(["--log-level", "warn", "serve", "--config"])
            .arg(&config)
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .context("cannot start connwatch-aggregator")?;
        let stdout = child.stdout.take().context("no stdout")?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(a) = line.strip_prefix("connwatch-aggregator listening on ") {
                    let _ = tx.send(a.to_string());
                }
            }
        });
        let addr = match rx.recv_timeout(START_TIMEOUT) {
            Ok(a) => a.parse().context("the aggregator printed a bad address")?,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                let log = std::fs::read_to_string(root.join("aggregator.log")).unwrap_or_default();
                bail!("the aggregator did not start: {log}");
            }
        };
        // Printed so a profiler can be pointed at it (BENCHMARKS.md shows how).
        eprintln!(
            "bench: aggregator pid {} serving {}",
            child.id(),
            root.display()
        );
        Ok(Aggregator {
            child,
            addr,
            data_dir,
        })
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `https://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }
}

impl Drop for Aggregator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// CPU seconds (user + system) a process has used; `None` if it is gone.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces; the fields after it are plain numbers.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / TICKS_PER_SECOND)
}

/// Resident memory of a process in bytes, now (`VmRSS`) and at its peak (`VmHWM`).
pub fn rss_bytes(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map(|kb| kb * 1024)
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

/// Private memory of a process (`RssAnon`, bytes): its resident size less the pages of
/// its executable and libraries, which the page cache shares with every other process
/// mapping them.
pub fn anon_rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("RssAnon:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
}

/// Bytes a folder occupies on disk (allocated blocks, so sparse files count as written).
pub fn disk_bytes(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => disk_bytes(&e.path()),
            Ok(m) => m.blocks() * 512,
            Err(_) => 0,
        })
        .sum()
}
