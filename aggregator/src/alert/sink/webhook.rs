//! The JSON webhook sink: one POST per notification, in order, retried with
//! exponential backoff and jitter until the receiver answers 2xx. Delivery is
//! at-least-once while the aggregator runs: a POST whose answer is lost is sent again,
//! so receivers deduplicate on `id`. The queue is bounded and held in memory: when it
//! is full the oldest notification is dropped and counted, and what is still queued at
//! shutdown is not sent (the alert state is stored, so nothing fires twice, but a
//! notification can be lost across a restart).

use super::post_json;
use crate::alert::engine::{Kind, Notification};
use crate::alert::state::Alert;
use crate::config::WebhookConfig;
use crate::metrics::SinkStats;
use connwatch_shared::time::rfc3339;
use rand::Rng;
use serde_json::{Value, json};
use std::collections::VecDeque;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// The JSON body of one notification. `status` is `firing` or `resolved` in the
/// manner of Alertmanager's webhooks; `kind` also tells a repeat from the first.
pub fn payload(n: &Notification, external_url: &str) -> Value {
    let a: &Alert = &n.alert;
    json!({
        "version": "1",
        "id": n.id(),
        "kind": n.kind.as_str(),
        "status": if n.kind == Kind::Resolved { "resolved" } else { "firing" },
        "fingerprint": a.fingerprint,
        "code": a.code.as_str(),
        "severity": a.severity.as_str(),
        "scope": a.scope.as_str(),
        "subject": a.subject,
        "group": a.group,
        "summary": a.summary,
        "remediation": a.remediation,
        "labels": a.labels(),
        "annotations": a.annotations(),
        "startsAt": rfc3339(if a.firing_since_ms > 0 { a.firing_since_ms } else { a.active_since_ms }),
        "endsAt": (a.resolved_at_ms > 0).then(|| rfc3339(a.resolved_at_ms)),
        "sentAt": rfc3339(n.at_ms),
        "generatorURL": format!("{external_url}/alerts/{}", a.fingerprint),
    })
}

struct Queue {
    items: Mutex<VecDeque<Notification>>,
    wake: Notify,
}

/// A handle for queueing notifications to one webhook.
#[derive(Clone)]
pub struct Webhook {
    queue: Arc<Queue>,
    stats: Arc<SinkStats>,
    max_queue: usize,
}

impl Webhook {
    /// Starts the delivery task; it stops on `shutdown`.
    pub fn spawn(
        cfg: WebhookConfig,
        external_url: String,
        stats: Arc<SinkStats>,
        shutdown: CancellationToken,
    ) -> (Webhook, tokio::task::JoinHandle<()>) {
        let queue = Arc::new(Queue {
            items: Mutex::new(VecDeque::new()),
            wake: Notify::new(),
        });
        let hook = Webhook {
            queue: queue.clone(),
            stats: stats.clone(),
            max_queue: cfg.max_queue,
        };
        let task = tokio::spawn(deliver(cfg, external_url, queue, stats, shutdown));
        (hook, task)
    }

    /// Queues a notification, dropping the oldest when the queue is full.
    pub fn push(&self, n: Notification) {
        let mut items = self.queue.items.lock().unwrap_or_else(|p| p.into_inner());
        if items.len() >= self.max_queue {
            items.pop_front();
            self.stats.dropped.fetch_add(1, Relaxed);
            tracing::warn!(target = %self.stats.target, "webhook queue full; dropped the oldest notification");
        }
        items.push_back(n);
        self.stats.queued.store(items.len() as u64, Relaxed);
        drop(items);
        self.queue.wake.notify_one();
    }
}

/// The delay before retry `attempt` (0-based): doubling from `base` up to `max`, then
/// a random point in its upper half so many aggregators do not retry in step.
pub fn backoff(attempt: u32, base: Duration, max: Duration) -> Duration {
    let full = base
        .saturating_mul(2u32.saturating_pow(attempt.min(20)))
        .min(max);
    let half = full / 2;
    half + half.mul_f64(rand::rng().random::<f64>())
}

async fn deliver(
    cfg: WebhookConfig,
    external_url: String,
    queue: Arc<Queue>,
    stats: Arc<SinkStats>,
    shutdown: CancellationToken,
) {
    let mut attempt = 0u32;
    loop {
        let next = queue
            .items
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .front()
            .cloned();
        let Some(n) = next else {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = queue.wake.notified() => continue,
            }
        };
        let body = serde_json::to_vec(&payload(&n, &external_url)).unwrap_or_default();
        let result = tokio::select! {
            _ = shutdown.cancelled() => break,
            r = post_json(&cfg.url, body, cfg.timeout) => r,
        };
        match result {
            Ok(()) => {
                attempt = 0;
                stats.delivered.fetch_add(1, Relaxed);
                let mut items = queue.items.lock().unwrap_or_else(|p| p.into_inner());
                // The front may have been dropped for room while the POST was out.
                if items.front().is_some_and(|f| f.id() == n.id()) {
                    items.pop_front();
                }
                stats.queued.store(items.len() as u64, Relaxed);
            }
            Err(e) => {
                stats.fail(&e);
                let wait = backoff(attempt, cfg.backoff, cfg.max_backoff);
                attempt = attempt.saturating_add(1);
                tracing::warn!(target = %cfg.url, error = %e, retry_in = ?wait, "webhook delivery failed");
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(wait) => {}
                }
            }
        }
    }
    let left = queue.items.lock().unwrap_or_else(|p| p.into_inner()).len();
    if left > 0 {
        tracing::warn!(target = %cfg.url, notifications = left, "stopping with undelivered webhook notifications");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_within_bounds() {
        let base = Duration::from_millis(100);
        let max = Duration::from_secs(1);
        for attempt in 0..10 {
            let full = (base * 2u32.pow(attempt)).min(max);
            let d = backoff(attempt, base, max);
            assert!(d >= full / 2 && d <= full, "{attempt}: {d:?}");
        }
    }
}
