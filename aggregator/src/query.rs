//! The `Query` gRPC service for operators: maps the live fleet and its kept evaluation
//! (the rollup) onto the wire. Only `History` reads the store.

use crate::config::RulesConfig;
use crate::fleet::SharedFleet;
use crate::metrics::Metrics;
use crate::rollup::Rollup;
use crate::rules::{self, ConnectorEval, GroupEval};
use crate::store::Store;
use crate::store::StoredConnector;
use connwatch_shared::finding::{Code, Finding, Health, Severity};
use connwatch_shared::time::now_ms;
use connwatch_shared::wire::query_server::Query;
use connwatch_shared::wire::{self as w, ConnectOutcome, ServiceState};
use std::sync::Arc;
use tonic::{Request, Response, Status};

/// The longest a query may read the store for.
const QUERY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// The most history entries one call returns.
const MAX_HISTORY: usize = 10_000;

/// The query service.
#[derive(Clone)]
pub struct QueryService {
    fleet: SharedFleet,
    store: Arc<Store>,
    rules: Arc<RulesConfig>,
    metrics: Metrics,
}

impl QueryService {
    /// A service over the live fleet and the store.
    pub fn new(
        fleet: SharedFleet,
        store: Arc<Store>,
        rules: Arc<RulesConfig>,
        metrics: Metrics,
    ) -> Self {
        QueryService {
            fleet,
            store,
            rules,
            metrics,
        }
    }
}

fn severity(s: Severity) -> i32 {
    match s {
        Severity::Info => w::Severity::Info as i32,
        Severity::Warning => w::Severity::Warning as i32,
        Severity::Critical => w::Severity::Critical as i32,
    }
}

fn health(h: Health) -> i32 {
    match h {
        Health::Healthy => w::Health::Healthy as i32,
        Health::Warning => w::Health::Warning as i32,
        Health::Critical => w::Health::Critical as i32,
    }
}

/// A finding on the wire.
pub fn finding(f: &Finding) -> w::Finding {
    w::Finding {
        code: f.code.as_str().to_string(),
        severity: severity(f.severity),
        scope: f.scope.as_str().to_string(),
        subject: f.subject.clone(),
        summary: f.summary.clone(),
        evidence: f
            .evidence
            .iter()
            .map(|(k, v)| w::Evidence {
                key: k.clone(),
                value: v.clone(),
            })
            .collect(),
        remediation: f.remediation.to_string(),
        observed_at_ms: f.observed_at_ms,
    }
}

fn group_summary(g: &GroupEval, rules: &RulesConfig) -> w::GroupSummary {
    w::GroupSummary {
        name: g.name.clone(),
        active: g.active,
        total: g.total,
        health: health(g.health),
        worst_finding: g.worst.map(|c| c.as_str().to_string()).unwrap_or_default(),
        healthy: g.healthy,
        declared: rules.is_declared(&g.name),
    }
}

fn severity_from_wire(v: i32) -> Option<Severity> {
    match w::Severity::try_from(v) {
        Ok(w::Severity::Info) => Some(Severity::Info),
        Ok(w::Severity::Warning) => Some(Severity::Warning),
        Ok(w::Severity::Critical) => Some(Severity::Critical),
        _ => None,
    }
}

fn connector_summary(c: &ConnectorEval, fleet: &crate::fleet::Fleet) -> w::ConnectorSummary {
    summary_of(c, fleet.connectors.get(&c.id))
}

/// A connector's listing row.
pub(crate) fn summary_of(
    c: &ConnectorEval,
    entry: Option<&StoredConnector>,
) -> w::ConnectorSummary {
    w::ConnectorSummary {
        id: c.id.clone(),
        group: c.group.clone(),
        health: health(c.health),
        active: c.active,
        first_seen_ms: entry.map_or(0, |e| e.first_seen_ms),
        last_seen_ms: entry.map_or(0, |e| e.last_seen_ms),
        connector_version: entry
            .and_then(|e| e.latest.as_ref())
            .and_then(|r| r.version.as_ref())
            .map(|v| v.connector_version.clone())
            .unwrap_or_default(),
        worst_finding: c
            .findings
            .first()
            .map(|f| f.code.as_str().to_string())
            .unwrap_or_default(),
        finding_count: u32::try_from(c.findings.len()).unwrap_or(u32::MAX),
    }
}

fn group_detail(
    name: &str,
    fleet: &crate::fleet::Fleet,
    r: &Rollup,
    rules: &RulesConfig,
) -> Option<w::GroupDetail> {
    let group = r.group(name)?;
    let members: Vec<&ConnectorEval> = r.members(name).collect();
    let pairs: Vec<(&str, &crate::store::StoredConnector)> = members
        .iter()
        .filter(|m| m.active)
        .filter_map(|m| fleet.connectors.get(&m.id).map(|e| (m.id.as_str(), e)))
        .collect();
    let endpoints: Vec<String> = rules::reachability(&pairs)
        .into_keys()
        .map(str::to_string)
        .collect();
    let reachability = pairs
        .iter()
        .map(|(id, entry)| w::ReachabilityRow {
            connector: id.to_string(),
            outcomes: endpoints
                .iter()
                .map(|name| {
                    entry
                        .latest
                        .as_ref()
                        .and_then(|r| r.endpoints.iter().find(|e| e.required && &e.name == name))
                        .map(|e| connwatch_shared::render::endpoint_result(e).0)
                        .unwrap_or_default()
                })
                .collect(),
        })
        .collect();
    Some(w::GroupDetail {
        summary: Some(group_summary(group, rules)),
        members: members
            .iter()
            .map(|c| connector_summary(c, fleet))
            .collect(),
        findings: group.findings.iter().map(finding).collect(),
        endpoints,
        reachability,
    })
}

#[tonic::async_trait]
impl Query for QueryService {
    async fn status(
        &self,
        request: Request<w::StatusRequest>,
    ) -> Result<Response<w::StatusResponse>, Status> {
        let limit = request.into_inner().max_findings as usize;
        let now = now_ms();
        let (groups, findings, counts) = self.fleet.status(now, &self.rules, limit);
        let groups: Vec<w::GroupSummary> = groups
            .iter()
            .map(|g| group_summary(g, &self.rules))
            .collect();
        let count = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        Ok(Response::new(w::StatusResponse {
            groups,
            findings: findings.iter().map(finding).collect(),
            generated_at_ms: now,
            ingest_problem: self.metrics.ingest_problem().unwrap_or_default(),
            findings_total: count(counts.total),
            critical_total: count(counts.critical),
            warning_total: count(counts.warning),
        }))
    }

    async fn list_connectors(
        &self,
        request: Request<w::ListConnectorsRequest>,
    ) -> Result<Response<w::ListConnectorsResponse>, Status> {
        let req = request.into_inner();
        let group = req.group;
        let code = if req.finding.is_empty() {
            None
        } else {
            Some(Code::parse(&req.finding).ok_or_else(|| {
                Status::invalid_argument(format!(
                    "unknown finding code `{}`; known codes: {}",
                    req.finding,
                    Code::ALL.map(Code::as_str).join(", ")
                ))
            })?)
        };
        let keep = |(c, _): &(&ConnectorEval, &bytes::Bytes)| {
            (!req.unhealthy || !c.active || c.health != Health::Healthy)
                && code.is_none_or(|code| c.findings.iter().any(|f| f.code == code))
        };
        // Rows are kept encoded by the rollup; a listing copies each into one buffer.
        let listing = |rows: &mut dyn Iterator<Item = (&ConnectorEval, &bytes::Bytes)>| {
            let mut out = w::ListConnectorsResponse::default();
            for (_, row) in rows.filter(keep) {
                out.push_encoded(row);
            }
            out
        };
        let listed = self.fleet.evaluated(now_ms(), &self.rules, |_, r| {
            if group.is_empty() {
                return Ok(listing(&mut r.rows()));
            }
            if r.group(&group).is_none() {
                return Err(Status::not_found(format!(
                    "no group `{group}`: run `connwatch-aggregator status` to list the groups"
                )));
            }
            Ok(listing(&mut r.member_rows(&group)))
        })?;
        Ok(Response::new(listed))
    }

    async fn get_connector(
        &self,
        request: Request<w::GetConnectorRequest>,
    ) -> Result<Response<w::ConnectorDetail>, Status> {
        let id = request.into_inner().id;
        let now = now_ms();
        let detail = self.fleet.evaluated(now, &self.rules, |fleet, r| {
            let entry = fleet.connectors.get(&id)?;
            // A retired connector has left the rollup; it is still worth a look.
            let retired;
            let eval = match r.connector(&id) {
                Some(eval) => eval,
                None => {
                    let ctx = r.context(&entry.group);
                    retired = rules::evaluate_connector(&id, entry, now, &self.rules, &ctx);
                    &retired
                }
            };
            Some(w::ConnectorDetail {
                summary: Some(connector_summary(eval, fleet)),
                latest: entry.latest.clone(),
                findings: eval.findings.iter().map(finding).collect(),
                clock_offset_ms: entry.clock_offset_ms,
            })
        });
        let Some(detail) = detail else {
            return Err(Status::not_found(format!(
                "no connector `{id}`: run `connwatch-aggregator connectors` to list them"
            )));
        };
        Ok(Response::new(detail))
    }

    async fn history(
        &self,
        request: Request<w::HistoryRequest>,
    ) -> Result<Response<w::HistoryResponse>, Status> {
        let req = request.into_inner();
        if !self.fleet.read().connectors.contains_key(&req.id) {
            return Err(Status::not_found(format!(
                "no connector `{}`: run `connwatch-aggregator connectors` to list them",
                req.id
            )));
        }
        let limit = match req.limit {
            0 => MAX_HISTORY,
            n => (n as usize).min(MAX_HISTORY),
        };
        let store = self.store.clone();
        let id = req.id.clone();
        let lookup = tokio::task::spawn_blocking(move || store.history(&id, req.since_ms, limit));
        let items = tokio::time::timeout(QUERY_TIMEOUT, lookup)
            .await
            .map_err(|_| {
                Status::deadline_exceeded(format!(
                    "reading the history took longer than {QUERY_TIMEOUT:?}; ask for less with --since or --limit"
                ))
            })?
            .map_err(|e| Status::internal(format!("history lookup failed: {e}")))?
            .map_err(|e| Status::internal(e.to_string()))?;
        let entries = items
            .into_iter()
            .map(|h| {
                let r = h.stored.report.unwrap_or_default();
                let count = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
                w::HistoryEntry {
                    epoch: h.epoch,
                    seq: h.seq,
                    collected_at_ms: r.collected_at_ms,
                    received_ms: h.stored.received_ms,
                    services_running: count(
                        r.services
                            .iter()
                            .filter(|s| s.state == ServiceState::Running as i32)
                            .count(),
                    ),
                    services_total: count(r.services.len()),
                    endpoints_ok: count(
                        r.endpoints
                            .iter()
                            .filter(|e| e.outcome == ConnectOutcome::Ok as i32)
                            .count(),
                    ),
                    endpoints_total: count(r.endpoints.len()),
                    probe_errors: count(r.probe_errors.len()),
                    log_signatures: r.log_signatures,
                }
            })
            .collect();
        Ok(Response::new(w::HistoryResponse {
            id: req.id,
            entries,
        }))
    }

    async fn get_group(
        &self,
        request: Request<w::GetGroupRequest>,
    ) -> Result<Response<w::GroupDetail>, Status> {
        let name = request.into_inner().name;
        let detail = self.fleet.evaluated(now_ms(), &self.rules, |fleet, r| {
            group_detail(&name, fleet, r, &self.rules)
        });
        detail.map(Response::new).ok_or_else(|| {
            Status::not_found(format!(
                "no group `{name}`: run `connwatch-aggregator groups` to list them"
            ))
        })
    }

    async fn list_certs(
        &self,
        request: Request<w::ListCertsRequest>,
    ) -> Result<Response<w::ListCertsResponse>, Status> {
        let within = request.into_inner().expiring_within_ms;
        let now = now_ms();
        let fleet = self.fleet.read();
        let mut certs = Vec::new();
        for (id, entry) in &fleet.connectors {
            if rules::is_retired(entry, now, &self.rules) {
                continue;
            }
            let Some(report) = &entry.latest else {
                continue;
            };
            for c in &report.trust_certs {
                let left = c.not_after_ms - now;
                if within > 0 && c.found && left > within {
                    continue;
                }
                certs.push(w::CertEntry {
                    connector: id.clone(),
                    group: entry.group.clone(),
                    active: rules::is_active(entry, now, &self.rules),
                    source: c.source.clone(),
                    subject: c.subject.clone(),
                    issuer: c.issuer.clone(),
                    thumbprint: c.thumbprint.clone(),
                    not_after_ms: c.not_after_ms,
                    days_left: left.div_euclid(86_400_000),
                    found: c.found,
                    thumbprint_matched: c.thumbprint_matched,
                    state: rules::cert_state(c, now, self.rules.for_group(&entry.group))
                        .to_string(),
                });
            }
        }
        // Missing certificates first (they are already broken), then soonest expiry.
        certs.sort_by_key(|c| (c.found, c.not_after_ms, c.connector.clone()));
        Ok(Response::new(w::ListCertsResponse { certs }))
    }

    async fn list_findings(
        &self,
        request: Request<w::ListFindingsRequest>,
    ) -> Result<Response<w::ListFindingsResponse>, Status> {
        let req = request.into_inner();
        let code = if req.code.is_empty() {
            None
        } else {
            Some(Code::parse(&req.code).ok_or_else(|| {
                Status::invalid_argument(format!(
                    "unknown finding code `{}`; known codes: {}",
                    req.code,
                    Code::ALL.map(Code::as_str).join(", ")
                ))
            })?)
        };
        let min = severity_from_wire(req.min_severity);
        let (all, _) = self
            .fleet
            .evaluated(now_ms(), &self.rules, |_, r| r.top_findings(0));
        let findings = all
            .iter()
            .filter(|f| code.is_none_or(|c| f.code == c))
            .filter(|f| min.is_none_or(|m| f.severity >= m))
            .map(finding)
            .collect();
        Ok(Response::new(w::ListFindingsResponse { findings }))
    }
}
