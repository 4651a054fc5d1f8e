//! The log sink: every notification as one structured tracing event. On by default,
//! so a bare aggregator still says when a trust certificate is about to expire.

use crate::alert::engine::{Kind, Notification};
use crate::metrics::SinkStats;
use std::sync::atomic::Ordering::Relaxed;

/// Logs one notification.
pub fn notify(n: &Notification, stats: &SinkStats) {
    let a = &n.alert;
    // Certificate evidence, so the log line alone says which certificate and when;
    // absent fields are left out of the event.
    let thumbprint = a.evidence("thumbprint");
    let not_after = a.evidence("not_after");
    match n.kind {
        Kind::Firing | Kind::Repeat => tracing::warn!(
            kind = n.kind.as_str(),
            code = a.code.as_str(),
            severity = a.severity.as_str(),
            subject = %a.subject,
            group = %a.group,
            fingerprint = %a.fingerprint,
            thumbprint,
            not_after,
            remediation = %a.remediation,
            "alert {}: {}: {}",
            n.kind.as_str(),
            a.subject,
            a.summary
        ),
        Kind::Resolved => tracing::info!(
            kind = n.kind.as_str(),
            code = a.code.as_str(),
            subject = %a.subject,
            group = %a.group,
            fingerprint = %a.fingerprint,
            "alert resolved: {}: {}",
            a.subject,
            a.code
        ),
    }
    stats.delivered.fetch_add(1, Relaxed);
}
