//! Cost measurements of growth, compaction, spilling and restoring (ignored by default; run with
//! `cargo test --release -p peer-objstore cost_tests -- --ignored --nocapture`).

use std::time::Instant;

use crate::arena::tests::cold_test_arena;
use crate::store::Store;
use crate::store::tests::{fill, intact, put, store};

const MB: u64 = 1_000_000;

#[test]
#[ignore = "timing; run in release with --ignored --nocapture"]
fn cost_of_synchronous_reservation() {
    let (arena, _dir) = cold_test_arena("cost-reserve", 1 << 30);
    arena.ensure_reserved(1).unwrap();
    let start = arena.reserved();
    let t = Instant::now();
    let steps = 8;
    for i in 1..=steps {
        arena.ensure_reserved(start + i * 100 * MB).unwrap();
    }
    let per = t.elapsed() / steps as u32;
    assert!(arena.reserved() >= start + steps * 100 * MB);
    println!("synchronous reservation: {per:?} per 100 MB");
}

#[test]
#[ignore = "timing; run in release with --ignored --nocapture"]
fn cost_of_compacting_a_256_mib_store() {
    let (mut s, _dir) = store("cost-compact", 256 << 20);
    s.arena().wait_warm();
    let cap = s.stats().capacity;
    let len = (4 << 20) - 64;
    let n = cap / (4 << 20);
    for k in 0..n {
        put(&mut s, k, len).unwrap();
    }
    for k in (1..n).step_by(2) {
        s.delete(&k).unwrap();
    }
    let t = Instant::now();
    s.create(10_000, cap / 2).unwrap();
    let elapsed = t.elapsed();
    assert_eq!(s.stats().compactions, 1);
    assert!((0..n).step_by(2).all(|k| intact(&s, k)));
    println!(
        "compaction of a 256 MiB store ({} MiB moved in {} objects): {elapsed:?}",
        (n / 2 - 1) * 4,
        n / 2 - 1
    );
}

#[test]
#[ignore = "timing; run in release with --ignored --nocapture"]
fn cost_of_spilling_and_restoring_50_mb() {
    let (mut s, _dir): (Store<u64>, _) = store("cost-spill", 128 << 20);
    s.arena().wait_warm();
    let spill = tempfile::tempdir().unwrap();
    put(&mut s, 1, 50 * MB).unwrap();
    put(&mut s, 2, 50 * MB).unwrap();
    let t = Instant::now();
    let (_, spilled) = s.create_or_spill(3, 50 * MB, spill.path()).unwrap();
    let spill_time = t.elapsed();
    assert_eq!(spilled.len(), 1);
    assert_eq!(spilled[0].key, 1);
    s.abort(3).unwrap();
    let t = Instant::now();
    let (_, again) = s
        .restore(1, &spilled[0].path, 50 * MB, spill.path())
        .unwrap();
    let restore_time = t.elapsed();
    assert!(again.is_empty());
    assert!(intact(&s, 1));
    // Restoring into a full store: reads the file to memory, spills others, then copies.
    put(&mut s, 3, 27 * MB).unwrap();
    let (a, spilled) = s.create_or_spill(4, 50 * MB, spill.path()).unwrap();
    s.arena().write(a.offset, &fill(4, 50 * MB)).unwrap();
    s.seal(4).unwrap();
    assert_eq!(spilled.len(), 1);
    assert_eq!(spilled[0].key, 2, "least recently used");
    let t = Instant::now();
    let (_, again) = s
        .restore(2, &spilled[0].path, 50 * MB, spill.path())
        .unwrap();
    let full_restore = t.elapsed();
    assert!(!again.is_empty());
    assert!(intact(&s, 2));
    println!(
        "50 MB object: spill {spill_time:?}, restore {restore_time:?}, restore into a full \
         store (spilling {} MB) {full_restore:?}",
        again.iter().map(|x| x.len).sum::<u64>() / MB
    );
}
