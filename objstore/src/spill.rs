//! Spilling: moving least recently used objects out of the arena into files, and back.
//!
//! - [`Store::create_or_spill`] is `create` that, when the request does not fit even after
//!   compaction, writes the least recently used sealed, unpinned objects to files in a spill
//!   directory and drops them from the store, oldest first, until it fits. It picks the victims
//!   by planning first (pure bookkeeping, see `compact`), writes their files, and only then
//!   changes the store, so a failed spill (disk full) leaves the store exactly as it was and a
//!   successful one always reports every object it evicted.
//! - [`Store::restore`] reads a spilled object back (spilling others if needed, never the one
//!   being restored), seals it and deletes its file.
//! - Files are named `<counter>-<key>` (the key's `Debug`, restricted to `[0-9a-zA-Z_-]`), created
//!   exclusively with mode 0600 in a directory created with mode 0700 if missing. They are not
//!   fsynced: a spill file only has to outlive the node process, not the machine.

use std::fmt::Debug;
use std::fs::{DirBuilder, File, OpenOptions};
use std::hash::Hash;
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use crate::error::StoreError;
use crate::store::{Allocation, Store};

/// Longest key part of a spill file name.
const MAX_KEY_CHARS: usize = 96;
/// Attempts at a fresh file name before giving up (names only clash with leftovers of an
/// earlier run that used the same directory).
const NAME_ATTEMPTS: u32 = 1000;

/// An object that was moved out of the store into a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spilled<K> {
    pub key: K,
    /// The file holding exactly the object's bytes.
    pub path: PathBuf,
    /// The object's length (and the file's).
    pub len: u64,
}

impl<K: Hash + Eq + Copy + Debug> Store<K> {
    /// Like [`Store::create`], but when the object does not fit even after compaction, spills the
    /// least recently used sealed, unpinned objects to new files in `spill_dir` (created if
    /// missing) and removes them from the store until it fits; returns the allocation and which
    /// objects went where. Fails with [`StoreError::Full`] (naming the pinned bytes) when even
    /// spilling every unpinned object would not make room, and with [`StoreError::Io`] when a
    /// spill file cannot be written; in both cases the store is unchanged.
    pub fn create_or_spill(
        &mut self,
        key: K,
        len: u64,
        spill_dir: &Path,
    ) -> Result<(Allocation, Vec<Spilled<K>>), StoreError> {
        match self.create(key, len) {
            Err(StoreError::Full { .. }) => {}
            other => return other.map(|a| (a, Vec::new())),
        }
        let size = self.check_new(&key, len)?;
        let victims = self.lru_order();
        let mut free = self.alloc.capacity() - self.alloc.used();
        for n in 1..=victims.len() {
            free += self.objects.get(&victims[n - 1]).map_or(0, |e| e.reserved);
            if free < size {
                continue;
            }
            let Some(plan) = self.plan(len, &victims[..n]) else {
                continue;
            };
            if !self.reserve(plan.offset + size) {
                continue;
            }
            let spilled = self.spill(&victims[..n], spill_dir)?;
            let offset = self.apply(plan);
            return Ok((self.insert(key, offset, len, size), spilled));
        }
        Err(self.full(len))
    }

    /// Reads a spilled object back from `path` (which must hold exactly `len` bytes) into the
    /// store as `key`, spilling least recently used objects to `spill_dir` if needed, seals it
    /// and deletes the file. On any error the object is not in the store and the file is kept.
    pub fn restore(
        &mut self,
        key: K,
        path: &Path,
        len: u64,
        spill_dir: &Path,
    ) -> Result<(Allocation, Vec<Spilled<K>>), StoreError> {
        if self.objects.contains_key(&key) {
            return Err(StoreError::AlreadyExists);
        }
        if !self.arena.is_writable() {
            return Err(StoreError::io(
                "restoring into a read-only arena",
                io::ErrorKind::PermissionDenied.into(),
            ));
        }
        let ctx = || format!("restoring spilled object from {}", path.display());
        let mut file = File::open(path).map_err(|e| StoreError::io(ctx(), e))?;
        let actual = file.metadata().map_err(|e| StoreError::io(ctx(), e))?.len();
        if actual != len {
            return Err(StoreError::io(
                format!(
                    "spill file {} holds {actual} bytes, expected {len}",
                    path.display()
                ),
                io::ErrorKind::InvalidData.into(),
            ));
        }
        let (alloc, spilled) = match self.create(key, len) {
            Ok(a) => {
                if let Err(e) = self.arena.fill_from(a.offset, len, &mut file) {
                    self.remove(&key);
                    return Err(e);
                }
                (a, Vec::new())
            }
            Err(StoreError::Full { .. }) => {
                // Read the file before evicting anything: once others are spilled, nothing may
                // fail, or the caller would never learn where they went.
                let mut buf = Vec::new();
                let read = (&mut file).take(len).read_to_end(&mut buf);
                match read {
                    Ok(n) if n as u64 == len => {}
                    Ok(n) => {
                        return Err(StoreError::io(
                            format!(
                                "spill file {} ended after {n} of {len} bytes",
                                path.display()
                            ),
                            io::ErrorKind::UnexpectedEof.into(),
                        ));
                    }
                    Err(e) => return Err(StoreError::io(ctx(), e)),
                }
                let (a, spilled) = self.create_or_spill(key, len, spill_dir)?;
                // In bounds (handed out by the store) and writable (checked above).
                if let Err(e) = self.arena.write(a.offset, &buf) {
                    tracing::error!("restoring {key:?} after spilling {spilled:?}: {e}");
                }
                (a, spilled)
            }
            Err(e) => return Err(e),
        };
        let alloc = self.seal(key).unwrap_or(alloc);
        self.counters.restored_bytes += len;
        self.counters.restored_objects += 1;
        if let Err(e) = std::fs::remove_file(path) {
            tracing::warn!(
                "could not remove restored spill file {}: {e}",
                path.display()
            );
        }
        tracing::debug!(?key, len, path = %path.display(), "restored spilled object");
        Ok((alloc, spilled))
    }

    /// Sealed, unpinned objects, least recently used first.
    fn lru_order(&self) -> Vec<K> {
        let mut v: Vec<(u64, K)> = self
            .objects
            .iter()
            .filter(|(_, e)| e.movable())
            .map(|(k, e)| (e.last_use.load(Ordering::Relaxed), *k))
            .collect();
        v.sort_unstable_by_key(|&(t, _)| t);
        v.into_iter().map(|(_, k)| k).collect()
    }

    /// Writes `victims` to files in `dir` and then removes them from the table (not from the
    /// allocator: the plan being applied replaces it). If any file cannot be written, the ones
    /// already written are deleted and the store is left unchanged.
    fn spill(&mut self, victims: &[K], dir: &Path) -> Result<Vec<Spilled<K>>, StoreError> {
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| {
                StoreError::io(format!("creating spill directory {}", dir.display()), e)
            })?;
        let mut done: Vec<Spilled<K>> = Vec::with_capacity(victims.len());
        for &key in victims {
            let Some(e) = self.objects.get(&key) else {
                continue;
            };
            let (offset, len) = (e.alloc.offset, e.alloc.len);
            let arena = std::sync::Arc::clone(&self.arena);
            let written = arena
                .slice(offset, len)
                .and_then(|bytes| write_spill_file(dir, &key, bytes, &mut self.spill_seq));
            match written {
                Ok(path) => done.push(Spilled { key, path, len }),
                Err(err) => {
                    for s in &done {
                        let _ = std::fs::remove_file(&s.path);
                    }
                    return Err(err);
                }
            }
        }
        for s in &done {
            self.objects.remove(&s.key);
            self.counters.spilled_bytes += s.len;
            self.counters.spilled_objects += 1;
            tracing::debug!(key = ?s.key, len = s.len, path = %s.path.display(), "spilled object");
        }
        Ok(done)
    }
}

/// Writes `bytes` to a new file in `dir` named after the next value of `seq` and `key`.
fn write_spill_file<K: Debug>(
    dir: &Path,
    key: &K,
    bytes: &[u8],
    seq: &mut u64,
) -> Result<PathBuf, StoreError> {
    let stem = file_stem(key);
    for _ in 0..NAME_ATTEMPTS {
        let path = dir.join(format!("{:08}-{stem}", *seq));
        *seq += 1;
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path);
        let mut file = match file {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => {
                return Err(StoreError::io(
                    format!("creating spill file {}", path.display()),
                    e,
                ));
            }
        };
        if let Err(e) = file.write_all(bytes) {
            drop(file);
            let _ = std::fs::remove_file(&path);
            return Err(StoreError::io(
                format!("writing spill file {}", path.display()),
                e,
            ));
        }
        return Ok(path);
    }
    Err(StoreError::io(
        format!(
            "no free spill file name in {} after {NAME_ATTEMPTS} tries",
            dir.display()
        ),
        io::ErrorKind::AlreadyExists.into(),
    ))
}

/// The key part of a spill file name: its `Debug` form restricted to `[0-9a-zA-Z_-]`.
fn file_stem<K: Debug>(key: &K) -> String {
    format!("{key:?}")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .take(MAX_KEY_CHARS)
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::os::unix::fs::PermissionsExt;

    use super::*;
    use crate::store::tests::{fill, intact, store};

    /// 64-bit FNV-1a.
    fn checksum(bytes: &[u8]) -> u64 {
        bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
            (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
        })
    }

    /// Creates (spilling as needed), writes and seals `key`; records spills in `out`.
    fn put_spilling(
        s: &mut Store<u64>,
        key: u64,
        len: u64,
        dir: &Path,
        out: &mut HashMap<u64, Spilled<u64>>,
    ) -> Result<Vec<u64>, StoreError> {
        let (a, spilled) = s.create_or_spill(key, len, dir)?;
        s.arena().write(a.offset, &fill(key, len)).unwrap();
        s.seal(key).unwrap();
        let keys = spilled.iter().map(|x| x.key).collect();
        for x in spilled {
            out.insert(x.key, x);
        }
        Ok(keys)
    }

    fn files_in(dir: &Path) -> usize {
        std::fs::read_dir(dir).map_or(0, |d| d.count())
    }

    #[test]
    fn overfilling_spills_the_oldest_and_everything_restores_intact() {
        let (mut s, _adir) = store("spill", 1 << 20);
        let spill = tempfile::tempdir().unwrap();
        let dir = spill.path().join("spill");
        let len = 100_000;
        let sums: HashMap<u64, u64> = (0..30).map(|k| (k, checksum(&fill(k, len)))).collect();
        let mut out = HashMap::new();
        let mut order = Vec::new();
        for k in 0..30 {
            order.extend(put_spilling(&mut s, k, len, &dir, &mut out).unwrap());
        }
        assert!(!order.is_empty());
        let mut sorted = order.clone();
        sorted.sort_unstable();
        assert_eq!(order, sorted, "oldest spill first");
        assert_eq!(order, (0..order.len() as u64).collect::<Vec<_>>());
        let st = s.stats();
        assert_eq!(st.spilled_objects_total, order.len() as u64);
        assert_eq!(st.spilled_bytes_total, order.len() as u64 * len);
        assert_eq!(files_in(&dir), out.len());
        for x in out.values() {
            let meta = std::fs::metadata(&x.path).unwrap();
            assert_eq!(meta.len(), len);
            assert_eq!(meta.permissions().mode() & 0o777, 0o600);
            assert_eq!(checksum(&std::fs::read(&x.path).unwrap()), sums[&x.key]);
        }

        // Restore every key once; each restore may spill others, which are restored in turn.
        let mut restored = 0;
        for k in 0..30 {
            if let Some(x) = out.remove(&k) {
                let (a, again) = s.restore(k, &x.path, x.len, &dir).unwrap();
                assert!(!x.path.exists(), "restored spill file is removed");
                let bytes = s.arena().slice(a.offset, a.len).unwrap();
                assert_eq!(checksum(bytes), sums[&k], "object {k}");
                assert!(again.iter().all(|y| y.key != k));
                restored += 1;
                for y in again {
                    out.insert(y.key, y);
                }
            }
            assert!(intact(&s, k));
        }
        assert_eq!(s.stats().restored_objects_total, restored);
        assert_eq!(s.stats().restored_bytes_total, restored * len);
        assert_eq!(files_in(&dir), out.len(), "only live spill files remain");
    }

    #[test]
    fn pinned_objects_are_never_spilled_and_get_counts_as_use() {
        let (mut s, _adir) = store("spill-pin", 1 << 20);
        let spill = tempfile::tempdir().unwrap();
        let mut out = HashMap::new();
        for k in 0..8 {
            put_spilling(&mut s, k, 100_000, spill.path(), &mut out).unwrap();
        }
        s.pin(&0).unwrap();
        s.get(&1).unwrap();
        for k in 8..40 {
            put_spilling(&mut s, k, 100_000, spill.path(), &mut out).unwrap();
            assert!(s.contains(&0), "pinned object 0 was spilled at {k}");
        }
        assert!(intact(&s, 0));
        assert!(out.contains_key(&2) && out.contains_key(&3));
        let spilled_first: Vec<u64> = (2..8).collect();
        assert!(spilled_first.iter().all(|k| out.contains_key(k)));
        assert!(!out.contains_key(&0));
    }

    #[test]
    fn full_when_everything_is_pinned_and_the_message_names_pinned_bytes() {
        let (mut s, _adir) = store("spill-full", 1 << 20);
        let spill = tempfile::tempdir().unwrap();
        let mut out = HashMap::new();
        let mut k = 0;
        let err = loop {
            match put_spilling(&mut s, k, 60_000, spill.path(), &mut out) {
                Ok(spilled) => assert!(spilled.is_empty(), "pinned objects were spilled"),
                Err(e) => break e,
            }
            s.pin(&k).unwrap();
            k += 1;
        };
        assert!(matches!(err, StoreError::Full { .. }), "{err:?}");
        assert!(k > 10);
        let st = s.stats();
        let err = s.create_or_spill(999, 200_000, spill.path()).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, StoreError::Full { .. }), "{err:?}");
        let pinned = format!(
            "{} bytes in {} pinned objects",
            st.pinned_bytes, st.num_pinned
        );
        assert!(msg.contains(&pinned), "{msg}");
        assert_eq!(s.stats(), st, "a failed create_or_spill changes nothing");
        assert_eq!(files_in(spill.path()), 0);
        // Dropping the pins makes the same request succeed by spilling.
        for p in 0..k {
            s.release(&p).unwrap();
        }
        let (_, spilled) = s.create_or_spill(999, 200_000, spill.path()).unwrap();
        assert!(!spilled.is_empty());
    }

    #[test]
    fn restore_into_a_store_full_of_unpinned_objects_spills_them() {
        let (mut s, _adir) = store("restore-full", 1 << 20);
        let spill = tempfile::tempdir().unwrap();
        let mut out = HashMap::new();
        let mut k = 0;
        while out.is_empty() {
            put_spilling(&mut s, k, 200_000, spill.path(), &mut out).unwrap();
            k += 1;
        }
        let x = out.remove(&0).unwrap();
        assert!(
            s.stats().capacity - s.stats().used < 200_000,
            "store is full"
        );
        let (_, again) = s.restore(0, &x.path, x.len, spill.path()).unwrap();
        assert!(!again.is_empty(), "restoring had to spill");
        assert!(again.iter().all(|y| y.key != 0 && y.path.exists()));
        assert_eq!(again[0].key, 1, "least recently used goes first");
        assert!(intact(&s, 0));
        assert!(!x.path.exists());
    }

    #[test]
    fn restore_rejects_missing_and_wrong_length_files() {
        let (mut s, _adir) = store("restore-bad", 1 << 20);
        let spill = tempfile::tempdir().unwrap();
        let missing = spill.path().join("nope");
        let err = s.restore(1, &missing, 10, spill.path()).unwrap_err();
        assert!(matches!(err, StoreError::Io { .. }), "{err:?}");
        let short = spill.path().join("short");
        std::fs::write(&short, fill(1, 99)).unwrap();
        let err = s.restore(1, &short, 100, spill.path()).unwrap_err();
        assert!(
            err.to_string().contains("holds 99 bytes, expected 100"),
            "{err}"
        );
        assert!(short.exists(), "a failed restore keeps the file");
        assert_eq!(s.stats().num_objects, 0, "no partial object is left");
        assert_eq!(s.stats().used, 0);
        s.create(1, 5).unwrap();
        let err = s.restore(1, &short, 99, spill.path()).unwrap_err();
        assert!(matches!(err, StoreError::AlreadyExists), "{err:?}");
        s.abort(1).unwrap();
        s.restore(1, &short, 99, spill.path()).unwrap();
        assert!(intact(&s, 1));
        assert_eq!(s.stats().restored_objects_total, 1);
    }

    #[test]
    fn a_failed_spill_changes_nothing() {
        let (mut s, _adir) = store("spill-fail", 1 << 20);
        let spill = tempfile::tempdir().unwrap();
        let blocker = spill.path().join("file");
        std::fs::write(&blocker, b"x").unwrap();
        let bad_dir = blocker.join("spill");
        let mut k = 0;
        while s.create(k, 200_000).is_ok() {
            s.seal(k).unwrap();
            k += 1;
        }
        let before = s.stats();
        let err = s.create_or_spill(99, 200_000, &bad_dir).unwrap_err();
        assert!(matches!(err, StoreError::Io { .. }), "{err:?}");
        assert_eq!(s.stats(), before);
        assert!((0..k).all(|k| s.contains(&k)));
    }

    #[test]
    fn spill_file_names_keep_only_safe_characters() {
        assert_eq!(file_stem(&"a/b c..d-e_f"), "_a_b_c__d-e_f_");
        assert_eq!(file_stem(&[1u8, 2]), "_1__2_");
        assert_eq!(file_stem(&"x".repeat(500)).len(), MAX_KEY_CHARS);
        let dir = tempfile::tempdir().unwrap();
        let mut seq = 7;
        let p = write_spill_file(dir.path(), &"k", b"abc", &mut seq).unwrap();
        assert_eq!(p.file_name().unwrap(), "00000007-_k_");
        // A leftover with the next name is skipped, not overwritten.
        std::fs::write(dir.path().join("00000008-_k_"), b"old").unwrap();
        let q = write_spill_file(dir.path(), &"k", b"new", &mut seq).unwrap();
        assert_eq!(q.file_name().unwrap(), "00000009-_k_");
        assert_eq!(
            std::fs::read(dir.path().join("00000008-_k_")).unwrap(),
            b"old"
        );
    }
}
