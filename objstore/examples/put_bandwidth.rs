//! Measures the `put` hot path: copying a payload into the arena with `Arena::write`.
//!
//! Run with `cargo run --release -p peer-objstore --example put_bandwidth [MiB]`.

use std::time::Instant;

use peer_objstore::{Arena, Store};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mib: usize = std::env::args().nth(1).map_or(Ok(256), |a| a.parse())?;
    let size = mib << 20;
    let name = format!("peer-objstore-bench-{}", std::process::id());
    let t = Instant::now();
    let arena = Arena::create(&name, 2 * size + (1 << 20), &std::env::temp_dir())?;
    println!("create+reserve {} MiB: {:.1} ms", arena.len() >> 20, ms(t));
    let mut store: Store<u64> = Store::new(arena);
    let payload: Vec<u8> = (0..size).map(|i| i as u8).collect();
    for round in 0..4u64 {
        let a = store.create(round, size as u64)?;
        let t = Instant::now();
        store.arena().write(a.offset, &payload)?;
        let secs = t.elapsed().as_secs_f64();
        store.seal(round)?;
        println!(
            "write {mib} MiB (round {round}, {} pages): {:.1} ms, {:.2} GB/s",
            if round < 2 { "never written" } else { "reused" },
            secs * 1e3,
            size as f64 / secs / 1e9
        );
        if round >= 1 {
            store.delete(&(round - 1))?;
        }
    }
    // The same bytes as 4 MiB writes, each below the threading threshold: one thread.
    let a = store.get(&3).ok_or("object 3 is missing")?;
    let t = Instant::now();
    for (i, chunk) in payload.chunks(4 << 20).enumerate() {
        store
            .arena()
            .write(a.offset + (i as u64) * (4 << 20), chunk)?;
    }
    let secs = t.elapsed().as_secs_f64();
    println!(
        "single-threaded 4 MiB writes, mapped pages: {:.1} ms, {:.2} GB/s",
        secs * 1e3,
        size as f64 / secs / 1e9
    );
    let t = Instant::now();
    let mut copy = vec![0u8; size];
    copy.copy_from_slice(&payload);
    println!(
        "plain memcpy to a fresh Vec for comparison: {:.1} ms",
        ms(t)
    );
    std::hint::black_box(&copy);
    Ok(())
}

fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e3
}
