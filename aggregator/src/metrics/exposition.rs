//! The Prometheus text exposition (format 0.0.4): the aggregator's counters plus the
//! fleet's gauges from one rules evaluation. Names follow Prometheus conventions:
//! `connwatch_` prefix, base units (seconds, bytes), `_total` on counters.

use super::Metrics;
use crate::fleet::Fleet;
use crate::rollup::Rollup;
use connwatch_shared::finding::{Code, Severity};
use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::Ordering::Relaxed;

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

struct Out(String);

impl Out {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
        self.0.push_str(name);
        if !labels.is_empty() {
            self.0.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.0.push(',');
                }
                let _ = write!(self.0, "{k}=\"{}\"", escape(v));
            }
            self.0.push('}');
        }
        let _ = writeln!(self.0, " {value}");
    }
}

/// Renders every metric.
pub fn render(m: &Metrics, eval: &Rollup, fleet: &Fleet, store_bytes: u64) -> String {
    let mut o = Out(String::with_capacity(16 * 1024));

    o.family(
        "connwatch_connector_up",
        "gauge",
        "1 if the connector reported within rules.inactive_after, 0 if it is inactive.",
    );
    for c in eval.connectors() {
        o.sample(
            "connwatch_connector_up",
            &[("connector", &c.id), ("group", &c.group)],
            u8::from(c.active),
        );
    }

    o.family(
        "connwatch_trust_cert_expiry_timestamp_seconds",
        "gauge",
        "When the connector's trust certificate expires, in seconds since the Unix epoch.",
    );
    for c in eval.connectors() {
        let Some(report) = fleet.connectors.get(&c.id).and_then(|e| e.latest.as_ref()) else {
            continue;
        };
        for cert in report.trust_certs.iter().filter(|t| t.found) {
            o.sample(
                "connwatch_trust_cert_expiry_timestamp_seconds",
                &[
                    ("connector", &c.id),
                    ("group", &c.group),
                    ("thumbprint", &cert.thumbprint),
                ],
                cert.not_after_ms.div_euclid(1000),
            );
        }
    }

    o.family(
        "connwatch_findings",
        "gauge",
        "Current findings by code and severity.",
    );
    let mut counts: BTreeMap<(Code, Severity), u64> = BTreeMap::new();
    for (f, _) in eval.findings() {
        *counts.entry((f.code, f.severity)).or_default() += 1;
    }
    for code in Code::ALL {
        for sev in [Severity::Info, Severity::Warning, Severity::Critical] {
            o.sample(
                "connwatch_findings",
                &[("code", code.as_str()), ("severity", sev.as_str())],
                counts.get(&(code, sev)).copied().unwrap_or(0),
            );
        }
    }

    for (name, help, pick) in [
        (
            "connwatch_group_connectors",
            "Connectors in the group that are not retired.",
            0,
        ),
        (
            "connwatch_group_active_connectors",
            "Connectors in the group that reported within rules.inactive_after.",
            1,
        ),
        (
            "connwatch_group_healthy_connectors",
            "Connectors in the group that are active and have no critical finding.",
            2,
        ),
    ] {
        o.family(name, "gauge", help);
        for g in eval.groups() {
            let v = [g.total, g.active, g.healthy][pick];
            o.sample(name, &[("group", &g.name)], v);
        }
    }

    o.family(
        "connwatch_ingest_reports_total",
        "counter",
        "Reports received from collectors, by outcome.",
    );
    for (outcome, v) in [
        ("stored", &m.reports_stored),
        ("duplicate", &m.reports_duplicate),
        ("rejected", &m.reports_rejected),
    ] {
        o.sample(
            "connwatch_ingest_reports_total",
            &[("outcome", outcome)],
            v.load(Relaxed),
        );
    }
    o.family(
        "connwatch_ingest_commit_failures_total",
        "counter",
        "Group commits that failed; their reports were not acknowledged.",
    );
    o.sample(
        "connwatch_ingest_commit_failures_total",
        &[],
        m.commit_failures.load(Relaxed),
    );
    o.family(
        "connwatch_ingest_commit_duration_seconds",
        "histogram",
        "Time to apply and flush one group commit of reports.",
    );
    let (buckets, count, sum) = m.commit_seconds.snapshot();
    for (bound, c) in buckets {
        o.sample(
            "connwatch_ingest_commit_duration_seconds_bucket",
            &[("le", &bound.to_string())],
            c,
        );
    }
    o.sample(
        "connwatch_ingest_commit_duration_seconds_bucket",
        &[("le", "+Inf")],
        count,
    );
    o.sample("connwatch_ingest_commit_duration_seconds_sum", &[], sum);
    o.sample("connwatch_ingest_commit_duration_seconds_count", &[], count);

    o.family(
        "connwatch_store_size_bytes",
        "gauge",
        "Bytes the sled store uses on disk.",
    );
    o.sample("connwatch_store_size_bytes", &[], store_bytes);

    o.family(
        "connwatch_alerts",
        "gauge",
        "Alerts by state as of the last evaluation.",
    );
    let a = m.alerts();
    for (state, v) in [
        ("pending", a.pending),
        ("firing", a.firing),
        ("silenced", a.silenced),
    ] {
        o.sample("connwatch_alerts", &[("state", state)], v);
    }
    o.family(
        "connwatch_alert_evaluations_total",
        "counter",
        "Alert evaluations run.",
    );
    o.sample(
        "connwatch_alert_evaluations_total",
        &[],
        m.alert_evaluations.load(Relaxed),
    );
    o.family(
        "connwatch_alert_evaluation_failures_total",
        "counter",
        "Alert evaluations whose state could not be stored; nothing was sent for them.",
    );
    o.sample(
        "connwatch_alert_evaluation_failures_total",
        &[],
        m.alert_evaluation_failures.load(Relaxed),
    );

    let sinks = m.sinks();
    for (name, kind, help) in [
        (
            "connwatch_alert_sink_deliveries_total",
            "counter",
            "Notifications (Alertmanager: posts) a sink delivered.",
        ),
        (
            "connwatch_alert_sink_failures_total",
            "counter",
            "Failed delivery attempts of a sink; each retry counts.",
        ),
        (
            "connwatch_alert_sink_dropped_total",
            "counter",
            "Notifications a sink dropped because its queue was full.",
        ),
        (
            "connwatch_alert_sink_queue_length",
            "gauge",
            "Notifications waiting in a sink's queue.",
        ),
    ] {
        o.family(name, kind, help);
        for s in &sinks {
            let v = match name {
                "connwatch_alert_sink_deliveries_total" => s.delivered.load(Relaxed),
                "connwatch_alert_sink_failures_total" => s.failures.load(Relaxed),
                "connwatch_alert_sink_dropped_total" => s.dropped.load(Relaxed),
                _ => s.queued.load(Relaxed),
            };
            o.sample(name, &[("sink", s.kind), ("target", &s.target)], v);
        }
    }
    o.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RulesConfig;
    use crate::store::StoredConnector;
    use connwatch_shared::wire::{Report, TrustCertificate};

    #[test]
    fn renders_fleet_gauges_and_counters() {
        let mut fleet = Fleet::default();
        fleet.connectors.insert(
            "c\"1".into(),
            StoredConnector {
                group: "eu".into(),
                last_seen_ms: 1_000,
                latest: Some(Report {
                    trust_certs: vec![TrustCertificate {
                        found: true,
                        thumbprint_matched: true,
                        thumbprint: "AB".into(),
                        not_after_ms: 5_000_000,
                        ..Default::default()
                    }],
                    ..Default::default()
                }),
                ..Default::default()
            },
        );
        let mut eval = Rollup::default();
        eval.refresh(&fleet, 2_000, &std::sync::Arc::new(RulesConfig::default()));
        let m = Metrics::default();
        m.commit_seconds
            .observe(std::time::Duration::from_millis(3));
        let text = render(&m, &eval, &fleet, 42);
        for line in [
            "connwatch_connector_up{connector=\"c\\\"1\",group=\"eu\"} 1",
            "connwatch_trust_cert_expiry_timestamp_seconds{connector=\"c\\\"1\",group=\"eu\",thumbprint=\"AB\"} 5000",
            "connwatch_findings{code=\"trust-cert-expiring\",severity=\"critical\"} 1",
            "connwatch_group_healthy_connectors{group=\"eu\"} 0",
            "connwatch_ingest_commit_duration_seconds_bucket{le=\"0.005\"} 1",
            "connwatch_ingest_commit_duration_seconds_bucket{le=\"0.0025\"} 0",
            "connwatch_store_size_bytes 42",
        ] {
            assert!(text.contains(line), "missing {line} in\n{text}");
        }
    }
}
