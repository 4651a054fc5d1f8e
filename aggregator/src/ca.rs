//! `ca init`, `ca issue` and `ca revoke`: mint the CA, the aggregator's server
//! certificate and the client certificates, say where each file goes, and keep the
//! revocation list.

use connwatch_shared::identity::{Identity, Role, validate_name};
use connwatch_shared::pki::{self, CertAuthority, LeafSpec, PkiError, Revoked};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;
use std::time::Duration;

/// The operator name `ca init` issues a first certificate for.
pub const FIRST_OPERATOR: &str = "admin";

/// Creates a CA, a server certificate for `server_names` (plus localhost and the
/// loopback addresses) and a first operator certificate, all in `dir`. Returns what
/// to tell the user.
pub fn init(dir: &Path, server_names: &[String], force: bool) -> Result<String, PkiError> {
    // A name of its own, so that a revocation list of an earlier CA (which names its
    // issuer) is never taken for this one's.
    let ca = CertAuthority::generate(&format!("connwatch CA {}", time_tag()))?;
    let ca_files = ca.save(dir, force)?;
    let mut dns = vec!["localhost".to_string()];
    let mut ips: Vec<IpAddr> = vec![Ipv4Addr::LOCALHOST.into(), Ipv6Addr::LOCALHOST.into()];
    for name in server_names {
        match name.parse::<IpAddr>() {
            Ok(ip) => ips.push(ip),
            Err(_) => dns.push(name.clone()),
        }
    }
    let server = ca
        .issue(&LeafSpec::server(&dns, &ips).valid_for(Duration::from_secs(825 * 86_400)))?
        .write(dir, "server", force)?;
    let operator = Identity {
        role: Role::Operator,
        name: FIRST_OPERATOR.into(),
    };
    let op = ca
        .issue(&LeafSpec::client(&operator))?
        .write(dir, "operator", force)?;
    Ok(format!(
        "created in {dir}:\n  {ca} + {cakey}: the CA. Keep ca.key offline or on the aggregator only; every collector and operator needs ca.pem.\n  {srv} + {srvkey}: the aggregator's server certificate for {names}; set [tls] cert/key in aggregator.toml.\n  {op} + {opkey}: an operator certificate ({opname}) for the CLI (`--certs {dir}`).\nnext: issue one certificate per connector host with\n  connwatch-aggregator ca issue --dir {dir} --role collector --name <connector-id>",
        dir = dir.display(),
        ca = ca_files.cert.display(),
        cakey = ca_files.key.display(),
        srv = server.cert.display(),
        srvkey = server.key.display(),
        names = dns
            .iter()
            .cloned()
            .chain(ips.iter().map(IpAddr::to_string))
            .collect::<Vec<_>>()
            .join(", "),
        op = op.cert.display(),
        opkey = op.key.display(),
        opname = operator,
    ))
}

/// Today's date and a random tag, to tell CAs apart by name.
fn time_tag() -> String {
    let today = connwatch_shared::time::rfc3339(connwatch_shared::time::now_ms());
    format!(
        "{}-{:04x}",
        today.get(..10).unwrap_or(&today),
        rand::random::<u16>()
    )
}

/// Issues a client certificate for `name` with `role`, signed by the CA in `dir`,
/// written to `out` as `<role>-<name>.pem` and `.key`.
pub fn issue(
    dir: &Path,
    out: &Path,
    role: Role,
    name: &str,
    valid_for: Duration,
    force: bool,
) -> anyhow::Result<String> {
    validate_name(name)?;
    let ca = CertAuthority::load(dir)?;
    let id = Identity {
        role,
        name: name.to_string(),
    };
    let files = ca
        .issue(&LeafSpec::client(&id).valid_for(valid_for))?
        .write(out, &format!("{role}-{name}"), force)?;
    let use_it = match role {
        Role::Collector => format!(
            "copy them with {ca} to the connector host and point [aggregator] cert, key and ca in collector.toml at them; reports signed with it are stored as connector `{name}`. To renew, issue again with --force and replace the files on the host: the running collector picks them up without a restart",
            ca = dir.join("ca.pem").display()
        ),
        Role::Operator => format!(
            "give them with {ca} to the operator, who passes --cert, --key and --ca (or --certs) to the CLI",
            ca = dir.join("ca.pem").display()
        ),
    };
    Ok(format!(
        "issued {id} ({days} days):\n  {cert}\n  {key}\n{use_it}",
        days = valid_for.as_secs() / 86_400,
        cert = files.cert.display(),
        key = files.key.display(),
    ))
}

/// The revocation list's file name in a CA folder.
pub const CRL_FILE: &str = "crl.pem";
/// How long a revocation list is valid. The aggregator checks it without regard to its
/// next-update time, so this only tells other readers when to expect a newer one.
const CRL_VALID_FOR: Duration = Duration::from_secs(365 * 86_400);

/// Adds the certificate in `cert` to the revocation list in `dir` (creating it), signed
/// by the CA there. Returns what to tell the user.
pub fn revoke(dir: &Path, cert: &Path) -> anyhow::Result<String> {
    let ca = CertAuthority::load(dir)?;
    let serial = pki::serial_of(cert)?;
    let crl = dir.join(CRL_FILE);
    let mut revoked = pki::read_revoked(&crl)?;
    let hex: Vec<String> = serial.iter().map(|b| format!("{b:02x}")).collect();
    let already = revoked.iter().any(|r| r.serial == serial);
    if !already {
        revoked.push(Revoked::now(serial));
    }
    let pem = ca.revocation_list(&revoked, CRL_VALID_FOR)?;
    // Write beside it, sync and rename, so an aggregator reloading meanwhile never
    // reads half a list and a crash leaves the old one or the new one.
    let tmp = dir.join(format!("{CRL_FILE}.{}.tmp", std::process::id()));
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        std::io::Write::write_all(&mut f, pem.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, &crl)
    };
    write().map_err(|e| anyhow::anyhow!("cannot write {}: {e}", crl.display()))?;
    Ok(format!(
        "{what} {cert} (serial {serial}); {crl} lists {n} certificate(s).\nthe aggregator refuses them once `crl = \"{crl}\"` is under [tls] in aggregator.toml: restart it after adding that line; after later revocations a reload is enough (SIGHUP, or `systemctl reload connwatch-aggregator`). Connections open before then stay up until they close.",
        what = if already {
            "already revoked:"
        } else {
            "revoked"
        },
        cert = cert.display(),
        serial = hex.join(":"),
        crl = crl.display(),
        n = revoked.len(),
    ))
}
