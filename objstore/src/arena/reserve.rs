//! Backing-file space of a created arena: where the file goes, and which of its pages are reserved.
//!
//! The file is sized with `ftruncate`, so it starts sparse; a write to a page that the file
//! system cannot back would raise SIGBUS. [`Reservation`] prevents that with a high-water mark:
//! every byte below it has been reserved with `posix_fallocate`. A background [`Warmer`] advances
//! the mark over the first [`WARM_LIMIT`] bytes (and pre-faults them); the store calls
//! [`Reservation::ensure`] before handing out any byte above the mark, which reserves
//! synchronously and reports a full file system as an error instead of a later SIGBUS.

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::error::StoreError;

use super::SHM_DIR;

/// Smallest default capacity.
const MIN_DEFAULT_CAPACITY: u64 = 64 << 20;
/// A synchronous reservation reaches this far past the end it was asked for, so that a run of
/// small creates costs one `posix_fallocate`, not one each.
pub const RESERVE_SLACK: u64 = 64 << 20;

/// Picks `/dev/shm` when it exists and has room for `wanted` bytes, else `fallback` (with a
/// warning), else fails with `NoSpace` naming the larger of the two shortfalls.
pub(super) fn choose_dir(shm: &Path, wanted: u64, fallback: &Path) -> Result<PathBuf, StoreError> {
    let why = if !shm.is_dir() {
        format!("{} does not exist", shm.display())
    } else {
        match free_space(shm) {
            Ok(free) if free >= wanted => return Ok(shm.to_path_buf()),
            Ok(free) => format!("{} has only {free} bytes free", shm.display()),
            Err(e) => format!("cannot stat {}: {e}", shm.display()),
        }
    };
    let free = free_space(fallback)
        .map_err(|e| StoreError::io(format!("checking free space in {}", fallback.display()), e))?;
    if free < wanted {
        return Err(StoreError::NoSpace {
            dir: fallback.to_path_buf(),
            wanted,
            free,
        });
    }
    tracing::warn!(
        wanted,
        fallback = %fallback.display(),
        "{why}; putting the object store in the fallback directory, which may be slower"
    );
    Ok(fallback.to_path_buf())
}

/// Bytes reserved and pre-faulted per step of the warmer.
const WARM_CHUNK: u64 = 64 << 20;
/// How much of a new arena [`Arena::create`] reserves and pre-faults in the
/// background: nothing. Pre-faulted pages count as the node's resident memory,
/// and an idle node should cost almost no memory (Ray's store, too, is backed
/// lazily); creates reserve what they hand out ([`Reservation::ensure`]), so the
/// first write into fresh memory pays the page faults once. Use
/// [`Arena::create_warming`] for a pre-faulted prefix.
pub const WARM_LIMIT: u64 = 0;

/// Which prefix of an arena file is reserved, and the means to extend it.
pub(super) struct Reservation {
    /// The backing file (created arenas only).
    file: Option<Arc<File>>,
    path: PathBuf,
    len: u64,
    /// Every byte below this offset is reserved; only ever grows.
    high_water: Arc<AtomicU64>,
    warmer: Option<Warmer>,
    /// Tests: pretend the file system has room for only this many bytes of the file.
    #[cfg(test)]
    pub(super) fs_limit: AtomicU64,
}

impl Reservation {
    /// An opened (client) arena: its creator reserves, and clients only write allocations the
    /// creator's store handed out, so everything counts as reserved here.
    pub(super) fn opened(len: u64, path: &Path) -> Self {
        Reservation {
            file: None,
            path: path.to_path_buf(),
            len,
            high_water: Arc::new(AtomicU64::new(len)),
            warmer: None,
            #[cfg(test)]
            fs_limit: AtomicU64::new(u64::MAX),
        }
    }

    /// A freshly created, still sparse arena file of `len` bytes mapped at `base`: starts a
    /// warmer over its first `warm` bytes (none when `warm` is zero).
    pub(super) fn created(file: File, base: usize, len: u64, warm: u64, path: &Path) -> Self {
        let file = Arc::new(file);
        let high_water = Arc::new(AtomicU64::new(0));
        let warmer = (warm > 0).then(|| {
            Warmer::start(
                Arc::clone(&file),
                base,
                len.min(warm),
                Arc::clone(&high_water),
                path.to_path_buf(),
            )
        });
        Reservation {
            file: Some(file),
            path: path.to_path_buf(),
            len,
            high_water,
            warmer,
            #[cfg(test)]
            fs_limit: AtomicU64::new(u64::MAX),
        }
    }

    /// The reserved high-water mark.
    pub(super) fn high_water(&self) -> u64 {
        self.high_water.load(Ordering::Acquire)
    }

    /// Makes sure `[0, end)` is reserved, reserving from the mark to `end` plus
    /// [`RESERVE_SLACK`] (capped at the file's length) when it is not. Fails, reserving nothing
    /// new, when the file system cannot hold it.
    pub(super) fn ensure(&self, end: u64) -> io::Result<()> {
        if end > self.len {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        let from = self.high_water();
        if end <= from {
            return Ok(());
        }
        let Some(file) = &self.file else {
            return Ok(());
        };
        let to = end.saturating_add(RESERVE_SLACK).min(self.len);
        #[cfg(test)]
        if to > self.fs_limit.load(Ordering::Relaxed) {
            return Err(io::Error::from_raw_os_error(libc::ENOSPC));
        }
        reserve(file, from, to - from)?;
        self.high_water.fetch_max(to, Ordering::AcqRel);
        tracing::debug!(from, to, path = %self.path.display(), "reserved object store pages");
        Ok(())
    }

    /// Blocks until the warmer (if any) has finished.
    pub(super) fn wait_warm(&self) {
        if let Some(w) = &self.warmer {
            while w.thread.is_some() && !w.done.load(Ordering::Acquire) {
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
        }
    }

    /// Stops the warmer; must run before the mapping it pre-faults goes away.
    pub(super) fn stop(&mut self) {
        if let Some(w) = self.warmer.take() {
            w.stop();
        }
    }
}

/// Reserves an arena's first pages and pre-faults the owner's mapping in the background,
/// advancing the shared high-water mark chunk by chunk.
struct Warmer {
    stop: Arc<AtomicBool>,
    done: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Warmer {
    fn start(
        file: Arc<File>,
        base: usize,
        len: u64,
        high_water: Arc<AtomicU64>,
        path: PathBuf,
    ) -> Warmer {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let done = Arc::new(AtomicBool::new(false));
        let done_flag = Arc::clone(&done);
        let thread = std::thread::Builder::new()
            .name("peer-arena-warm".into())
            .spawn(move || {
                let mut populate = true;
                let mut at = 0u64;
                while at < len && !flag.load(Ordering::Relaxed) {
                    let n = WARM_CHUNK.min(len - at);
                    if high_water.load(Ordering::Acquire) < at + n {
                        if let Err(e) = reserve(&file, at, n) {
                            tracing::warn!(
                                "could not reserve object store memory in {} past {at} bytes \
                                 ({e}); creates there will reserve it themselves or fail as full",
                                path.display()
                            );
                            break;
                        }
                        high_water.fetch_max(at + n, Ordering::AcqRel);
                    }
                    if populate {
                        populate = populate_range(base, at, n);
                    }
                    at += n;
                }
                done_flag.store(true, Ordering::Release);
            })
            .ok();
        Warmer { stop, done, thread }
    }

    fn stop(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Pre-faults `[base + at, base + at + n)` of the owner's mapping for writing; false when the
/// kernel does not support it (then nobody should ask again).
fn populate_range(base: usize, at: u64, n: u64) -> bool {
    let (Ok(at), Ok(n)) = (usize::try_from(at), usize::try_from(n)) else {
        return false;
    };
    // SAFETY: [base+at, base+at+n) lies inside the arena's live mapping: the warmer covers at
    // most the arena's length, and the Arena joins the warmer before it unmaps.
    // MADV_POPULATE_WRITE only faults pages in; it never changes their contents.
    let rc = unsafe {
        libc::madvise(
            (base + at) as *mut libc::c_void,
            n,
            23, /* MADV_POPULATE_WRITE */
        )
    };
    rc == 0
}

/// Reserves the blocks of `file` in `[offset, offset + len)`.
fn reserve(file: &File, offset: u64, len: u64) -> io::Result<()> {
    let off =
        libc::off_t::try_from(offset).map_err(|_| io::Error::from_raw_os_error(libc::EFBIG))?;
    let len = libc::off_t::try_from(len).map_err(|_| io::Error::from_raw_os_error(libc::EFBIG))?;
    loop {
        // SAFETY: the descriptor belongs to `file`, which is open for writing and borrowed for
        // the duration of the call; posix_fallocate touches no memory of ours.
        let rc = unsafe { libc::posix_fallocate(file.as_raw_fd(), off, len) };
        match rc {
            0 => return Ok(()),
            libc::EINTR => continue,
            err => return Err(io::Error::from_raw_os_error(err)),
        }
    }
}

/// Bytes available to unprivileged users on the filesystem holding `dir`.
pub(super) fn free_space(dir: &Path) -> io::Result<u64> {
    let c = CString::new(dir.as_os_str().as_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `c` is a NUL-terminated path that outlives the call and `st` points to writable
    // storage of the right type, which statvfs fills on success.
    let rc = unsafe { libc::statvfs(c.as_ptr(), st.as_mut_ptr()) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: statvfs returned 0, so it initialised `st`.
    let st = unsafe { st.assume_init() };
    Ok(st.f_bavail.saturating_mul(st.f_frsize))
}

/// The system page size.
pub(super) fn page_size() -> usize {
    // SAFETY: sysconf only reads a system constant.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(n).ok().filter(|&n| n > 0).unwrap_or(4096)
}

/// Physical memory in bytes, if the system reports it.
fn physical_memory() -> Option<u64> {
    // SAFETY: sysconf only reads system constants.
    let pages = unsafe { libc::sysconf(libc::_SC_PHYS_PAGES) };
    let pages = u64::try_from(pages).ok().filter(|&p| p > 0)?;
    Some(pages.saturating_mul(page_size() as u64))
}

/// Default object store size: 30% of physical memory, capped at 80% of the free space in
/// `/dev/shm`, and at least 64 MiB.
pub fn default_capacity() -> u64 {
    let mut cap = physical_memory().map_or(MIN_DEFAULT_CAPACITY, |m| m / 10 * 3);
    if let Ok(free) = free_space(Path::new(SHM_DIR)) {
        cap = cap.min(free / 5 * 4);
    }
    cap.max(MIN_DEFAULT_CAPACITY)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn falls_back_when_shm_is_missing() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("no-shm-here");
        assert_eq!(choose_dir(&missing, 4096, dir.path()).unwrap(), dir.path());
        let err = choose_dir(&missing, u64::MAX, dir.path()).unwrap_err();
        assert!(matches!(err, StoreError::NoSpace { .. }), "{err:?}");
    }

    #[test]
    fn default_capacity_is_sane() {
        let cap = default_capacity();
        assert!(cap >= MIN_DEFAULT_CAPACITY);
        if let Some(mem) = physical_memory() {
            assert!(cap <= (mem / 10 * 3).max(MIN_DEFAULT_CAPACITY));
        }
    }

    use crate::arena::Arena;
    use crate::arena::tests::{cold_test_arena, test_arena};
    use std::os::unix::fs::MetadataExt;

    /// Bytes of the arena's file that are backed by blocks.
    fn allocated(a: &Arena) -> u64 {
        std::fs::metadata(a.path()).unwrap().blocks() * 512
    }

    #[test]
    fn cold_arena_reserves_on_demand_with_slack() {
        let (a, _dir) = cold_test_arena("ondemand", 256 << 20);
        assert_eq!(a.reserved(), 0);
        assert_eq!(allocated(&a), 0, "nothing is reserved up front");
        a.ensure_reserved(1000).unwrap();
        assert_eq!(a.reserved(), 1000 + RESERVE_SLACK);
        assert!(allocated(&a) >= 1000 + RESERVE_SLACK);
        // Below the mark: nothing to do.
        a.ensure_reserved(RESERVE_SLACK).unwrap();
        assert_eq!(a.reserved(), 1000 + RESERVE_SLACK);
        // The slack is capped at the arena's end, and past the end is an error.
        let n = a.len() as u64;
        a.ensure_reserved(n - 5).unwrap();
        assert_eq!(a.reserved(), n);
        assert!(allocated(&a) >= n);
        a.ensure_reserved(n).unwrap();
        assert!(a.ensure_reserved(n + 1).is_err());
    }

    #[test]
    fn a_full_file_system_is_an_error_and_the_mark_stays() {
        let (a, _dir) = cold_test_arena("enospc", 256 << 20);
        a.limit_fs_for_tests(100 << 20);
        a.ensure_reserved(1 << 20).unwrap();
        let mark = a.reserved();
        let err = a.ensure_reserved(80 << 20).unwrap_err();
        match &err {
            crate::StoreError::Io { source, .. } => {
                assert_eq!(source.raw_os_error(), Some(libc::ENOSPC));
            }
            other => panic!("expected Io, got {other:?}"),
        }
        assert_eq!(a.reserved(), mark);
        assert!(a.ensure_reserved(mark).is_ok());
    }

    #[test]
    fn past_the_end_is_refused() {
        let (a, _dir) = cold_test_arena("pastend", 1 << 20);
        let n = a.len() as u64;
        assert!(a.ensure_reserved(n + 1).is_err());
        assert_eq!(a.reserved(), 0);
    }

    #[test]
    fn warmer_advances_the_mark_and_clients_count_as_reserved() {
        let (a, _dir) = test_arena("warm", 80 << 20);
        a.wait_warm();
        assert_eq!(a.reserved(), a.len() as u64);
        let b = Arena::open(a.path()).unwrap();
        assert_eq!(b.reserved(), b.len() as u64);
        b.ensure_reserved(b.len() as u64).unwrap();
    }
}
