//! Compaction: sliding sealed, unpinned objects towards lower offsets so free space becomes one
//! block.
//!
//! The allocator is best-fit over one arena, so holes left by freed objects can add up to enough
//! space for a request while none of them alone is big enough. Of the usual cures (size classes,
//! a second segment, compaction) this store compacts: when `create` does not fit but the free
//! total would, every sealed object that no reader pins is moved down with `memmove`, in offset
//! order, to just past the previous object. Pinned objects and unsealed allocations (being
//! written) stay where they are, so the free space ends up as one tail block plus the holes just
//! before immovable objects. Hence "no fragmentation failure when the free total suffices for a
//! request of up to half the store" holds whenever enough of the store is unpinned, which the
//! node's contract makes the normal case (a pin lives only while a reader looks at the bytes).
//!
//! - Planning is pure bookkeeping ([`Store::plan`]): it builds the allocator the store would have
//!   afterwards and tries the request on it, so nothing moves unless the request then fits.
//! - [`Store::apply`] carries a plan out. Moves go lowest offset first, and each destination lies
//!   below its source and above the previous destination's end, so no move overwrites bytes that
//!   are still to be moved.
//! - Cost: one memmove of every movable byte above the first hole (about memory bandwidth).

use std::collections::HashSet;
use std::fmt::Debug;
use std::hash::Hash;

use crate::alloc::Allocator;
use crate::store::Store;

/// One object to move during a compaction.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Move<K> {
    key: K,
    from: u64,
    to: u64,
    len: u64,
}

/// Where a request will land and what must happen first.
#[derive(Debug)]
pub(crate) struct Plan<K> {
    /// The allocator after the plan, with the request already allocated.
    alloc: Allocator,
    /// Offset of the request.
    pub(crate) offset: u64,
    /// Objects to slide down first (empty when no compaction is needed).
    moves: Vec<Move<K>>,
}

impl<K: Hash + Eq + Copy + Debug> Store<K> {
    /// Plans placing `len` bytes once the sealed, unpinned objects `victims` are gone: into a hole
    /// as things are, else after a compaction. `None` when the request fits neither way.
    pub(crate) fn plan(&self, len: u64, victims: &[K]) -> Option<Plan<K>> {
        let size = Allocator::block_size(len)?;
        let free = if victims.is_empty() {
            self.alloc.capacity() - self.alloc.used()
        } else {
            let mut a = self.alloc.clone();
            for v in victims {
                if let Some(e) = self.objects.get(v) {
                    a.free(e.alloc.offset);
                }
            }
            if let Some(offset) = a.alloc(len) {
                return Some(Plan {
                    alloc: a,
                    offset,
                    moves: Vec::new(),
                });
            }
            a.capacity() - a.used()
        };
        if free < size || !self.arena.is_writable() {
            return None;
        }
        let (moves, mut alloc) = self.compacted(victims);
        let offset = alloc.alloc(len)?;
        Some(Plan {
            alloc,
            offset,
            moves,
        })
    }

    /// The moves of a compaction that leaves out `victims`, and the allocator after it.
    fn compacted(&self, victims: &[K]) -> (Vec<Move<K>>, Allocator) {
        let gone: HashSet<&K> = victims.iter().collect();
        let mut blocks: Vec<(u64, u64, bool, K, u64)> = self
            .objects
            .iter()
            .filter(|(k, _)| !gone.contains(k))
            .map(|(k, e)| (e.alloc.offset, e.reserved, e.movable(), *k, e.alloc.len))
            .collect();
        blocks.sort_unstable_by_key(|b| b.0);
        let mut moves = Vec::new();
        let mut live = Vec::with_capacity(blocks.len());
        let mut cursor = 0;
        for (offset, size, movable, key, len) in blocks {
            // Blocks do not overlap, so `cursor <= offset`: a movable block only goes down.
            let to = if movable { cursor } else { offset };
            if to != offset {
                moves.push(Move {
                    key,
                    from: offset,
                    to,
                    len,
                });
            }
            live.push((to, size));
            cursor = to + size;
        }
        (moves, Allocator::from_live(self.alloc.capacity(), &live))
    }

    /// Carries out `plan` (its victims must already be out of the table) and returns the offset
    /// of the planned request, which the caller then records.
    pub(crate) fn apply(&mut self, plan: Plan<K>) -> u64 {
        if !plan.moves.is_empty() {
            let started = std::time::Instant::now();
            let mut bytes = 0;
            for m in &plan.moves {
                // The plan came from in-bounds entries of a writable arena, so this cannot fail;
                // if it somehow does, say so loudly rather than continue silently.
                if let Err(e) = self.arena.move_within(m.from, m.to, m.len) {
                    tracing::error!(key = ?m.key, "compaction could not move an object: {e}");
                }
                if let Some(e) = self.objects.get_mut(&m.key) {
                    e.alloc.offset = m.to;
                }
                bytes += m.len;
            }
            self.counters.compactions += 1;
            tracing::debug!(
                objects = plan.moves.len(),
                bytes,
                elapsed = ?started.elapsed(),
                "compacted the object store"
            );
        }
        self.alloc = plan.alloc;
        plan.offset
    }
}

#[cfg(test)]
mod tests {
    use crate::error::StoreError;
    use crate::store::tests::{intact, put, store};

    /// Fills the store with `n` objects of `len` bytes (keys `0..n`) and deletes the odd ones,
    /// leaving holes of `len` bytes between kept objects.
    fn fragment(s: &mut crate::Store<u64>, n: u64, len: u64) -> Vec<u64> {
        for k in 0..n {
            put(s, k, len).unwrap();
        }
        for k in (1..n).step_by(2) {
            assert!(s.delete(&k).unwrap());
        }
        (0..n).step_by(2).collect()
    }

    #[test]
    fn half_store_request_fits_after_compaction_and_kept_bytes_survive() {
        let (mut s, _dir) = store("compact", 1 << 20);
        let cap = s.stats().capacity;
        let kept = fragment(&mut s, 64, cap / 64 - 64);
        let st = s.stats();
        assert!(
            st.largest_free < cap / 2,
            "no hole fits a half-store request"
        );
        assert!(st.capacity - st.used >= cap / 2, "but the free total does");
        let before: Vec<u64> = kept.iter().map(|k| s.get(k).unwrap().offset).collect();

        let big = s.create(1000, cap / 2).unwrap();
        s.arena()
            .write(big.offset, &vec![0xAB; (cap / 2) as usize])
            .unwrap();
        s.seal(1000).unwrap();

        assert_eq!(s.stats().compactions, 1);
        let after: Vec<u64> = kept.iter().map(|k| s.get(k).unwrap().offset).collect();
        assert_ne!(before, after, "kept objects moved down");
        assert!(after.iter().zip(&before).all(|(a, b)| a <= b));
        for k in &kept {
            assert!(intact(&s, *k), "object {k} corrupted by compaction");
        }
        let a = s.get(&1000).unwrap();
        assert!(
            s.arena()
                .slice(a.offset, a.len)
                .unwrap()
                .iter()
                .all(|&b| b == 0xAB)
        );
    }

    #[test]
    fn pinned_and_unsealed_objects_never_move() {
        let (mut s, _dir) = store("compact-pin", 1 << 20);
        let cap = s.stats().capacity;
        let len = cap / 64 - 64;
        let kept = fragment(&mut s, 64, len);
        // Pin one low object, and turn another kept slot into an unsealed allocation.
        s.pin(&2).unwrap();
        assert!(s.delete(&4).unwrap());
        let unsealed = s.create(4000, len).unwrap();
        let pinned = s.get(&2).unwrap();

        s.create(1000, cap / 3).unwrap();

        assert_eq!(s.stats().compactions, 1);
        assert_eq!(s.get(&2), Some(pinned), "pinned object stayed put");
        assert_eq!(
            s.objects[&4000].alloc, unsealed,
            "unsealed allocation stayed put"
        );
        for k in kept.iter().filter(|&&k| k != 4) {
            assert!(intact(&s, *k), "object {k}");
        }
    }

    #[test]
    fn nothing_moves_when_compaction_cannot_help() {
        let (mut s, _dir) = store("compact-none", 1 << 20);
        let cap = s.stats().capacity;
        let kept = fragment(&mut s, 64, cap / 64 - 64);
        for k in &kept {
            s.pin(k).unwrap();
        }
        let before: Vec<_> = kept.iter().map(|k| s.get(k)).collect();
        let err = s.create(1000, cap / 2).unwrap_err();
        assert!(matches!(err, StoreError::Full { .. }), "{err:?}");
        assert_eq!(s.stats().compactions, 0);
        assert_eq!(kept.iter().map(|k| s.get(k)).collect::<Vec<_>>(), before);
        // Requests larger than the free total do not even plan a compaction.
        for k in &kept[1..] {
            s.release(k).unwrap();
        }
        assert!(s.create(1001, cap - 64).is_err());
        assert_eq!(s.stats().compactions, 0);
    }
}
