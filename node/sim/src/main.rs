//! `peer-node-sim`: run the deterministic simulation over many seeds, or one
//! seed with its trace.
//!
//! ```text
//! peer-node-sim --seeds 0..100000 --jobs 8     # many seeds, in parallel
//! peer-node-sim --seed 1234 --trace            # one seed, printing its trace
//! ```

#![forbid(unsafe_code)]

use std::process::ExitCode;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use peer_node_sim::{Options, World, run_seed};

fn usage() -> ExitCode {
    eprintln!(
        "usage: peer-node-sim [--seeds A..B] [--seed S] [--jobs N] [--steps N] [--no-faults] [--trace] \
         [--show KIND]"
    );
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let mut seeds = 0..1000u64;
    let mut jobs = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut options = Options::default();
    // Print the allowed answers of this kind (e.g. ObjectLost), with their seeds.
    let mut show: Option<String> = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--seeds" => {
                let Some((a, b)) = args.next().and_then(|r| {
                    let (a, b) = r.split_once("..")?;
                    Some((a.parse().ok()?, b.parse().ok()?))
                }) else {
                    return usage();
                };
                seeds = a..b;
            }
            "--seed" => match args.next().and_then(|s| s.parse::<u64>().ok()) {
                Some(s) => seeds = s..s + 1,
                None => return usage(),
            },
            "--jobs" => match args.next().and_then(|s| s.parse().ok()) {
                Some(j) => jobs = j,
                None => return usage(),
            },
            "--steps" => match args.next().and_then(|s| s.parse().ok()) {
                Some(s) => options.steps = s,
                None => return usage(),
            },
            "--no-faults" => options.faults = false,
            "--trace" => options.trace = true,
            "--show" => match args.next() {
                Some(kind) => show = Some(kind),
                None => return usage(),
            },
            _ => return usage(),
        }
    }
    if options.trace && seeds.end - seeds.start == 1 {
        let world = World::new(seeds.start, options);
        return match world.run() {
            Ok(r) => {
                println!("seed {} passed: {r:?}", seeds.start);
                ExitCode::SUCCESS
            }
            Err(f) => {
                println!("{f}");
                ExitCode::FAILURE
            }
        };
    }
    let started = Instant::now();
    let next = AtomicU64::new(seeds.start);
    let failures = Mutex::new(Vec::new());
    let events = AtomicU64::new(0);
    let allowed = AtomicU64::new(0);
    let gathers = AtomicU64::new(0);
    let kinds = Mutex::new(std::collections::BTreeMap::<String, u64>::new());
    std::thread::scope(|s| {
        for _ in 0..jobs.max(1) {
            s.spawn(|| {
                loop {
                    let seed = next.fetch_add(1, Ordering::Relaxed);
                    if seed >= seeds.end {
                        return;
                    }
                    match run_seed(seed, &options) {
                        Ok(r) => {
                            events.fetch_add(r.events, Ordering::Relaxed);
                            gathers.fetch_add(r.gathers_answered, Ordering::Relaxed);
                            allowed.fetch_add(r.errors_allowed as u64, Ordering::Relaxed);
                            if let Ok(mut k) = kinds.lock() {
                                for (a, message) in &r.allowed {
                                    let name = a
                                        .map_or("value from a restarted actor".into(), |k| {
                                            format!("{k:?}")
                                        });
                                    if show.as_deref() == Some(name.as_str()) {
                                        println!("seed {seed}: {name}: {message}");
                                    }
                                    *k.entry(name).or_default() += 1;
                                }
                            }
                        }
                        Err(f) => {
                            eprintln!("{f}\n");
                            if let Ok(mut v) = failures.lock() {
                                v.push(f.seed);
                            }
                        }
                    }
                }
            });
        }
    });
    let failures = failures.into_inner().unwrap_or_default();
    println!(
        "{} seeds ({}..{}) in {:.1} s on {jobs} threads: {} failed {:?}; {} events, {} documented errors, {} cluster listings answered",
        seeds.end - seeds.start,
        seeds.start,
        seeds.end,
        started.elapsed().as_secs_f64(),
        failures.len(),
        failures,
        events.load(Ordering::Relaxed),
        allowed.load(Ordering::Relaxed),
        gathers.load(Ordering::Relaxed),
    );
    println!(
        "allowed answers: {:?}",
        kinds.into_inner().unwrap_or_default()
    );
    if failures.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
