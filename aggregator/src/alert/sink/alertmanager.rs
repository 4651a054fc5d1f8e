//! The Alertmanager sink: keeps Alertmanager's view equal to ours through its v2 API
//! (`POST /api/v2/alerts`). Alertmanager expects the full set of firing alerts again
//! and again: an alert not re-posted before its `endsAt` resolves there. So after every
//! evaluation that changed something, and every `resend_every` otherwise, it posts:
//! firing, unsilenced alerts with `endsAt` a few resend periods ahead; resolved and
//! silenced ones with `endsAt` in the past, which ends them; and the old label set of
//! an alert whose severity changed, ended, so no stale copy lingers. Routing, grouping,
//! inhibition and receivers are Alertmanager's job.

use super::post_json;
use crate::alert::state::{Alert, Status};
use crate::config::AlertmanagerConfig;
use crate::metrics::SinkStats;
use connwatch_shared::time::{now_ms, rfc3339};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// An alert as the engine last saw it, and whether a silence holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exported {
    /// The alert.
    pub alert: Alert,
    /// Whether an active silence matches it.
    pub silenced: bool,
}

/// How many resend periods a posted firing alert stays active in Alertmanager
/// without being posted again; so a dead aggregator's alerts end by themselves.
const VALID_FOR_RESENDS: u32 = 4;

/// The body of one post: every alert in the snapshot, plus ended copies of label sets
/// posted before that no longer match (`pushed` holds them, by fingerprint).
pub fn body(
    snapshot: &[Exported],
    pushed: &HashMap<String, BTreeMap<&'static str, String>>,
    now: i64,
    valid_for_ms: i64,
    external_url: &str,
) -> Vec<Value> {
    let mut out = Vec::new();
    for e in snapshot {
        let a = &e.alert;
        let ends = match a.status {
            Status::Pending => continue,
            Status::Firing if !e.silenced => now + valid_for_ms,
            Status::Firing => now,
            Status::Resolved => a.resolved_at_ms,
        };
        let labels = a.labels();
        let starts = if a.firing_since_ms > 0 {
            a.firing_since_ms
        } else {
            a.active_since_ms
        };
        let entry = |labels: &BTreeMap<&'static str, String>, ends: i64| {
            json!({
                "labels": labels,
                "annotations": a.annotations(),
                "startsAt": rfc3339(starts),
                "endsAt": rfc3339(ends),
                "generatorURL": format!("{external_url}/alerts/{}", a.fingerprint),
            })
        };
        if let Some(old) = pushed.get(&a.fingerprint)
            && *old != labels
        {
            out.push(entry(old, now));
        }
        out.push(entry(&labels, ends));
    }
    out
}

/// Runs until `shutdown`, posting what `snapshots` says.
pub async fn run(
    cfg: AlertmanagerConfig,
    external_url: String,
    mut snapshots: watch::Receiver<Arc<Vec<Exported>>>,
    stats: Arc<SinkStats>,
    shutdown: CancellationToken,
) {
    let url: hyper::Uri = match format!(
        "{}/api/v2/alerts",
        cfg.url.to_string().trim_end_matches('/')
    )
    .parse()
    {
        Ok(u) => u,
        Err(e) => {
            // The base URL was validated with the config, so this cannot happen.
            tracing::error!(error = %e, "bad Alertmanager URL");
            return;
        }
    };
    let resend = cfg.resend_every;
    let valid_for_ms = i64::try_from((resend * VALID_FOR_RESENDS).as_millis()).unwrap_or(i64::MAX);
    let mut pushed: HashMap<String, BTreeMap<&'static str, String>> = HashMap::new();
    let mut failures = 0u32;
    let mut wait = Duration::ZERO;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            changed = snapshots.changed() => if changed.is_err() { break },
            _ = tokio::time::sleep(wait) => {}
        }
        let snapshot = snapshots.borrow_and_update().clone();
        let now = now_ms();
        let alerts = body(&snapshot, &pushed, now, valid_for_ms, &external_url);
        if alerts.is_empty() && pushed.is_empty() {
            wait = resend;
            continue;
        }
        let bytes = serde_json::to_vec(&alerts).unwrap_or_default();
        match post_json(&url, bytes, cfg.timeout).await {
            Ok(()) => {
                stats.delivered.fetch_add(1, Relaxed);
                failures = 0;
                wait = resend;
                pushed = snapshot
                    .iter()
                    .filter(|e| e.alert.status == Status::Firing)
                    .map(|e| (e.alert.fingerprint.clone(), e.alert.labels()))
                    .collect();
            }
            Err(e) => {
                stats.fail(&e);
                wait = super::webhook::backoff(failures, Duration::from_secs(1), resend);
                failures = failures.saturating_add(1);
                tracing::warn!(error = %e, retry_in = ?wait, "posting to Alertmanager failed");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::state::fingerprint;
    use connwatch_shared::finding::{Code, Scope, Severity};

    fn alert(status: Status, severity: Severity) -> Alert {
        Alert {
            fingerprint: fingerprint(Code::TrustCertExpiring, "c1"),
            code: Code::TrustCertExpiring,
            severity,
            scope: Scope::Connector,
            subject: "c1".into(),
            group: "eu".into(),
            summary: "expires".into(),
            evidence: vec![("thumbprint".into(), "AB".into())],
            remediation: "re-register".into(),
            status,
            active_since_ms: 1_000,
            firing_since_ms: 1_000,
            resolved_at_ms: if status == Status::Resolved { 5_000 } else { 0 },
            last_notified_ms: 1_000,
            notified_severity: Some(severity),
        }
    }

    fn ends(v: &Value) -> &str {
        v["endsAt"].as_str().expect("endsAt")
    }

    #[test]
    fn firing_is_active_silenced_and_resolved_end_and_old_label_sets_end() {
        let now = 10_000;
        let firing = Exported {
            alert: alert(Status::Firing, Severity::Warning),
            silenced: false,
        };
        let b = body(
            std::slice::from_ref(&firing),
            &HashMap::new(),
            now,
            60_000,
            "https://agg",
        );
        assert_eq!(b.len(), 1);
        assert_eq!(ends(&b[0]), rfc3339(now + 60_000));
        assert_eq!(b[0]["labels"]["alertname"], "ConnwatchTrustCertExpiring");
        assert_eq!(b[0]["annotations"]["thumbprint"], "AB");

        let silenced = Exported {
            silenced: true,
            ..firing.clone()
        };
        let b = body(&[silenced], &HashMap::new(), now, 60_000, "https://agg");
        assert_eq!(ends(&b[0]), rfc3339(now));

        let resolved = Exported {
            alert: alert(Status::Resolved, Severity::Warning),
            silenced: false,
        };
        let b = body(&[resolved], &HashMap::new(), now, 60_000, "https://agg");
        assert_eq!(ends(&b[0]), rfc3339(5_000));

        let pushed: HashMap<_, _> =
            [(firing.alert.fingerprint.clone(), firing.alert.labels())].into();
        let critical = Exported {
            alert: alert(Status::Firing, Severity::Critical),
            silenced: false,
        };
        let b = body(&[critical], &pushed, now, 60_000, "https://agg");
        assert_eq!(b.len(), 2);
        assert_eq!(b[0]["labels"]["severity"], "warning");
        assert_eq!(ends(&b[0]), rfc3339(now));
        assert_eq!(b[1]["labels"]["severity"], "critical");
    }
}
