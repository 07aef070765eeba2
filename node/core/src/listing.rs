//! This node's state as rows ([`Query::List`](crate::wire::local::Query::List)):
//! what `peer list`, the dashboard and the timeline read, here and (through
//! `cluster::gather`) from every peer.
//!
//! Every answer is `{"node": <this node's id>, "address": …, "rows": …}`;
//! states and field names follow Ray's state API (`ray list tasks`) where
//! it has them. Answers are bounded: each list keeps at most a few thousand
//! rows, so a peer's answer fits in one peer message.

use std::cmp::Reverse;
use std::time::Duration;

use serde_json::{Value as Json, json};

use crate::cluster::best_address;
use crate::core::Core;
use crate::history::{Run, Span};
use crate::ids::TaskId;
use crate::local::actors::ActorState;
use crate::local::objects::ObjState;
use crate::local::tasks::{TaskEntry, TaskState};
use crate::local::workers::WorkerKind;
use crate::wire::local::{Listing, TaskKind, Value};

/// Most objects listed per node (the largest).
pub const OBJECTS_LISTED: usize = 1_000;
/// Most live tasks listed per node.
pub const LIVE_TASKS_LISTED: usize = 2_000;
/// How far back the dashboard's task stream reaches.
pub const OVERVIEW_WINDOW: Duration = Duration::from_secs(60);
/// Most runs in one overview.
const OVERVIEW_RUNS: usize = 2_000;
/// Most live tasks in one overview.
const OVERVIEW_TASKS: usize = 200;

fn kind_name(k: TaskKind) -> &'static str {
    match k {
        TaskKind::Normal => "NORMAL_TASK",
        TaskKind::ActorCreate => "ACTOR_CREATION_TASK",
        TaskKind::ActorMethod => "ACTOR_TASK",
    }
}

impl Core {
    /// One kind of this node's state, as rows.
    pub(crate) fn listing(&self, what: Listing) -> Json {
        let rows = match what {
            Listing::Peers => Json::Array(vec![self.peer_row()]),
            Listing::Tasks => Json::Array(self.task_rows(LIVE_TASKS_LISTED, usize::MAX)),
            Listing::Actors => Json::Array(self.actor_rows()),
            Listing::Objects => Json::Array(self.object_rows(OBJECTS_LISTED)),
            Listing::Timeline => json!({
                "runs": self.history.runs.iter().map(|r| self.run_row(r)).collect::<Vec<_>>(),
                "spans": self.history.spans.iter().map(|s| self.span_row(s)).collect::<Vec<_>>(),
            }),
            Listing::Overview => self.overview(),
        };
        json!({
            "node": self.node_name(),
            "address": self.address(),
            "rows": rows,
        })
    }

    fn address(&self) -> Option<String> {
        self.cluster
            .joined_info()
            .and_then(|(listen, _)| best_address(listen))
    }

    /// This node as a row of `peer list peers`.
    fn peer_row(&self) -> Json {
        let s = self.store.stats();
        let running = self
            .tasks
            .values()
            .filter(|t| matches!(t.state, TaskState::Running(_)))
            .count();
        let (mut task_workers, mut actor_workers) = (0, 0);
        for w in self.workers.values() {
            match w.kind {
                WorkerKind::Task => task_workers += 1,
                WorkerKind::Actor(_) => actor_workers += 1,
            }
        }
        json!({
            "node_id": self.node_name(),
            "address": self.address(),
            "state": "ALIVE",
            "resources_total": self.total.to_map(),
            "resources_available": self.available.to_map(),
            "queued": self.tasks.ready_len(),
            "running": running,
            "task_workers": task_workers,
            "actor_workers": actor_workers,
            "store_used": s.used,
            "store_total": s.capacity,
            "objects": s.num_objects,
            "spilled_now": self.objects.spilled_count(),
            "spilled_bytes": s.spilled_bytes_total,
            "tasks_finished": self.stats.tasks_finished,
            "tasks_failed": self.history.failures_total,
            "tasks_received": self.stats.tasks_received,
            "tasks_sent": self.stats.tasks_sent,
            "bytes_pulled": self.stats.bytes_pulled,
            "bytes_served": self.stats.bytes_served,
            "peers_known": self.cluster.peers(self.now).len(),
        })
    }

    /// Live tasks here (not those sent away: their peer lists them; at
    /// most `live`), then finished runs and failures, newest last (at most
    /// `recent` of each).
    fn task_rows(&self, live: usize, recent: usize) -> Vec<Json> {
        let node = self.node_name();
        let row = |id: &TaskId, t: &TaskEntry| {
            let (state, pid) = match t.state {
                TaskState::Waiting => ("PENDING_ARGS_AVAIL", None),
                TaskState::Queued | TaskState::Placing => ("PENDING_NODE_ASSIGNMENT", None),
                TaskState::Running(w) => ("RUNNING", self.workers.get(&w).and_then(|w| w.pid)),
                TaskState::Remote => ("SENT", None),
            };
            json!({
                "task_id": id.to_string(),
                "name": t.spec.name,
                "type": kind_name(t.spec.kind),
                "state": state,
                "node_id": node,
                "worker_pid": pid,
                "actor_id": t.spec.actor.map(|a| a.to_string()),
                "owner": t.guest.as_ref().map(|g| g.owner.to_string()),
            })
        };
        // Running ones first, so a long queue does not hide them.
        let running = |t: &&TaskEntry| matches!(t.state, TaskState::Running(_));
        let mut rows: Vec<Json> = self
            .tasks
            .entries()
            .filter(|(_, t)| running(t))
            .take(live)
            .map(|(id, t)| row(id, t))
            .collect();
        let more = live - rows.len();
        rows.extend(
            self.tasks
                .entries()
                .filter(|(_, t)| !running(t) && t.state != TaskState::Remote)
                .take(more)
                .map(|(id, t)| row(id, t)),
        );
        let runs = &self.history.runs;
        rows.extend(
            runs.iter()
                .skip(runs.len().saturating_sub(recent))
                .filter(|r| r.ok)
                .map(|r| self.run_row(r)),
        );
        let fails = &self.history.failures;
        rows.extend(
            fails
                .iter()
                .skip(fails.len().saturating_sub(recent))
                .map(|f| {
                    json!({
                        "task_id": f.task.to_string(),
                        "name": f.name,
                        "state": "FAILED",
                        "node_id": node,
                        "worker_pid": f.pid,
                        "error_type": f.kind.as_str(),
                        "error_message": f.error,
                        "end_time_us": self.history.wall_us(f.at),
                    })
                }),
        );
        rows
    }

    fn run_row(&self, r: &Run) -> Json {
        json!({
            "task_id": r.task.to_string(),
            "name": r.name,
            "type": kind_name(r.kind),
            "state": if r.ok { "FINISHED" } else { "FAILED" },
            "node_id": self.node_name(),
            "worker_pid": r.pid,
            "actor_id": r.actor.map(|a| a.to_string()),
            "owner": r.owner.map(|o| o.to_string()),
            "start_time_us": self.history.wall_us(r.start),
            "end_time_us": self.history.wall_us(r.end),
        })
    }

    fn span_row(&self, s: &Span) -> Json {
        json!({
            "kind": s.kind.name(),
            "node_id": self.node_name(),
            "pid": s.pid,
            "start_time_us": self.history.wall_us(s.start),
            "end_time_us": self.history.wall_us(s.end),
            "amount": s.amount,
            "ok": s.ok,
        })
    }

    /// Actors whose worker is (or would be) here; those created here and
    /// placed on another peer are listed by that peer.
    fn actor_rows(&self) -> Vec<Json> {
        let node = self.node_name();
        self.actors
            .entries()
            .filter(|(id, _)| !self.cluster.has_proxy(id))
            .map(|(id, a)| {
                let max = a
                    .creation
                    .actor_options
                    .as_ref()
                    .map_or(0, |o| o.max_restarts);
                let restarts = if max < 0 {
                    json!(null)
                } else {
                    json!((max - a.restarts_left).max(0))
                };
                let (state, death) = match &a.state {
                    ActorState::Pending => ("PENDING_CREATION", None),
                    ActorState::Creating if restarts.as_i64().unwrap_or(0) > 0 => {
                        ("RESTARTING", None)
                    }
                    ActorState::Creating => ("PENDING_CREATION", None),
                    ActorState::Alive => ("ALIVE", None),
                    ActorState::Dead(e) => ("DEAD", Some(e.message.clone())),
                };
                json!({
                    "actor_id": id.to_string(),
                    "class_name": a.creation.actor_name(),
                    "name": a.name,
                    "state": state,
                    "node_id": node,
                    "pid": a.worker.and_then(|w| self.workers.get(&w)).and_then(|w| w.pid),
                    "num_restarts": restarts,
                    "pending_calls": a.queue.len() + a.inflight.len(),
                    "death_cause": death,
                })
            })
            .collect()
    }

    /// The `limit` largest objects this node knows.
    fn object_rows(&self, limit: usize) -> Vec<Json> {
        let mut objs: Vec<_> = self
            .objects
            .iter_entries()
            .map(|(id, e)| {
                let size = match &e.state {
                    ObjState::Ready(Value::Stored { len, .. }) => *len,
                    ObjState::Ready(Value::Inline(b)) => b.len() as u64,
                    _ => e.elsewhere.as_ref().map_or(0, |w| w.len),
                };
                (size, id, e)
            })
            .collect();
        objs.sort_by_key(|(size, id, _)| (Reverse(*size), **id));
        objs.into_iter()
            .take(limit)
            .map(|(size, id, e)| {
                let reference = if e.cached {
                    "CACHED_COPY"
                } else if self.is_foreign(id.owner()) {
                    "BORROWED"
                } else {
                    "OWNED"
                };
                let state = match &e.state {
                    ObjState::Pending if e.is_elsewhere() => "ELSEWHERE",
                    ObjState::Pending => "PENDING",
                    ObjState::Ready(Value::Error(_)) => "ERROR",
                    ObjState::Ready(Value::Stored { .. }) => "IN_STORE",
                    ObjState::Ready(_) => "INLINE",
                };
                let mut copies: Vec<String> = e
                    .elsewhere
                    .as_ref()
                    .map(|w| w.copies.iter().map(|p| p.to_string()).collect())
                    .unwrap_or_default();
                if matches!(e.state, ObjState::Ready(_)) {
                    copies.insert(0, self.node_name());
                }
                json!({
                    "object_id": id.to_string(),
                    "size": size,
                    "reference_type": reference,
                    "state": state,
                    "node_id": self.node_name(),
                    "copies": copies,
                    "local_refs": e.refs,
                })
            })
            .collect()
    }

    /// What the dashboard shows of this node.
    fn overview(&self) -> Json {
        let running = self.task_rows(OVERVIEW_TASKS, 0);
        let fails = &self.history.failures;
        let failures: Vec<Json> = fails
            .iter()
            .skip(fails.len().saturating_sub(10))
            .map(|f| {
                json!({
                    "task_id": f.task.to_string(), "name": f.name, "worker_pid": f.pid,
                    "error_type": f.kind.as_str(), "error_message": f.error,
                    "end_time_us": self.history.wall_us(f.at),
                })
            })
            .collect();
        let since = self.now.checked_sub(OVERVIEW_WINDOW);
        let runs = &self.history.runs;
        let recent: Vec<Json> = runs
            .iter()
            .skip(runs.len().saturating_sub(OVERVIEW_RUNS))
            .filter(|r| since.is_none_or(|s| r.end >= s))
            .map(|r| {
                json!([
                    r.name,
                    r.pid,
                    self.history.wall_us(r.start),
                    self.history.wall_us(r.end),
                    r.ok
                ])
            })
            .collect();
        let output: serde_json::Map<String, Json> = self
            .workers
            .values()
            .filter_map(|w| w.pid)
            .filter_map(|pid| {
                let lines = self.history.output_of(pid);
                (!lines.is_empty()).then(|| (pid.to_string(), json!(lines)))
            })
            .collect();
        let transfers: Vec<Json> = self
            .cluster
            .pulls_in_progress()
            .into_iter()
            .map(
                |(id, len, got, _)| json!({"object_id": id.to_string(), "size": len, "received": got}),
            )
            .collect();
        json!({
            "peer": self.peer_row(),
            "tasks": running,
            "failures": failures,
            "actors": self.actor_rows().into_iter().take(200).collect::<Vec<_>>(),
            "objects": self.object_rows(10),
            "transfers": transfers,
            "output": output,
            "runs": recent,
            "now_us": self.history.wall_us(self.now),
        })
    }
}
