//! Real peers for the alerting, metrics and proxy tests: Alertmanager, Prometheus and
//! tinyproxy from the Debian packages and `openssl s_server`, each started on a free
//! loopback port with its own config and data folder and killed on drop; a webhook
//! receiver that can be told to fail; and a minimal HTTP/1.0 client, enough for their
//! JSON APIs.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// Whether `program` can be run here (`program -h` starts).
pub fn installed(program: &str) -> bool {
    Command::new(program)
        .arg("-h")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

/// Percent-encodes a query parameter value.
pub fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// One HTTP/1.0 request (so the answer is never chunked); returns status and body.
pub fn http(
    method: &str,
    addr: SocketAddr,
    path: &str,
    body: &str,
) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        s,
        "{method} {path} HTTP/1.0\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    Ok((status, body.to_string()))
}

/// GET returning parsed JSON, or `None` while the peer is not answering 200.
pub fn get_json(addr: SocketAddr, path: &str) -> Option<serde_json::Value> {
    match http("GET", addr, path, "") {
        Ok((200, body)) => serde_json::from_str(&body).ok(),
        _ => None,
    }
}

struct Peer {
    child: Child,
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait_ready(child: &mut Child, addr: SocketAddr, path: &str, what: &str) {
    let start = Instant::now();
    loop {
        if let Ok((200, _)) = http("GET", addr, path, "") {
            return;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{what} exited ({status}) before it was ready");
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{what} not ready on {addr} after 30s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits until `addr` accepts TCP connections; panics if `child` exits first.
fn wait_listening(child: &mut Child, addr: SocketAddr, what: &str) {
    let start = Instant::now();
    loop {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{what} exited ({status}) before it listened on {addr}");
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{what} not listening on {addr} after 10s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A real forward proxy (Debian's `tinyproxy`) in the foreground on loopback.
pub struct Tinyproxy {
    _peer: Peer,
    /// Where it listens.
    pub addr: SocketAddr,
}

impl Tinyproxy {
    /// Starts one under `root/<name>` that allows CONNECT only to `connect_ports` (to
    /// any port when empty) and, with `basic_auth`, answers 407 to requests without
    /// those credentials.
    pub fn start(
        root: &Path,
        name: &str,
        connect_ports: &[u16],
        basic_auth: Option<(&str, &str)>,
    ) -> Tinyproxy {
        let dir = root.join(name);
        std::fs::create_dir_all(&dir).expect("mkdir");
        let config = dir.join("tinyproxy.conf");
        // Port 0 is not supported: take a port that was free a moment ago.
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
        let mut text = format!(
            "Port {}\nListen 127.0.0.1\nAllow 127.0.0.1\nTimeout 10\nMaxClients 20\nLogLevel Warning\nPidFile \"{}\"\n",
            addr.port(),
            dir.join("tinyproxy.pid").display()
        );
        for port in connect_ports {
            text.push_str(&format!("ConnectPort {port}\n"));
        }
        if let Some((user, password)) = basic_auth {
            text.push_str(&format!("BasicAuth {user} {password}\n"));
        }
        std::fs::write(&config, text).expect("write tinyproxy.conf");
        let mut child = Command::new("tinyproxy")
            .arg("-d")
            .arg("-c")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start tinyproxy (scripts/install-test-deps installs it)");
        wait_listening(&mut child, addr, "tinyproxy");
        Tinyproxy {
            _peer: Peer { child },
            addr,
        }
    }

    /// `http://127.0.0.1:<port>`, as a `proxyaddress` or `proxy` key writes it.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

/// A TLS server: `openssl s_server` on loopback with a certificate and key.
pub struct TlsServer {
    _peer: Peer,
    /// Where it listens.
    pub addr: SocketAddr,
}

impl TlsServer {
    /// Starts one presenting `cert` (PEM, with its `key`); it completes any number of
    /// handshakes, one at a time.
    pub fn start(cert: &Path, key: &Path) -> TlsServer {
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
        let mut child = Command::new("openssl")
            .args(["s_server", "-accept", &addr.to_string(), "-www", "-cert"])
            .arg(cert)
            .arg("-key")
            .arg(key)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start openssl s_server (scripts/install-test-deps installs openssl)");
        wait_listening(&mut child, addr, "openssl s_server");
        TlsServer {
            _peer: Peer { child },
            addr,
        }
    }
}

/// A real Alertmanager (`prometheus-alertmanager`), clustering off.
pub struct Alertmanager {
    _peer: Peer,
    /// Its API address.
    pub addr: SocketAddr,
}

impl Alertmanager {
    /// Starts one with a do-nothing receiver under `root/alertmanager`.
    pub fn start(root: &Path) -> Alertmanager {
        let dir = root.join("alertmanager");
        std::fs::create_dir_all(&dir).expect("mkdir");
        let config = dir.join("alertmanager.yml");
        std::fs::write(
            &config,
            "route:\n  receiver: 'null'\n  group_wait: 1s\nreceivers:\n  - name: 'null'\n",
        )
        .expect("write alertmanager.yml");
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
        let mut child = Command::new("prometheus-alertmanager")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.path={}", dir.join("data").display()))
            .arg(format!("--web.listen-address={addr}"))
            .arg("--cluster.listen-address=")
            .arg("--log.level=warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start prometheus-alertmanager (scripts/install-test-deps installs it)");
        wait_ready(&mut child, addr, "/-/ready", "alertmanager");
        Alertmanager {
            _peer: Peer { child },
            addr,
        }
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Alerts Alertmanager holds whose labels match `filter` (`name="value"`), as
    /// `GET /api/v2/alerts` returns them: active, silenced and inhibited ones; ended
    /// ones are not listed.
    pub fn alerts(&self, filters: &[&str]) -> Vec<serde_json::Value> {
        let query: Vec<String> = filters
            .iter()
            .map(|f| format!("filter={}", encode(f)))
            .collect();
        get_json(self.addr, &format!("/api/v2/alerts?{}", query.join("&")))
            .and_then(|v| v.as_array().cloned())
            .unwrap_or_default()
    }
}

/// A real Prometheus scraping one target every second.
pub struct Prometheus {
    _peer: Peer,
    /// Its API address.
    pub addr: SocketAddr,
}

impl Prometheus {
    /// Starts one under `root/prometheus` scraping `target` (`host:port`).
    pub fn start(root: &Path, target: &str) -> Prometheus {
        let dir = root.join("prometheus");
        std::fs::create_dir_all(&dir).expect("mkdir");
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: connwatch\n    static_configs:\n      - targets: ['{target}']\n"
            ),
        )
        .expect("write prometheus.yml");
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
        let mut child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .arg("--log.level=warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start prometheus (scripts/install-test-deps installs it)");
        wait_ready(&mut child, addr, "/-/ready", "prometheus");
        Prometheus {
            _peer: Peer { child },
            addr,
        }
    }

    /// The result vector of an instant query, empty until there is one.
    pub fn query(&self, promql: &str) -> Vec<serde_json::Value> {
        get_json(
            self.addr,
            &format!("/api/v1/query?query={}", encode(promql)),
        )
        .and_then(|v| v["data"]["result"].as_array().cloned())
        .unwrap_or_default()
    }
}

/// A webhook receiver on loopback that answers 503 while `down` and records each
/// body it accepted with 200.
pub struct Receiver {
    /// Where it listens.
    pub addr: SocketAddr,
    down: Arc<AtomicBool>,
    accepted: Arc<Mutex<Vec<serde_json::Value>>>,
    refused: Arc<Mutex<u64>>,
}

impl Receiver {
    /// Starts a receiver; `down` says whether it starts failing.
    pub fn start(down: bool) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind receiver");
        let addr = listener.local_addr().expect("addr");
        let r = Receiver {
            addr,
            down: Arc::new(AtomicBool::new(down)),
            accepted: Arc::default(),
            refused: Arc::default(),
        };
        let (down, accepted, refused) = (r.down.clone(), r.accepted.clone(), r.refused.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut s) = stream else { continue };
                let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
                let Some(body) = read_request(&mut s) else {
                    continue;
                };
                let status = if down.load(Ordering::SeqCst) {
                    *refused.lock().expect("lock") += 1;
                    "503 Service Unavailable"
                } else {
                    if let Ok(v) = serde_json::from_slice(&body) {
                        accepted.lock().expect("lock").push(v);
                    }
                    "200 OK"
                };
                let _ = write!(
                    s,
                    "HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                );
            }
        });
        r
    }

    /// `http://127.0.0.1:<port>/hook`.
    pub fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    /// Makes it fail (`true`) or accept.
    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }

    /// Bodies accepted so far.
    pub fn accepted(&self) -> Vec<serde_json::Value> {
        self.accepted.lock().expect("lock").clone()
    }

    /// Requests refused so far.
    pub fn refused(&self) -> u64 {
        *self.refused.lock().expect("lock")
    }
}

fn read_request(s: &mut TcpStream) -> Option<Vec<u8>> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = s.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    while buf.len() < head_end + len {
        let n = s.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Some(buf[head_end..head_end + len].to_vec())
}
