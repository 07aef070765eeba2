//! The shared-memory arena: one file in `/dev/shm` mapped by the node and by every client process.
//!
//! This is the only module with `unsafe` (here and in its submodules). The node creates the file
//! ([`Arena::create`]) and unlinks it on drop; clients map the same file ([`Arena::open`]) and
//! read sealed objects in place.
//!
//! - Writes go through [`Arena::write`] / [`Arena::write_parts`], which check bounds and copy with
//!   several threads for large payloads (the `put` hot path, `copy`).
//! - Reads go through [`Arena::slice`], or [`Arena::base_ptr`] for the Python buffer protocol.
//! - The store moves sealed objects with [`Arena::move_within`] (compaction) and reads spill files
//!   straight in with [`Arena::fill_from`].
//! - Pages are reserved up to a high-water mark (`reserve`): in the background over the first
//!   GiB, and synchronously by [`Arena::ensure_reserved`] before the store hands out any byte
//!   above it, so no write ever lands on an unreserved page (no SIGBUS when `/dev/shm` fills).

mod copy;
mod reserve;

use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use memmap2::{MmapOptions, MmapRaw};

use crate::error::StoreError;

/// Directory tried first for the arena file.
pub const SHM_DIR: &str = "/dev/shm";
/// Payloads at least this large are copied with several threads.
pub const PARALLEL_COPY_MIN: usize = 8 << 20;
/// Smallest piece one copy thread is given.
pub const PARALLEL_CHUNK_MIN: usize = 2 << 20;

pub use reserve::{RESERVE_SLACK, WARM_LIMIT, default_capacity};

use copy::Piece;
use reserve::{Reservation, choose_dir, page_size};

/// A file mapped shared into this process: the node's object store memory, or a client's view of it.
pub struct Arena {
    map: MmapRaw,
    path: PathBuf,
    /// Created by this process (`create`), so it removes the file when dropped.
    owner: bool,
    /// Mapped read-write (a client without write permission maps read-only).
    writable: bool,
    unlinked: AtomicBool,
    /// Reserved prefix of the backing file, and the warmer extending it.
    reservation: Reservation,
}

impl std::fmt::Debug for Arena {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Arena")
            .field("path", &self.path)
            .field("len", &self.len())
            .field("owner", &self.owner)
            .field("writable", &self.writable)
            .finish()
    }
}

impl Arena {
    /// Creates a new arena file of `size` bytes (rounded up to the page size) named `name` inside
    /// `/dev/shm`, or inside `fallback_dir` when `/dev/shm` is missing or has less free space than
    /// `size` (with a warning saying why).
    ///
    /// The file is created exclusively with mode 0600 and sized with `ftruncate`; a background
    /// thread reserves its first [`WARM_LIMIT`] bytes with `posix_fallocate` and pre-faults this
    /// process's mapping there (about 0.6 s per GiB, off the start-up path). Pages above the
    /// reserved mark are reserved on demand by [`Arena::ensure_reserved`]. The file is removed
    /// again if any step fails, and when the arena is dropped.
    pub fn create(name: &str, size: usize, fallback_dir: &Path) -> Result<Arena, StoreError> {
        Self::create_warming(name, size, fallback_dir, WARM_LIMIT)
    }

    /// [`Arena::create`], with the background warmer covering only the first `warm` bytes
    /// (none for zero; everything then reserves on demand).
    pub fn create_warming(
        name: &str,
        size: usize,
        fallback_dir: &Path,
        warm: u64,
    ) -> Result<Arena, StoreError> {
        if name.is_empty()
            || name == "."
            || name == ".."
            || name.contains('/')
            || name.contains('\0')
        {
            return Err(StoreError::io(
                format!("invalid arena name {name:?}: must be a plain file name"),
                io::ErrorKind::InvalidInput.into(),
            ));
        }
        let page = page_size();
        let size = size
            .max(1)
            .checked_next_multiple_of(page)
            .ok_or(StoreError::TooLarge {
                requested: size as u64,
                capacity: usize::MAX as u64,
            })?;
        let wanted = size as u64;
        let dir = choose_dir(Path::new(SHM_DIR), wanted, fallback_dir)?;
        let path = dir.join(name);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| StoreError::io(format!("creating arena file {}", path.display()), e))?;
        // From here on the file exists; remove it on any failure.
        let guard = RemoveOnDrop(Some(path.clone()));
        file.set_len(wanted)
            .map_err(|e| StoreError::io(format!("sizing arena file {}", path.display()), e))?;
        // Reserving the pages (fallocate) and pre-faulting this process's mapping cost about
        // 0.6 s per GiB, far too slow for a node that must start in milliseconds. A background
        // thread does both, chunk by chunk, while the node already serves; the store reserves
        // synchronously before handing out anything above the warmer's mark.
        let map = MmapOptions::new()
            .len(size)
            .map_raw(&file)
            .map_err(|e| StoreError::io(format!("mapping arena file {}", path.display()), e))?;
        let reservation =
            Reservation::created(file, map.as_mut_ptr() as usize, wanted, warm, &path);
        guard.disarm();
        Ok(Arena {
            map,
            path,
            owner: true,
            writable: true,
            unlinked: AtomicBool::new(false),
            reservation,
        })
    }

    /// Maps an existing arena file (client side); its size is the file's length. The file is
    /// mapped read-write, or read-only when this process may not write it. The mapping is not
    /// pre-faulted, so opening is quick whatever the size; pages are faulted in on first use.
    pub fn open(path: &Path) -> Result<Arena, StoreError> {
        let ctx = || format!("opening arena file {}", path.display());
        let (file, writable) = match OpenOptions::new().read(true).write(true).open(path) {
            Ok(f) => (f, true),
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => (
                File::open(path).map_err(|e| StoreError::io(ctx(), e))?,
                false,
            ),
            Err(e) => return Err(StoreError::io(ctx(), e)),
        };
        let len = file.metadata().map_err(|e| StoreError::io(ctx(), e))?.len();
        let len = usize::try_from(len)
            .ok()
            .filter(|&l| l > 0)
            .ok_or_else(|| {
                StoreError::io(
                    format!("arena file {} has unusable length {len}", path.display()),
                    io::ErrorKind::InvalidData.into(),
                )
            })?;
        let mut opts = MmapOptions::new();
        opts.len(len);
        let map = if writable {
            opts.map_raw(&file)
        } else {
            opts.map_raw_read_only(&file)
        }
        .map_err(|e| StoreError::io(format!("mapping arena file {}", path.display()), e))?;
        Ok(Arena {
            map,
            path: path.to_path_buf(),
            owner: false,
            writable,
            unlinked: AtomicBool::new(false),
            reservation: Reservation::opened(len as u64, path),
        })
    }

    /// Block until the background reservation of a created arena has finished (tests and
    /// benchmarks; serving never needs to wait for it).
    pub fn wait_warm(&self) {
        self.reservation.wait_warm();
    }

    /// Every byte below this offset is backed by reserved file-system blocks (the whole mapping
    /// for an opened arena, whose creator reserves).
    pub fn reserved(&self) -> u64 {
        self.reservation.high_water()
    }

    /// Makes sure `[0, end)` is reserved before anyone writes there, reserving synchronously
    /// from the current mark to `end` plus [`RESERVE_SLACK`] (capped at the arena's length) when
    /// needed. Fails, without moving the mark, when the file system has no room (`ENOSPC` from
    /// `posix_fallocate`): the caller must then not hand out bytes above [`Arena::reserved`].
    pub fn ensure_reserved(&self, end: u64) -> Result<(), StoreError> {
        self.reservation.ensure(end).map_err(|e| {
            StoreError::io(
                format!(
                    "reserving {} bytes of the object store in {} (reserved so far: {})",
                    end,
                    self.path.display(),
                    self.reserved()
                ),
                e,
            )
        })
    }

    /// Path of the backing file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Size of the mapping in bytes.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether the mapping is empty (never true for a successfully created or opened arena).
    pub fn is_empty(&self) -> bool {
        self.map.len() == 0
    }

    /// Whether this mapping may be written.
    pub fn is_writable(&self) -> bool {
        self.writable
    }

    /// Start of the mapping, for exposing objects through the Python buffer protocol. Offsets
    /// handed out by the store are relative to it.
    pub fn base_ptr(&self) -> *mut u8 {
        self.map.as_mut_ptr()
    }

    /// Checks that `[offset, offset + len)` lies inside the arena and returns it as `usize`s.
    fn check(&self, offset: u64, len: u64) -> Result<(usize, usize), StoreError> {
        let oob = || StoreError::OutOfBounds {
            offset,
            len,
            arena: self.len() as u64,
        };
        let end = offset.checked_add(len).ok_or_else(oob)?;
        if end > self.len() as u64 {
            return Err(oob());
        }
        // Both fit in usize because they are at most the mapping's length.
        Ok((offset as usize, len as usize))
    }

    /// A read-only view of `[offset, offset + len)`, bounds-checked.
    ///
    /// Caller contract: the range must be (inside) a sealed object that stays pinned while the
    /// slice is alive. Sealed objects are never written again, so the view is immutable for its
    /// lifetime; reading a range that someone is still writing returns unspecified bytes.
    pub fn slice(&self, offset: u64, len: u64) -> Result<&[u8], StoreError> {
        let (off, len) = self.check(offset, len)?;
        // SAFETY: `check` proved `off + len <= self.len()`, so the range lies inside the live
        // mapping (or is empty at its end), which stays mapped as long as `&self` borrows it. The
        // bytes are plain `u8`s, valid for any content. Per the documented contract the range is a
        // sealed, pinned object, which no process writes while the borrow lasts.
        Ok(unsafe { std::slice::from_raw_parts(self.base_ptr().add(off), len) })
    }

    /// Copies `src` into the arena at `offset`, bounds-checked. Payloads of 8 MiB and more are
    /// copied with several threads.
    ///
    /// Caller contract: the range must lie in an allocation that the caller created and has not
    /// sealed, and that nobody else writes or reads meanwhile.
    pub fn write(&self, offset: u64, src: &[u8]) -> Result<(), StoreError> {
        self.write_parts(&[(offset, src)])
    }

    /// Copies several source slices to their offsets (a gather write). All ranges are checked
    /// before anything is written; the threading rule of [`Arena::write`] applies to the total.
    pub fn write_parts(&self, parts: &[(u64, &[u8])]) -> Result<(), StoreError> {
        self.check_writable()?;
        let mut total = 0usize;
        let mut from_arena = false;
        let base = self.base_ptr() as usize;
        let mut ranges = Vec::with_capacity(parts.len());
        for &(offset, src) in parts {
            let (off, len) = self.check(offset, src.len() as u64)?;
            total += len;
            let s = src.as_ptr() as usize;
            from_arena |= len > 0 && s < base + self.len() && base < s + len;
            ranges.push((off, len));
        }
        ranges.sort_unstable();
        let overlapping = ranges.windows(2).any(|w| w[0].0 + w[0].1 > w[1].0);
        if from_arena || overlapping {
            // A source inside the mapping may overlap a destination, or destinations overlap each
            // other: copy in order with memmove on this thread, so later parts win.
            for &(offset, src) in parts {
                // SAFETY: the destination range was bounds-checked above, so it lies inside the
                // mapping, which lives as long as `&self`. `ptr::copy` allows overlap with `src`.
                unsafe {
                    std::ptr::copy(
                        src.as_ptr(),
                        self.base_ptr().add(offset as usize),
                        src.len(),
                    )
                };
            }
            return Ok(());
        }
        let pieces: Vec<Piece<'_>> = parts
            .iter()
            .map(|&(offset, src)| Piece {
                dst: base + offset as usize,
                src,
            })
            .collect();
        // The ranges were checked against this live mapping, which outlives the call; sources
        // lie outside it and destinations do not overlap (both checked above); the caller
        // contract excludes other writers.
        copy::copy_all(&pieces, total);
        Ok(())
    }

    /// A writable view of `[offset, offset + len)`, bounds-checked, for filling an object in
    /// place (a pull reads a chunk off the network straight into it).
    ///
    /// # Safety
    ///
    /// The range must lie in an allocation the caller created and has not sealed, which no
    /// one else reads or writes, and which is not freed, while the view lives (the views a
    /// caller holds at once must not overlap).
    #[expect(
        clippy::mut_from_ref,
        reason = "disjoint views of shared memory, exclusive by the caller contract, as in `fill_from`"
    )]
    pub unsafe fn range_mut(&self, offset: u64, len: u64) -> Result<&mut [u8], StoreError> {
        self.check_writable()?;
        let (off, len) = self.check(offset, len)?;
        // SAFETY: the range was bounds-checked against the live mapping, which stays mapped
        // while `&self` is borrowed, and any byte pattern is a valid `u8`; the caller promises
        // that nothing else touches the range while the exclusive view lives.
        Ok(unsafe { std::slice::from_raw_parts_mut(self.base_ptr().add(off), len) })
    }

    /// Moves `len` bytes from offset `from` to offset `to` (ranges may overlap; memmove), both
    /// bounds-checked.
    ///
    /// Caller contract (the store's compaction): the source is a sealed object that nobody
    /// holds a pointer into (unpinned), and the destination is free space or the source itself,
    /// so no other reader or writer touches either range meanwhile.
    pub fn move_within(&self, from: u64, to: u64, len: u64) -> Result<(), StoreError> {
        self.check_writable()?;
        let (src, len) = self.check(from, len)?;
        let (dst, _) = self.check(to, len as u64)?;
        // SAFETY: both ranges were bounds-checked against the live mapping, which stays mapped
        // while `&self` is borrowed. `ptr::copy` has memmove semantics, so overlap is fine. The
        // caller contract guarantees no other thread or process reads or writes either range
        // during the move: the source is unpinned (no views exist) and the destination is free.
        unsafe { std::ptr::copy(self.base_ptr().add(src), self.base_ptr().add(dst), len) };
        Ok(())
    }

    /// Fills `[offset, offset + len)` with exactly `len` bytes read from `src` (restoring a
    /// spilled object). On error the range holds unspecified bytes.
    ///
    /// Caller contract: as for [`Arena::write`], the range is an unsealed allocation the caller
    /// created, which nobody else reads or writes meanwhile.
    pub fn fill_from(&self, offset: u64, len: u64, src: &mut dyn Read) -> Result<(), StoreError> {
        self.check_writable()?;
        let (off, len) = self.check(offset, len)?;
        // SAFETY: the range was bounds-checked against the live mapping, which stays mapped while
        // `&self` is borrowed, and any byte pattern is a valid `u8`. Per the caller contract no
        // one else accesses the range while this exclusive slice exists (it ends with this call).
        let dst = unsafe { std::slice::from_raw_parts_mut(self.base_ptr().add(off), len) };
        src.read_exact(dst)
            .map_err(|e| StoreError::io(format!("reading {len} bytes into the object store"), e))
    }

    /// Tests: behave as if the file system could hold only the first `bytes` of the file.
    #[cfg(test)]
    pub(crate) fn limit_fs_for_tests(&self, bytes: u64) {
        self.reservation
            .fs_limit
            .store(bytes, std::sync::atomic::Ordering::Relaxed);
    }

    fn check_writable(&self) -> Result<(), StoreError> {
        if self.writable {
            return Ok(());
        }
        Err(StoreError::io(
            format!("arena {} is mapped read-only", self.path.display()),
            io::ErrorKind::PermissionDenied.into(),
        ))
    }

    /// Removes the backing file. Only the creator may do so; it is also done on drop. Processes
    /// that already mapped the arena keep their mapping.
    pub fn unlink(&self) -> Result<(), StoreError> {
        if !self.owner {
            return Err(StoreError::io(
                format!(
                    "arena {} was opened, not created here; only its owner unlinks it",
                    self.path.display()
                ),
                io::ErrorKind::PermissionDenied.into(),
            ));
        }
        if self.unlinked.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        match std::fs::remove_file(&self.path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(StoreError::io(
                format!("removing arena file {}", self.path.display()),
                e,
            )),
        }
    }
}

impl Drop for Arena {
    fn drop(&mut self) {
        // Stop the warmer before the mapping goes away.
        self.reservation.stop();
        if self.owner
            && let Err(e) = self.unlink()
        {
            tracing::warn!(error = %e, "could not remove the arena file");
        }
    }
}

/// Removes a half-built arena file unless disarmed.
struct RemoveOnDrop(Option<PathBuf>);

impl RemoveOnDrop {
    fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = std::fs::remove_file(p);
        }
    }
}

#[cfg(test)]
pub(crate) mod tests;
