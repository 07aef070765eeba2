//! The core's object store: `peer-objstore`'s shared-memory store (one arena
//! in `/dev/shm`, mapped by every local client), spilling to this node's
//! spill directory.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use peer_node_core::ids::ObjectId;
use peer_node_core::store::{Allocation, ObjectStore, Spilled, StoreError, StoreStats};
use peer_objstore::{Arena, Store};

/// The shared-memory store of a node.
pub struct ShmStore {
    store: Store<ObjectId>,
    spill_dir: PathBuf,
}

impl ShmStore {
    pub fn new(arena: Arena, spill_dir: PathBuf) -> Self {
        Self {
            store: Store::new(arena),
            spill_dir,
        }
    }

    /// The arena, for the shell's readers and writers (pulls, serving).
    pub fn arena(&self) -> Arc<Arena> {
        self.store.shared_arena()
    }
}

fn core_error(e: peer_objstore::StoreError) -> StoreError {
    match e {
        e @ peer_objstore::StoreError::Full { .. } => StoreError::Full(e.to_string()),
        peer_objstore::StoreError::AlreadyExists => StoreError::AlreadyExists,
        peer_objstore::StoreError::AlreadySealed => StoreError::AlreadySealed,
        e => StoreError::Other(e.to_string()),
    }
}

fn allocation(a: peer_objstore::Allocation) -> Allocation {
    Allocation {
        offset: a.offset,
        len: a.len,
    }
}

fn spilled(list: Vec<peer_objstore::Spilled<ObjectId>>) -> Vec<Spilled> {
    list.into_iter()
        .map(|s| Spilled {
            id: s.key,
            path: s.path,
            len: s.len,
        })
        .collect()
}

impl ObjectStore for ShmStore {
    fn create(&mut self, id: ObjectId, len: u64) -> Result<(Allocation, Vec<Spilled>), StoreError> {
        self.store
            .create_or_spill(id, len, &self.spill_dir)
            .map(|(a, s)| (allocation(a), spilled(s)))
            .map_err(core_error)
    }

    fn restore(
        &mut self,
        id: ObjectId,
        path: &Path,
        len: u64,
    ) -> Result<(Allocation, Vec<Spilled>), StoreError> {
        self.store
            .restore(id, path, len, &self.spill_dir)
            .map(|(a, s)| (allocation(a), spilled(s)))
            .map_err(core_error)
    }

    fn seal(&mut self, id: ObjectId) -> Result<Allocation, StoreError> {
        self.store.seal(id).map(allocation).map_err(core_error)
    }

    fn abort(&mut self, id: ObjectId) -> Result<(), StoreError> {
        self.store.abort(id).map_err(core_error)
    }

    fn get(&self, id: &ObjectId) -> Option<Allocation> {
        self.store.get(id).map(allocation)
    }

    fn is_pinned(&self, id: &ObjectId) -> bool {
        self.store.is_pinned(id)
    }

    fn pin(&mut self, id: &ObjectId) -> Result<Allocation, StoreError> {
        self.store.pin(id).map(allocation).map_err(core_error)
    }

    fn release(&mut self, id: &ObjectId) -> Result<(), StoreError> {
        self.store.release(id).map_err(core_error)
    }

    fn delete(&mut self, id: &ObjectId) -> Result<bool, StoreError> {
        self.store.delete(id).map_err(core_error)
    }

    fn revive(&mut self, id: &ObjectId) -> Option<Allocation> {
        self.store.revive(id).map(allocation)
    }

    fn stats(&self) -> StoreStats {
        let s = self.store.stats();
        StoreStats {
            capacity: s.capacity,
            used: s.used,
            num_objects: s.num_objects,
            num_pinned: s.num_pinned,
            pinned_bytes: s.pinned_bytes,
            largest_free: s.largest_free,
            spilled_bytes_total: s.spilled_bytes_total,
            spilled_objects_total: s.spilled_objects_total,
            restored_bytes_total: s.restored_bytes_total,
            restored_objects_total: s.restored_objects_total,
            compactions: s.compactions,
        }
    }

    fn read(&self, offset: u64, len: u64) -> Result<Vec<u8>, StoreError> {
        self.store
            .arena()
            .slice(offset, len)
            .map(<[u8]>::to_vec)
            .map_err(core_error)
    }

    fn write(&mut self, offset: u64, bytes: &[u8]) -> Result<(), StoreError> {
        self.store.arena().write(offset, bytes).map_err(core_error)
    }
}
