//! The object table: which key lives where in the arena, whether it is sealed, and who pins it.
//!
//! - `create` reserves space for an unsealed object; the writer fills it through the arena, then
//!   `seal`s it (or `abort`s it). Only sealed objects can be read (`get`) or pinned.
//! - A pin stands for a live reader (a Python view); `delete` of a pinned object only marks it,
//!   and the last `release` frees its memory. Marked objects are invisible to new readers.
//! - Every bad key or state comes back as a [`StoreError`]; nothing here panics.
//! - No byte is handed out above the arena's reserved mark: `create` reserves synchronously
//!   first ([`Arena::ensure_reserved`]) and fails as [`StoreError::Full`] when the file system is
//!   out of room, so a writer never meets SIGBUS.
//! - A `create` that fits in the free total but in no single hole compacts first (`compact`);
//!   `create_or_spill` and `restore` move least recently used objects to disk (`spill`). A
//!   logical clock, bumped by `create`, `seal`, `pin` and `get`, orders objects by last use.

use std::collections::HashMap;
use std::fmt::Debug;
use std::hash::Hash;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::alloc::Allocator;
use crate::arena::Arena;
use crate::error::StoreError;

/// Where an object lives in the arena: `len` bytes starting at `offset` (64-byte aligned).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Allocation {
    pub offset: u64,
    pub len: u64,
}

/// A snapshot of the store's occupancy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StoreStats {
    /// Bytes the store manages.
    pub capacity: u64,
    /// Bytes reserved by objects (rounded up to 64 each).
    pub used: u64,
    /// Objects in the table, sealed or not, including deleted ones still pinned.
    pub num_objects: u64,
    /// Objects with at least one pin.
    pub num_pinned: u64,
    /// Bytes reserved by pinned objects.
    pub pinned_bytes: u64,
    /// The largest object that can be created now without compacting or spilling.
    pub largest_free: u64,
    /// Bytes written to spill files since the store started.
    pub spilled_bytes_total: u64,
    /// Objects written to spill files since the store started.
    pub spilled_objects_total: u64,
    /// Bytes read back from spill files since the store started.
    pub restored_bytes_total: u64,
    /// Objects read back from spill files since the store started.
    pub restored_objects_total: u64,
    /// Compactions (sealed, unpinned objects slid to lower offsets) since the store started.
    pub compactions: u64,
}

/// Cumulative spill, restore and compaction counters.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) spilled_bytes: u64,
    pub(crate) spilled_objects: u64,
    pub(crate) restored_bytes: u64,
    pub(crate) restored_objects: u64,
    pub(crate) compactions: u64,
}

#[derive(Debug)]
pub(crate) struct Entry {
    pub(crate) alloc: Allocation,
    /// Bytes reserved in the allocator (`alloc.len` rounded up).
    pub(crate) reserved: u64,
    pub(crate) sealed: bool,
    pub(crate) pins: u64,
    /// `delete` was called while pinned: free on the last release.
    pub(crate) deleted: bool,
    /// Logical time of the last `create`, `seal`, `pin` or `get` (atomic so `get(&self)` can
    /// bump it).
    pub(crate) last_use: AtomicU64,
}

impl Entry {
    /// Sealed and held by no reader: compaction may move it and spilling may evict it.
    pub(crate) fn movable(&self) -> bool {
        self.sealed && self.pins == 0 && !self.deleted
    }
}

/// The per-node object store: an arena, its allocator, and the table of objects in it.
#[derive(Debug)]
pub struct Store<K> {
    pub(crate) arena: Arc<Arena>,
    pub(crate) alloc: Allocator,
    pub(crate) objects: HashMap<K, Entry>,
    num_pinned: u64,
    pinned_bytes: u64,
    /// The LRU clock.
    clock: AtomicU64,
    pub(crate) counters: Counters,
    /// Next spill file number.
    pub(crate) spill_seq: u64,
}

impl<K: Hash + Eq + Copy + Debug> Store<K> {
    /// A store managing the whole of `arena`.
    pub fn new(arena: Arena) -> Self {
        let alloc = Allocator::new(arena.len() as u64);
        let arena = Arc::new(arena);
        Store {
            arena,
            alloc,
            objects: HashMap::new(),
            num_pinned: 0,
            pinned_bytes: 0,
            clock: AtomicU64::new(0),
            counters: Counters::default(),
            spill_seq: 0,
        }
    }

    /// The arena objects live in.
    pub fn arena(&self) -> &Arena {
        &self.arena
    }

    /// A shared handle to the arena, for writers and readers that must not hold the store's
    /// lock while they copy (the mapping lives as long as any handle).
    pub fn shared_arena(&self) -> Arc<Arena> {
        Arc::clone(&self.arena)
    }

    /// Reserves space for a new, unsealed object of `len` bytes (zero-length objects take 64).
    ///
    /// When no hole is big enough but the free total is, sealed unpinned objects are first slid
    /// towards lower offsets (compaction), so their offsets change: take them from `get`/`pin`
    /// again rather than remembering them. Fails with [`StoreError::Full`] when the object does
    /// not fit even then, or when the file system cannot back the pages it would use.
    pub fn create(&mut self, key: K, len: u64) -> Result<Allocation, StoreError> {
        let size = self.check_new(&key, len)?;
        let offset = self.place(len, size).ok_or_else(|| self.full(len))?;
        Ok(self.insert(key, offset, len, size))
    }

    /// The block size of a new object of `len` bytes, or why it cannot be created.
    pub(crate) fn check_new(&self, key: &K, len: u64) -> Result<u64, StoreError> {
        if self.objects.contains_key(key) {
            return Err(StoreError::AlreadyExists);
        }
        let capacity = self.alloc.capacity();
        match Allocator::block_size(len) {
            Some(size) if size <= capacity => Ok(size),
            _ => Err(StoreError::TooLarge {
                requested: len,
                capacity,
            }),
        }
    }

    /// Finds room for `len` bytes (block `size`), compacting if that makes it fit, with its pages
    /// reserved; `None` when it does not fit.
    fn place(&mut self, len: u64, size: u64) -> Option<u64> {
        if let Some(offset) = self.alloc.alloc(len) {
            if self.reserve(offset + size) {
                return Some(offset);
            }
            self.alloc.free(offset);
        }
        let plan = self.plan(len, &[])?;
        if !self.reserve(plan.offset + size) {
            return None;
        }
        Some(self.apply(plan))
    }

    /// Reserves the arena's pages below `end`; false (logged) when the file system is full.
    pub(crate) fn reserve(&self, end: u64) -> bool {
        match self.arena.ensure_reserved(end) {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(
                    "object store cannot grow: {e}; treating it as full (free space on the \
                     arena's file system, or lower object_store_memory)"
                );
                false
            }
        }
    }

    /// Records a new unsealed object at `offset`.
    pub(crate) fn insert(&mut self, key: K, offset: u64, len: u64, size: u64) -> Allocation {
        let alloc = Allocation { offset, len };
        self.objects.insert(
            key,
            Entry {
                alloc,
                reserved: size,
                sealed: false,
                pins: 0,
                deleted: false,
                last_use: AtomicU64::new(self.tick()),
            },
        );
        tracing::trace!(?key, offset, len, "created object");
        alloc
    }

    /// The error for a request of `len` bytes that does not fit.
    pub(crate) fn full(&self, len: u64) -> StoreError {
        StoreError::Full {
            requested: len,
            capacity: self.alloc.capacity(),
            used: self.alloc.used(),
            pinned: self.pinned_bytes,
            pinned_objects: self.num_pinned,
        }
    }

    /// The next value of the LRU clock.
    fn tick(&self) -> u64 {
        self.clock.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Marks `e` as used now.
    fn touch(&self, e: &Entry) {
        e.last_use.store(self.tick(), Ordering::Relaxed);
    }

    /// Marks a created object as complete and readable.
    pub fn seal(&mut self, key: K) -> Result<Allocation, StoreError> {
        let now = self.tick();
        let e = self.objects.get_mut(&key).ok_or(StoreError::NotFound)?;
        if e.sealed {
            return Err(StoreError::AlreadySealed);
        }
        e.sealed = true;
        e.last_use.store(now, Ordering::Relaxed);
        Ok(e.alloc)
    }

    /// Drops an unsealed object (its writer gave up) and frees its space.
    pub fn abort(&mut self, key: K) -> Result<(), StoreError> {
        let e = self.objects.get(&key).ok_or(StoreError::NotFound)?;
        if e.sealed {
            return Err(StoreError::AlreadySealed);
        }
        self.remove(&key);
        Ok(())
    }

    /// Where a sealed, not deleted object lives. Counts as a use for LRU spilling.
    ///
    /// The offset stays valid only while the store is not changed: a later `create`,
    /// `create_or_spill` or `restore` may move (compact) or spill an unpinned object. Readers
    /// that keep the bytes beyond that must `pin`.
    pub fn get(&self, key: &K) -> Option<Allocation> {
        let e = self.objects.get(key).filter(|e| e.sealed && !e.deleted)?;
        self.touch(e);
        Some(e.alloc)
    }

    /// Whether a reader holds a pin on the object under `key` (deleted or not).
    pub fn is_pinned(&self, key: &K) -> bool {
        self.objects.get(key).is_some_and(|e| e.pins > 0)
    }

    /// Whether a sealed, not deleted object is in the store (not a use).
    pub fn contains(&self, key: &K) -> bool {
        self.objects
            .get(key)
            .is_some_and(|e| e.sealed && !e.deleted)
    }

    /// Pins a sealed object for a reader: it is not freed, moved or spilled until the matching
    /// `release`. Counts as a use for LRU spilling.
    ///
    /// Contract: nobody holds a pointer into an object that is not pinned. Compaction moves
    /// sealed, unpinned objects with `memmove` and spilling frees them, so a reader (a Python
    /// view, a transfer to a peer) must hold a pin for as long as it reads the bytes; a writer
    /// only ever writes its own unsealed allocation, which never moves.
    pub fn pin(&mut self, key: &K) -> Result<Allocation, StoreError> {
        let now = self.tick();
        let e = self
            .objects
            .get_mut(key)
            .filter(|e| !e.deleted)
            .ok_or(StoreError::NotFound)?;
        if !e.sealed {
            return Err(StoreError::NotSealed);
        }
        e.pins += 1;
        if e.pins == 1 {
            self.num_pinned += 1;
            self.pinned_bytes += e.reserved;
        }
        e.last_use.store(now, Ordering::Relaxed);
        Ok(e.alloc)
    }

    /// Drops one pin; frees the object if it was deleted and this was its last pin.
    pub fn release(&mut self, key: &K) -> Result<(), StoreError> {
        let e = self.objects.get_mut(key).ok_or(StoreError::NotFound)?;
        if e.pins == 0 {
            return Err(StoreError::NotPinned);
        }
        e.pins -= 1;
        if e.pins == 0 {
            self.num_pinned -= 1;
            self.pinned_bytes -= e.reserved;
            if e.deleted {
                self.remove(key);
            }
        }
        Ok(())
    }

    /// Deletes an object: frees it now if unpinned (returns `true`), otherwise hides it from new
    /// readers and frees it on the last `release` (returns `false`). Deleting an unsealed object
    /// frees it like `abort`; deleting an object already waiting for its last release is a no-op.
    pub fn delete(&mut self, key: &K) -> Result<bool, StoreError> {
        let e = self.objects.get_mut(key).ok_or(StoreError::NotFound)?;
        if e.pins > 0 {
            e.deleted = true;
            return Ok(false);
        }
        self.remove(key);
        Ok(true)
    }

    /// The sealed object under `key`, deleted or not: a `delete` still waiting for its last
    /// release is taken back, since its bytes were never freed. `None` when there is no sealed
    /// object under `key`. Counts as a use for LRU spilling.
    pub fn revive(&mut self, key: &K) -> Option<Allocation> {
        let now = self.tick();
        let e = self.objects.get_mut(key).filter(|e| e.sealed)?;
        e.deleted = false;
        e.last_use.store(now, Ordering::Relaxed);
        Some(e.alloc)
    }

    /// Occupancy figures.
    pub fn stats(&self) -> StoreStats {
        StoreStats {
            capacity: self.alloc.capacity(),
            used: self.alloc.used(),
            num_objects: self.objects.len() as u64,
            num_pinned: self.num_pinned,
            pinned_bytes: self.pinned_bytes,
            largest_free: self.alloc.largest_free(),
            spilled_bytes_total: self.counters.spilled_bytes,
            spilled_objects_total: self.counters.spilled_objects,
            restored_bytes_total: self.counters.restored_bytes,
            restored_objects_total: self.counters.restored_objects,
            compactions: self.counters.compactions,
        }
    }

    /// Removes an unpinned entry and frees its block.
    pub(crate) fn remove(&mut self, key: &K) {
        if let Some(e) = self.objects.remove(key) {
            self.alloc.free(e.alloc.offset);
            tracing::trace!(?key, offset = e.alloc.offset, "freed object");
        }
    }
}

#[cfg(test)]
#[path = "store_tests.rs"]
pub(crate) mod tests;
