//! Multi-threaded copies into the arena: a gather list of pieces cut into even batches, one per
//! thread, so a large `put` copies at close to memory bandwidth.

use super::{PARALLEL_CHUNK_MIN, PARALLEL_COPY_MIN};

/// One contiguous copy: `src` to the absolute address `dst` inside a checked arena range.
#[derive(Clone, Copy)]
pub(super) struct Piece<'a> {
    pub(super) dst: usize,
    pub(super) src: &'a [u8],
}

/// Copies every piece, with several threads when `total` (their byte count) is large.
///
/// Caller contract: every destination is a bounds-checked range of a live mapping that outlives
/// the call, no source lies in the mapping, no two destinations overlap, and nobody else writes
/// the destinations meanwhile.
pub(super) fn copy_all(pieces: &[Piece<'_>], total: usize) {
    let threads = copy_threads(total);
    if threads <= 1 {
        copy_pieces(pieces);
        return;
    }
    let batches = split_even(pieces, total, threads);
    std::thread::scope(|s| {
        if let Some((first, rest)) = batches.split_first() {
            for batch in rest {
                s.spawn(move || copy_pieces(batch));
            }
            copy_pieces(first);
        }
    });
}

fn copy_pieces(pieces: &[Piece<'_>]) {
    for p in pieces {
        // SAFETY: every piece was cut from a bounds-checked destination range of a live mapping
        // (per the contract of `copy_all`, which outlives the scoped threads). Its
        // source does not lie in the mapping, so source and destination do not overlap, and
        // no two destination ranges overlap, so no two threads
        // write the same byte. Other writers of the range are excluded by the caller contract
        // (in the store: the range is an unsealed allocation the caller created).
        unsafe { std::ptr::copy_nonoverlapping(p.src.as_ptr(), p.dst as *mut u8, p.src.len()) };
    }
}

/// Number of threads to copy `total` bytes with.
fn copy_threads(total: usize) -> usize {
    if total < PARALLEL_COPY_MIN {
        return 1;
    }
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    cpus.min(total / PARALLEL_CHUNK_MIN).max(1)
}

/// Cuts `pieces` (totalling `total` bytes) into `n` batches of nearly equal byte counts.
fn split_even<'a>(pieces: &[Piece<'a>], total: usize, n: usize) -> Vec<Vec<Piece<'a>>> {
    let target = total.div_ceil(n);
    let mut batches = vec![Vec::new()];
    let mut filled = 0;
    for &p in pieces {
        let mut p = p;
        while !p.src.is_empty() {
            if filled == target && batches.len() < n {
                batches.push(Vec::new());
                filled = 0;
            }
            let take = if batches.len() < n {
                (target - filled).min(p.src.len())
            } else {
                p.src.len()
            };
            let (head, tail) = p.src.split_at(take);
            batches.last_mut().expect("never empty").push(Piece {
                dst: p.dst,
                src: head,
            });
            filled += take;
            p = Piece {
                dst: p.dst + take,
                src: tail,
            };
        }
    }
    batches
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_even_covers_every_byte_once() {
        let bufs: Vec<Vec<u8>> = [5usize, 0, 17, 3, 40].iter().map(|&n| vec![0; n]).collect();
        let mut pieces = Vec::new();
        let mut dst = 1000;
        for b in &bufs {
            pieces.push(Piece { dst, src: &b[..] });
            dst += b.len() + 10;
        }
        let total = 65;
        for n in 1..=9 {
            let batches = split_even(&pieces, total, n);
            assert!(batches.len() <= n);
            let mut covered: Vec<(usize, usize)> = batches
                .iter()
                .flatten()
                .map(|p| (p.dst, p.src.len()))
                .collect();
            assert_eq!(covered.iter().map(|c| c.1).sum::<usize>(), total);
            covered.sort_unstable();
            for w in covered.windows(2) {
                assert!(w[0].0 + w[0].1 <= w[1].0);
            }
            let biggest = batches
                .iter()
                .map(|b| b.iter().map(|p| p.src.len()).sum())
                .max();
            assert!(biggest.unwrap_or(0) <= total.div_ceil(n));
        }
    }
}
