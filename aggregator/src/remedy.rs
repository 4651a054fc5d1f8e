//! What to do about each finding, in our own words, from the facts of the connector
//! troubleshooting guides.

use connwatch_shared::finding::Code;

/// Which party of an endpoint check offered only TLS older than 1.2. The collector's
/// own client offers TLS 1.2 and 1.3 whatever the host's SChannel settings say, so the
/// old side is always the far one: the endpoint, a proxy's tunnel, or a device that
/// intercepts TLS on the way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OldTlsSide {
    /// The endpoint itself answered (the check went direct).
    Server,
    /// The check went through a proxy; the proxy or what is behind it answered.
    Proxy,
    /// The chain presented is not the service's: a TLS-inspecting device answered.
    Inspection,
}

/// What to do about `tls-too-old`, by the side that offered the old versions.
pub fn tls_too_old(side: OldTlsSide) -> &'static str {
    match side {
        OldTlsSide::Server => {
            "The endpoint offered only TLS older than 1.2, which the connector refuses. The check offers TLS 1.2 and 1.3, so the host's own TLS settings are not the cause: for a service endpoint, make sure the address reaches the genuine service and not a local device answering for it (a load balancer, firewall or DNS override); for an endpoint you run, enable TLS 1.2 or later on it."
        }
        OldTlsSide::Proxy => {
            "The check went through the proxy named in the evidence, and what answered through it offered only TLS older than 1.2. The check offers TLS 1.2 and 1.3, so the host's own TLS settings are not the cause: most often the proxy or a device behind it terminates TLS with an old stack; enable TLS 1.2 or later there, or exempt the connector's traffic to the service's domains."
        }
        OldTlsSide::Inspection => {
            "A device between the host and the service intercepts TLS (the chain is not the service's) and offers only TLS older than 1.2. The host's own TLS settings are not the cause: exempt the connector's traffic to the service's domains from inspection, or enable TLS 1.2 or later on the device."
        }
    }
}

/// The remediation sentence for a finding code.
pub fn remediation(code: Code) -> &'static str {
    match code {
        Code::Inactive => {
            "The host has stopped reporting. Check that it is up and that the connwatch collector and the connector service (WAPCSvc) run on it. A connector that stays offline cannot renew its trust certificate, and the portal drops connectors inactive for 10 days."
        }
        Code::ServiceNotRunning => {
            "Start the connector service (WAPCSvc) from the Services console and set its start type to Automatic. If it stops again, read the connector's Admin event log for the reason."
        }
        Code::UpdaterNotRunning => {
            "Start the updater service (WAPCUpdaterSvc) and set it to Automatic; without it the connector gets no automatic upgrades and falls behind its group."
        }
        Code::TrustCertExpiring => {
            "A running connector renews its trust certificate by itself once it can reach the cloud service: keep the connector service running and outbound ports 80 and 443 open so renewal happens before expiry. Once it has expired, the connector must be re-registered by hand."
        }
        Code::TrustCertExpired => {
            "An expired trust certificate cannot renew itself. Re-register the connector (run the connector installer again, or the registration script), then restart the connector service. Event 1000 and 'failed to download the configuration' errors in its log have this cause."
        }
        Code::TrustCertMissing => {
            "No certificate matches the thumbprint recorded in TrustSettings.xml in the store it names (the machine store when IsInUserStore is false, the Network Service user's store when true). Re-register the connector to obtain a new certificate."
        }
        Code::EndpointUnreachable => {
            "The host cannot open an outbound connection to this endpoint. Allow outbound TCP 80 and 443 to the service's domains on the firewall or proxy, then repeat the port test from the host."
        }
        Code::ProxyFailed => {
            "The connector's outbound proxy did not let the check through; the evidence names the proxy and its answer. Unreachable: check the proxy address in the connector's .exe.config (or the system proxy) and that the proxy runs. Refused (403, 405, 5xx): allow the connector host to the service's domains on ports 80 and 443 on the proxy. Credentials asked (407): grant the connector's accounts (Network Service and Local System) access through the proxy, or bypass the proxy for the service's domains. Then make the connector and its updater use the same setting."
        }
        Code::ProbeFailed => {
            "A check could not run on the host. Fix the cause given in the evidence, usually a permission or a path in the collector's config, so the facts it measures are known again."
        }
        Code::Retired => {
            "The connector has been silent for longer than retire_after and left the live views; its history is kept until retention removes it. If the host still exists, start its collector and connector service; otherwise nothing needs doing."
        }
        Code::TrustCertIssuer => {
            "The trust certificate was not issued by the expected registration CA (connectorregistrationca.msappproxy.net). The connector presents it to the cloud service, which will not accept it: re-register the connector to obtain a proper certificate."
        }
        Code::TlsTooOld => tls_too_old(OldTlsSide::Server),
        Code::TlsIntercepted => {
            "The endpoint presented a certificate chain that does not verify, or is not signed up to one of the expected roots: most often a device between the host and the service is inspecting TLS (the evidence's error says when it is something else, such as the host's clock). Inspection breaks the connector's client-certificate authentication (ConnectorError:Unauthorized); exempt the connector's traffic to the service's domains from TLS inspection."
        }
        Code::BackendUnreachable => {
            "The connector host cannot load this internal application. Check the application is up and that the host can reach it (DNS, firewall, certificate); the connector can only publish what it can reach itself."
        }
        Code::ProxyMismatch => {
            "The connector and its updater use different outbound proxy settings, so one of them cannot reach the service. Make both services' .exe.config use the same defaultProxy (or both bypass it), then restart both."
        }
        Code::VersionBehind => {
            "This connector runs an older version than its group or the configured minimum. Check that the updater service runs; if it does, install the current connector release by hand."
        }
        Code::ClockSkew => {
            "The host clock differs from the aggregator's by more than the allowed skew. Kerberos single sign-on fails with clock drift (events 12008, 13019, 13022): point the host at the domain's time source and resynchronise."
        }
        Code::KnownErrorLogged => {
            "The connector logged a known error. Its evidence names the signature: an expired trust certificate explains 'failed to download the configuration' and event 1000, networking errors point to blocked ports or a proxy, Kerberos events to delegation or clock problems."
        }
        Code::GroupSplitReachability => {
            "Members of this group disagree on which endpoints they can reach, which usually means a firewall rule differs between their networks. Compare the members' endpoint results and align the rules."
        }
        Code::GroupMixedVersions => {
            "Members of this group run different connector versions. Usually an updater is stopped on the older ones; check their updater services."
        }
        Code::GroupEmpty => {
            "No connector of this group has reported to this aggregator, or all its members retired. Install and register a connector in the group and start its collector, or remove the group from the aggregator's config if it is no longer used."
        }
        Code::UnassignedConnector => {
            "The connector reports a group the aggregator does not declare. Fix the group name in the collector's config, or declare the group in the aggregator's config."
        }
        Code::GroupDown => {
            "No connector in this group is active and healthy, so the applications assigned to it cannot be reached. Restore at least one member (see its findings) or assign the applications to another group."
        }
        Code::GroupNoRedundancy => {
            "Fewer healthy connectors serve this group than its configured minimum, so one more failure takes its applications down. Repair the unhealthy members or install another connector in the group."
        }
    }
}

/// What to do about a known error the connector logged, by its signature id (see
/// `connwatch_shared::logsig`); an id this build does not know gets the general advice
/// of `known-error-logged`.
pub fn log_remediation(signature: &str) -> &'static str {
    match signature {
        "trust-cert-expired" => {
            "The connector's trust certificate expired, so the service refuses it and the connector has stopped working (event 1000); it cannot renew itself any more. Re-register the connector on its host: either uninstall and reinstall the connector, or in an elevated PowerShell run `Import-Module AppProxyPSModule` then `Register-AppProxyConnector` (`Register-MicrosoftEntraPrivateNetworkConnector` for the private network connector, 1.5.3829.0 and later), signing in as at least an Application Administrator. Then restart the connector service (WAPCSvc) and check that TrustSettings.xml names the new certificate."
        }
        "config-download-failed" => {
            "The connector could not fetch its configuration: its client certificate has expired, or it cannot reach the service through a proxy. Renew the trust by re-registering the connector (`Register-AppProxyConnector`, or `Register-MicrosoftEntraPrivateNetworkConnector` on the private network connector). Behind a proxy, let the connector's accounts (Network Service and Local System) through it, or bypass it for the service's domains."
        }
        "service-unreachable" => {
            "The connector cannot connect to the cloud service, usually because a firewall rule blocks it. Allow outbound TCP 80 and 443 to the service's documented domains on the firewall and proxy, then repeat the port test from the host."
        }
        "registration-interrupted" => {
            "Registration ended without a sign-in. If the registration window was closed, run the connector wizard again and sign in. If the window opened and closed by itself, the host has a network problem: check that a browser on it reaches a public website and that outbound ports 80 and 443 are open."
        }
        "registration-wrong-tenant" => {
            "Registration used an account outside the tenant (AADSTS50059), such as a personal Microsoft account. Register with an admin account of the tenant's own domain: for a tenant on contoso.com, an account like admin@contoso.com."
        }
        "registration-proxy-disabled" => {
            "Registration was refused because application proxy is disabled for the tenant (AADSTS50001). Enable application proxy in the portal, then register the connector again."
        }
        "registration-ports-blocked" => {
            "The registration endpoint did not answer: the ports the connector needs are blocked (older releases registered on ports above 8081, such as 9090). Open the outbound ports of the connector prerequisites on the firewall, then register again."
        }
        "registration-denied" => {
            "The registration request was denied: the signing-in account is not an admin of the directory the connector registers in (the directory of the account's domain). Sign in with an account that has at least the Application Administrator role in the tenant."
        }
        "registration-failed" => {
            "Connector registration failed. Its logged line gives the reason; check that the host reaches the service on outbound 80 and 443, that application proxy is enabled for the tenant, and that the account signing in is an Application Administrator of the tenant, then run the registration again."
        }
        "execution-policy" => {
            "The installer could not run its PowerShell scripts because script execution is disabled by policy. In the Group Policy Editor, under Computer Configuration > Administrative Templates > Windows Components > Windows PowerShell, set Turn on Script Execution to Not Configured, or to Enabled with Allow local scripts and remote signed scripts (or Allow all scripts), then run the installation again."
        }
        "connector-unauthorized" => {
            "The connector is not authorized by the service: its client certificate did not reach the endpoint. Most often a device on the way inspects or terminates TLS; exempt the connector's outbound traffic to the service from every kind of TLS inspection. If nothing inspects it, check the connector's registration and trust certificate, and re-register it."
        }
        "kerberos-12008" => {
            "The backend server declined the Kerberos tickets made for it, until the attempts ran out. Check the Kerberos constrained delegation set-up between the connector and the backend application (delegation rights, the application's SPN), and that the clocks of the connector host and the backend server are synchronised."
        }
        "kerberos-13016" => {
            "No Kerberos ticket could be requested because the user's token has no UPN. Fix the UPN claim in the configuration of the security token service that signs users in."
        }
        "kerberos-13019" => {
            "The domain controller declined the Kerberos request (a general API error). Check the SPN configured for the application and that it is registered on the backend's account, that the connector host is joined to the same domain as the domain controller (or a trusted one), and that the clocks of the connector host and the domain controller are synchronised."
        }
        "kerberos-13020" => {
            "The domain controller knows no SPN for the backend server. Register the backend application's SPN on its service account (setspn) and make the application's configured SPN match it; then check domain trust and that the clocks of the connector host and the domain controller agree."
        }
        "kerberos-13022" => {
            "The backend server answered the Kerberos attempt with HTTP 401: it does not accept the delegated ticket. Check that the backend is set up for Integrated Windows Authentication with Kerberos (Negotiate), that the application's SPN matches the backend's, and that the clocks of the connector host and the backend server are synchronised."
        }
        "website-cannot-display" => {
            "Users got 'The website cannot display the page' from an application using Integrated Windows Authentication: most often the SPN configured for the application is wrong; correct it. For Outlook Web Access it can also mean the user signed in with a Microsoft account or as a guest (they must use a corporate account of the application's domain) or lacks permissions on the backend."
        }
        "user-not-assigned" => {
            "A user was refused because they are not assigned to the application, or signed in with a Microsoft account or as a guest, which cannot use IWA applications. Assign the user or their group to the application (Users and Groups), and have them sign in with their corporate account."
        }
        "user-not-licensed" => {
            "A user was refused because they have no licence the application proxy requires (Microsoft Entra ID P1 or P2). Assign them, or their group, such a licence."
        }
        "connector-timed-out" => {
            "The connector timed out serving a user: per the guides, the user is not given the permissions the backend application requires on-premises. Grant the user access on the backend; if every user is affected, check that the connector host can reach the backend (see its backend checks)."
        }
        "custom-domain-unresolved" => {
            "Users could not reach an application published on a custom domain: the domain is not set up. Check the certificate uploaded for the domain and create or correct its DNS record."
        }
        "user-not-authorized-onprem" => {
            "The user could not be authorized on-premises: the connector cannot read the user's authorization information in Active Directory. Add the connector hosts' computer accounts to the built-in Windows Authorization Access Group, and check the user exists in the on-premises directory with access to the application."
        }
        _ => remediation(Code::KnownErrorLogged),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use connwatch_shared::logsig::SIGNATURES;
    use std::collections::HashSet;

    #[test]
    fn every_signature_has_its_own_remedy() {
        let general = remediation(Code::KnownErrorLogged);
        let mut seen = HashSet::new();
        for s in SIGNATURES {
            let r = log_remediation(s.id);
            assert_ne!(r, general, "{} has no remedy of its own", s.id);
            assert!(seen.insert(r), "{} shares its remedy", s.id);
        }
        assert_eq!(log_remediation("unheard-of"), general);
    }
}
