//! The live view of the fleet: every connector's registry entry and latest report,
//! kept in memory, rebuilt from the store at start and updated by the writer after
//! each durable commit, with its evaluation kept beside it (the [`Rollup`]). Queries
//! read these; they never scan sled.

use crate::config::RulesConfig;
use crate::rollup::Rollup;
use crate::store::StoredConnector;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard};

/// Connectors by id, sorted so listings come out in order.
#[derive(Debug, Default, Clone)]
pub struct Fleet {
    /// Registry entries by connector id.
    pub connectors: BTreeMap<String, StoredConnector>,
}

/// The fleet shared between the writer and the readers, with its rollup.
#[derive(Debug, Default, Clone)]
pub struct SharedFleet {
    fleet: Arc<RwLock<Fleet>>,
    rollup: Arc<Mutex<Rollup>>,
}

impl SharedFleet {
    /// Wraps a fleet for sharing.
    pub fn new(fleet: Fleet) -> SharedFleet {
        SharedFleet {
            fleet: Arc::new(RwLock::new(fleet)),
            rollup: Arc::default(),
        }
    }

    /// Reads the fleet; a poisoned lock still holds consistent data (writes are
    /// single inserts), so it is recovered rather than propagated.
    pub fn read(&self) -> RwLockReadGuard<'_, Fleet> {
        self.fleet.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Replaces connectors' entries and tells the rollup, as one step: no reader can
    /// see an entry changed (say, moved to another group) that the rollup was not told
    /// about. Both here and in [`SharedFleet::evaluated`] the fleet lock is taken
    /// before the rollup's, so the two cannot deadlock.
    pub fn upsert(&self, entries: impl IntoIterator<Item = (String, StoredConnector)>) {
        // The entries replaced are dropped after the locks are released: freeing a
        // thousand reports is a good part of a commit's fleet update, and readers
        // wait for none of it.
        let mut replaced = Vec::new();
        {
            let mut fleet = self.fleet.write().unwrap_or_else(|p| p.into_inner());
            let mut rollup = self.lock_rollup();
            for (id, entry) in entries {
                rollup.mark(&id);
                match fleet.connectors.get_mut(&id) {
                    Some(slot) => replaced.push(std::mem::replace(slot, entry)),
                    None => {
                        fleet.connectors.insert(id, entry);
                    }
                }
            }
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
        let mut rollup = self.lock_rollup();
        rollup.refresh(&fleet, now_ms, rules);
        f(&fleet, &rollup)
    }

    fn lock_rollup(&self) -> std::sync::MutexGuard<'_, Rollup> {
        self.rollup.lock().unwrap_or_else(|p| {
            // A refresh that panicked may have left it half done: start afresh.
            let mut rollup = p.into_inner();
            rollup.reset();
            self.rollup.clear_poison();
            rollup
        })
    }
}
