//! The object table: which key lives where in the arena, whether it is sealed, and who pins it.
//!
//! - `create` reserves space for an unsealed object; the writer fills it through the arena, then
//!   `seal`s it (or `abort`s it). Only sealed objects can be read (`get`) or pinned.
//! - A pin stands for a live reader (a Python view); `delete` of a pinned object only marks it,
//!   and the last `release` frees its memory. Marked objects are invisible to new readers.
//! - Every bad key or state comes back as a [`StoreError`]; nothing here panics.

use std::collections::HashMap;
use std::fmt::Debug;
use std::hash::Hash;

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
    /// The largest object that can be created now.
    pub largest_free: u64,
}

#[derive(Debug)]
struct Entry {
    alloc: Allocation,
    /// Bytes reserved in the allocator (`alloc.len` rounded up).
    reserved: u64,
    sealed: bool,
    pins: u64,
    /// `delete` was called while pinned: free on the last release.
    deleted: bool,
}

/// The per-node object store: an arena, its allocator, and the table of objects in it.
#[derive(Debug)]
pub struct Store<K> {
    arena: std::sync::Arc<Arena>,
    alloc: Allocator,
    objects: HashMap<K, Entry>,
    num_pinned: u64,
    pinned_bytes: u64,
}

impl<K: Hash + Eq + Copy + Debug> Store<K> {
    /// A store managing the whole of `arena`.
    pub fn new(arena: Arena) -> Self {
        let alloc = Allocator::new(arena.len() as u64);
        let arena = std::sync::Arc::new(arena);
        Store {
            arena,
            alloc,
            objects: HashMap::new(),
            num_pinned: 0,
            pinned_bytes: 0,
        }
    }

    /// The arena objects live in.
    pub fn arena(&self) -> &Arena {
        &self.arena
    }

    /// A shared handle to the arena, for writers and readers that must not hold the store's
    /// lock while they copy (the mapping lives as long as any handle).
    pub fn shared_arena(&self) -> std::sync::Arc<Arena> {
        std::sync::Arc::clone(&self.arena)
    }

    /// Reserves space for a new, unsealed object of `len` bytes (zero-length objects take 64).
    pub fn create(&mut self, key: K, len: u64) -> Result<Allocation, StoreError> {
        if self.objects.contains_key(&key) {
            return Err(StoreError::AlreadyExists);
        }
        let capacity = self.alloc.capacity();
        let reserved = match Allocator::block_size(len) {
            Some(r) if r <= capacity => r,
            _ => {
                return Err(StoreError::TooLarge {
                    requested: len,
                    capacity,
                });
            }
        };
        let offset = self.alloc.alloc(len).ok_or(StoreError::Full {
            requested: len,
            capacity,
            used: self.alloc.used(),
            pinned: self.pinned_bytes,
        })?;
        let alloc = Allocation { offset, len };
        self.objects.insert(
            key,
            Entry {
                alloc,
                reserved,
                sealed: false,
                pins: 0,
                deleted: false,
            },
        );
        tracing::trace!(?key, offset, len, "created object");
        Ok(alloc)
    }

    /// Marks a created object as complete and readable.
    pub fn seal(&mut self, key: K) -> Result<Allocation, StoreError> {
        let e = self.objects.get_mut(&key).ok_or(StoreError::NotFound)?;
        if e.sealed {
            return Err(StoreError::AlreadySealed);
        }
        e.sealed = true;
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

    /// Where a sealed, not deleted object lives.
    pub fn get(&self, key: &K) -> Option<Allocation> {
        self.objects
            .get(key)
            .filter(|e| e.sealed && !e.deleted)
            .map(|e| e.alloc)
    }

    /// Whether a sealed, not deleted object is in the store.
    pub fn contains(&self, key: &K) -> bool {
        self.get(key).is_some()
    }

    /// Pins a sealed object for a reader: it is not freed until the matching `release`.
    pub fn pin(&mut self, key: &K) -> Result<Allocation, StoreError> {
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

    /// Occupancy figures.
    pub fn stats(&self) -> StoreStats {
        StoreStats {
            capacity: self.alloc.capacity(),
            used: self.alloc.used(),
            num_objects: self.objects.len() as u64,
            num_pinned: self.num_pinned,
            pinned_bytes: self.pinned_bytes,
            largest_free: self.alloc.largest_free(),
        }
    }

    /// Removes an unpinned entry and frees its block.
    fn remove(&mut self, key: &K) {
        if let Some(e) = self.objects.remove(key) {
            self.alloc.free(e.alloc.offset);
            tracing::trace!(?key, offset = e.alloc.offset, "freed object");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arena::tests::test_arena;

    fn store(tag: &str, size: usize) -> (Store<u64>, tempfile::TempDir) {
        let (arena, dir) = test_arena(tag, size);
        (Store::new(arena), dir)
    }

    #[test]
    fn store_is_send() {
        fn check<T: Send>() {}
        check::<Store<u64>>();
        check::<Store<[u8; 20]>>();
    }

    #[test]
    fn create_seal_get_roundtrip() {
        let (mut s, _dir) = store("roundtrip", 1 << 20);
        let a = s.create(1, 100).unwrap();
        assert_eq!(a.len, 100);
        assert_eq!(a.offset % 64, 0);
        assert_eq!(s.get(&1), None, "unsealed objects are invisible");
        assert!(!s.contains(&1));
        assert!(matches!(s.pin(&1), Err(StoreError::NotSealed)));
        s.arena().write(a.offset, &[42; 100]).unwrap();
        assert_eq!(s.seal(1).unwrap(), a);
        assert!(matches!(s.seal(1), Err(StoreError::AlreadySealed)));
        assert_eq!(s.get(&1), Some(a));
        assert_eq!(s.arena().slice(a.offset, a.len).unwrap(), &[42; 100][..]);
        assert!(matches!(s.create(1, 5), Err(StoreError::AlreadyExists)));
        assert!(matches!(s.abort(1), Err(StoreError::AlreadySealed)));
    }

    #[test]
    fn unknown_keys_are_errors() {
        let (mut s, _dir) = store("unknown", 1 << 16);
        assert!(matches!(s.seal(9), Err(StoreError::NotFound)));
        assert!(matches!(s.abort(9), Err(StoreError::NotFound)));
        assert!(matches!(s.pin(&9), Err(StoreError::NotFound)));
        assert!(matches!(s.release(&9), Err(StoreError::NotFound)));
        assert!(matches!(s.delete(&9), Err(StoreError::NotFound)));
        assert_eq!(s.get(&9), None);
    }

    #[test]
    fn zero_length_objects_take_64_bytes() {
        let (mut s, _dir) = store("zero", 1 << 16);
        let a = s.create(1, 0).unwrap();
        let b = s.create(2, 0).unwrap();
        assert_ne!(a.offset, b.offset);
        assert_eq!(a.len, 0);
        assert_eq!(s.stats().used, 128);
        s.seal(1).unwrap();
        assert!(s.arena().slice(a.offset, a.len).unwrap().is_empty());
    }

    #[test]
    fn abort_frees_space() {
        let (mut s, _dir) = store("abort", 1 << 16);
        s.create(1, 1000).unwrap();
        s.abort(1).unwrap();
        assert_eq!(s.stats().used, 0);
        assert_eq!(s.stats().num_objects, 0);
        assert!(matches!(s.abort(1), Err(StoreError::NotFound)));
    }

    #[test]
    fn too_large_and_full() {
        let (mut s, _dir) = store("full", 1 << 16);
        let cap = s.stats().capacity;
        let err = s.create(1, cap + 1).unwrap_err();
        assert!(matches!(err, StoreError::TooLarge { .. }), "{err:?}");
        assert!(matches!(
            s.create(1, u64::MAX),
            Err(StoreError::TooLarge { .. })
        ));
        s.create(1, cap / 2).unwrap();
        s.seal(1).unwrap();
        s.pin(&1).unwrap();
        match s.create(2, cap / 2 + 1).unwrap_err() {
            StoreError::Full {
                requested,
                capacity,
                used,
                pinned,
            } => {
                assert_eq!(
                    (requested, capacity, used, pinned),
                    (cap / 2 + 1, cap, cap / 2, cap / 2)
                );
            }
            other => panic!("expected Full, got {other:?}"),
        }
        assert_eq!(s.stats().num_objects, 1);
    }

    #[test]
    fn filling_up_never_corrupts_existing_objects() {
        let (mut s, _dir) = store("fill", 1 << 20);
        let mut objects = Vec::new();
        let mut key = 0u64;
        let full = loop {
            let len = 1000 + (key * 7919) % 30_000;
            match s.create(key, len) {
                Ok(a) => {
                    let fill: Vec<u8> = (0..len).map(|i| (i ^ key) as u8).collect();
                    s.arena().write(a.offset, &fill).unwrap();
                    s.seal(key).unwrap();
                    objects.push((key, fill));
                    key += 1;
                }
                Err(e) => break e,
            }
        };
        assert!(matches!(full, StoreError::Full { .. }), "{full:?}");
        assert!(full.to_string().contains("free references"));
        // Free every other object and refill the holes with other patterns.
        for (k, _) in objects.iter().step_by(2) {
            assert!(s.delete(k).unwrap());
        }
        objects = objects.into_iter().skip(1).step_by(2).collect();
        while let Ok(a) = s.create(key, 900) {
            let fill = vec![0xEE; 900];
            s.arena().write(a.offset, &fill).unwrap();
            s.seal(key).unwrap();
            objects.push((key, fill));
            key += 1;
        }
        for (k, fill) in &objects {
            let a = s.get(k).unwrap();
            assert_eq!(
                s.arena().slice(a.offset, a.len).unwrap(),
                &fill[..],
                "object {k}"
            );
        }
        let st = s.stats();
        assert_eq!(st.num_objects, objects.len() as u64);
        for (k, _) in &objects {
            assert!(s.delete(k).unwrap());
        }
        assert_eq!(s.stats().used, 0);
        assert_eq!(s.stats().largest_free, s.stats().capacity);
    }

    #[test]
    fn delete_waits_for_the_last_release() {
        let (mut s, _dir) = store("pins", 1 << 16);
        let a = s.create(1, 500).unwrap();
        s.seal(1).unwrap();
        assert_eq!(s.pin(&1).unwrap(), a);
        s.pin(&1).unwrap();
        let st = s.stats();
        assert_eq!((st.num_pinned, st.pinned_bytes), (1, 512));

        assert!(!s.delete(&1).unwrap(), "pinned objects are not freed now");
        assert_eq!(
            s.get(&1),
            None,
            "deleted objects are hidden from new readers"
        );
        assert!(matches!(s.pin(&1), Err(StoreError::NotFound)));
        assert!(matches!(s.create(1, 10), Err(StoreError::AlreadyExists)));
        assert!(!s.delete(&1).unwrap(), "a second delete is a no-op");
        assert_eq!(s.stats().used, 512);

        s.release(&1).unwrap();
        assert_eq!(s.stats().used, 512, "one pin is still held");
        s.release(&1).unwrap();
        let st = s.stats();
        assert_eq!(
            (st.used, st.num_objects, st.num_pinned, st.pinned_bytes),
            (0, 0, 0, 0)
        );
        assert!(matches!(s.release(&1), Err(StoreError::NotFound)));
        // The key can be reused once freed.
        s.create(1, 10).unwrap();
    }

    #[test]
    fn release_without_pin_and_unpinned_delete() {
        let (mut s, _dir) = store("release", 1 << 16);
        s.create(1, 64).unwrap();
        s.seal(1).unwrap();
        assert!(matches!(s.release(&1), Err(StoreError::NotPinned)));
        s.pin(&1).unwrap();
        s.release(&1).unwrap();
        assert!(matches!(s.release(&1), Err(StoreError::NotPinned)));
        assert_eq!(s.stats().num_pinned, 0);
        assert!(s.contains(&1), "release without delete keeps the object");
        assert!(s.delete(&1).unwrap());
        assert!(!s.contains(&1));
        // Deleting an unsealed object frees it like abort.
        s.create(2, 64).unwrap();
        assert!(s.delete(&2).unwrap());
        assert_eq!(s.stats().used, 0);
    }
}
