//! Tests of the arena: creation, mapping from two processes, bounds, copies and moves.

use super::reserve::free_space;
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
/// A test arena whose first GiB is reserved and pre-faulted in the background.
pub(crate) fn test_arena(tag: &str, size: usize) -> (Arena, tempfile::TempDir) {
    let fallback = tempfile::tempdir().unwrap();
    let arena = Arena::create_warming(&unique_name(tag), size, fallback.path(), 1 << 30).unwrap();
    (arena, fallback)
}

/// Like [`test_arena`], without a warmer: every page is reserved on demand.
pub(crate) fn cold_test_arena(tag: &str, size: usize) -> (Arena, tempfile::TempDir) {
    let fallback = tempfile::tempdir().unwrap();
    let arena = Arena::create_warming(&unique_name(tag), size, fallback.path(), 0).unwrap();
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
fn move_within_is_a_bounds_checked_memmove() {
    let (a, _dir) = test_arena("move", 1 << 20);
    let data = pattern(5, 10_000);
    a.write(8192, &data).unwrap();
    // Down, overlapping its own source.
    a.move_within(8192, 4096, 10_000).unwrap();
    assert_eq!(a.slice(4096, 10_000).unwrap(), &data[..]);
    // Up, overlapping, and a disjoint move.
    a.move_within(4096, 6000, 10_000).unwrap();
    assert_eq!(a.slice(6000, 10_000).unwrap(), &data[..]);
    a.move_within(6000, 0, 10_000).unwrap();
    assert_eq!(a.slice(0, 10_000).unwrap(), &data[..]);
    let n = a.len() as u64;
    for (from, to, len) in [(n - 10, 0, 11), (0, n - 10, 11), (u64::MAX, 0, 1)] {
        assert!(matches!(
            a.move_within(from, to, len),
            Err(StoreError::OutOfBounds { .. })
        ));
    }
    assert_eq!(a.slice(0, 10_000).unwrap(), &data[..]);
}

#[test]
fn fill_from_reads_exactly_or_fails() {
    let (a, _dir) = test_arena("fill", 1 << 16);
    let data = pattern(1, 5000);
    a.fill_from(64, 5000, &mut &data[..]).unwrap();
    assert_eq!(a.slice(64, 5000).unwrap(), &data[..]);
    let err = a.fill_from(64, 5001, &mut &data[..]).unwrap_err();
    assert!(matches!(err, StoreError::Io { .. }), "{err:?}");
    let n = a.len() as u64;
    assert!(matches!(
        a.fill_from(n, 1, &mut &data[..]),
        Err(StoreError::OutOfBounds { .. })
    ));
}
