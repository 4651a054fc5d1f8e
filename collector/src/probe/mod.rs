//! Probes: each measures one kind of fact on the host and returns an [`Observation`].
//! A probe that finds something broken reports it as data; a probe that cannot run
//! reports why, as a [`ProbeError`]. Adding a probe is one file here plus one line in
//! [`build`].

pub mod cert;
pub mod endpoint;
pub mod host;
pub mod service;

use crate::config::Config;
use connwatch_shared::wire::{
    EndpointCheck, HostInfo, ProbeError, Report, ServiceStatus, TrustCertificate,
};
use futures::future::BoxFuture;
use std::sync::Arc;
use std::time::Duration;
use tracing::Instrument;

/// What one probe measured.
#[derive(Debug, Clone)]
pub enum Observation {
    /// A service's state.
    Service(ServiceStatus),
    /// A trust certificate's facts.
    TrustCert(TrustCertificate),
    /// An endpoint check's result.
    Endpoint(EndpointCheck),
    /// Host facts.
    Host(HostInfo),
    /// The probe could not run.
    Failed(ProbeError),
}

impl Observation {
    /// Puts the observation in its place in the report.
    pub fn apply(self, report: &mut Report) {
        match self {
            Observation::Service(s) => report.services.push(s),
            Observation::TrustCert(c) => report.trust_certs.push(c),
            Observation::Endpoint(e) => report.endpoints.push(e),
            Observation::Host(h) => report.host = Some(h),
            Observation::Failed(e) => report.probe_errors.push(e),
        }
    }
}

/// One check, run once per cycle.
pub trait Probe: Send + Sync {
    /// A label for logs and probe errors, such as `endpoint:login`.
    fn name(&self) -> String;
    /// How long the probe may take before the cycle gives up on it. Probes with their
    /// own timeouts (connects) report those as data well before this.
    fn deadline(&self) -> Duration;
    /// Measures.
    fn run(&self) -> BoxFuture<'_, Observation>;
}

/// The probes a config asks for.
pub fn build(config: &Config) -> Vec<Arc<dyn Probe>> {
    let mut probes: Vec<Arc<dyn Probe>> = Vec::new();
    let host = Arc::new(host::HostProbe::new(config.host));
    for s in &config.services {
        probes.push(Arc::new(service::ServiceProbe::new(
            s.clone(),
            host.clone(),
        )));
    }
    for e in &config.endpoints {
        probes.push(Arc::new(endpoint::EndpointProbe::new(e.clone())));
    }
    for c in &config.trust_certs {
        probes.push(Arc::new(cert::TrustCertProbe::new(c.clone())));
    }
    if config.host {
        probes.push(host);
    }
    probes
}

/// Margin given to a probe beyond its own deadline before the cycle abandons it.
const DEADLINE_MARGIN: Duration = Duration::from_millis(20);

/// Runs every probe concurrently, each under its deadline, and collects the
/// observations in probe order. A probe that overruns becomes a [`ProbeError`].
pub async fn run_all(probes: &[Arc<dyn Probe>]) -> Vec<Observation> {
    let runs = probes.iter().map(|p| {
        let name = p.name();
        let deadline = p.deadline() + DEADLINE_MARGIN;
        let span = tracing::debug_span!("probe", probe = %name);
        async move {
            match tokio::time::timeout(deadline, p.run()).await {
                Ok(obs) => obs,
                Err(_) => Observation::Failed(ProbeError {
                    reason: format!("did not finish within {deadline:?}; it was abandoned"),
                    probe: name,
                }),
            }
        }
        .instrument(span)
    });
    futures::future::join_all(runs).await
}

/// Runs a blocking measurement on the blocking pool; a panic in it becomes a probe error.
pub(crate) async fn blocking<F>(name: String, f: F) -> Observation
where
    F: FnOnce() -> Observation + Send + 'static,
{
    match tokio::task::spawn_blocking(f).await {
        Ok(obs) => obs,
        Err(e) => Observation::Failed(ProbeError {
            probe: name,
            reason: format!("the probe crashed: {e}"),
        }),
    }
}
