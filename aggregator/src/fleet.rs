//! The live view of the fleet: every connector's registry entry and latest report,
//! kept in memory, rebuilt from the store at start and updated by the writer after
//! each durable commit. Queries read it; they never scan sled.

use crate::store::StoredConnector;
use std::collections::BTreeMap;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// Connectors by id, sorted so listings come out in order.
#[derive(Debug, Default, Clone)]
pub struct Fleet {
    /// Registry entries by connector id.
    pub connectors: BTreeMap<String, StoredConnector>,
}

/// The fleet shared between the writer and the query service.
#[derive(Debug, Default, Clone)]
pub struct SharedFleet(Arc<RwLock<Fleet>>);

impl SharedFleet {
    /// Wraps a fleet for sharing.
    pub fn new(fleet: Fleet) -> SharedFleet {
        SharedFleet(Arc::new(RwLock::new(fleet)))
    }

    /// Reads the fleet; a poisoned lock still holds consistent data (writes are
    /// single inserts), so it is recovered rather than propagated.
    pub fn read(&self) -> RwLockReadGuard<'_, Fleet> {
        self.0.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Writes the fleet.
    pub fn write(&self) -> RwLockWriteGuard<'_, Fleet> {
        self.0.write().unwrap_or_else(|p| p.into_inner())
    }
}
