//! The encoded form of an object: a small header, the pickle bytes, then each
//! out-of-band buffer at a 64-byte aligned offset (Arrow's alignment).
//!
//! ```text
//! 0   "PEER"  version:u16  reserved:u16
//! 8   n_buffers:u32        reserved:u32
//! 16  pickle_len:u64
//! 24  n_buffers × (offset:u64, len:u64)     offsets from the blob start
//! ..  pickle bytes
//! ..  buffers, each 64-byte aligned
//! ```
//!
//! `get` finds every buffer by offset without scanning, so numpy and pyarrow
//! data come back as views of the blob — in the store, of shared memory.

use std::ops::Range;

const MAGIC: &[u8; 4] = b"PEER";
const VERSION: u16 = 1;
const FIXED: usize = 24;
/// Alignment of every buffer in a blob.
pub const ALIGN: usize = 64;

/// Why bytes are not a valid blob.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BlobError {
    #[error("object blob too short ({0} bytes)")]
    Truncated(usize),
    #[error("object blob has a bad magic or version")]
    BadHeader,
    #[error("object blob section {0:?} lies outside its {1} bytes")]
    OutOfBounds(Range<usize>, usize),
    /// The sections are in bounds but not where `encode` puts them (overlapping,
    /// unaligned, or with bytes to spare).
    #[error("object blob sections are not laid out as encoded")]
    BadLayout,
}

/// Where each part of a blob goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    pub total: usize,
    pub pickle: Range<usize>,
    pub buffers: Vec<Range<usize>>,
}

fn align_up(n: usize) -> usize {
    n.div_ceil(ALIGN) * ALIGN
}

impl Layout {
    /// The layout of a blob holding a pickle of `pickle_len` bytes and buffers of the given lengths.
    pub fn new(pickle_len: usize, buffer_lens: &[usize]) -> Self {
        let header = FIXED + 16 * buffer_lens.len();
        let pickle = header..header + pickle_len;
        let mut at = pickle.end;
        let buffers = buffer_lens
            .iter()
            .map(|&len| {
                let start = align_up(at);
                at = start + len;
                start..at
            })
            .collect();
        Self {
            total: at,
            pickle,
            buffers,
        }
    }

    /// The header bytes (everything before the pickle).
    pub fn header(&self) -> Vec<u8> {
        let mut h = Vec::with_capacity(self.pickle.start);
        h.extend_from_slice(MAGIC);
        h.extend_from_slice(&VERSION.to_le_bytes());
        h.extend_from_slice(&0u16.to_le_bytes());
        h.extend_from_slice(&(self.buffers.len() as u32).to_le_bytes());
        h.extend_from_slice(&0u32.to_le_bytes());
        h.extend_from_slice(&(self.pickle.len() as u64).to_le_bytes());
        for b in &self.buffers {
            h.extend_from_slice(&(b.start as u64).to_le_bytes());
            h.extend_from_slice(&(b.len() as u64).to_le_bytes());
        }
        h
    }
}

/// Encode into a new vector (used for small, inline values).
pub fn encode(pickle: &[u8], buffers: &[&[u8]]) -> Vec<u8> {
    let lens: Vec<usize> = buffers.iter().map(|b| b.len()).collect();
    let layout = Layout::new(pickle.len(), &lens);
    let mut out = layout.header();
    out.extend_from_slice(pickle);
    for (range, data) in layout.buffers.iter().zip(buffers) {
        out.resize(range.start, 0);
        out.extend_from_slice(data);
    }
    debug_assert_eq!(out.len(), layout.total);
    out
}

fn read_u64(b: &[u8], at: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(x)
}

fn checked(start: u64, len: u64, total: usize) -> Result<Range<usize>, BlobError> {
    let end = start.checked_add(len);
    match end {
        Some(end) if end <= total as u64 => Ok(start as usize..end as usize),
        _ => Err(BlobError::OutOfBounds(
            start as usize..start.saturating_add(len) as usize,
            total,
        )),
    }
}

/// Find the pickle and the buffers inside a blob, checking every bound.
pub fn parse(blob: &[u8]) -> Result<Layout, BlobError> {
    if blob.len() < FIXED {
        return Err(BlobError::Truncated(blob.len()));
    }
    if &blob[..4] != MAGIC || u16::from_le_bytes([blob[4], blob[5]]) != VERSION {
        return Err(BlobError::BadHeader);
    }
    let n = u32::from_le_bytes([blob[8], blob[9], blob[10], blob[11]]) as usize;
    let header = n
        .checked_mul(16)
        .and_then(|x| x.checked_add(FIXED))
        .filter(|&h| h <= blob.len())
        .ok_or(BlobError::Truncated(blob.len()))?;
    let pickle = checked(header as u64, read_u64(blob, 16), blob.len())?;
    let buffers = (0..n)
        .map(|i| {
            let at = FIXED + 16 * i;
            checked(read_u64(blob, at), read_u64(blob, at + 8), blob.len())
        })
        .collect::<Result<Vec<_>, _>>()?;
    let layout = Layout {
        total: blob.len(),
        pickle,
        buffers,
    };
    // Every part's place follows from the lengths: anything else was not made by `encode`.
    let lens: Vec<usize> = layout.buffers.iter().map(|b| b.len()).collect();
    if Layout::new(layout.pickle.len(), &lens) != layout {
        return Err(BlobError::BadLayout);
    }
    Ok(layout)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_parse_roundtrip() {
        let bufs: [&[u8]; 3] = [b"abc", b"", &[7u8; 100]];
        let blob = encode(b"pickle!", &bufs);
        let l = parse(&blob).unwrap();
        assert_eq!(&blob[l.pickle.clone()], b"pickle!");
        for (r, b) in l.buffers.iter().zip(bufs) {
            assert_eq!(&blob[r.clone()], b);
            assert_eq!(r.start % ALIGN, 0);
        }
        assert_eq!(Layout::new(7, &[3, 0, 100]), l);
    }

    #[test]
    fn rejects_bad_blobs() {
        assert_eq!(parse(b"PEER"), Err(BlobError::Truncated(4)));
        let mut blob = encode(b"p", &[b"xyz"]);
        blob[0] = b'X';
        assert_eq!(parse(&blob), Err(BlobError::BadHeader));
        let mut blob = encode(b"p", &[b"xyz"]);
        blob[8] = 200; // claims 200 buffers
        assert!(matches!(parse(&blob), Err(BlobError::Truncated(_))));
        let mut blob = encode(b"p", &[b"xyz"]);
        blob[32..40].copy_from_slice(&u64::MAX.to_le_bytes()); // buffer len
        assert!(matches!(parse(&blob), Err(BlobError::OutOfBounds(..))));
        let mut blob = encode(b"p", &[b"xyz", b"abc"]);
        let first = blob[24..32].to_vec();
        blob[40..48].copy_from_slice(&first); // the second buffer starts where the first does
        assert_eq!(parse(&blob), Err(BlobError::BadLayout));
        let mut blob = encode(b"p", &[b"xyz"]);
        blob.push(0); // a byte to spare
        assert_eq!(parse(&blob), Err(BlobError::BadLayout));
    }
}
