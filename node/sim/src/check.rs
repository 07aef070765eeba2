//! Whether each answer the driver got is right: the serial result, or an
//! error the run allows (Ray's documented errors once faults were injected,
//! `TaskCancelledError` for what was cancelled and what depends on it, any
//! count from an actor that lost its state, and any value computed from one).

use peer_node_core::ids::ActorId;
use peer_node_core::wire::local::ErrorKind;
use rustc_hash::FxHashSet;

use crate::client::Driver;
use crate::program::{Expect, Step, Val};

/// What one answer is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The serial result.
    Right,
    /// A documented error this run allows (or any value where none is
    /// certain), with what it said.
    Allowed(Option<ErrorKind>, String),
    Wrong(String),
}

/// The errors Ray documents for work lost to failures.
const FAULT_ERRORS: [ErrorKind; 5] = [
    ErrorKind::ObjectLost,
    ErrorKind::OwnerDied,
    ErrorKind::WorkerCrashed,
    ErrorKind::ActorDied,
    ErrorKind::ActorUnavailable,
];

/// Judge every answer the driver got.
pub fn results(driver: &Driver, faulty: bool, disturbed: &FxHashSet<ActorId>) -> Vec<Verdict> {
    let script = driver.script();
    let actor_ids: Vec<Option<ActorId>> = (0..script.actors).map(|a| driver.actor_id(a)).collect();
    // Calls of actors that lost their state to a fault, or that the script
    // kills: any count, or ActorDiedError, is right.
    let disturbed_call = |r: usize| {
        script.call_actor[r].is_some_and(|a| {
            script.killed[a] || actor_ids[a].is_some_and(|id| disturbed.contains(&id))
        })
    };
    // Refs cancelled, and refs computed from calls of actors that lost their
    // state (any count is right there), and the refs that depend on them.
    let mut cancelled = driver.cancelled.clone();
    let mut uncertain: Vec<bool> = (0..script.expect.len()).map(disturbed_call).collect();
    for (_, step) in &script.steps {
        if let Step::Submit { r, task } = step {
            let inputs = || task.deps.iter().chain(&task.nested);
            cancelled[*r] |= inputs().any(|d| cancelled[*d]);
            uncertain[*r] |= inputs().any(|d| uncertain[*d]);
        }
    }
    let mut out = Vec::new();
    for (r, got) in driver.results.iter().enumerate() {
        let Some(got) = got else { continue };
        let id = driver.describe(r);
        let verdict = match (driver.expect(r), got) {
            (Expect::Value(v), Ok(g)) if v == g => Verdict::Right,
            (Expect::Error(kinds), Err(e)) if kinds.contains(&e.kind) => Verdict::Right,
            (Expect::Count(c), Ok(Val::Int(g))) if c == g => Verdict::Right,
            (_, Err(e)) if cancelled[r] && e.kind == ErrorKind::Cancelled => {
                Verdict::Allowed(Some(e.kind), e.message.clone())
            }
            (_, Err(e)) if faulty && FAULT_ERRORS.contains(&e.kind) => {
                Verdict::Allowed(Some(e.kind), e.message.clone())
            }
            (_, Ok(_)) if uncertain[r] => Verdict::Allowed(None, String::new()),
            (_, Err(e)) if uncertain[r] && e.kind == ErrorKind::ActorDied => {
                Verdict::Allowed(Some(e.kind), e.message.clone())
            }
            (want, got) => Verdict::Wrong(format!(
                "{id} came back as {got:?}, not {want:?} (faults: {faulty}, cancelled: {})",
                cancelled[r]
            )),
        };
        out.push(verdict);
    }
    out
}
