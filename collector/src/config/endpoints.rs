//! The endpoints a connector host must reach, as Microsoft documents them for the
//! connector ("Configure connectors": open ports, allow access to URLs). A Windows
//! config without `[[endpoint]]` checks these.
//!
//! Wildcard domains cannot be probed, so each documented domain that the running
//! connector needs is stood for by a concrete host in it. Left out:
//!
//! - `*.servicebus.windows.net`: the service hands the connector its relay names at run
//!   time; a fixed name would be a guess that tests nothing but DNS.
//! - the tenant's own `*.msappproxy.net` names (`<tenant-id>.registration...`,
//!   `<tenant-id>.bootstrap...`): nothing the collector reads on the host names the
//!   tenant (TrustSettings.xml holds a thumbprint and a store, the trust certificate
//!   names the connector); `autoupdate.msappproxy.net` stands for the domain instead.
//! - the sign-in page's content domains (`*.msauth.net`, `*.msauthimages.net`,
//!   `*.msecnd.net`, `*.msftauth.net`, `*.msftauthimages.net`, `*.phonefactor.net`,
//!   `*.microsoftonline-p.com`): only the interactive registration wizard loads them,
//!   through content delivery networks whose certificates come from issuers of their
//!   own; the running connector does not need them.
//!
//! A site that needs more (or fewer) lists its own `[[endpoint]]` tables.

use super::{DEFAULT_ENDPOINT_TIMEOUT, EndpointConfig, EndpointProxy, TlsCheckConfig};

/// Hosts the connector reaches over HTTPS, checked with a TLS handshake whose chain
/// must be signed up to one of [`MICROSOFT_ROOTS`].
pub const TLS_HOSTS: &[&str] = &[
    // Sign-in (`*.microsoftonline.com`): registration and the renewal of the trust
    // certificate.
    "login.microsoftonline.com",
    // Sign-in under its older name, documented on its own.
    "login.windows.net",
    // The connector service's domain (`*.msappproxy.net`): the updater's service, the
    // one name in it that is the same for every tenant.
    "autoupdate.msappproxy.net",
    // Device registration and Azure Resource Manager, used during and after
    // registration.
    "enterpriseregistration.windows.net",
    "management.azure.com",
];

/// Hosts the connector reaches over plain HTTP on port 80: the revocation lists and
/// OCSP responders of the certificates it validates, and Windows' certificate trust
/// lists. An inspecting or filtering device that blocks them makes certificate
/// validation fail while every HTTPS port is open.
pub const CRL_HOSTS: &[&str] = &[
    "crl3.digicert.com",
    "crl4.digicert.com",
    "ocsp.digicert.com",
    "crl.microsoft.com",
    "oneocsp.microsoft.com",
    "ocsp.msocsp.com",
    "ctldl.windowsupdate.com",
    // `www.microsoft.com/pkiops`: Microsoft's own CAs' certificates and lists.
    "www.microsoft.com",
];

/// The roots Microsoft's service endpoints chain to ("Azure Certificate Authority
/// details"), as parts of their names. A chain signed up to anything else, even one
/// that names these on the way, is an inspecting device's.
///
/// Left out: Baltimore CyberTrust Root, retired (it expired in May 2025). DigiCert
/// Global Root CA stays, as Microsoft lists it, but the public roots no longer hold it
/// for TLS: a chain to it does not verify unless the endpoint's `ca` names it.
pub const MICROSOFT_ROOTS: &[&str] = &[
    "DigiCert Global Root G2",
    "DigiCert Global Root G3",
    "DigiCert Global Root CA",
    "DigiCert TLS RSA4096 Root G5",
    "DigiCert TLS ECC P384 Root G5",
    "Microsoft RSA Root Certificate Authority 2017",
    "Microsoft ECC Root Certificate Authority 2017",
];

/// The connector's required endpoints: [`TLS_HOSTS`] on 443, verified against the public
/// roots and expected to chain to [`MICROSOFT_ROOTS`], then [`CRL_HOSTS`] on 80.
pub fn connector_endpoints() -> Vec<EndpointConfig> {
    let endpoint = |host: &str, port: u16, tls: Option<TlsCheckConfig>| {
        let address = format!("{host}:{port}");
        EndpointConfig {
            name: address.clone(),
            address,
            timeout: DEFAULT_ENDPOINT_TIMEOUT,
            required: true,
            tls,
            // The connector's traffic goes through its proxy, so the checks of its
            // endpoints do too.
            proxy: EndpointProxy::Connector,
        }
    };
    let tls = TLS_HOSTS.iter().map(|host| {
        endpoint(
            host,
            443,
            Some(TlsCheckConfig {
                server_name: (*host).to_string(),
                expected_issuers: MICROSOFT_ROOTS.iter().map(|r| (*r).to_string()).collect(),
                roots: Vec::new(),
            }),
        )
    });
    let crl = CRL_HOSTS.iter().map(|host| endpoint(host, 80, None));
    tls.chain(crl).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_expected_roots_are_public_roots_but_digicert_global_root_ca() {
        let public: Vec<String> = webpki_roots::TLS_SERVER_ROOTS
            .iter()
            .filter_map(crate::probe::tls::anchor_name)
            .collect();
        for root in MICROSOFT_ROOTS {
            let found = public.iter().any(|n| n.contains(root));
            assert_eq!(found, *root != "DigiCert Global Root CA", "{root}");
        }
    }

    #[test]
    fn every_host_is_a_plain_name() {
        for host in TLS_HOSTS.iter().chain(CRL_HOSTS) {
            assert!(
                !host.contains(['*', ':', '/']) && host.contains('.'),
                "{host}"
            );
        }
    }
}
