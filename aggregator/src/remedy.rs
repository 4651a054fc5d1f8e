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
        Code::ProbeFailed => {
            "A check could not run on the host. Fix the cause given in the evidence, usually a permission or a path in the collector's config, so the facts it measures are known again."
        }
        Code::GroupDown => {
            "No connector in this group is active and healthy, so the applications assigned to it cannot be reached. Restore at least one member (see its findings) or assign the applications to another group."
        }
        Code::GroupNoRedundancy => {
            "Fewer healthy connectors serve this group than its configured minimum, so one more failure takes its applications down. Repair the unhealthy members or install another connector in the group."
        }
    }
}
