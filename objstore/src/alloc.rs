//! Best-fit free-list allocator over `[0, capacity)`: 64-byte aligned blocks, neighbours coalesced on free.
//!
//! - Free blocks are kept twice: by offset (to find neighbours when freeing) and by `(size, offset)`
//!   (to find the smallest block that fits, lowest offset first). Both are `BTreeMap`/`BTreeSet`, so
//!   `alloc` and `free` are O(log n) in the number of blocks.
//! - Live blocks are kept by offset with their rounded size, so `free` needs only the offset.
//! - Pure bookkeeping: it never touches memory.

use std::collections::{BTreeMap, BTreeSet, HashMap};

/// Alignment and granularity of every block (Arrow's buffer alignment).
pub const ALIGN: u64 = 64;

/// Free-list allocator handing out 64-byte aligned offsets in `[0, capacity)`.
#[derive(Debug, Clone)]
pub struct Allocator {
    capacity: u64,
    used: u64,
    /// Free blocks: offset → size.
    free_by_offset: BTreeMap<u64, u64>,
    /// Free blocks: (size, offset).
    free_by_size: BTreeSet<(u64, u64)>,
    /// Live blocks: offset → rounded size.
    live: HashMap<u64, u64>,
}

impl Allocator {
    /// An allocator over `[0, capacity)`; a capacity that is not a multiple of 64 is rounded down.
    pub fn new(capacity: u64) -> Self {
        Self::from_live(capacity, &[])
    }

    /// An allocator over `[0, capacity)` whose live blocks are exactly `live` (offset, size),
    /// sorted by offset, non-overlapping and 64-byte aligned, as a compaction leaves them; the
    /// gaps become free blocks.
    pub fn from_live(capacity: u64, live: &[(u64, u64)]) -> Self {
        let capacity = capacity - capacity % ALIGN;
        let mut a = Allocator {
            capacity,
            used: 0,
            free_by_offset: BTreeMap::new(),
            free_by_size: BTreeSet::new(),
            live: HashMap::with_capacity(live.len()),
        };
        let mut cursor = 0;
        for &(offset, size) in live {
            if offset > cursor {
                a.insert_free(cursor, offset - cursor);
            }
            a.live.insert(offset, size);
            a.used += size;
            cursor = offset + size;
        }
        if capacity > cursor {
            a.insert_free(cursor, capacity - cursor);
        }
        a
    }

    /// The size a request of `len` bytes really takes: rounded up to 64, and at least 64.
    /// `None` if rounding overflows.
    pub fn block_size(len: u64) -> Option<u64> {
        Some(len.checked_next_multiple_of(ALIGN)?.max(ALIGN))
    }

    /// Reserves a block of at least `len` bytes (zero takes 64) and returns its offset, or `None`
    /// when no free block is large enough.
    pub fn alloc(&mut self, len: u64) -> Option<u64> {
        let size = Self::block_size(len)?;
        let &(block_size, offset) = self.free_by_size.range((size, 0)..).next()?;
        self.remove_free(offset, block_size);
        if block_size > size {
            self.insert_free(offset + size, block_size - size);
        }
        self.live.insert(offset, size);
        self.used += size;
        Some(offset)
    }

    /// Returns the block at `offset` to the free list, merging it with free neighbours.
    /// An offset that is not the start of a live block is ignored (and logged).
    pub fn free(&mut self, offset: u64) {
        let Some(mut size) = self.live.remove(&offset) else {
            tracing::warn!(
                offset,
                "free of an offset that is not a live block; ignored"
            );
            return;
        };
        self.used -= size;
        let end = offset + size;
        let mut start = offset;
        if let Some((&prev_off, &prev_size)) = self.free_by_offset.range(..offset).next_back()
            && prev_off + prev_size == offset
        {
            self.remove_free(prev_off, prev_size);
            start = prev_off;
            size += prev_size;
        }
        if let Some(&next_size) = self.free_by_offset.get(&end) {
            self.remove_free(end, next_size);
            size += next_size;
        }
        self.insert_free(start, size);
    }

    /// Total bytes managed.
    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// Bytes in live blocks (after rounding).
    pub fn used(&self) -> u64 {
        self.used
    }

    /// Size of the largest free block: the biggest request that can succeed now.
    pub fn largest_free(&self) -> u64 {
        self.free_by_size.last().map_or(0, |&(size, _)| size)
    }

    /// Rounded size of the live block at `offset`, if there is one.
    pub fn block_len(&self, offset: u64) -> Option<u64> {
        self.live.get(&offset).copied()
    }

    fn insert_free(&mut self, offset: u64, size: u64) {
        self.free_by_offset.insert(offset, size);
        self.free_by_size.insert((size, offset));
    }

    fn remove_free(&mut self, offset: u64, size: u64) {
        self.free_by_offset.remove(&offset);
        self.free_by_size.remove(&(size, offset));
    }

    /// Checks every structural invariant; panics with a description when one is broken.
    #[cfg(test)]
    fn check_invariants(&self) {
        assert_eq!(self.free_by_offset.len(), self.free_by_size.len());
        for (&off, &size) in &self.free_by_offset {
            assert!(self.free_by_size.contains(&(size, off)));
        }
        let mut blocks: Vec<(u64, u64, bool)> = self
            .free_by_offset
            .iter()
            .map(|(&o, &s)| (o, s, true))
            .chain(self.live.iter().map(|(&o, &s)| (o, s, false)))
            .collect();
        blocks.sort_unstable();
        let mut cursor = 0;
        let mut prev_free = false;
        let mut used = 0;
        for (off, size, is_free) in blocks {
            assert_eq!(
                off, cursor,
                "blocks must tile the capacity without gaps or overlap"
            );
            assert_eq!(off % ALIGN, 0);
            assert!(size > 0 && size % ALIGN == 0);
            assert!(
                !(prev_free && is_free),
                "adjacent free blocks at {off} were not coalesced"
            );
            if !is_free {
                used += size;
            }
            prev_free = is_free;
            cursor = off + size;
        }
        assert_eq!(cursor, self.capacity);
        assert_eq!(used, self.used);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Small deterministic xorshift generator, so failures replay.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    #[test]
    fn fresh_allocator_is_one_free_block() {
        let a = Allocator::new(1 << 20);
        assert_eq!(a.capacity(), 1 << 20);
        assert_eq!(a.used(), 0);
        assert_eq!(a.largest_free(), 1 << 20);
        a.check_invariants();
    }

    #[test]
    fn capacity_rounds_down_and_tiny_capacity_allocates_nothing() {
        let mut a = Allocator::new(130);
        assert_eq!(a.capacity(), 128);
        a.check_invariants();
        let mut z = Allocator::new(63);
        assert_eq!(z.capacity(), 0);
        assert_eq!(z.alloc(0), None);
        assert_eq!(z.largest_free(), 0);
        z.check_invariants();
        assert!(a.alloc(128).is_some());
        assert_eq!(a.alloc(1), None);
    }

    #[test]
    fn sizes_round_up_to_64_and_zero_takes_64() {
        let mut a = Allocator::new(1 << 12);
        let z = a.alloc(0).unwrap();
        assert_eq!(a.block_len(z), Some(64));
        let one = a.alloc(1).unwrap();
        assert_eq!(a.block_len(one), Some(64));
        let b = a.alloc(65).unwrap();
        assert_eq!(a.block_len(b), Some(128));
        assert_eq!(a.used(), 256);
        assert_eq!(Allocator::block_size(u64::MAX), None);
        assert_eq!(a.alloc(u64::MAX), None);
        a.check_invariants();
    }

    #[test]
    fn fills_exactly_and_refuses_more() {
        let mut a = Allocator::new(64 * 10);
        let offs: Vec<u64> = (0..10).map(|_| a.alloc(64).unwrap()).collect();
        assert_eq!(a.alloc(1), None);
        assert_eq!(a.used(), a.capacity());
        assert_eq!(a.largest_free(), 0);
        for o in offs {
            a.free(o);
        }
        assert_eq!(a.largest_free(), 640);
        a.check_invariants();
    }

    #[test]
    fn coalesces_with_both_neighbours() {
        let mut a = Allocator::new(64 * 4);
        let x = a.alloc(64).unwrap();
        let y = a.alloc(64).unwrap();
        let z = a.alloc(64).unwrap();
        a.free(x);
        a.free(z);
        a.check_invariants();
        assert_eq!(a.largest_free(), 128); // z merged with the tail
        a.free(y);
        a.check_invariants();
        assert_eq!(a.largest_free(), 256);
        assert_eq!(a.free_by_offset.len(), 1);
    }

    #[test]
    fn best_fit_prefers_smallest_hole() {
        let mut a = Allocator::new(64 * 100);
        let blocks: Vec<u64> = [64, 64, 192, 64, 128, 64]
            .iter()
            .map(|&n| a.alloc(n).unwrap())
            .collect();
        a.free(blocks[2]); // 192-byte hole
        a.free(blocks[4]); // 128-byte hole
        assert_eq!(a.alloc(100), Some(blocks[4]));
        assert_eq!(a.alloc(150), Some(blocks[2]));
        a.check_invariants();
    }

    #[test]
    fn from_live_rebuilds_the_gaps_as_free_blocks() {
        let a = Allocator::from_live(64 * 20, &[(0, 128), (256, 64), (320, 640)]);
        a.check_invariants();
        assert_eq!(a.used(), 832);
        assert_eq!(a.largest_free(), 64 * 20 - 960);
        assert_eq!(a.block_len(256), Some(64));
        let mut full = Allocator::from_live(128, &[(0, 64), (64, 64)]);
        full.check_invariants();
        assert_eq!(full.alloc(1), None);
        let mut empty = Allocator::from_live(128, &[]);
        empty.check_invariants();
        assert_eq!(empty.alloc(128), Some(0));
    }

    #[test]
    fn bogus_and_double_free_are_ignored() {
        let mut a = Allocator::new(1 << 12);
        let x = a.alloc(100).unwrap();
        a.free(x + 64);
        a.free(1 << 40);
        assert_eq!(a.used(), 128);
        a.free(x);
        a.free(x);
        assert_eq!(a.used(), 0);
        a.check_invariants();
    }

    #[test]
    fn random_sequences_keep_invariants_and_coalesce_fully() {
        for seed in 1..=40u64 {
            let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
            let capacity = 64 * (1 + rng.below(4096));
            let mut a = Allocator::new(capacity);
            let mut live: Vec<(u64, u64)> = Vec::new();
            for step in 0..2_000 {
                if live.is_empty() || rng.below(100) < 55 {
                    let len = match rng.below(10) {
                        0 => 0,
                        1..=6 => rng.below(512),
                        _ => rng.below(capacity / 4 + 1),
                    };
                    let before = a.largest_free();
                    match a.alloc(len) {
                        Some(off) => {
                            assert_eq!(off % ALIGN, 0);
                            let size = a.block_len(off).unwrap();
                            assert!(size >= len && off + size <= capacity);
                            live.push((off, size));
                        }
                        None => assert!(Allocator::block_size(len).unwrap() > before),
                    }
                } else {
                    let i = rng.below(live.len() as u64) as usize;
                    let (off, _) = live.swap_remove(i);
                    a.free(off);
                }
                if step % 50 == 0 {
                    a.check_invariants();
                    let mut sorted = live.clone();
                    sorted.sort_unstable();
                    for w in sorted.windows(2) {
                        assert!(w[0].0 + w[0].1 <= w[1].0, "overlap in seed {seed}");
                    }
                    assert_eq!(a.used(), live.iter().map(|&(_, s)| s).sum::<u64>());
                }
            }
            a.check_invariants();
            while let Some((off, _)) = live.pop() {
                a.free(off);
            }
            a.check_invariants();
            assert_eq!(a.used(), 0);
            assert_eq!(a.free_by_offset.len(), 1, "seed {seed} left fragments");
            assert_eq!(a.largest_free(), a.capacity());
        }
    }
}
