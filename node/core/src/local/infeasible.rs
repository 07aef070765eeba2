//! Tasks and actors that no node could ever run: they ask for more of a
//! resource than any node in view has (`resources={"nope": 1}`, `num_gpus`
//! on machines without GPUs). As in Ray they stay pending, since a node that
//! has the resource may join, and their driver is told in Ray's words (its
//! autoscaler's "No available node types can fulfill resource request"
//! line, printed on the driver's stdout), once per resource shape.
//!
//! - the scheduler finds them (a node with no peers in view), and so does
//!   placement (no peer in the view could ever fit them: parked);
//! - on a node that is not in a cluster the word goes out at once; in a
//!   cluster it waits [`INFEASIBLE_GRACE`] and goes only if the task still
//!   fits nowhere then (right after joining, the view may lack peers);
//! - the word goes where the task's printed output goes: the attached
//!   driver that submitted it ([`NodeMsg::Output`]), this process's own
//!   terminal (the embedded driver's, [`Command::Print`]), or, for a task
//!   received from another peer, its owner, which passes it on to its
//!   driver ([`PeerMsg::Output`]).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rustc_hash::FxHashSet;
use serde_bytes::ByteBuf;

use crate::command::Command;
use crate::core::Core;
use crate::ids::{ConnId, PeerId, TaskId};
use crate::local::tasks::{TaskEntry, TaskState};
use crate::wire::local::NodeMsg;
use crate::wire::peer::PeerMsg;

/// How long a task in a cluster must fit nowhere before its driver is told.
pub const INFEASIBLE_GRACE: Duration = Duration::from_secs(2);
/// Most (audience, shape) pairs remembered; past it the memory starts over
/// (a shape may then be reported once more).
const WARNED_MAX: usize = 4096;
/// Most tasks waiting out their grace; more are not reported (others of
/// their shape most likely are).
const SUSPECTS_MAX: usize = 4096;
/// The stream Ray prints its autoscaler's events on: stdout.
const STDOUT: u8 = 1;

/// Who is told about a task: where its printed output goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Audience {
    /// This process's terminal (the embedded driver's, or a daemon's log).
    Own,
    /// An attached driver.
    Conn(ConnId),
    /// The peer that owns the task (a guest here).
    Owner(PeerId),
}

impl Audience {
    fn of(t: &TaskEntry) -> Self {
        match (&t.guest, t.output_to) {
            (Some(g), _) => Audience::Owner(g.owner),
            (None, Some(c)) => Audience::Conn(c),
            (None, None) => Audience::Own,
        }
    }
}

/// What this node remembers of infeasible tasks.
#[derive(Debug)]
pub(crate) struct Infeasible {
    /// When this node started: the `+…` of the lines it prints.
    started: Instant,
    /// (audience, resource request) pairs already told.
    warned: FxHashSet<(Audience, String)>,
    /// Tasks in a cluster that fit nowhere, and when to tell if they still do.
    suspects: Vec<(TaskId, Instant)>,
}

impl Infeasible {
    pub(crate) fn new(now: Instant) -> Self {
        Self {
            started: now,
            warned: FxHashSet::default(),
            suspects: Vec::new(),
        }
    }

    /// Whether this is the first time `audience` hears of `request`.
    fn first_time(&mut self, audience: Audience, request: &str) -> bool {
        if self.warned.len() >= WARNED_MAX {
            self.warned.clear();
        }
        self.warned.insert((audience, request.to_string()))
    }

    /// Watch task `tid` until `at`; false if it is watched already (or too
    /// many are).
    fn suspect(&mut self, tid: TaskId, at: Instant) -> bool {
        if self.suspects.len() >= SUSPECTS_MAX || self.suspects.iter().any(|(t, _)| *t == tid) {
            return false;
        }
        self.suspects.push((tid, at));
        true
    }

    /// The watched tasks whose grace is over at `now`.
    fn due(&mut self, now: Instant) -> Vec<TaskId> {
        let (due, later): (Vec<_>, Vec<_>) = self.suspects.iter().partition(|(_, at)| *at <= now);
        self.suspects = later;
        due.into_iter().map(|(t, _)| t).collect()
    }
}

/// A resource request as Ray prints it: a Python dict of floats, by name.
pub(crate) fn request_text(request: &BTreeMap<String, f64>) -> String {
    let items: Vec<String> = request
        .iter()
        .map(|(name, amount)| format!("{}: {}", py_str(name), py_float(*amount)))
        .collect();
    format!("{{{}}}", items.join(", "))
}

/// A string as Python's `repr` writes it (single quotes).
fn py_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('\'');
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\'' => out.push_str("\\'"),
            '\n' => out.push_str("\\n"),
            c if c.is_control() => out.push_str(&format!("\\x{:02x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

/// A float as Python's `repr` writes it (`1.0`, `0.5`).
fn py_float(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e16 {
        format!("{v:.1}")
    } else {
        format!("{v}")
    }
}

/// Time since `start` as Ray's driver prints it: `5s`, `2m2s`, `1h3s`.
fn elapsed_text(since: Duration) -> String {
    let s = since.as_secs();
    let (h, m, s) = (s / 3600, s % 3600 / 60, s % 60);
    let mut out = String::new();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if m > 0 {
        out.push_str(&format!("{m}m"));
    }
    out.push_str(&format!("{s}s"));
    out
}

/// Ray's line for a request no node can fulfill.
pub(crate) fn warning_line(since_start: Duration, request: &str) -> String {
    format!(
        "(autoscaler +{}) Error: No available node types can fulfill resource request {request}. \
         Add suitable node types to this cluster to resolve this issue.\n",
        elapsed_text(since_start)
    )
}

impl Core {
    /// Task `tid` is runnable but no node in view could ever run it: its
    /// driver hears of it (now, or in a cluster after the grace).
    pub(crate) fn note_infeasible(&mut self, tid: TaskId) {
        let Some(t) = self.tasks.get_mut(&tid) else {
            return;
        };
        if t.infeasible_noted {
            return;
        }
        t.infeasible_noted = true;
        if !self.cluster.is_member() {
            self.warn_infeasible(tid);
            return;
        }
        let at = self.now + INFEASIBLE_GRACE;
        if self.infeasible.suspect(tid, at) {
            self.arm_timer(at);
        }
    }

    /// Time passed: tell the drivers of tasks whose grace is over and that
    /// still fit nowhere.
    pub(crate) fn report_infeasible_due(&mut self) {
        for tid in self.infeasible.due(self.now) {
            let still = self.tasks.get(&tid).is_some_and(|t| {
                matches!(t.state, TaskState::Queued | TaskState::Placing)
                    && !self.fits_somewhere(&t.resources)
            });
            if still {
                self.warn_infeasible(tid);
            } else if let Some(t) = self.tasks.get_mut(&tid) {
                // It found a place after all; should it lose it, it is looked at again.
                t.infeasible_noted = false;
            }
        }
    }

    /// Tell task `tid`'s driver that no node can fulfill its resource
    /// request, unless it was told of that request before.
    fn warn_infeasible(&mut self, tid: TaskId) {
        let Some(t) = self.tasks.get(&tid) else {
            return;
        };
        let audience = Audience::of(t);
        let (name, request) = (t.spec.name.clone(), request_text(&t.resources.to_map()));
        if !self.infeasible.first_time(audience, &request) {
            return;
        }
        tracing::warn!(
            "task {name} needs {request}, which no node has; it waits until one that has it joins"
        );
        let since = self.now.saturating_duration_since(self.infeasible.started);
        let data = ByteBuf::from(warning_line(since, &request).into_bytes());
        match audience {
            Audience::Own => self.emit(Command::Print {
                stream: STDOUT,
                data,
            }),
            Audience::Conn(conn) => self.send_to(
                conn,
                NodeMsg::Output {
                    stream: STDOUT,
                    data,
                },
            ),
            Audience::Owner(peer) => self.send_peer(
                peer,
                PeerMsg::Output {
                    task: tid,
                    stream: STDOUT,
                    data,
                },
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_times_read_as_rays() {
        let request: BTreeMap<String, f64> = [("CPU", 1.0), ("nope", 0.5), ("it's", 2.0)]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        assert_eq!(
            request_text(&request),
            r"{'CPU': 1.0, 'it\'s': 2.0, 'nope': 0.5}"
        );
        assert_eq!(elapsed_text(Duration::from_secs(5)), "5s");
        assert_eq!(elapsed_text(Duration::from_secs(122)), "2m2s");
        assert_eq!(elapsed_text(Duration::from_secs(3603)), "1h3s");
        assert_eq!(
            warning_line(Duration::from_millis(5900), "{'GPU': 8.0}"),
            "(autoscaler +5s) Error: No available node types can fulfill resource request \
             {'GPU': 8.0}. Add suitable node types to this cluster to resolve this issue.\n"
        );
    }
}
