//! What must hold between the core's tables after every event, checked by
//! the simulator after every step (and cheap enough for it):
//!
//! - resources: what is available plus what running work holds is the
//!   node's total (a worker blocked in `get` lends its CPU back);
//! - workers: idle ones are free task workers; every running task is on the
//!   worker that runs it (or queued behind its task, or in its actor);
//! - the ready queue holds each runnable task once;
//! - nothing reachable is freed: every argument and nested ref of a task
//!   this node knows, every ref inside a live object's value, every handle a
//!   local process holds, and every input of kept lineage is in the table;
//! - gets and waits answer connections that exist.

use rustc_hash::FxHashSet;

use crate::core::Core;
use crate::ids::{ObjectId, TaskId};
use crate::local::gpus::GPU;
use crate::local::tasks::TaskState;
use crate::local::waits::Target;
use crate::local::workers::WorkerKind;
use crate::resources::Resources;
use crate::wire::local::{Role, TaskKind, TaskSpec, Value, args_object_id};

/// A broken invariant, in words.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invariant broken on node {node}: {what}")]
pub struct Violation {
    pub node: String,
    pub what: String,
}

/// The objects a task holds while this node knows it.
fn inputs(spec: &TaskSpec) -> impl Iterator<Item = ObjectId> + '_ {
    let args = matches!(spec.args, Value::Stored { .. }).then(|| args_object_id(spec.task));
    spec.deps.iter().chain(&spec.contained).copied().chain(args)
}

impl Core {
    /// Check every invariant of the tables.
    pub fn check_invariants(&self) -> Result<(), Violation> {
        let fail = |what: String| {
            Err(Violation {
                node: self.node_name(),
                what,
            })
        };
        // Resources, and the GPU devices behind the GPU count.
        let mut held = self.available.clone();
        let mut devices = self.gpus.clone();
        for w in self.workers.values() {
            if w.kind == WorkerKind::Task {
                held.give(&w.held);
                devices.give_back(w.gpus.clone());
                if w.gpus.units() != w.held.units(GPU) {
                    return fail(format!(
                        "a worker holds {} GPU units but devices for {}",
                        w.held.units(GPU),
                        w.gpus.units()
                    ));
                }
                if w.blocked > 0 {
                    held.take(&w.held.cpu_only());
                }
            }
        }
        for a in self.actors.values() {
            if a.holds_resources {
                held.give(&a.resources);
                devices.give_back(a.gpus.clone());
            } else if !a.gpus.is_empty() {
                return fail("an actor that holds no resources holds GPU devices".into());
            }
        }
        if self.gpus.free_units() != self.available.units(GPU)
            || devices.free_units() != devices.len() as i64 * crate::resources::UNITS_PER_ONE
        {
            return fail(format!(
                "GPU devices: {} units free, available says {}; {} units after every grant is back",
                self.gpus.free_units(),
                self.available.units(GPU),
                devices.free_units()
            ));
        }
        if held != self.total && !held_equals(&held, &self.total) {
            return fail(format!(
                "available {:?} plus what work holds is {:?}, not the total {:?}",
                self.available.to_map(),
                held.to_map(),
                self.total.to_map()
            ));
        }
        // Workers.
        for wid in self.workers.idle_ids() {
            match self.workers.get(wid) {
                Some(w)
                    if w.kind == WorkerKind::Task
                        && w.busy.is_none()
                        && w.conn.is_some()
                        && !w.leaving => {}
                other => return fail(format!("idle worker {wid} is {other:?}")),
            }
        }
        // A task runs only on a worker of its runtime environment.
        for (wid, w) in self.workers.iter() {
            if w.kind != WorkerKind::Task {
                continue;
            }
            for tid in w.busy.iter().chain(w.queued.iter()) {
                if let Some(t) = self.tasks.get(tid)
                    && t.spec.env_key() != w.env_key()
                {
                    return fail(format!(
                        "task {} of environment {:?} runs on worker {wid} of environment {:?}",
                        t.spec.name,
                        t.spec.env_key(),
                        w.env_key()
                    ));
                }
            }
        }
        for (wid, w) in self.workers.iter() {
            if let Some(conn) = w.conn
                && self.conns.role(conn) != Some(Role::Worker(*wid))
            {
                return fail(format!("worker {wid}'s connection {conn} is not its own"));
            }
            if w.busy.is_none() && !w.queued.is_empty() {
                return fail(format!("worker {wid} has tasks queued behind nothing"));
            }
        }
        let mut on_workers: FxHashSet<TaskId> = FxHashSet::default();
        for (_, w) in self.workers.iter() {
            on_workers.extend(w.busy);
            on_workers.extend(w.queued.iter().copied());
        }
        for a in self.actors.values() {
            on_workers.extend(a.inflight.iter().copied());
            on_workers.insert(a.creation.task);
        }
        let mut queued = FxHashSet::default();
        for tid in self.tasks.ready() {
            let Some(t) = self.tasks.get(&tid) else {
                continue;
            };
            if t.state != TaskState::Queued || t.spec.kind == TaskKind::ActorMethod {
                return fail(format!(
                    "task {} is in the ready queue as {:?} ({:?})",
                    t.spec.name, t.state, t.spec.kind
                ));
            }
            if !queued.insert(tid) {
                return fail(format!("task {} is in the ready queue twice", t.spec.name));
            }
        }
        for (tid, t) in self.tasks.entries() {
            if let TaskState::Running(wid) = t.state {
                if self.workers.get(&wid).is_none() {
                    return fail(format!(
                        "task {} runs on worker {wid}, which is gone",
                        t.spec.name
                    ));
                }
                if !on_workers.contains(tid) {
                    return fail(format!(
                        "task {} runs on worker {wid}, which does not run it",
                        t.spec.name
                    ));
                }
            }
            for id in inputs(&t.spec) {
                if !self.objects.contains(&id) {
                    return fail(format!(
                        "object {id}, an input of task {} ({:?}), was freed",
                        t.spec.name, t.state
                    ));
                }
            }
        }
        // Objects reachable from values, handles and lineage.
        for (id, e) in self.objects.iter_entries() {
            for c in &e.contains {
                if !self.objects.contains(c) {
                    return fail(format!("object {c}, held inside object {id}, was freed"));
                }
            }
        }
        for c in self.conns.values() {
            for id in c.refs.keys() {
                if !self.objects.contains(id) {
                    return fail(format!(
                        "object {id}, held by a pid {} handle, was freed",
                        c.pid
                    ));
                }
            }
        }
        if let Some(id) = self
            .cluster
            .lineage_specs()
            .flat_map(inputs)
            .find(|id| !self.objects.contains(id))
        {
            return fail(format!("object {id}, an input of kept lineage, was freed"));
        }
        for (id, borrowers) in self.cluster.lent() {
            if !self.is_foreign(id.owner()) && !self.objects.contains(id) {
                return fail(format!(
                    "object {id}, lent to peers {borrowers:?}, was freed under them"
                ));
            }
        }
        // Waits answer connections that exist.
        for w in self.waits.values() {
            if let Target::Conn { conn, .. } = w.target
                && !self.conns.contains(conn)
            {
                return fail(format!(
                    "a get/wait answers connection {conn}, which is gone"
                ));
            }
        }
        Ok(())
    }

    /// Whether this node still knows object `id` (it has not freed it).
    pub fn knows_object(&self, id: &ObjectId) -> bool {
        self.objects.contains(id)
    }

    /// What is left of this node's work: tasks it knows, busy task workers,
    /// pending gets and waits, pulls in progress (all zero once it is idle).
    pub fn work_left(&self) -> WorkLeft {
        WorkLeft {
            tasks: self.tasks.len(),
            busy_workers: self
                .workers
                .values()
                .filter(|w| w.kind == WorkerKind::Task && w.busy.is_some())
                .count(),
            waits: self.waits.count(),
            pulls: self.cluster.pulls_in_progress().len(),
        }
    }

    /// The objects this node still keeps, by kind (all but cached copies
    /// are zero once no ref is left anywhere), with a few of them named.
    pub fn objects_left(&self) -> ObjectsLeft {
        let mut left = ObjectsLeft::default();
        for (id, e) in self.objects.iter_entries() {
            if e.cached {
                left.cached += 1;
                continue;
            }
            if self.is_foreign(id.owner()) {
                left.borrowed += 1;
            } else {
                left.owned += 1;
            }
            if left.sample.len() < 8 {
                left.sample.push(format!(
                    "{id} (refs {}, holds {}, escaped {}, for owner {}, lent {}, had a handle {}, \
                     pulling {}, borrowed {}, {:?}; {})",
                    e.refs,
                    e.holds,
                    e.escaped,
                    e.held_for_owner,
                    self.cluster.is_lent(id),
                    e.had_handle,
                    self.cluster.is_pulling(id),
                    self.cluster.is_borrowed(id),
                    match e.state {
                        crate::local::objects::ObjState::Pending => "pending",
                        crate::local::objects::ObjState::Ready(_) => "ready",
                    },
                    self.holders_of(id)
                ));
            }
        }
        let (lent, lenders) = self.cluster.borrow_counts();
        left.lent = lent;
        left.borrowed_refs = lenders;
        left
    }

    /// What holds `id`: objects whose values contain it, tasks and kept
    /// lineage that take it as an input.
    fn holders_of(&self, id: &ObjectId) -> String {
        let values: Vec<String> = self
            .objects
            .iter_entries()
            .filter(|(_, e)| e.contains.contains(id))
            .map(|(o, _)| o.to_string())
            .collect();
        let tasks: Vec<String> = self
            .tasks
            .entries()
            .filter(|(_, t)| inputs(&t.spec).any(|i| i == *id))
            .map(|(_, t)| format!("{} ({:?})", t.spec.name, t.state))
            .collect();
        let lineage = self
            .cluster
            .lineage_specs()
            .filter(|s| inputs(s).any(|i| i == *id))
            .count();
        format!("in values {values:?}, inputs of tasks {tasks:?} and {lineage} lineage records")
    }

    /// Resources not held by running work, and the node's total.
    pub fn resources(&self) -> (Resources, Resources) {
        (self.available.clone(), self.total.clone())
    }

    /// Resources that alive actors hold.
    pub fn actor_resources(&self) -> Resources {
        let mut r = Resources::default();
        for a in self.actors.values().filter(|a| a.holds_resources) {
            r.give(&a.resources);
        }
        r
    }
}

/// Two resource sets are equal once zero amounts are dropped.
fn held_equals(a: &Resources, b: &Resources) -> bool {
    a.to_map()
        .into_iter()
        .filter(|(_, v)| *v != 0.0)
        .eq(b.to_map().into_iter().filter(|(_, v)| *v != 0.0))
}

/// What is left of a node's work (see [`Core::work_left`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WorkLeft {
    pub tasks: usize,
    pub busy_workers: usize,
    pub waits: usize,
    pub pulls: usize,
}

/// What objects a node keeps (see [`Core::objects_left`]).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ObjectsLeft {
    /// Objects owned here.
    pub owned: usize,
    /// Entries for objects other peers own (refs held here, values fetched).
    pub borrowed: usize,
    /// Cached copies of other peers' objects (dropped when the store needs room).
    pub cached: usize,
    /// Objects lent to peers, and refs borrowed from peers.
    pub lent: usize,
    pub borrowed_refs: usize,
    /// A few of the objects kept, described.
    pub sample: Vec<String>,
}

impl ObjectsLeft {
    /// Whether nothing but cached copies is kept.
    pub fn only_cached(&self) -> bool {
        self.owned == 0 && self.borrowed == 0 && self.lent == 0 && self.borrowed_refs == 0
    }
}
