//! An object store in plain memory, with the shared-memory store's rules:
//! the core's own tests and the simulator run the node on it.
//!
//! It keeps what `peer-objstore`'s store keeps and answers as it does:
//! objects created unsealed, sealed, pinned by readers; a delete of a pinned
//! object hides it and frees it on the last release; reservations rounded
//! up to 64 bytes against a capacity; least recently used objects spilled
//! (to files in memory) when a request does not fit, and restored from them.
//! Each object's bytes live in their own buffer at an offset that is never
//! reused, so fragmentation (which the real store cures by compaction) never
//! arises. A [`MemStore`] is a handle: clones share one store, so a test or
//! a simulated worker reads and writes what the node's core sees.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use rustc_hash::FxHashMap;

use super::{Allocation, ObjectStore, Spilled, StoreError, StoreStats};
use crate::ids::ObjectId;

/// Every reservation is a multiple of this many bytes (the arena's alignment).
const ALIGN: u64 = 64;

#[derive(Debug)]
struct Entry {
    alloc: Allocation,
    reserved: u64,
    sealed: bool,
    pins: u64,
    deleted: bool,
    last_use: u64,
    bytes: Vec<u8>,
}

#[derive(Debug, Default)]
struct Inner {
    capacity: u64,
    used: u64,
    objects: FxHashMap<ObjectId, Entry>,
    /// Offset → object, to find the object a read or write falls into.
    by_offset: BTreeMap<u64, ObjectId>,
    next_offset: u64,
    clock: u64,
    /// Spill files: path → bytes.
    disk: FxHashMap<PathBuf, Vec<u8>>,
    spill_seq: u64,
    spilled_bytes: u64,
    spilled_objects: u64,
    restored_bytes: u64,
    restored_objects: u64,
}

/// A handle on an in-memory object store (clones share it).
#[derive(Debug, Clone)]
pub struct MemStore {
    inner: Arc<Mutex<Inner>>,
}

fn reserved(len: u64) -> u64 {
    len.max(1).div_ceil(ALIGN) * ALIGN
}

impl Inner {
    fn tick(&mut self) -> u64 {
        self.clock += 1;
        self.clock
    }

    fn pinned(&self) -> (u64, u64) {
        self.objects
            .values()
            .filter(|e| e.pins > 0)
            .fold((0, 0), |(n, b), e| (n + 1, b + e.reserved))
    }

    fn full(&self, requested: u64) -> StoreError {
        let (pinned_objects, pinned) = self.pinned();
        StoreError::Full(format!(
            "object store full: cannot allocate {requested} bytes ({} of {} bytes in use; \
             {pinned} bytes in {pinned_objects} pinned objects that live readers hold); raise \
             object_store_memory or free references",
            self.used, self.capacity
        ))
    }

    fn remove(&mut self, id: &ObjectId) -> Option<Entry> {
        let e = self.objects.remove(id)?;
        self.used -= e.reserved;
        self.by_offset.remove(&e.alloc.offset);
        Some(e)
    }

    /// Room for `len` bytes, spilling least recently used objects (never `keep`).
    fn make_room(&mut self, len: u64) -> Result<Vec<Spilled>, StoreError> {
        let size = reserved(len);
        if size > self.capacity {
            return Err(StoreError::Other(format!(
                "object of {len} bytes is larger than the whole object store ({} bytes); \
                 raise object_store_memory",
                self.capacity
            )));
        }
        if self.used + size <= self.capacity {
            return Ok(Vec::new());
        }
        let mut victims: Vec<(u64, ObjectId, u64)> = self
            .objects
            .iter()
            .filter(|(_, e)| e.sealed && e.pins == 0 && !e.deleted)
            .map(|(id, e)| (e.last_use, *id, e.reserved))
            .collect();
        victims.sort();
        let mut free = self.capacity - self.used;
        let mut n = 0;
        while free < size && n < victims.len() {
            free += victims[n].2;
            n += 1;
        }
        if free < size {
            return Err(self.full(len));
        }
        let mut out = Vec::with_capacity(n);
        for (_, id, _) in &victims[..n] {
            let Some(e) = self.remove(id) else { continue };
            self.spill_seq += 1;
            let path = PathBuf::from(format!("memory-spill/{}-{id}", self.spill_seq));
            self.spilled_bytes += e.alloc.len;
            self.spilled_objects += 1;
            out.push(Spilled {
                id: *id,
                path: path.clone(),
                len: e.alloc.len,
            });
            self.disk.insert(path, e.bytes);
        }
        Ok(out)
    }

    fn insert(&mut self, id: ObjectId, len: u64, sealed: bool, bytes: Vec<u8>) -> Allocation {
        let size = reserved(len);
        let offset = self.next_offset;
        self.next_offset += size;
        let alloc = Allocation { offset, len };
        let last_use = self.tick();
        self.used += size;
        self.by_offset.insert(offset, id);
        self.objects.insert(
            id,
            Entry {
                alloc,
                reserved: size,
                sealed,
                pins: 0,
                deleted: false,
                last_use,
                bytes,
            },
        );
        alloc
    }

    /// The object whose bytes hold `offset..offset + len`.
    fn at(&mut self, offset: u64, len: u64) -> Result<&mut Entry, StoreError> {
        let outside = || {
            StoreError::Other(format!(
                "range at offset {offset} of {len} bytes is in no object"
            ))
        };
        let (_, id) = self
            .by_offset
            .range(..=offset)
            .next_back()
            .ok_or_else(outside)?;
        let e = self.objects.get_mut(id).ok_or_else(outside)?;
        if offset + len > e.alloc.offset + e.alloc.len {
            return Err(outside());
        }
        Ok(e)
    }
}

impl MemStore {
    /// A store of `capacity` bytes.
    pub fn new(capacity: u64) -> Self {
        Self {
            inner: Arc::new(Mutex::new(Inner {
                capacity,
                next_offset: ALIGN,
                ..Inner::default()
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding it is a test failure already.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether a sealed, not deleted object is in the store.
    pub fn contains(&self, id: &ObjectId) -> bool {
        self.lock()
            .objects
            .get(id)
            .is_some_and(|e| e.sealed && !e.deleted)
    }

    /// Whether a spill file exists (the core deletes those of freed objects).
    pub fn has_spill_file(&self, path: &Path) -> bool {
        self.lock().disk.contains_key(path)
    }

    /// Carry out [`Command::DeleteSpillFile`](crate::Command::DeleteSpillFile).
    pub fn delete_spill_file(&self, path: &Path) {
        self.lock().disk.remove(path);
    }

    /// Spill files that exist now.
    pub fn spill_files(&self) -> usize {
        self.lock().disk.len()
    }
}

impl ObjectStore for MemStore {
    fn create(&mut self, id: ObjectId, len: u64) -> Result<(Allocation, Vec<Spilled>), StoreError> {
        let mut s = self.lock();
        if s.objects.contains_key(&id) {
            return Err(StoreError::AlreadyExists);
        }
        let spilled = s.make_room(len)?;
        let alloc = s.insert(id, len, false, vec![0; len as usize]);
        Ok((alloc, spilled))
    }

    fn restore(
        &mut self,
        id: ObjectId,
        path: &Path,
        len: u64,
    ) -> Result<(Allocation, Vec<Spilled>), StoreError> {
        let mut s = self.lock();
        if s.objects.contains_key(&id) {
            return Err(StoreError::AlreadyExists);
        }
        let bytes = match s.disk.get(path) {
            Some(b) if b.len() as u64 == len => b.clone(),
            Some(b) => {
                return Err(StoreError::Other(format!(
                    "spill file {} holds {} bytes, expected {len}",
                    path.display(),
                    b.len()
                )));
            }
            None => {
                return Err(StoreError::Other(format!(
                    "restoring spilled object from {}: no such file",
                    path.display()
                )));
            }
        };
        let spilled = s.make_room(len)?;
        let alloc = s.insert(id, len, true, bytes);
        s.disk.remove(path);
        s.restored_bytes += len;
        s.restored_objects += 1;
        Ok((alloc, spilled))
    }

    fn seal(&mut self, id: ObjectId) -> Result<Allocation, StoreError> {
        let mut s = self.lock();
        let now = s.tick();
        let e = s
            .objects
            .get_mut(&id)
            .ok_or_else(|| StoreError::Other("object not found in the store".into()))?;
        if e.sealed {
            return Err(StoreError::AlreadySealed);
        }
        e.sealed = true;
        e.last_use = now;
        Ok(e.alloc)
    }

    fn abort(&mut self, id: ObjectId) -> Result<(), StoreError> {
        let mut s = self.lock();
        match s.objects.get(&id) {
            None => Err(StoreError::Other("object not found in the store".into())),
            Some(e) if e.sealed => Err(StoreError::AlreadySealed),
            Some(_) => {
                s.remove(&id);
                Ok(())
            }
        }
    }

    fn get(&self, id: &ObjectId) -> Option<Allocation> {
        let mut s = self.lock();
        let now = s.tick();
        let e = s.objects.get_mut(id).filter(|e| e.sealed && !e.deleted)?;
        e.last_use = now;
        Some(e.alloc)
    }

    fn is_pinned(&self, id: &ObjectId) -> bool {
        self.lock().objects.get(id).is_some_and(|e| e.pins > 0)
    }

    fn pin(&mut self, id: &ObjectId) -> Result<Allocation, StoreError> {
        let mut s = self.lock();
        let now = s.tick();
        let e = s
            .objects
            .get_mut(id)
            .filter(|e| !e.deleted)
            .ok_or_else(|| StoreError::Other("object not found in the store".into()))?;
        if !e.sealed {
            return Err(StoreError::Other("object is not sealed yet".into()));
        }
        e.pins += 1;
        e.last_use = now;
        Ok(e.alloc)
    }

    fn release(&mut self, id: &ObjectId) -> Result<(), StoreError> {
        let mut s = self.lock();
        let e = s
            .objects
            .get_mut(id)
            .ok_or_else(|| StoreError::Other("object not found in the store".into()))?;
        if e.pins == 0 {
            return Err(StoreError::Other(
                "object is not pinned; each release must match one pin".into(),
            ));
        }
        e.pins -= 1;
        if e.pins == 0 && e.deleted {
            s.remove(id);
        }
        Ok(())
    }

    fn delete(&mut self, id: &ObjectId) -> Result<bool, StoreError> {
        let mut s = self.lock();
        let e = s
            .objects
            .get_mut(id)
            .ok_or_else(|| StoreError::Other("object not found in the store".into()))?;
        if e.pins > 0 {
            e.deleted = true;
            return Ok(false);
        }
        s.remove(id);
        Ok(true)
    }

    fn revive(&mut self, id: &ObjectId) -> Option<Allocation> {
        let mut s = self.lock();
        let now = s.tick();
        let e = s.objects.get_mut(id).filter(|e| e.sealed)?;
        e.deleted = false;
        e.last_use = now;
        Some(e.alloc)
    }

    fn stats(&self) -> StoreStats {
        let s = self.lock();
        let (num_pinned, pinned_bytes) = s.pinned();
        StoreStats {
            capacity: s.capacity,
            used: s.used,
            num_objects: s.objects.len() as u64,
            num_pinned,
            pinned_bytes,
            largest_free: s.capacity - s.used,
            spilled_bytes_total: s.spilled_bytes,
            spilled_objects_total: s.spilled_objects,
            restored_bytes_total: s.restored_bytes,
            restored_objects_total: s.restored_objects,
            compactions: 0,
        }
    }

    fn read(&self, offset: u64, len: u64) -> Result<Vec<u8>, StoreError> {
        let mut s = self.lock();
        let e = s.at(offset, len)?;
        let start = (offset - e.alloc.offset) as usize;
        Ok(e.bytes[start..start + len as usize].to_vec())
    }

    fn write(&mut self, offset: u64, bytes: &[u8]) -> Result<(), StoreError> {
        let mut s = self.lock();
        let e = s.at(offset, bytes.len() as u64)?;
        let start = (offset - e.alloc.offset) as usize;
        e.bytes[start..start + bytes.len()].copy_from_slice(bytes);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> ObjectId {
        ObjectId([n; 20])
    }

    #[test]
    fn follows_the_shared_memory_store_rules() {
        let mut s = MemStore::new(1024);
        let (a, spilled) = s.create(id(1), 100).unwrap();
        assert!(spilled.is_empty());
        assert_eq!(s.create(id(1), 10), Err(StoreError::AlreadyExists));
        assert_eq!(s.get(&id(1)), None, "unsealed objects are not readable");
        s.write(a.offset, &[7; 100]).unwrap();
        assert_eq!(s.seal(id(1)), Ok(a));
        assert_eq!(s.seal(id(1)), Err(StoreError::AlreadySealed));
        assert_eq!(s.read(a.offset + 10, 5).unwrap(), vec![7; 5]);
        assert_eq!(s.stats().used, 128);
        s.pin(&id(1)).unwrap();
        assert_eq!(s.delete(&id(1)), Ok(false), "pinned: only hidden");
        assert!(!s.contains(&id(1)));
        assert_eq!(s.revive(&id(1)), Some(a), "a pending delete is taken back");
        assert_eq!(s.delete(&id(1)), Ok(false));
        s.release(&id(1)).unwrap();
        assert_eq!(s.stats().num_objects, 0, "freed on the last release");
        assert!(s.release(&id(1)).is_err());
    }

    #[test]
    fn spills_the_least_recently_used_and_restores_them() {
        let mut s = MemStore::new(256);
        for n in 1..=2 {
            let (a, _) = s.create(id(n), 128).unwrap();
            s.write(a.offset, &[n; 128]).unwrap();
            s.seal(id(n)).unwrap();
        }
        s.get(&id(1));
        let (_, spilled) = s.create(id(3), 100).unwrap();
        assert_eq!(spilled.len(), 1);
        assert_eq!(spilled[0].id, id(2), "the least recently used goes");
        s.pin(&id(1)).unwrap();
        assert!(matches!(s.create(id(4), 200), Err(StoreError::Full(_))));
        s.abort(id(3)).unwrap();
        let (a, again) = s.restore(id(2), &spilled[0].path, 128).unwrap();
        assert!(again.is_empty());
        assert_eq!(s.read(a.offset, 128).unwrap(), vec![2; 128]);
        assert!(!s.has_spill_file(&spilled[0].path));
    }
}
