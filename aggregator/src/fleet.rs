//! The live view of the fleet: every connector's registry entry and latest report,
//! kept in memory, rebuilt from the store at start and updated by the writer after
//! each durable commit, with its evaluation kept beside it (the [`Rollup`]). Queries
//! read these; they never scan sled.

use crate::config::RulesConfig;
use crate::rollup::{FindingCounts, Prepared, Rollup};
use crate::rules::{GroupContext, GroupEval};
use crate::store::StoredConnector;
use connwatch_shared::finding::Finding;
use parking_lot::{Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// Connectors replaced and evaluated per hold of the fleet's locks: a connector's
/// evaluation is some 10 µs, so readers wait about a millisecond at most.
const UPSERT_SLICE: usize = 128;

/// Connectors by id, sorted so listings come out in order.
#[derive(Debug, Default, Clone)]
pub struct Fleet {
    /// Registry entries by connector id.
    pub connectors: BTreeMap<String, StoredConnector>,
}

/// Findings the published [`StatusView`] keeps, most urgent first: what the CLI's
/// `status` asks for, and more.
pub const STATUS_FINDINGS: usize = 100;

/// The fleet's status as of the latest change: what `status` answers, taken without
/// the fleet's locks, so that an operator's question never waits for a writer that
/// lost its core while holding them.
#[derive(Debug, Default)]
pub struct StatusView {
    /// The thresholds it was evaluated with.
    rules: Option<Arc<RulesConfig>>,
    generation: u64,
    /// It holds until this time (the next change the clock alone makes).
    valid_until: i64,
    /// Every group, by name.
    pub groups: Vec<GroupEval>,
    /// The most urgent findings, at most [`STATUS_FINDINGS`].
    pub top: Vec<Finding>,
    /// All findings counted.
    pub counts: FindingCounts,
}

/// The fleet shared between the writer and the readers, with its rollup.
#[derive(Debug, Default, Clone)]
pub struct SharedFleet {
    fleet: Arc<RwLock<Fleet>>,
    rollup: Arc<Mutex<Rollup>>,
    status: Arc<Mutex<Arc<StatusView>>>,
}

impl SharedFleet {
    /// Wraps a fleet for sharing.
    pub fn new(fleet: Fleet) -> SharedFleet {
        SharedFleet {
            fleet: Arc::new(RwLock::new(fleet)),
            rollup: Arc::default(),
            status: Arc::default(),
        }
    }

    /// Reads the fleet.
    pub fn read(&self) -> RwLockReadGuard<'_, Fleet> {
        self.fleet.read()
    }

    /// Replaces connectors' entries (in commit order: a connector's later entry
    /// replaces its earlier one) and evaluates them as of `now_ms`, a slice at a time:
    /// readers wait at most for one slice, never for a whole commit group, and find
    /// the evaluation already up to date. Within a slice the entries and the rollup
    /// change as one step, so no reader sees an entry changed (say, moved to another
    /// group) that the rollup was not told about. Both here and in
    /// [`SharedFleet::evaluated`] the fleet lock is taken before the rollup's, so the
    /// two cannot deadlock.
    pub fn upsert(
        &self,
        entries: impl IntoIterator<Item = (String, StoredConnector)>,
        now_ms: i64,
        rules: &Arc<RulesConfig>,
    ) {
        // The entries replaced are dropped after the locks are released: freeing a
        // thousand reports is a good part of a commit's fleet update, and readers
        // wait for none of it.
        let mut replaced = Vec::new();
        let mut newest: HashMap<String, StoredConnector> = HashMap::new();
        for (id, entry) in entries {
            if let Some(earlier) = newest.insert(id, entry) {
                replaced.push(earlier);
            }
        }
        // The evaluations are worked out before the locks are taken; under them
        // each is only put in place, unless the group's context changed meanwhile.
        let contexts = self.rollup.lock().contexts();
        let no_context = GroupContext::default();
        let mut prepared: HashMap<String, Prepared> = newest
            .iter()
            .map(|(id, entry)| {
                let ctx = contexts.get(&entry.group).unwrap_or(&no_context);
                (id.clone(), Prepared::new(id, entry, now_ms, rules, ctx))
            })
            .collect();
        let mut newest = newest.into_iter().peekable();
        while newest.peek().is_some() {
            let mut fleet = self.fleet.write();
            let mut rollup = self.rollup.lock();
            for (id, entry) in newest.by_ref().take(UPSERT_SLICE) {
                rollup.mark(&id);
                match fleet.connectors.get_mut(&id) {
                    Some(slot) => replaced.push(std::mem::replace(slot, entry)),
                    None => {
                        fleet.connectors.insert(id, entry);
                    }
                }
            }
            // The view is published once, after the last slice: until the acks go out
            // (after this returns) the view from before the group answers truly, and
            // building it is a copy of every group and the top findings.
            let last = newest.peek().is_none();
            self.refresh(&mut rollup, &fleet, now_ms, rules, &mut prepared, last);
            // Handed straight to the readers waiting: an ordinary unlock would let
            // this loop take the locks again before they woke, and they would wait
            // for the whole group after all.
            MutexGuard::unlock_fair(rollup);
            RwLockWriteGuard::unlock_fair(fleet);
        }
        drop(replaced);
    }

    /// Runs `f` on the fleet and its evaluation as of `now_ms` (or as of the latest
    /// time the rollup was brought to, if that is later). Readers take turns (bringing
    /// the rollup up to date writes it), and each turn is short.
    pub fn evaluated<R>(
        &self,
        now_ms: i64,
        rules: &Arc<RulesConfig>,
        f: impl FnOnce(&Fleet, &Rollup) -> R,
    ) -> R {
        let fleet = self.read();
        let mut rollup = self.rollup.lock();
        self.refresh(
            &mut rollup,
            &fleet,
            now_ms,
            rules,
            &mut HashMap::new(),
            true,
        );
        f(&fleet, &rollup)
    }

    /// The status as of `now_ms`: the groups, the `limit` most urgent findings (0 for
    /// all) and the counts. Answered from the published view while it holds, else
    /// through [`SharedFleet::evaluated`].
    pub fn status(
        &self,
        now_ms: i64,
        rules: &Arc<RulesConfig>,
        limit: usize,
    ) -> (Vec<GroupEval>, Vec<Finding>, FindingCounts) {
        let view = self.status.lock().clone();
        let holds = view.rules.as_ref().is_some_and(|r| Arc::ptr_eq(r, rules))
            && now_ms < view.valid_until
            && (1..=STATUS_FINDINGS).contains(&limit);
        if holds {
            let top = view.top.iter().take(limit).cloned().collect();
            return (view.groups.clone(), top, view.counts);
        }
        self.evaluated(now_ms, rules, |_, r| {
            let (top, counts) = r.top_findings(limit);
            (r.groups().cloned().collect(), top, counts)
        })
    }

    /// Brings `rollup` up to date and, if `publish`, publishes the status view if it
    /// changed. A refresh that panics leaves the rollup to be rebuilt from scratch, not
    /// half done.
    fn refresh(
        &self,
        rollup: &mut Rollup,
        fleet: &Fleet,
        now_ms: i64,
        rules: &Arc<RulesConfig>,
        prepared: &mut HashMap<String, Prepared>,
        publish: bool,
    ) {
        // The published view goes too: it would go on answering for entries the
        // failed refresh may already have changed.
        struct ResetOnPanic<'a>(&'a mut Rollup, &'a Mutex<Arc<StatusView>>);
        impl Drop for ResetOnPanic<'_> {
            fn drop(&mut self) {
                if std::thread::panicking() {
                    self.0.reset();
                    *self.1.lock() = Arc::default();
                }
            }
        }
        let guard = ResetOnPanic(rollup, &self.status);
        guard.0.refresh_prepared(fleet, now_ms, rules, prepared);
        let rollup = &*guard.0;
        let stale = publish && {
            let view = self.status.lock();
            view.generation != rollup.generation()
                || !view.rules.as_ref().is_some_and(|r| Arc::ptr_eq(r, rules))
        };
        if stale {
            let (top, counts) = rollup.top_findings(STATUS_FINDINGS);
            let view = StatusView {
                rules: Some(rules.clone()),
                generation: rollup.generation(),
                valid_until: rollup.next_change(),
                groups: rollup.groups().cloned().collect(),
                top,
                counts,
            };
            *self.status.lock() = Arc::new(view);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use connwatch_shared::wire::Report;

    #[test]
    fn status_answers_from_the_view_until_the_clock_changes_it() {
        const START: i64 = 1_700_000_000_000;
        let rules = Arc::new(RulesConfig::default());
        let fleet = SharedFleet::default();
        let entry = StoredConnector {
            group: "g".into(),
            first_seen_ms: START,
            last_seen_ms: START,
            epoch: 1,
            last_seq: 1,
            latest: Some(Report {
                group: "g".into(),
                collected_at_ms: START,
                ..Report::default()
            }),
            ..StoredConnector::default()
        };
        fleet.upsert([("c0".to_string(), entry)], START, &rules);
        let fresh = |now| {
            fleet.evaluated(now, &rules, |_, r| {
                let (top, counts) = r.top_findings(20);
                (r.groups().cloned().collect::<Vec<_>>(), top, counts)
            })
        };
        let inactive = |top: &[Finding]| top.iter().any(|f| f.summary.contains("no report"));
        let early = fleet.status(START + 1, &rules, 20);
        assert_eq!(early.0.len(), 1);
        assert!(!inactive(&early.1), "{:?}", early.1);
        assert_eq!(format!("{early:?}"), format!("{:?}", fresh(START + 1)));
        // Past the time the connector turns inactive, the view no longer holds.
        let late = fleet.status(START + 90_001, &rules, 20);
        assert!(inactive(&late.1), "{:?}", late.1);
        assert_eq!(format!("{late:?}"), format!("{:?}", fresh(START + 90_001)));
    }
}
