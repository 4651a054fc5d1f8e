//! Alerting: turns findings into alerts with a lifecycle (pending, firing, resolved),
//! holds silences, and sends notifications to the log, webhooks and Alertmanager.
//!
//! The [`engine`] is a pure state machine; [`run`] drives it on an interval: evaluate
//! the rules over the live fleet, step the machine, store the changed alert states
//! (flushed) and only then hand the notifications to the sinks. Storing first means a
//! restart never announces a firing alert twice; the price is that a notification can
//! be lost if the aggregator stops between the flush and delivery.

pub mod defaults;
pub mod engine;
pub mod service;
pub mod silence;
pub mod sink;
pub mod state;

use crate::config::{AlertConfig, RulesConfig};
use crate::fleet::SharedFleet;
use crate::metrics::{AlertCounts, Metrics, SinkStats};
use crate::store::{Store, StoreError, StoredAlert, StoredPair, StoredSilence};
use connwatch_shared::finding::{Code, Finding, Scope, Severity};
use connwatch_shared::time::now_ms;
use engine::{Condition, RESOLVED_KEEP_MS};
use silence::{Matcher, Silence, silenced_by};
use sink::alertmanager::Exported;
use sink::webhook::Webhook;
use state::{Alert, Status};
use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Alert states and silences, shared by the engine and the `Alerts` service.
pub struct Hub {
    store: Arc<Store>,
    alerts: RwLock<BTreeMap<String, Alert>>,
    silences: RwLock<Vec<Silence>>,
    wake: Notify,
    metrics: Metrics,
}

fn pair(k: &str, v: &str) -> StoredPair {
    StoredPair {
        key: k.to_string(),
        value: v.to_string(),
    }
}

fn to_stored(a: &Alert) -> StoredAlert {
    StoredAlert {
        fingerprint: a.fingerprint.clone(),
        code: a.code.as_str().into(),
        severity: a.severity.as_str().into(),
        scope: a.scope.as_str().into(),
        subject: a.subject.clone(),
        group: a.group.clone(),
        summary: a.summary.clone(),
        evidence: a.evidence.iter().map(|(k, v)| pair(k, v)).collect(),
        remediation: a.remediation.clone(),
        status: a.status.as_str().into(),
        active_since_ms: a.active_since_ms,
        firing_since_ms: a.firing_since_ms,
        resolved_at_ms: a.resolved_at_ms,
        last_notified_ms: a.last_notified_ms,
        notified_severity: a
            .notified_severity
            .map(|s| s.as_str().to_string())
            .unwrap_or_default(),
    }
}

/// A stored alert, or `None` if it names a code or status this build does not know
/// (written by a newer build); such an alert is dropped rather than misread.
fn from_stored(s: StoredAlert) -> Option<Alert> {
    Some(Alert {
        code: Code::parse(&s.code)?,
        severity: Severity::parse(&s.severity)?,
        scope: if s.scope == "group" {
            Scope::Group
        } else {
            Scope::Connector
        },
        status: Status::parse(&s.status)?,
        notified_severity: Severity::parse(&s.notified_severity),
        evidence: s.evidence.into_iter().map(|p| (p.key, p.value)).collect(),
        fingerprint: s.fingerprint,
        subject: s.subject,
        group: s.group,
        summary: s.summary,
        remediation: s.remediation,
        active_since_ms: s.active_since_ms,
        firing_since_ms: s.firing_since_ms,
        resolved_at_ms: s.resolved_at_ms,
        last_notified_ms: s.last_notified_ms,
    })
}

fn silence_to_stored(s: &Silence) -> StoredSilence {
    StoredSilence {
        id: s.id.clone(),
        matchers: s.matchers.iter().map(|m| pair(&m.name, &m.value)).collect(),
        starts_ms: s.starts_ms,
        ends_ms: s.ends_ms,
        comment: s.comment.clone(),
        created_by: s.created_by.clone(),
    }
}

fn silence_from_stored(s: StoredSilence) -> Silence {
    Silence {
        id: s.id,
        matchers: s
            .matchers
            .into_iter()
            .map(|p| Matcher {
                name: p.key,
                value: p.value,
            })
            .collect(),
        starts_ms: s.starts_ms,
        ends_ms: s.ends_ms,
        comment: s.comment,
        created_by: s.created_by,
    }
}

impl Hub {
    /// Loads alert states and silences from the store.
    pub fn load(store: Arc<Store>, metrics: Metrics) -> Result<Hub, StoreError> {
        let alerts = store
            .alerts()?
            .into_iter()
            .filter_map(from_stored)
            .map(|a| (a.fingerprint.clone(), a))
            .collect();
        let silences = store
            .silences()?
            .into_iter()
            .map(silence_from_stored)
            .collect();
        Ok(Hub {
            store,
            alerts: RwLock::new(alerts),
            silences: RwLock::new(silences),
            wake: Notify::new(),
            metrics,
        })
    }

    /// Every alert, by fingerprint.
    pub fn alerts(&self) -> BTreeMap<String, Alert> {
        self.alerts
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Every silence, expired ones included until they are pruned.
    pub fn silences(&self) -> Vec<Silence> {
        self.silences
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The sinks' counters.
    pub fn sinks(&self) -> Vec<Arc<SinkStats>> {
        self.metrics.sinks()
    }

    /// Stores a silence durably, then lets the engine re-evaluate at once so it takes
    /// effect now rather than at the next tick.
    pub async fn add_silence(&self, s: Silence) -> Result<(), StoreError> {
        self.store.put_silence(&silence_to_stored(&s))?;
        self.store.flush().await?;
        self.silences
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .push(s);
        self.wake.notify_one();
        Ok(())
    }

    /// Removes a silence durably; the removed silence, if it existed.
    pub async fn remove_silence(&self, id: &str) -> Result<Option<Silence>, StoreError> {
        let found = self.silences().into_iter().find(|s| s.id == id);
        if found.is_none() {
            return Ok(None);
        }
        self.store.remove_silence(id)?;
        self.store.flush().await?;
        self.silences
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|s| s.id != id);
        self.wake.notify_one();
        Ok(found)
    }

    fn prune_silences(&self, now: i64) -> Result<(), StoreError> {
        let expired: Vec<String> = self
            .silences()
            .into_iter()
            .filter(|s| now - s.ends_ms >= RESOLVED_KEEP_MS)
            .map(|s| s.id)
            .collect();
        for id in &expired {
            self.store.remove_silence(id)?;
        }
        if !expired.is_empty() {
            self.silences
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .retain(|s| !expired.contains(&s.id));
        }
        Ok(())
    }
}

/// The sinks of a running engine.
struct Sinks {
    log: Option<Arc<SinkStats>>,
    webhooks: Vec<Webhook>,
    alertmanager: Option<watch::Sender<Arc<Vec<Exported>>>>,
}

/// Starts the sinks' tasks and the engine; everything stops on `shutdown`. The
/// returned handle finishes once every task has.
pub fn spawn(
    hub: Arc<Hub>,
    fleet: SharedFleet,
    rules: Arc<RulesConfig>,
    cfg: AlertConfig,
    shutdown: CancellationToken,
) -> JoinHandle<()> {
    let metrics = hub.metrics.clone();
    let mut tasks = Vec::new();
    let log = cfg.log.then(|| {
        let s = Arc::new(SinkStats::new("log", "stderr".into()));
        metrics.register_sink(s.clone());
        s
    });
    let mut webhooks = Vec::new();
    for w in &cfg.webhooks {
        let stats = Arc::new(SinkStats::new("webhook", w.url.to_string()));
        metrics.register_sink(stats.clone());
        let (hook, task) =
            Webhook::spawn(w.clone(), cfg.external_url.clone(), stats, shutdown.clone());
        webhooks.push(hook);
        tasks.push(task);
    }
    let alertmanager = cfg.alertmanager.as_ref().map(|am| {
        let stats = Arc::new(SinkStats::new("alertmanager", am.url.to_string()));
        metrics.register_sink(stats.clone());
        let (tx, rx) = watch::channel(Arc::new(Vec::new()));
        tasks.push(tokio::spawn(sink::alertmanager::run(
            am.clone(),
            cfg.external_url.clone(),
            rx,
            stats,
            shutdown.clone(),
        )));
        tx
    });
    let sinks = Sinks {
        log,
        webhooks,
        alertmanager,
    };
    tokio::spawn(async move {
        run(hub, fleet, rules, cfg, sinks, shutdown).await;
        for t in tasks {
            let _ = t.await;
        }
    })
}

async fn run(
    hub: Arc<Hub>,
    fleet: SharedFleet,
    rules: Arc<RulesConfig>,
    cfg: AlertConfig,
    sinks: Sinks,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(cfg.evaluate_every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tick.tick() => {}
            _ = hub.wake.notified() => {}
        }
        if let Err(e) = evaluate(&hub, &fleet, &rules, &cfg, &sinks).await {
            hub.metrics
                .alert_evaluation_failures
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            // Nothing was sent: the same transitions are retried at the next tick.
            tracing::error!(error = %e, "cannot store alert states; no notifications sent this round");
        }
    }
    tracing::debug!("alert engine stopped");
}

async fn evaluate(
    hub: &Hub,
    fleet: &SharedFleet,
    rules: &Arc<RulesConfig>,
    cfg: &AlertConfig,
    sinks: &Sinks,
) -> Result<(), StoreError> {
    let now = now_ms();
    // Copy out only the findings, so the fleet is not held while the engine works.
    let found: Vec<(Finding, String)> = fleet.evaluated(now, rules, |_, r| {
        r.findings()
            .map(|(f, group)| (f.clone(), group.to_string()))
            .collect()
    });
    let conditions: Vec<Condition> = found
        .iter()
        .map(|(finding, group)| Condition { finding, group })
        .collect();
    hub.prune_silences(now)?;
    let silences = hub.silences();
    let mut alerts = hub.alerts();
    let step = engine::step(&alerts, &conditions, &silences, now, &cfg.policy);
    if !step.upserts.is_empty() || !step.removed.is_empty() {
        let stored: Vec<StoredAlert> = step.upserts.iter().map(to_stored).collect();
        hub.store.save_alerts(&stored, &step.removed)?;
        hub.store.flush().await?;
    }
    engine::apply(&mut alerts, &step);
    let mut counts = AlertCounts::default();
    let exported: Vec<Exported> = alerts
        .values()
        .map(|a| {
            let silenced = silenced_by(&silences, &a.labels(), now).is_some();
            match (a.status, silenced) {
                (Status::Pending, _) => counts.pending += 1,
                (Status::Firing, false) => counts.firing += 1,
                (Status::Firing, true) => counts.silenced += 1,
                (Status::Resolved, _) => {}
            }
            Exported {
                alert: a.clone(),
                silenced,
            }
        })
        .collect();
    *hub.alerts.write().unwrap_or_else(|p| p.into_inner()) = alerts;
    hub.metrics.set_alerts(counts);
    hub.metrics
        .alert_evaluations
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    for n in &step.notifications {
        if let Some(stats) = &sinks.log {
            sink::log::notify(n, stats);
        }
        for w in &sinks.webhooks {
            w.push(n.clone());
        }
    }
    if let Some(tx) = &sinks.alertmanager {
        tx.send_if_modified(|current| {
            if **current == exported {
                return false;
            }
            *current = Arc::new(exported);
            true
        });
    }
    Ok(())
}

/// One line on alerting and metrics for `--check-config`.
pub fn describe(config: &crate::config::Config) -> String {
    let a = &config.alert;
    let mut sinks = Vec::new();
    if a.log {
        sinks.push("log".to_string());
    }
    sinks.extend(a.webhooks.iter().map(|w| format!("webhook {}", w.url)));
    if let Some(am) = &a.alertmanager {
        sinks.push(format!("alertmanager {}", am.url));
    }
    format!(
        "alerts on {} codes every {:?} to {}; metrics {}",
        a.policy.codes.len(),
        a.evaluate_every,
        if sinks.is_empty() {
            "no sink".to_string()
        } else {
            sinks.join(", ")
        },
        config
            .metrics
            .listen
            .map_or("off".to_string(), |l| format!("on http://{l}/metrics"))
    )
}
