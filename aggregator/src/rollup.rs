//! The fleet's evaluation, kept up to date rather than recomputed for every question.
//!
//! Evaluating every rule for every connector costs about a second per 100,000
//! connectors, far too much to do per query. Yet a connector's findings change only
//! when its entry changes (the writer marks it), when its group's context changes (a
//! newer version appears among the active members), or when the clock crosses one of
//! the times [`rules::valid_until`] names. The rollup re-evaluates exactly those
//! connectors, and the groups they belong to, and answers everything else from what it
//! kept. [`rules::evaluate`] stays the reference: a test checks that both agree.

use crate::config::RulesConfig;
use crate::fleet::Fleet;
use crate::rules::{self, ConnectorEval, Contribution, GroupContext, GroupEval, GroupFacts};
use crate::store::StoredConnector;
use crate::version::Version;
use bytes::Bytes;
use connwatch_shared::finding::{Code, Finding, Severity};
use prost::Message;
use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

/// A connector's kept evaluation.
#[derive(Debug)]
struct Slot {
    eval: ConnectorEval,
    valid_until: i64,
    /// Its listing row, encoded when it is evaluated: everything in a row changes
    /// only then, and a listing of the whole fleet then copies bytes instead of
    /// building and encoding a message per connector under the fleet's locks.
    row: Bytes,
}

/// A connector's evaluation worked out ahead, outside the fleet's locks, for the
/// context its group had then. Installed by a refresh only if that context still
/// holds and the refresh's time lies before `valid_until`: until then the evaluation
/// cannot differ from one made in place (that is what [`rules::valid_until`] means).
#[derive(Debug)]
pub struct Prepared {
    /// Which entry it is of: (epoch, last sequence number, last seen).
    of: (u64, u64, i64),
    ctx: GroupContext,
    computed_at: i64,
    eval: ConnectorEval,
    contribution: Contribution,
    valid_until: i64,
    row: Bytes,
}

impl Prepared {
    /// Evaluates `entry` as of `now_ms` in a group with context `ctx`.
    pub fn new(
        id: &str,
        entry: &StoredConnector,
        now_ms: i64,
        cfg: &RulesConfig,
        ctx: &GroupContext,
    ) -> Prepared {
        let eval = rules::evaluate_connector(id, entry, now_ms, cfg, ctx);
        Prepared {
            of: (entry.epoch, entry.last_seq, entry.last_seen_ms),
            ctx: ctx.clone(),
            computed_at: now_ms,
            contribution: rules::contribution(&eval, entry),
            valid_until: rules::valid_until(entry, now_ms, cfg),
            row: crate::query::summary_of(&eval, Some(entry))
                .encode_to_vec()
                .into(),
            eval,
        }
    }

    fn holds(&self, entry: &StoredConnector, ctx: &GroupContext, now_ms: i64) -> bool {
        self.of == (entry.epoch, entry.last_seq, entry.last_seen_ms)
            && self.ctx == *ctx
            && self.computed_at <= now_ms
            && now_ms < self.valid_until
    }
}

/// What a group needs of a member.
#[derive(Debug)]
struct Member {
    /// Its version, if it was active when it joined: counted in its group's
    /// `active_versions`. The time it stops being active is one [`rules::valid_until`]
    /// names while it is, so it is taken out and put back uncounted before any refresh
    /// at or after that time computes a context.
    counted: Option<Version>,
    /// What it added to the group's facts, once evaluated.
    contribution: Option<Contribution>,
}

#[derive(Debug, Default)]
struct GroupState {
    members: BTreeMap<String, Member>,
    /// How many counted members run each version: the group's newest active version
    /// without a pass over thousands of members for every refresh that touches it.
    /// Keyed with the text too, since versions that compare equal may be written
    /// differently (`1.5`, `1.5.0`) and the one named must be one a member runs.
    active_versions: BTreeMap<(Version, String), usize>,
    ctx: GroupContext,
    facts: GroupFacts,
    eval: Option<GroupEval>,
}

impl GroupState {
    fn count(&mut self, v: &Version) {
        *self
            .active_versions
            .entry((v.clone(), v.to_string()))
            .or_default() += 1;
    }

    fn uncount(&mut self, v: &Version) {
        let key = (v.clone(), v.to_string());
        if let Some(n) = self.active_versions.get_mut(&key) {
            *n -= 1;
            if *n == 0 {
                self.active_versions.remove(&key);
            }
        }
    }
}

/// Where a finding sorts among all of the fleet's, and where it is kept: the order of
/// [`rules::Evaluation::all_findings`] (severity, code, subject), then group findings before
/// connector ones, then its place in its list.
type UrgencyKey = (Reverse<Severity>, Code, String, u8, usize);
const GROUP: u8 = 0;
const CONNECTOR: u8 = 1;

/// How many findings there are of each severity.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct FindingCounts {
    /// Every finding.
    pub total: usize,
    /// Critical ones.
    pub critical: usize,
    /// Warnings.
    pub warning: usize,
}

/// The kept evaluation of the live (not retired) fleet.
#[derive(Debug, Default)]
pub struct Rollup {
    /// The thresholds it was built with; other thresholds start it afresh.
    rules: Option<Arc<RulesConfig>>,
    slots: BTreeMap<String, Slot>,
    /// (valid until, connector) of every slot that will need another look.
    expiry: BTreeSet<(i64, String)>,
    /// Connectors whose entries changed since the last refresh.
    dirty: HashSet<String>,
    /// The time of the latest refresh: the clock the rollup has seen never runs back,
    /// even when two readers read it in one order and refresh in the other.
    now_ms: i64,
    groups: BTreeMap<String, GroupState>,
    /// Counts the refreshes that changed anything.
    generation: u64,
    /// Every kept finding, most urgent first.
    urgency: BTreeSet<UrgencyKey>,
    counts: FindingCounts,
}

impl Rollup {
    /// Notes that a connector's entry changed (after it changed in the fleet).
    pub fn mark(&mut self, id: &str) {
        self.dirty.insert(id.to_string());
    }

    /// Forgets everything: the next refresh rebuilds from the fleet.
    pub fn reset(&mut self) {
        let generation = self.generation + 1;
        *self = Rollup {
            generation,
            ..Rollup::default()
        };
    }

    /// Brings the evaluation up to `now_ms` (or the latest time it was brought to).
    pub fn refresh(&mut self, fleet: &Fleet, now_ms: i64, cfg: &Arc<RulesConfig>) {
        self.refresh_prepared(fleet, now_ms, cfg, &mut HashMap::new());
    }

    /// Changes whenever a refresh changes the evaluation.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The earliest time at which the evaluation changes by the clock alone.
    pub fn next_change(&self) -> i64 {
        let connectors = self.expiry.first().map_or(i64::MAX, |(at, _)| *at);
        match self.grace_end() {
            Some(end) if end > self.now_ms => connectors.min(end),
            _ => connectors,
        }
    }

    /// When the start-up grace ends, which changes how groups are judged.
    fn grace_end(&self) -> Option<i64> {
        self.rules.as_ref().map(|r| r.startup.grace_end_ms())
    }

    /// Each group's context as it stands, for [`Prepared::new`].
    pub fn contexts(&self) -> HashMap<String, GroupContext> {
        self.groups
            .iter()
            .map(|(name, g)| (name.clone(), g.ctx.clone()))
            .collect()
    }

    /// [`Rollup::refresh`], taking a connector's evaluation from `prepared` where one
    /// still holds instead of working it out in place.
    pub fn refresh_prepared(
        &mut self,
        fleet: &Fleet,
        now_ms: i64,
        cfg: &Arc<RulesConfig>,
        prepared: &mut HashMap<String, Prepared>,
    ) {
        let rebuild = !self.rules.as_ref().is_some_and(|r| Arc::ptr_eq(r, cfg));
        if rebuild {
            *self = Rollup {
                rules: Some(cfg.clone()),
                // Never back: a published view names the generation it was made from.
                generation: self.generation,
                dirty: fleet.connectors.keys().cloned().collect(),
                groups: cfg
                    .groups
                    .iter()
                    .map(|g| (g.name.clone(), GroupState::default()))
                    .collect(),
                ..Rollup::default()
            };
        }
        let now_ms = now_ms.max(self.now_ms);
        // Groups are judged differently once the start-up grace is over.
        let grace_ended = self
            .grace_end()
            .is_some_and(|end| self.now_ms < end && end <= now_ms);
        self.now_ms = now_ms;
        let mut due: BTreeSet<String> = self.dirty.drain().collect();
        while let Some((at, _)) = self.expiry.first() {
            if *at > now_ms {
                break;
            }
            if let Some((_, id)) = self.expiry.pop_first() {
                due.insert(id);
            }
        }
        if due.is_empty() && !rebuild && !grace_ended {
            return;
        }
        self.generation += 1;
        let mut touched = self.update_members(&due, fleet, now_ms, cfg);
        if grace_ended {
            touched.extend(self.groups.keys().cloned());
        }
        if rebuild {
            // Declared groups are listed even before any member reports.
            touched.extend(cfg.groups.iter().map(|g| g.name.clone()));
        }
        for name in &touched {
            let Some(g) = self.groups.get_mut(name) else {
                continue;
            };
            let ctx = GroupContext {
                newest_version: g.active_versions.keys().next_back().map(|(v, _)| v.clone()),
            };
            if ctx != g.ctx {
                g.ctx = ctx;
                due.extend(g.members.keys().cloned());
            }
        }
        for id in &due {
            self.evaluate(id, fleet, now_ms, cfg, prepared.remove(id));
        }
        for name in &touched {
            self.evaluate_group(name, now_ms, cfg);
        }
    }

    /// Moves the due connectors into the groups they now belong to (or out, once
    /// retired or gone); returns every group that gained or lost or changed a member.
    fn update_members(
        &mut self,
        due: &BTreeSet<String>,
        fleet: &Fleet,
        now_ms: i64,
        cfg: &RulesConfig,
    ) -> BTreeSet<String> {
        let mut touched = BTreeSet::new();
        for id in due {
            if let Some(old) = self.slots.get(id) {
                let group = old.eval.group.clone();
                if let Some(g) = self.groups.get_mut(&group)
                    && let Some(m) = g.members.remove(id)
                {
                    if let Some(v) = &m.counted {
                        g.uncount(v);
                    }
                    if let Some(c) = m.contribution {
                        g.facts.remove(id, &c);
                    }
                }
                touched.insert(group);
            }
            let Some(entry) = fleet.connectors.get(id) else {
                continue;
            };
            if rules::is_retired(entry, now_ms, cfg) {
                continue;
            }
            let counted =
                rules::connector_version(entry).filter(|_| rules::is_active(entry, now_ms, cfg));
            let g = self.groups.entry(entry.group.clone()).or_default();
            if let Some(v) = &counted {
                g.count(v);
            }
            let member = Member {
                contribution: None,
                counted,
            };
            g.members.insert(id.clone(), member);
            touched.insert(entry.group.clone());
        }
        touched
    }

    fn evaluate(
        &mut self,
        id: &str,
        fleet: &Fleet,
        now_ms: i64,
        cfg: &RulesConfig,
        prepared: Option<Prepared>,
    ) {
        if let Some(old) = self.slots.remove(id) {
            self.expiry.remove(&(old.valid_until, id.to_string()));
            self.index(&old.eval.findings, CONNECTOR, false);
        }
        let Some(entry) = fleet.connectors.get(id) else {
            return;
        };
        let Some(g) = self.groups.get_mut(&entry.group) else {
            return;
        };
        let Some(member) = g.members.get_mut(id) else {
            return;
        };
        let Prepared {
            eval,
            contribution,
            valid_until,
            row,
            ..
        } = match prepared {
            Some(p) if p.holds(entry, &g.ctx, now_ms) => p,
            _ => Prepared::new(id, entry, now_ms, cfg, &g.ctx),
        };
        if let Some(old) = member.contribution.take() {
            g.facts.remove(id, &old);
        }
        g.facts.add(id, &contribution);
        member.contribution = Some(contribution);
        if valid_until != i64::MAX {
            self.expiry.insert((valid_until, id.to_string()));
        }
        self.index(&eval.findings, CONNECTOR, true);
        self.slots.insert(
            id.to_string(),
            Slot {
                eval,
                valid_until,
                row,
            },
        );
    }

    fn evaluate_group(&mut self, name: &str, now_ms: i64, cfg: &RulesConfig) {
        let Some(g) = self.groups.get_mut(name) else {
            return;
        };
        let old = g.eval.take();
        let eval = (!g.members.is_empty() || cfg.is_declared(name))
            .then(|| rules::evaluate_group_facts(name, &g.facts, now_ms, cfg));
        match &eval {
            Some(eval) => g.eval = Some(eval.clone()),
            None => {
                self.groups.remove(name);
            }
        }
        if let Some(old) = old {
            self.index(&old.findings, GROUP, false);
        }
        if let Some(eval) = eval {
            self.index(&eval.findings, GROUP, true);
        }
    }

    /// Adds findings to (or takes them from) the urgency index and the counts.
    fn index(&mut self, findings: &[Finding], scope: u8, add: bool) {
        for (i, f) in findings.iter().enumerate() {
            let key = (Reverse(f.severity), f.code, f.subject.clone(), scope, i);
            let changed = if add {
                self.urgency.insert(key)
            } else {
                self.urgency.remove(&key)
            };
            if !changed {
                continue;
            }
            let n = |v: &mut usize| *v = if add { *v + 1 } else { v.saturating_sub(1) };
            n(&mut self.counts.total);
            match f.severity {
                Severity::Critical => n(&mut self.counts.critical),
                Severity::Warning => n(&mut self.counts.warning),
                Severity::Info => {}
            }
        }
    }

    /// Every group, by name.
    pub fn groups(&self) -> impl Iterator<Item = &GroupEval> {
        self.groups.values().filter_map(|g| g.eval.as_ref())
    }

    /// One group.
    pub fn group(&self, name: &str) -> Option<&GroupEval> {
        self.groups.get(name).and_then(|g| g.eval.as_ref())
    }

    /// Every live connector, by id.
    pub fn connectors(&self) -> impl Iterator<Item = &ConnectorEval> {
        self.slots.values().map(|s| &s.eval)
    }

    /// Every live connector, by id, with its encoded listing row.
    pub fn rows(&self) -> impl Iterator<Item = (&ConnectorEval, &Bytes)> {
        self.slots.values().map(|s| (&s.eval, &s.row))
    }

    /// A group's live members, by id, with their encoded listing rows.
    pub fn member_rows<'a>(
        &'a self,
        group: &str,
    ) -> impl Iterator<Item = (&'a ConnectorEval, &'a Bytes)> {
        self.groups
            .get(group)
            .into_iter()
            .flat_map(|g| g.members.keys())
            .filter_map(|id| self.slots.get(id).map(|s| (&s.eval, &s.row)))
    }

    /// One live connector.
    pub fn connector(&self, id: &str) -> Option<&ConnectorEval> {
        self.slots.get(id).map(|s| &s.eval)
    }

    /// A group's live members, by id.
    pub fn members<'a>(&'a self, group: &str) -> impl Iterator<Item = &'a ConnectorEval> {
        self.member_rows(group).map(|(eval, _)| eval)
    }

    /// The context its group gives a connector's rules.
    pub fn context(&self, group: &str) -> GroupContext {
        self.groups
            .get(group)
            .map(|g| g.ctx.clone())
            .unwrap_or_default()
    }

    /// Every kept finding, group ones first, each with the group it belongs to.
    pub fn findings(&self) -> impl Iterator<Item = (&Finding, &str)> {
        let groups = self
            .groups()
            .flat_map(|g| g.findings.iter().map(|f| (f, g.name.as_str())));
        let connectors = self
            .connectors()
            .flat_map(|c| c.findings.iter().map(|f| (f, c.group.as_str())));
        groups.chain(connectors)
    }

    /// A copy in the shape [`rules::evaluate`] returns, to compare the two.
    #[cfg(test)]
    pub fn to_evaluation(&self) -> rules::Evaluation {
        rules::Evaluation {
            connectors: self.connectors().cloned().collect(),
            groups: self.groups().cloned().collect(),
        }
    }

    /// The `limit` most urgent findings of the fleet (all of them for 0), ordered as
    /// [`rules::Evaluation::all_findings`] orders them, and how many there are in all.
    pub fn top_findings(&self, limit: usize) -> (Vec<Finding>, FindingCounts) {
        let limit = if limit == 0 { usize::MAX } else { limit };
        let top = self
            .urgency
            .iter()
            .take(limit)
            .filter_map(|(_, _, subject, scope, i)| {
                let list = if *scope == GROUP {
                    &self.group(subject)?.findings
                } else {
                    &self.connector(subject)?.findings
                };
                list.get(*i).cloned()
            })
            .collect();
        (top, self.counts)
    }
}

#[cfg(test)]
mod tests;
