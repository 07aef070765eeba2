//! Tests of the object table: lifecycle, pins, errors, on-demand reservation and the LRU clock.

use super::*;
use crate::arena::tests::{cold_test_arena, test_arena};

/// A store over a fresh arena that removes itself when dropped.
pub(crate) fn store(tag: &str, size: usize) -> (Store<u64>, tempfile::TempDir) {
    let (arena, dir) = test_arena(tag, size);
    (Store::new(arena), dir)
}

/// Deterministic bytes for object `key`.
pub(crate) fn fill(key: u64, len: u64) -> Vec<u8> {
    (0..len)
        .map(|i| (i.wrapping_mul(131) ^ key.wrapping_mul(7)) as u8)
        .collect()
}

/// Creates, writes and seals object `key` of `len` bytes (with `create`).
pub(crate) fn put(s: &mut Store<u64>, key: u64, len: u64) -> Result<Allocation, StoreError> {
    let a = s.create(key, len)?;
    s.arena().write(a.offset, &fill(key, len)).unwrap();
    s.seal(key)
}

/// Whether `key` is in the store with its original bytes.
pub(crate) fn intact(s: &Store<u64>, key: u64) -> bool {
    let Some(a) = s.get(&key) else {
        return false;
    };
    s.arena().slice(a.offset, a.len).unwrap() == &fill(key, a.len)[..]
}

#[test]
fn store_is_send() {
    fn check<T: Send>() {}
    check::<Store<u64>>();
    check::<Store<[u8; 20]>>();
}

#[test]
fn create_seal_get_roundtrip() {
    let (mut s, _dir) = store("roundtrip", 1 << 20);
    let a = s.create(1, 100).unwrap();
    assert_eq!(a.len, 100);
    assert_eq!(a.offset % 64, 0);
    assert_eq!(s.get(&1), None, "unsealed objects are invisible");
    assert!(!s.contains(&1));
    assert!(matches!(s.pin(&1), Err(StoreError::NotSealed)));
    s.arena().write(a.offset, &[42; 100]).unwrap();
    assert_eq!(s.seal(1).unwrap(), a);
    assert!(matches!(s.seal(1), Err(StoreError::AlreadySealed)));
    assert_eq!(s.get(&1), Some(a));
    assert_eq!(s.arena().slice(a.offset, a.len).unwrap(), &[42; 100][..]);
    assert!(matches!(s.create(1, 5), Err(StoreError::AlreadyExists)));
    assert!(matches!(s.abort(1), Err(StoreError::AlreadySealed)));
}

#[test]
fn unknown_keys_are_errors() {
    let (mut s, _dir) = store("unknown", 1 << 16);
    assert!(matches!(s.seal(9), Err(StoreError::NotFound)));
    assert!(matches!(s.abort(9), Err(StoreError::NotFound)));
    assert!(matches!(s.pin(&9), Err(StoreError::NotFound)));
    assert!(matches!(s.release(&9), Err(StoreError::NotFound)));
    assert!(matches!(s.delete(&9), Err(StoreError::NotFound)));
    assert_eq!(s.get(&9), None);
}

#[test]
fn zero_length_objects_take_64_bytes() {
    let (mut s, _dir) = store("zero", 1 << 16);
    let a = s.create(1, 0).unwrap();
    let b = s.create(2, 0).unwrap();
    assert_ne!(a.offset, b.offset);
    assert_eq!(a.len, 0);
    assert_eq!(s.stats().used, 128);
    s.seal(1).unwrap();
    assert!(s.arena().slice(a.offset, a.len).unwrap().is_empty());
}

#[test]
fn abort_frees_space() {
    let (mut s, _dir) = store("abort", 1 << 16);
    s.create(1, 1000).unwrap();
    s.abort(1).unwrap();
    assert_eq!(s.stats().used, 0);
    assert_eq!(s.stats().num_objects, 0);
    assert!(matches!(s.abort(1), Err(StoreError::NotFound)));
}

#[test]
fn too_large_and_full() {
    let (mut s, _dir) = store("full", 1 << 16);
    let cap = s.stats().capacity;
    let err = s.create(1, cap + 1).unwrap_err();
    assert!(matches!(err, StoreError::TooLarge { .. }), "{err:?}");
    assert!(matches!(
        s.create(1, u64::MAX),
        Err(StoreError::TooLarge { .. })
    ));
    s.create(1, cap / 2).unwrap();
    s.seal(1).unwrap();
    s.pin(&1).unwrap();
    match s.create(2, cap / 2 + 1).unwrap_err() {
        StoreError::Full {
            requested,
            capacity,
            used,
            pinned,
            pinned_objects,
        } => {
            assert_eq!(
                (requested, capacity, used, pinned, pinned_objects),
                (cap / 2 + 1, cap, cap / 2, cap / 2, 1)
            );
        }
        other => panic!("expected Full, got {other:?}"),
    }
    assert_eq!(s.stats().num_objects, 1);
}

#[test]
fn filling_up_never_corrupts_existing_objects() {
    let (mut s, _dir) = store("fill", 1 << 20);
    let mut objects = Vec::new();
    let mut key = 0u64;
    let full = loop {
        let len = 1000 + (key * 7919) % 30_000;
        match s.create(key, len) {
            Ok(a) => {
                let fill: Vec<u8> = (0..len).map(|i| (i ^ key) as u8).collect();
                s.arena().write(a.offset, &fill).unwrap();
                s.seal(key).unwrap();
                objects.push((key, fill));
                key += 1;
            }
            Err(e) => break e,
        }
    };
    assert!(matches!(full, StoreError::Full { .. }), "{full:?}");
    assert!(full.to_string().contains("free references"));
    // Free every other object and refill the holes with other patterns.
    for (k, _) in objects.iter().step_by(2) {
        assert!(s.delete(k).unwrap());
    }
    objects = objects.into_iter().skip(1).step_by(2).collect();
    while let Ok(a) = s.create(key, 900) {
        let fill = vec![0xEE; 900];
        s.arena().write(a.offset, &fill).unwrap();
        s.seal(key).unwrap();
        objects.push((key, fill));
        key += 1;
    }
    for (k, fill) in &objects {
        let a = s.get(k).unwrap();
        assert_eq!(
            s.arena().slice(a.offset, a.len).unwrap(),
            &fill[..],
            "object {k}"
        );
    }
    let st = s.stats();
    assert_eq!(st.num_objects, objects.len() as u64);
    for (k, _) in &objects {
        assert!(s.delete(k).unwrap());
    }
    assert_eq!(s.stats().used, 0);
    assert_eq!(s.stats().largest_free, s.stats().capacity);
}

#[test]
fn revive_brings_back_an_object_still_pinned() {
    let (mut s, _dir) = store("revive", 1 << 16);
    let a = put(&mut s, 1, 500).unwrap();
    s.pin(&1).unwrap();
    assert!(!s.delete(&1).unwrap());
    assert!(s.is_pinned(&1) && !s.contains(&1), "deleted, still read");
    assert_eq!(s.revive(&1), Some(a));
    assert_eq!(s.get(&1), Some(a));
    assert!(intact(&s, 1));
    s.release(&1).unwrap();
    assert!(intact(&s, 1), "the last release no longer frees it");
    assert_eq!(s.revive(&1), Some(a), "a live object is simply there");
    s.create(2, 10).unwrap();
    assert_eq!(s.revive(&2), None, "an unsealed object is not a value yet");
    assert_eq!(s.revive(&3), None);
}

#[test]
fn delete_waits_for_the_last_release() {
    let (mut s, _dir) = store("pins", 1 << 16);
    let a = s.create(1, 500).unwrap();
    s.seal(1).unwrap();
    assert_eq!(s.pin(&1).unwrap(), a);
    s.pin(&1).unwrap();
    let st = s.stats();
    assert_eq!((st.num_pinned, st.pinned_bytes), (1, 512));

    assert!(!s.delete(&1).unwrap(), "pinned objects are not freed now");
    assert_eq!(
        s.get(&1),
        None,
        "deleted objects are hidden from new readers"
    );
    assert!(matches!(s.pin(&1), Err(StoreError::NotFound)));
    assert!(matches!(s.create(1, 10), Err(StoreError::AlreadyExists)));
    assert!(!s.delete(&1).unwrap(), "a second delete is a no-op");
    assert_eq!(s.stats().used, 512);

    s.release(&1).unwrap();
    assert_eq!(s.stats().used, 512, "one pin is still held");
    s.release(&1).unwrap();
    let st = s.stats();
    assert_eq!(
        (st.used, st.num_objects, st.num_pinned, st.pinned_bytes),
        (0, 0, 0, 0)
    );
    assert!(matches!(s.release(&1), Err(StoreError::NotFound)));
    // The key can be reused once freed.
    s.create(1, 10).unwrap();
}

#[test]
fn release_without_pin_and_unpinned_delete() {
    let (mut s, _dir) = store("release", 1 << 16);
    s.create(1, 64).unwrap();
    s.seal(1).unwrap();
    assert!(matches!(s.release(&1), Err(StoreError::NotPinned)));
    s.pin(&1).unwrap();
    s.release(&1).unwrap();
    assert!(matches!(s.release(&1), Err(StoreError::NotPinned)));
    assert_eq!(s.stats().num_pinned, 0);
    assert!(s.contains(&1), "release without delete keeps the object");
    assert!(s.delete(&1).unwrap());
    assert!(!s.contains(&1));
    // Deleting an unsealed object frees it like abort.
    s.create(2, 64).unwrap();
    assert!(s.delete(&2).unwrap());
    assert_eq!(s.stats().used, 0);
}

#[test]
fn create_reserves_pages_before_handing_them_out() {
    use std::os::unix::fs::MetadataExt;
    let (arena, _dir) = cold_test_arena("grow", 256 << 20);
    let mut s = Store::new(arena);
    assert_eq!(s.arena().reserved(), 0);
    let a = s.create(1, 1000).unwrap();
    assert!(s.arena().reserved() >= a.offset + 1024);
    let b = s.create(2, 150 << 20).unwrap();
    let end = b.offset + b.len;
    let reserved = s.arena().reserved();
    assert!(reserved >= end, "{reserved} < {end}");
    let blocks = std::fs::metadata(s.arena().path()).unwrap().blocks() * 512;
    assert!(
        blocks >= end,
        "file has {blocks} bytes of blocks, object ends at {end}"
    );
    s.arena().write(end - 5, b"tail!").unwrap();
}

#[test]
fn a_full_file_system_makes_create_fail_as_full() {
    let (arena, _dir) = cold_test_arena("nospace", 256 << 20);
    arena.limit_fs_for_tests(100 << 20);
    let mut s = Store::new(arena);
    put(&mut s, 1, 10 << 20).unwrap();
    let before = s.stats();
    let err = s.create(2, 150 << 20).unwrap_err();
    assert!(matches!(err, StoreError::Full { .. }), "{err:?}");
    assert_eq!(s.stats(), before, "a failed create leaves nothing behind");
    assert!(s.arena().reserved() <= 100 << 20);
    // What still fits below the limit works, and the old object is untouched.
    put(&mut s, 3, 20 << 20).unwrap();
    assert!(intact(&s, 1) && intact(&s, 3));
}

#[test]
fn uses_advance_the_lru_clock() {
    let (mut s, _dir) = store("clock", 1 << 16);
    put(&mut s, 1, 10).unwrap();
    put(&mut s, 2, 10).unwrap();
    let t = |s: &Store<u64>, k: u64| s.objects[&k].last_use.load(Ordering::Relaxed);
    assert!(t(&s, 1) < t(&s, 2));
    s.get(&1).unwrap();
    assert!(t(&s, 1) > t(&s, 2));
    s.pin(&2).unwrap();
    assert!(t(&s, 2) > t(&s, 1));
    let before = t(&s, 1);
    assert!(s.contains(&1));
    assert_eq!(t(&s, 1), before, "contains is not a use");
}
