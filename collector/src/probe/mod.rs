//! Probes: each measures one kind of fact on the host and returns an [`Observation`].
//! A probe that finds something broken reports it as data; a probe that cannot run
//! reports why, as a [`ProbeError`]. Adding a probe is one file here plus one line in
//! [`build`].

pub mod backend;
pub mod cert;
pub mod endpoint;
pub mod host;
pub mod log;
pub mod proxy;
pub mod route;
pub mod service;
pub mod tls;
pub mod tunnel;
pub mod version;

use crate::config::Config;
use crate::platform::Platform;
use connwatch_shared::wire::{
    BackendCheck, EndpointCheck, HostInfo, LogSignature, ProbeError, ProxySettings, Report,
    ServiceStatus, TrustCertificate, VersionInfo,
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
    /// A backend application's answer.
    Backend(BackendCheck),
    /// The connector's, updater's and host's proxy settings.
    Proxy(ProxySettings),
    /// Known error signatures seen in the connector's log since the previous cycle.
    Log(Vec<LogSignature>),
    /// The connector's and updater's versions.
    Version(VersionInfo),
    /// The probe could not run.
    Failed(ProbeError),
    /// Several facts from one probe, such as a result and the parts it could not read.
    Many(Vec<Observation>),
}

impl Observation {
    /// Puts the observation in its place in the report.
    pub fn apply(self, report: &mut Report) {
        match self {
            Observation::Service(s) => report.services.push(s),
            Observation::TrustCert(c) => report.trust_certs.push(c),
            Observation::Endpoint(e) => report.endpoints.push(e),
            Observation::Host(h) => report.host = Some(h),
            Observation::Backend(b) => report.backends.push(b),
            Observation::Proxy(p) => report.proxy = Some(p),
            Observation::Log(l) => report.log_signatures.extend(l),
            Observation::Version(v) => report.version = Some(v),
            Observation::Failed(e) => report.probe_errors.push(e),
            Observation::Many(all) => {
                for o in all {
                    o.apply(report);
                }
            }
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
    /// Called (on a blocking thread) once the report of the cycle just run is durably
    /// in the spool. A probe that reads only what is new since its last cycle saves its
    /// position here, not when it reads: a restart then neither reports the same lines
    /// again nor loses lines whose report never reached the spool.
    fn spooled(&self) {}
}

/// The probes a config asks for, on this host's platform.
pub fn build(config: &Config, platform: &Platform) -> Vec<Arc<dyn Probe>> {
    let mut probes: Vec<Arc<dyn Probe>> = Vec::new();
    let host = Arc::new(host::HostProbe::new(config.disk.clone()));
    for s in &config.services {
        probes.push(Arc::new(service::ServiceProbe::new(
            s.clone(),
            host.clone(),
            platform.services.clone(),
        )));
    }
    if config.version.connector.is_some() || config.version.updater.is_some() {
        probes.push(Arc::new(version::VersionProbe::new(
            config.version.clone(),
            platform.installed.clone(),
        )));
    }
    // One resolver for the cycle's proxy reading, shared by the endpoint checks that
    // follow the connector and by the proxy probe.
    let resolver = Arc::new(route::Resolver::new(
        config
            .proxy
            .as_ref()
            .and_then(|p| p.connector_config.clone()),
        platform.proxy.clone(),
    ));
    for e in &config.endpoints {
        probes.push(Arc::new(endpoint::EndpointProbe::new(
            e.clone(),
            resolver.clone(),
        )));
    }
    for c in &config.trust_certs {
        probes.push(Arc::new(cert::TrustCertProbe::new(
            c.clone(),
            platform.cert_store.clone(),
        )));
    }
    for b in &config.backends {
        probes.push(Arc::new(backend::BackendProbe::new(b.clone())));
    }
    if let Some(p) = &config.proxy {
        probes.push(Arc::new(proxy::ProxyProbe::new(
            p.clone(),
            resolver.clone(),
        )));
    }
    if let Some(l) = &config.log {
        probes.push(Arc::new(log::LogProbe::new(
            l.clone(),
            platform.events.clone(),
            Some(config.spool.dir.join(log::POSITION_FILE)),
        )));
    }
    if config.host {
        probes.push(host);
    }
    probes
}

/// A probe error for `probe` saying `reason`.
pub(crate) fn failed(probe: impl Into<String>, reason: impl Into<String>) -> Observation {
    Observation::Failed(ProbeError {
        probe: probe.into(),
        reason: reason.into(),
    })
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{EndpointConfig, EndpointProxy, TlsCheckConfig};
    use connwatch_shared::wire::ConnectOutcome;
    use std::time::Instant;

    /// A probe that never finishes and ignores its own deadline.
    struct Stuck;

    impl Probe for Stuck {
        fn name(&self) -> String {
            "stuck".into()
        }
        fn deadline(&self) -> Duration {
            Duration::from_millis(300)
        }
        fn run(&self) -> BoxFuture<'_, Observation> {
            Box::pin(futures::future::pending())
        }
    }

    #[tokio::test]
    async fn twenty_endpoints_with_one_hung_take_the_slowest_timeout_not_the_sum() {
        let open = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        // Accepts connections (the kernel does) but never speaks TLS.
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let timeout = Duration::from_secs(1);
        let resolver = endpoint::tests::unused_resolver();
        let endpoint = |i: usize, address: String, tls: bool| {
            Arc::new(endpoint::EndpointProbe::new(
                EndpointConfig {
                    name: format!("e{i}"),
                    address,
                    timeout,
                    required: true,
                    tls: tls.then(|| TlsCheckConfig {
                        server_name: "localhost".into(),
                        expected_issuers: Vec::new(),
                        roots: Vec::new(),
                    }),
                    proxy: EndpointProxy::Direct,
                },
                resolver.clone(),
            )) as Arc<dyn Probe>
        };
        let mut probes: Vec<Arc<dyn Probe>> = (0..19)
            .map(|i| endpoint(i, open.local_addr().expect("addr").to_string(), false))
            .collect();
        probes.push(endpoint(
            19,
            silent.local_addr().expect("addr").to_string(),
            true,
        ));
        probes.push(Arc::new(Stuck));
        let started = Instant::now();
        let observations = run_all(&probes).await;
        let took = started.elapsed();
        println!("20 endpoint checks, one hung for its {timeout:?} timeout: cycle took {took:?}");
        assert!(
            took >= timeout,
            "the hung check ran to its timeout: {took:?}"
        );
        assert!(
            took < timeout + Duration::from_millis(500),
            "the cycle takes the slowest timeout, not the sum: {took:?}"
        );
        let mut report = Report::default();
        for o in observations {
            o.apply(&mut report);
        }
        assert_eq!(report.endpoints.len(), 20);
        let timed_out: Vec<&str> = report
            .endpoints
            .iter()
            .filter(|e| e.outcome == ConnectOutcome::TimedOut as i32)
            .map(|e| e.name.as_str())
            .collect();
        assert_eq!(timed_out, ["e19"]);
        assert_eq!(report.probe_errors.len(), 1, "the stuck probe is abandoned");
        assert!(report.probe_errors[0].reason.contains("abandoned"));
    }
}
