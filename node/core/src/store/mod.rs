//! What the core asks of the node's object store, as a trait the shell
//! implements over the shared-memory arena (`peer_node::local::store`) and
//! the simulator over plain memory.
//!
//! The store is the one capability the core calls synchronously: deciding
//! whether an object fits, and where, is part of every `put`, result and
//! pull, and the answer is needed before the next message. The core decides
//! which objects exist, who holds refs and pins, and when one is freed; the
//! store keeps the bytes and their places. Spilled objects are the core's to
//! track (their files come back from `create` and `restore`, and are deleted
//! with [`Command::DeleteSpillFile`](crate::Command::DeleteSpillFile)).

use std::path::PathBuf;

use crate::ids::ObjectId;

/// Where an object lives in the store: `len` bytes at `offset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Allocation {
    pub offset: u64,
    pub len: u64,
}

/// An object the store moved out to a file to make room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spilled {
    pub id: ObjectId,
    /// The file holding exactly the object's bytes.
    pub path: PathBuf,
    pub len: u64,
}

/// The store's occupancy, as `peer status` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StoreStats {
    pub capacity: u64,
    pub used: u64,
    pub num_objects: u64,
    pub num_pinned: u64,
    pub pinned_bytes: u64,
    pub largest_free: u64,
    pub spilled_bytes_total: u64,
    pub spilled_objects_total: u64,
    pub restored_bytes_total: u64,
    pub restored_objects_total: u64,
    pub compactions: u64,
}

/// Why the store refused: the cases the core acts on, the rest as text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The object does not fit, even after evicting and spilling (the store's own words).
    #[error("{0}")]
    Full(String),
    #[error("object already exists in the store")]
    AlreadyExists,
    #[error("object is already sealed")]
    AlreadySealed,
    #[error("{0}")]
    Other(String),
}

/// A node's object store, keyed by object id. Every method answers at once.
pub trait ObjectStore {
    /// Reserve `len` bytes for a new, unsealed object, spilling least
    /// recently used objects to files when it does not fit otherwise.
    fn create(&mut self, id: ObjectId, len: u64) -> Result<(Allocation, Vec<Spilled>), StoreError>;
    /// Read a spilled object back from its file (spilling others if needed),
    /// sealed; the file is gone afterwards.
    fn restore(
        &mut self,
        id: ObjectId,
        path: &std::path::Path,
        len: u64,
    ) -> Result<(Allocation, Vec<Spilled>), StoreError>;
    /// Mark a created object complete and readable.
    fn seal(&mut self, id: ObjectId) -> Result<Allocation, StoreError>;
    /// Drop an unsealed object.
    fn abort(&mut self, id: ObjectId) -> Result<(), StoreError>;
    /// Where a sealed, live object is (valid until the store next changes unless pinned).
    fn get(&self, id: &ObjectId) -> Option<Allocation>;
    /// Whether any reader pins the object.
    fn is_pinned(&self, id: &ObjectId) -> bool;
    /// Pin a sealed object for a reader.
    fn pin(&mut self, id: &ObjectId) -> Result<Allocation, StoreError>;
    /// Drop one pin.
    fn release(&mut self, id: &ObjectId) -> Result<(), StoreError>;
    /// Delete an object (at once, or on its last release); true when freed now.
    fn delete(&mut self, id: &ObjectId) -> Result<bool, StoreError>;
    /// The sealed object under `id`, taking back a delete still waiting for its last release.
    fn revive(&mut self, id: &ObjectId) -> Option<Allocation>;
    /// Occupancy figures.
    fn stats(&self) -> StoreStats;
    /// A copy of `len` bytes at `offset`.
    fn read(&self, offset: u64, len: u64) -> Result<Vec<u8>, StoreError>;
    /// Write bytes at `offset` (into an object created and not sealed yet).
    fn write(&mut self, offset: u64, bytes: &[u8]) -> Result<(), StoreError>;
}

pub mod memory;
