//! The shared-memory arena: one file in `/dev/shm` mapped by the node and by every client process.
//!
//! This is the only module with `unsafe`. The node creates the file ([`Arena::create`]), reserves
//! its pages in the background (so start-up stays fast), and unlinks it on drop; clients
//! map the same file ([`Arena::open`]) and read sealed objects in place.
//!
//! - Writes go through [`Arena::write`] / [`Arena::write_parts`], which check bounds and copy with
//!   several threads for large payloads (the `put` hot path).
//! - Reads go through [`Arena::slice`], or [`Arena::base_ptr`] for the Python buffer protocol.

use std::ffi::CString;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
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
/// Smallest default capacity.
const MIN_DEFAULT_CAPACITY: u64 = 64 << 20;

/// A file mapped shared into this process: the node's object store memory, or a client's view of it.
pub struct Arena {
    map: MmapRaw,
    path: PathBuf,
    /// Created by this process (`create`), so it removes the file when dropped.
    owner: bool,
    /// Mapped read-write (a client without write permission maps read-only).
    writable: bool,
    unlinked: AtomicBool,
    /// Background reservation and pre-faulting of a created arena.
    warmer: Option<Warmer>,
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
    /// The file is created exclusively with mode 0600, sized with `ftruncate`, and fully reserved
    /// with `posix_fallocate`, so writing anywhere in it later cannot SIGBUS; this process's
    /// mapping is pre-faulted, so the first write to any region runs at memory bandwidth. Both
    /// together cost roughly 0.6 s per GiB at startup. The file is removed again if any step
    /// fails, and when the arena is dropped.
    pub fn create(name: &str, size: usize, fallback_dir: &Path) -> Result<Arena, StoreError> {
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
        // thread does both, chunk by chunk, while the node already serves; the free-space check
        // in `choose_dir` guards against overcommitting /dev/shm meanwhile.
        let map = MmapOptions::new()
            .len(size)
            .map_raw(&file)
            .map_err(|e| StoreError::io(format!("mapping arena file {}", path.display()), e))?;
        let warmer = Warmer::start(
            file,
            map.as_mut_ptr() as usize,
            size.min(WARM_LIMIT),
            path.clone(),
        );
        guard.disarm();
        Ok(Arena {
            map,
            path,
            owner: true,
            writable: true,
            unlinked: AtomicBool::new(false),
            warmer: Some(warmer),
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
            warmer: None,
        })
    }

    /// Block until the background reservation of a created arena has finished (tests and
    /// benchmarks; serving never needs to wait for it).
    pub fn wait_warm(&self) {
        if let Some(w) = &self.warmer {
            while w.thread.is_some() && !w.done.load(Ordering::Acquire) {
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
        }
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
        if !self.writable {
            return Err(StoreError::io(
                format!("arena {} is mapped read-only", self.path.display()),
                io::ErrorKind::PermissionDenied.into(),
            ));
        }
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
        let threads = copy_threads(total);
        if threads <= 1 {
            copy_pieces(&pieces);
            return Ok(());
        }
        let batches = split_even(&pieces, total, threads);
        std::thread::scope(|s| {
            if let Some((first, rest)) = batches.split_first() {
                for batch in rest {
                    s.spawn(move || copy_pieces(batch));
                }
                copy_pieces(first);
            }
        });
        Ok(())
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
        if let Some(w) = self.warmer.take() {
            w.stop();
        }
        if self.owner
            && let Err(e) = self.unlink()
        {
            tracing::warn!(error = %e, "could not remove the arena file");
        }
    }
}

/// One contiguous copy: `src` to the absolute address `dst` inside a checked arena range.
#[derive(Clone, Copy)]
struct Piece<'a> {
    dst: usize,
    src: &'a [u8],
}

fn copy_pieces(pieces: &[Piece<'_>]) {
    for p in pieces {
        // SAFETY: every piece was cut from a bounds-checked destination range of a live mapping
        // (borrowed for the whole `write_parts` call, which outlives the scoped threads). Its
        // source does not lie in the mapping, so source and destination do not overlap, and
        // `write_parts` only gets here when no two destination ranges overlap, so no two threads
        // write the same byte. Other writers of the range are excluded by the caller contract
        // (the range is an unsealed allocation the caller created).
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

/// Picks `/dev/shm` when it exists and has room for `wanted` bytes, else `fallback` (with a
/// warning), else fails with `NoSpace` naming the larger of the two shortfalls.
fn choose_dir(shm: &Path, wanted: u64, fallback: &Path) -> Result<PathBuf, StoreError> {
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
const WARM_CHUNK: usize = 64 << 20;
/// The warmer covers at most this much of the arena: allocation is best-fit from
/// low offsets, so this is where objects live; warming a whole multi-GiB default
/// store would cost seconds of a core after every start.
const WARM_LIMIT: usize = 1 << 30;

/// Reserves an arena's pages and pre-faults the owner's mapping in the background.
struct Warmer {
    stop: std::sync::Arc<AtomicBool>,
    done: std::sync::Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Warmer {
    fn start(file: File, base: usize, len: usize, path: PathBuf) -> Warmer {
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let flag = std::sync::Arc::clone(&stop);
        let done = std::sync::Arc::new(AtomicBool::new(false));
        let done_flag = std::sync::Arc::clone(&done);
        let thread = std::thread::Builder::new()
            .name("peer-arena-warm".into())
            .spawn(move || {
                let mut populate = true;
                let mut at = 0;
                while at < len && !flag.load(Ordering::Relaxed) {
                    let n = WARM_CHUNK.min(len - at);
                    if let Err(e) = reserve(&file, at as u64, n as u64) {
                        tracing::warn!(
                            "could not reserve object store memory in {} past {at} bytes ({e}); \
                             writes there may fail if the file system fills up",
                            path.display()
                        );
                        done_flag.store(true, Ordering::Release);
                        return;
                    }
                    if populate {
                        // SAFETY: [base+at, base+at+n) lies inside the arena's live mapping: the
                        // Arena joins this thread before it unmaps. MADV_POPULATE_WRITE only
                        // faults pages in; it never changes their contents.
                        let rc = unsafe {
                            libc::madvise(
                                (base + at) as *mut libc::c_void,
                                n,
                                23, /* MADV_POPULATE_WRITE */
                            )
                        };
                        populate = rc == 0;
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
pub(crate) fn free_space(dir: &Path) -> io::Result<u64> {
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
fn page_size() -> usize {
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
pub(crate) mod tests {
    use super::*;
    use std::sync::atomic::AtomicU64;

    /// A name no other test or process uses.
    pub(crate) fn unique_name(tag: &str) -> String {
        static N: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        format!(
            "peer-objstore-test-{tag}-{}-{}-{nanos}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        )
    }

    /// An arena in /dev/shm (or a temp dir fallback) that removes itself when dropped.
    pub(crate) fn test_arena(tag: &str, size: usize) -> (Arena, tempfile::TempDir) {
        let fallback = tempfile::tempdir().unwrap();
        let arena = Arena::create(&unique_name(tag), size, fallback.path()).unwrap();
        (arena, fallback)
    }

    fn pattern(seed: u8, len: usize) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect()
    }

    #[test]
    fn arena_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<Arena>();
    }

    #[test]
    fn create_rounds_up_to_page_and_has_mode_0600() {
        use std::os::unix::fs::PermissionsExt;
        let (a, _dir) = test_arena("round", 1000);
        a.wait_warm();
        assert_eq!(a.len(), page_size());
        assert!(!a.is_empty());
        let meta = std::fs::metadata(a.path()).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert_eq!(meta.len(), a.len() as u64);
        // Fully reserved: allocated blocks cover the whole file.
        use std::os::unix::fs::MetadataExt;
        assert!(meta.blocks() * 512 >= a.len() as u64);
    }

    #[test]
    fn create_refuses_existing_and_bad_names() {
        let (a, dir) = test_arena("excl", 4096);
        let name = a.path().file_name().unwrap().to_str().unwrap().to_owned();
        let dup = Arena::create(&name, 4096, dir.path());
        assert!(matches!(dup, Err(StoreError::Io { .. })), "{dup:?}");
        assert!(
            a.path().exists(),
            "a failed create must not remove someone else's file"
        );
        for bad in ["", ".", "..", "a/b"] {
            assert!(Arena::create(bad, 4096, dir.path()).is_err());
        }
    }

    #[test]
    fn two_mappings_see_each_others_writes() {
        let (a, _dir) = test_arena("two", 1 << 20);
        let b = Arena::open(a.path()).unwrap();
        assert_eq!(b.len(), a.len());
        let data = pattern(7, 5000);
        a.write(4096, &data).unwrap();
        assert_eq!(b.slice(4096, 5000).unwrap(), &data[..]);
        b.write(0, b"hello").unwrap();
        assert_eq!(a.slice(0, 5).unwrap(), b"hello");
        assert_ne!(a.base_ptr(), b.base_ptr());
        // Only the creator removes the file.
        assert!(b.unlink().is_err());
        drop(b);
        assert!(a.path().exists());
    }

    #[test]
    fn unlink_on_drop_leaves_no_file() {
        let (a, _dir) = test_arena("drop", 1 << 16);
        let path = a.path().to_path_buf();
        if Path::new(SHM_DIR).is_dir() && free_space(Path::new(SHM_DIR)).unwrap() >= 1 << 16 {
            assert!(path.starts_with(SHM_DIR), "{}", path.display());
        }
        assert!(path.exists());
        drop(a);
        assert!(!path.exists());
    }

    #[test]
    fn explicit_unlink_is_idempotent_and_mapping_survives() {
        let (a, _dir) = test_arena("unlink", 1 << 16);
        a.write(0, b"still here").unwrap();
        a.unlink().unwrap();
        assert!(!a.path().exists());
        a.unlink().unwrap();
        assert_eq!(a.slice(0, 10).unwrap(), b"still here");
    }

    #[test]
    fn too_big_fails_cleanly_and_leaves_no_file() {
        let dir = tempfile::tempdir().unwrap();
        let name = unique_name("huge");
        let err = Arena::create(&name, 1 << 52, dir.path()).unwrap_err();
        match &err {
            StoreError::NoSpace { wanted, free, .. } => assert!(wanted > free),
            other => panic!("expected NoSpace, got {other:?}"),
        }
        assert!(err.to_string().contains("not enough space"), "{err}");
        assert!(!Path::new(SHM_DIR).join(&name).exists());
        assert!(!dir.path().join(&name).exists());
        let err = Arena::create(&name, usize::MAX, dir.path()).unwrap_err();
        assert!(matches!(err, StoreError::TooLarge { .. }), "{err:?}");
    }

    #[test]
    fn falls_back_when_shm_is_missing() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("no-shm-here");
        assert_eq!(choose_dir(&missing, 4096, dir.path()).unwrap(), dir.path());
        let err = choose_dir(&missing, u64::MAX, dir.path()).unwrap_err();
        assert!(matches!(err, StoreError::NoSpace { .. }), "{err:?}");
    }

    #[test]
    fn open_rejects_missing_and_empty_files() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            Arena::open(&dir.path().join("nope")),
            Err(StoreError::Io { .. })
        ));
        let empty = dir.path().join("empty");
        std::fs::write(&empty, b"").unwrap();
        assert!(matches!(Arena::open(&empty), Err(StoreError::Io { .. })));
    }

    #[test]
    fn out_of_bounds_is_an_error_not_a_panic() {
        let (a, _dir) = test_arena("oob", 4096);
        let n = a.len() as u64;
        assert!(a.slice(n, 0).unwrap().is_empty());
        for (off, len) in [
            (n, 1),
            (n - 1, 2),
            (u64::MAX, 1),
            (1, u64::MAX),
            (u64::MAX, 0),
        ] {
            assert!(matches!(
                a.slice(off, len),
                Err(StoreError::OutOfBounds { .. })
            ));
        }
        assert!(matches!(
            a.write(n - 2, b"abc"),
            Err(StoreError::OutOfBounds { .. })
        ));
        // A bad part means nothing is written.
        a.write(0, b"zzzz").unwrap();
        assert!(a.write_parts(&[(0, b"ok"), (n, b"x")]).is_err());
        assert_eq!(a.slice(0, 4).unwrap(), b"zzzz");
    }

    #[test]
    fn large_writes_use_threads_and_land_exactly() {
        let (a, _dir) = test_arena("big", 40 << 20);
        let data = pattern(3, (20 << 20) + 123);
        a.write(64, &data).unwrap();
        assert_eq!(a.slice(64, data.len() as u64).unwrap(), &data[..]);
        assert_eq!(a.slice(0, 64).unwrap(), &[0u8; 64][..]);
        let end = 64 + data.len() as u64;
        assert!(a.slice(end, 4096).unwrap().iter().all(|&b| b == 0));
    }

    #[test]
    fn gather_write_places_every_part() {
        let (a, _dir) = test_arena("gather", 64 << 20);
        let parts_data: Vec<Vec<u8>> = [100, 9 << 20, 0, 3 << 20, 7]
            .iter()
            .enumerate()
            .map(|(i, &n)| pattern(i as u8, n))
            .collect();
        let mut off = 0u64;
        let mut parts = Vec::new();
        for d in &parts_data {
            parts.push((off, &d[..]));
            off += (d.len() as u64).next_multiple_of(64) + 64;
        }
        a.write_parts(&parts).unwrap();
        for (o, d) in &parts {
            assert_eq!(a.slice(*o, d.len() as u64).unwrap(), *d);
        }
    }

    #[test]
    fn overlapping_and_in_arena_sources_copy_in_order() {
        let (a, _dir) = test_arena("overlap", 32 << 20);
        let data = pattern(9, 10 << 20);
        a.write(0, &data).unwrap();
        // Source inside the arena, overlapping the destination (memmove semantics).
        let src = a.slice(0, 10 << 20).unwrap();
        a.write(4096, src).unwrap();
        assert_eq!(a.slice(4096, 10 << 20).unwrap(), &data[..]);
        // Overlapping destinations: later parts win.
        let x = vec![1u8; 9 << 20];
        let y = vec![2u8; 9 << 20];
        a.write_parts(&[(0, &x), (1 << 20, &y)]).unwrap();
        assert_eq!(a.slice(0, 1).unwrap(), &[1]);
        assert!(a.slice(1 << 20, 9 << 20).unwrap().iter().all(|&b| b == 2));
    }

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

    #[test]
    fn default_capacity_is_sane() {
        let cap = default_capacity();
        assert!(cap >= MIN_DEFAULT_CAPACITY);
        if let Some(mem) = physical_memory() {
            assert!(cap <= (mem / 10 * 3).max(MIN_DEFAULT_CAPACITY));
        }
    }
}
