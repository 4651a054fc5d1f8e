//! The `Alerts` gRPC service for operators: lists alerts, silences and sink counters,
//! and adds and removes silences. Served behind the operator role check.

use super::Hub;
use super::silence::{Matcher, Silence, silenced_by};
use super::state::Alert;
use crate::auth;
use connwatch_shared::finding::Severity;
use connwatch_shared::time::now_ms;
use connwatch_shared::wire::alerts_server::Alerts;
use connwatch_shared::wire::{self as w};
use rand::Rng;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use tonic::{Request, Response, Status};

/// The longest silence: long enough for any planned work, short enough that a
/// forgotten silence does not hide an expiring certificate for good.
pub const MAX_SILENCE_MS: i64 = 90 * 86_400_000;

/// The service over the engine's hub.
#[derive(Clone)]
pub struct AlertsService {
    hub: Arc<Hub>,
}

impl AlertsService {
    /// A service over `hub`.
    pub fn new(hub: Arc<Hub>) -> AlertsService {
        AlertsService { hub }
    }
}

fn severity(s: Severity) -> i32 {
    match s {
        Severity::Info => w::Severity::Info as i32,
        Severity::Warning => w::Severity::Warning as i32,
        Severity::Critical => w::Severity::Critical as i32,
    }
}

fn alert(a: &Alert, silenced_by: Option<&str>) -> w::Alert {
    w::Alert {
        fingerprint: a.fingerprint.clone(),
        code: a.code.as_str().into(),
        severity: severity(a.severity),
        scope: a.scope.as_str().into(),
        subject: a.subject.clone(),
        group: a.group.clone(),
        status: a.status.as_str().into(),
        summary: a.summary.clone(),
        evidence: a
            .evidence
            .iter()
            .map(|(k, v)| w::Evidence {
                key: k.clone(),
                value: v.clone(),
            })
            .collect(),
        remediation: a.remediation.clone(),
        active_since_ms: a.active_since_ms,
        firing_since_ms: a.firing_since_ms,
        resolved_at_ms: a.resolved_at_ms,
        last_notified_ms: a.last_notified_ms,
        silenced_by: silenced_by.unwrap_or_default().to_string(),
    }
}

fn silence(s: &Silence, now: i64) -> w::Silence {
    w::Silence {
        id: s.id.clone(),
        matchers: s
            .matchers
            .iter()
            .map(|m| w::Matcher {
                name: m.name.clone(),
                value: m.value.clone(),
            })
            .collect(),
        starts_ms: s.starts_ms,
        ends_ms: s.ends_ms,
        comment: s.comment.clone(),
        created_by: s.created_by.clone(),
        active: s.is_active(now),
    }
}

fn store_error(e: crate::store::StoreError) -> Status {
    Status::internal(format!("the aggregator could not store the silence: {e}"))
}

#[tonic::async_trait]
impl Alerts for AlertsService {
    async fn list_alerts(
        &self,
        _request: Request<w::ListAlertsRequest>,
    ) -> Result<Response<w::ListAlertsResponse>, Status> {
        let now = now_ms();
        let silences = self.hub.silences();
        let mut alerts: Vec<w::Alert> = self
            .hub
            .alerts()
            .values()
            .map(|a| alert(a, silenced_by(&silences, &a.labels(), now)))
            .collect();
        // Firing first, then pending, then resolved; worst first within each.
        alerts.sort_by(|a, b| {
            let rank = |s: &str| match s {
                "firing" => 0,
                "pending" => 1,
                _ => 2,
            };
            rank(&a.status)
                .cmp(&rank(&b.status))
                .then(b.severity.cmp(&a.severity))
                .then(a.code.cmp(&b.code))
                .then(a.subject.cmp(&b.subject))
        });
        let sinks = self
            .hub
            .sinks()
            .iter()
            .map(|s| w::SinkStatus {
                kind: s.kind.into(),
                target: s.target.clone(),
                delivered: s.delivered.load(Relaxed),
                failures: s.failures.load(Relaxed),
                dropped: s.dropped.load(Relaxed),
                queued: s.queued.load(Relaxed),
                last_error: s.last_error(),
            })
            .collect();
        Ok(Response::new(w::ListAlertsResponse {
            alerts,
            silences: silences
                .iter()
                .filter(|s| s.is_active(now))
                .map(|s| silence(s, now))
                .collect(),
            sinks,
            generated_at_ms: now,
        }))
    }

    async fn add_silence(
        &self,
        request: Request<w::AddSilenceRequest>,
    ) -> Result<Response<w::Silence>, Status> {
        let who = auth::caller(&request)?;
        let req = request.into_inner();
        if req.matchers.is_empty() {
            return Err(Status::invalid_argument(
                "a silence needs at least one matcher, e.g. --match code=trust-cert-expiring",
            ));
        }
        let matchers = req
            .matchers
            .iter()
            .map(|m| Matcher::parse(&format!("{}={}", m.name, m.value)))
            .collect::<Result<Vec<_>, _>>()
            .map_err(Status::invalid_argument)?;
        if req.duration_ms <= 0 || req.duration_ms > MAX_SILENCE_MS {
            return Err(Status::invalid_argument(
                "a silence lasts more than zero and at most 90 days; pass e.g. --for 7d",
            ));
        }
        let now = now_ms();
        let s = Silence {
            id: format!("{:016x}", rand::rng().random::<u64>()),
            matchers,
            starts_ms: now,
            ends_ms: now + req.duration_ms,
            comment: req.comment,
            created_by: who.name,
        };
        self.hub.add_silence(s.clone()).await.map_err(store_error)?;
        tracing::info!(id = %s.id, by = %s.created_by, until = %connwatch_shared::time::rfc3339(s.ends_ms), "silence added");
        Ok(Response::new(silence(&s, now)))
    }

    async fn list_silences(
        &self,
        _request: Request<w::ListSilencesRequest>,
    ) -> Result<Response<w::ListSilencesResponse>, Status> {
        let now = now_ms();
        let mut silences: Vec<w::Silence> = self
            .hub
            .silences()
            .iter()
            .map(|s| silence(s, now))
            .collect();
        silences.sort_by(|a, b| b.active.cmp(&a.active).then(a.ends_ms.cmp(&b.ends_ms)));
        Ok(Response::new(w::ListSilencesResponse { silences }))
    }

    async fn remove_silence(
        &self,
        request: Request<w::RemoveSilenceRequest>,
    ) -> Result<Response<w::Silence>, Status> {
        let id = request.into_inner().id;
        match self.hub.remove_silence(&id).await.map_err(store_error)? {
            Some(s) => {
                tracing::info!(id = %s.id, "silence removed");
                Ok(Response::new(silence(&s, now_ms())))
            }
            None => Err(Status::not_found(format!(
                "no silence `{id}`: run `connwatch-aggregator silence list` to see them"
            ))),
        }
    }
}
