//! Deterministic simulation of the node's real core (`peer-node-core`), in
//! the spirit of FoundationDB's simulation testing and TigerBeetle's VOPR:
//! one seed drives a whole cluster — 3 to 8 cores, the network between them,
//! the worker processes, the driver's workload, the clock and the faults —
//! and a failing seed replays exactly.
//!
//! - [`program`]: the workers' task language (pure functions over integers
//!   and byte blobs, nested submits, counter actors) and the driver's script;
//! - [`client`]: the simulated driver and worker processes, speaking the real
//!   local protocol;
//! - [`net`]: the network as the node's links behave (ordered streams that
//!   break, reopen, lose and repeat what was in flight);
//! - [`world`]: the event loop, the shell's part (commands carried out,
//!   pulls, views, timers) and fault injection;
//! - [`check`]: whether every answer is its serial result or an allowed error;
//! - [`trace`]: a readable trace of a run.
//!
//! Invariants are checked after every event a core handles
//! ([`Core::check_invariants`](peer_node_core::Core::check_invariants)), and
//! at the end: the driver got every answer (nothing waits forever once the
//! network healed), every answer is right, no node leaks resources or pins.

#![forbid(unsafe_code)]

pub mod check;
pub mod client;
pub mod net;
pub mod program;
pub mod trace;
pub mod world;

pub use world::{Failure, Options, Report, World};

/// Run one seed; on failure, run it again with a trace (the replay must fail
/// the same way) and return that.
pub fn run_seed(seed: u64, options: &Options) -> Result<Report, Failure> {
    match World::new(seed, options.clone()).run() {
        Ok(r) => Ok(r),
        Err(first) if !options.trace => {
            let traced = Options {
                trace: true,
                ..options.clone()
            };
            match World::new(seed, traced).run() {
                Err(again) if again.what == first.what => Err(again),
                Err(again) => Err(Failure {
                    what: format!(
                        "{} (and the replay failed differently: {}): the run is not deterministic",
                        first.what, again.what
                    ),
                    ..again
                }),
                Ok(_) => Err(Failure {
                    what: format!(
                        "{} (and the replay passed: the run is not deterministic)",
                        first.what
                    ),
                    ..first
                }),
            }
        }
        Err(f) => Err(f),
    }
}
