//! What ran here, kept for the dashboard, `peer list` and `peer.timeline()`:
//! bounded rings of finished task runs, failures (with their tracebacks),
//! get/put/transfer spans, and each worker's recent output.
//!
//! - a run is recorded once, when its worker reports the outcome: the worker
//!   measured how long it ran, so start = report time - run time;
//! - recording is a push of a small record into a ring of fixed capacity
//!   (the oldest record goes): no scan, no lookup, nothing that grows;
//! - worker output is kept only while `observing` is set (a dashboard is
//!   served) or when it passes through the node anyway (it goes to a driver
//!   elsewhere), since otherwise workers print straight to their terminal;
//! - times are kept as [`Instant`]s and turned into wall-clock microseconds
//!   when read, from the wall clock the shell gave ([`Core::set_wall_clock`]),
//!   so peers' timelines line up as well as their clocks do.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use rustc_hash::FxHashMap;

use crate::core::Core;
use crate::ids::{ActorId, ObjectId, PeerId, TaskId, WorkerId};
use crate::local::objects::ObjState;
use crate::local::tasks::TaskState;
use crate::wire::local::{ErrorInfo, ErrorKind, TaskKind, Value};

/// Finished runs kept per node.
pub const RUNS_KEPT: usize = 10_000;
/// Failures kept per node.
pub const FAILURES_KEPT: usize = 200;
/// Get, put and transfer spans kept per node.
pub const SPANS_KEPT: usize = 4_000;
/// Lines of output kept per worker process.
pub const OUTPUT_LINES_KEPT: usize = 40;
/// Worker processes whose output is kept (the oldest is dropped first).
pub const OUTPUT_WORKERS_KEPT: usize = 256;
/// Longest error message (traceback) kept, in bytes.
pub const ERROR_KEPT: usize = 8 * 1024;
/// Where times start when the shell gave no wall clock (µs).
const NO_CLOCK_BASE_US: u64 = 3_600_000_000;
/// Longest line of output kept, in bytes.
const LINE_KEPT: usize = 400;

/// One run of a task or actor call on a worker of this node.
#[derive(Debug, Clone)]
pub(crate) struct Run {
    pub(crate) task: TaskId,
    pub(crate) name: String,
    pub(crate) kind: TaskKind,
    pub(crate) actor: Option<ActorId>,
    pub(crate) pid: u32,
    pub(crate) start: Instant,
    pub(crate) end: Instant,
    pub(crate) ok: bool,
    /// The peer that owns it, when it ran here as a guest.
    pub(crate) owner: Option<PeerId>,
}

/// A task that failed here (its returns became an error).
#[derive(Debug, Clone)]
pub(crate) struct Failure {
    pub(crate) task: TaskId,
    pub(crate) name: String,
    pub(crate) kind: ErrorKind,
    pub(crate) error: String,
    pub(crate) at: Instant,
    /// The worker process it ran in, when it ran here.
    pub(crate) pid: Option<u32>,
}

/// What a span measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SpanKind {
    /// A `get` of a local process, until its values were ready.
    Get,
    /// A `put` of a local process, reservation to seal.
    Put,
    /// An object pulled from other peers into this store.
    Transfer,
}

impl SpanKind {
    pub(crate) fn name(self) -> &'static str {
        match self {
            SpanKind::Get => "get",
            SpanKind::Put => "put",
            SpanKind::Transfer => "transfer",
        }
    }
}

/// A get, put or transfer.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Span {
    pub(crate) kind: SpanKind,
    /// The process it ran in (0: the node's own process).
    pub(crate) pid: u32,
    pub(crate) start: Instant,
    pub(crate) end: Instant,
    /// Objects (get) or bytes (put, transfer).
    pub(crate) amount: u64,
    pub(crate) ok: bool,
}

/// The recent output of one worker process.
#[derive(Debug, Default)]
pub(crate) struct OutputTail {
    pub(crate) lines: VecDeque<String>,
    /// The last line, not ended yet.
    partial: String,
    pub(crate) last: Option<Instant>,
}

/// The rings.
#[derive(Debug)]
pub(crate) struct History {
    pub(crate) runs: VecDeque<Run>,
    pub(crate) failures: VecDeque<Failure>,
    pub(crate) spans: VecDeque<Span>,
    pub(crate) output: FxHashMap<u32, OutputTail>,
    /// Failures ever recorded (the ring keeps the last ones).
    pub(crate) failures_total: u64,
    /// Keep the output of every worker (a dashboard is served).
    pub(crate) observing: bool,
    /// An instant and the wall-clock time (µs since the Unix epoch) it was.
    wall: Option<(Instant, u64)>,
    /// When this core started (the wall clock's base when none was given).
    started: Instant,
}

fn push_bounded<T>(ring: &mut VecDeque<T>, cap: usize, item: T) {
    if ring.len() >= cap {
        ring.pop_front();
    }
    ring.push_back(item);
}

/// At most `max` bytes of `s`, cut at a character boundary.
pub(crate) fn clip(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

impl History {
    pub(crate) fn new(now: Instant) -> Self {
        Self {
            runs: VecDeque::new(),
            failures: VecDeque::new(),
            spans: VecDeque::new(),
            output: FxHashMap::default(),
            failures_total: 0,
            observing: false,
            wall: None,
            started: now,
        }
    }

    /// Wall-clock microseconds since the Unix epoch at `t`.
    pub(crate) fn wall_us(&self, t: Instant) -> u64 {
        // No wall clock given (tests, the simulator): times count from an
        // origin an hour before the core started, so none is negative.
        let (base, base_us) = self.wall.unwrap_or((self.started, NO_CLOCK_BASE_US));
        if t >= base {
            base_us.saturating_add(t.duration_since(base).as_micros() as u64)
        } else {
            base_us.saturating_sub(base.duration_since(t).as_micros() as u64)
        }
    }

    pub(crate) fn record_run(&mut self, run: Run) {
        push_bounded(&mut self.runs, RUNS_KEPT, run);
    }

    pub(crate) fn record_failure(&mut self, f: Failure) {
        self.failures_total += 1;
        push_bounded(&mut self.failures, FAILURES_KEPT, f);
    }

    pub(crate) fn record_span(&mut self, s: Span) {
        push_bounded(&mut self.spans, SPANS_KEPT, s);
    }

    /// Bytes a worker printed: split into lines, the last `OUTPUT_LINES_KEPT` kept.
    pub(crate) fn record_output(&mut self, pid: u32, data: &[u8], now: Instant) {
        if !self.output.contains_key(&pid) && self.output.len() >= OUTPUT_WORKERS_KEPT {
            let oldest = self
                .output
                .iter()
                .min_by_key(|(_, t)| t.last)
                .map(|(p, _)| *p);
            if let Some(p) = oldest {
                self.output.remove(&p);
            }
        }
        let tail = self.output.entry(pid).or_default();
        tail.last = Some(now);
        let text = String::from_utf8_lossy(data);
        for piece in text.split_inclusive('\n') {
            let ended = piece.ends_with('\n');
            let piece = piece.trim_end_matches(['\n', '\r']);
            if tail.partial.len() < LINE_KEPT {
                tail.partial
                    .push_str(&clip(piece, LINE_KEPT - tail.partial.len()));
            }
            if ended {
                let line = std::mem::take(&mut tail.partial);
                push_bounded(&mut tail.lines, OUTPUT_LINES_KEPT, line);
            }
        }
    }

    /// Every line kept for a worker, the unfinished one included.
    pub(crate) fn output_of(&self, pid: u32) -> Vec<String> {
        let Some(t) = self.output.get(&pid) else {
            return Vec::new();
        };
        let mut lines: Vec<String> = t.lines.iter().cloned().collect();
        if !t.partial.is_empty() {
            lines.push(t.partial.clone());
        }
        lines
    }
}

impl Core {
    /// The wall-clock time (µs since the Unix epoch) at `at`: the shell
    /// tells it once at start, so that times read from this node's history
    /// line up with other peers'.
    pub fn set_wall_clock(&mut self, at: Instant, epoch_us: u64) {
        self.history.wall = Some((at, epoch_us));
    }

    /// Keep every worker's output (a dashboard shows it); off by default,
    /// when workers print straight to their terminal.
    pub fn set_observing(&mut self, on: bool) {
        self.history.observing = on;
    }

    /// Whether worker output is sent to the node to be kept.
    pub(crate) fn observing(&self) -> bool {
        self.history.observing
    }

    /// Worker `wid` reports that task `tid` ran for `run_us` µs until now.
    pub(crate) fn note_run(&mut self, wid: WorkerId, tid: TaskId, run_us: u64, ok: bool) {
        let Some(t) = self.tasks.get(&tid) else {
            return;
        };
        if t.state != TaskState::Running(wid) {
            return;
        }
        let pid = self.workers.get(&wid).and_then(|w| w.pid).unwrap_or(0);
        let end = self.now;
        let start = end
            .checked_sub(Duration::from_micros(run_us))
            .unwrap_or(end);
        let run = Run {
            task: tid,
            name: t.spec.name.clone(),
            kind: t.spec.kind,
            actor: t.spec.actor,
            pid,
            start,
            end,
            ok,
            owner: t.guest.as_ref().map(|g| g.owner),
        };
        self.history.record_run(run);
    }

    /// Task `tid` failed here with `err`.
    pub(crate) fn note_failure(&mut self, tid: TaskId, err: &ErrorInfo) {
        let Some(t) = self.tasks.get(&tid) else {
            return;
        };
        let pid = match t.state {
            TaskState::Running(w) => self.workers.get(&w).and_then(|w| w.pid),
            _ => None,
        };
        let f = Failure {
            task: tid,
            name: t.spec.name.clone(),
            kind: err.kind,
            error: clip(&err.message, ERROR_KEPT),
            at: self.now,
            pid,
        };
        self.history.record_failure(f);
    }

    /// A get, put or transfer ended now.
    pub(crate) fn note_span(
        &mut self,
        kind: SpanKind,
        pid: u32,
        start: Instant,
        amount: u64,
        ok: bool,
    ) {
        let end = self.now;
        self.history.record_span(Span {
            kind,
            pid,
            start,
            end,
            amount,
            ok,
        });
    }

    /// A process put object `id` into this node (a put span: the node sees
    /// its end only, so it is an instant with the object's size).
    pub(crate) fn note_put(&mut self, pid: u32, id: &ObjectId) {
        let len = match self.objects.get(id).map(|e| &e.state) {
            Some(ObjState::Ready(Value::Stored { len, .. })) => *len,
            Some(ObjState::Ready(Value::Inline(b))) => b.len() as u64,
            _ => 0,
        };
        let now = self.now;
        self.note_span(SpanKind::Put, pid, now, len, true);
    }

    /// Worker `wid` printed `data`: kept when the dashboard is on or the
    /// output passes through here anyway.
    pub(crate) fn note_output(&mut self, wid: WorkerId, data: &[u8]) {
        if let Some(pid) = self.workers.get(&wid).and_then(|w| w.pid) {
            let now = self.now;
            self.history.record_output(pid, data, now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_keeps_the_last_lines_and_the_unfinished_one() {
        let now = Instant::now();
        let mut h = History::new(now);
        for i in 0..100 {
            h.record_output(7, format!("line {i}\n").as_bytes(), now);
        }
        h.record_output(7, b"half", now);
        h.record_output(7, b" done", now);
        let lines = h.output_of(7);
        assert_eq!(lines.len(), OUTPUT_LINES_KEPT + 1);
        assert_eq!(lines[0], format!("line {}", 100 - OUTPUT_LINES_KEPT));
        assert_eq!(lines.last().map(String::as_str), Some("half done"));
    }

    #[test]
    fn rings_stay_bounded_and_wall_time_follows_the_base() {
        let now = Instant::now();
        let mut h = History::new(now);
        h.wall = Some((now, 1_000_000));
        for _ in 0..(FAILURES_KEPT + 10) {
            h.record_failure(Failure {
                task: TaskId([0; 16]),
                name: "f".into(),
                kind: ErrorKind::Task,
                error: "boom".into(),
                at: now,
                pid: None,
            });
        }
        assert_eq!(h.failures.len(), FAILURES_KEPT);
        let later = now + std::time::Duration::from_millis(3);
        assert_eq!(h.wall_us(later), 1_003_000);
        assert_eq!(clip("héllo", 2), "h…");
    }
}
