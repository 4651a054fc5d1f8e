//! What to do about each finding, in our own words, from the facts of the connector
//! troubleshooting guides.

use connwatch_shared::finding::Code;

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
        Code::TlsTooOld => {
            "The host could not negotiate TLS 1.2 or later with this endpoint, which the connector requires. Enable TLS 1.2 in the host's SChannel settings (and for .NET), then restart the connector service."
        }
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
