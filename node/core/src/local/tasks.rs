//! Task life: the task table and the ready queue; submission and
//! dependency resolution, completion, retries, failure and cancel.
//! (Which ready task runs where is `scheduler`.)

use std::collections::VecDeque;
use std::sync::Arc;

use rustc_hash::FxHashMap;
use serde_bytes::ByteBuf;

use crate::command::Command;
use crate::core::Core;
use crate::error::SubmitError;
use crate::ids::{ActorId, ConnId, FnId, ObjectId, PeerId, TaskId, WorkerId};
use crate::local::objects::{Holder, ObjState};
use crate::local::waits::Target;
use crate::resources::Resources;
use crate::wire::local::{
    ErrorInfo, ErrorKind, NodeMsg, Outcome, RUNTIME_ENV_MAX, Role, TaskKind, TaskSpec, Value,
    args_object_id,
};
use crate::wire::peer::PeerMsg;

/// The largest amount of one resource a task may ask for.
const MAX_RESOURCE: f64 = 1e9;

/// Where a task is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TaskState {
    /// Some arguments do not exist yet.
    Waiting,
    /// Runnable: in the ready queue, or for actor methods in the actor's queue.
    Queued,
    /// Runnable here only later: waiting for other peers' bids (or for a
    /// peer that can run it at all to join).
    Placing,
    Running(WorkerId),
    /// Sent to another peer (`Cluster::sent_to` says which), which sends the
    /// results back.
    Remote,
}

/// A task this node runs for another peer (the task's owner).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Guest {
    /// Where the results go.
    pub(crate) owner: PeerId,
    /// How many times the task has been placed so far.
    pub(crate) hops: u8,
    /// The queue length the sender expected here (see `PeerMsg::Task`).
    pub(crate) expect_queue: u32,
}

/// A task that has not finished.
#[derive(Debug)]
pub(crate) struct TaskEntry {
    pub(crate) spec: Arc<TaskSpec>,
    pub(crate) missing: u32,
    pub(crate) resources: Resources,
    pub(crate) retries_left: i32,
    pub(crate) state: TaskState,
    pub(crate) cancelled: bool,
    /// The attached driver that should see the task's printed output (None:
    /// the workers' own terminal, which is the embedded driver's).
    pub(crate) output_to: Option<ConnId>,
    /// Set when another peer owns the task and this node runs it.
    pub(crate) guest: Option<Box<Guest>>,
    /// Placement chose this node: it waits here for a free slot.
    pub(crate) stay_local: bool,
    /// Some arguments are in other peers' stores: they are pulled here before
    /// it runs here (or it is placed near them).
    pub(crate) inputs_elsewhere: bool,
    /// Tasks it submitted while it ran here (a recursive `cancel` cancels them too).
    pub(crate) children: Vec<TaskId>,
    /// It was found to fit on no node (see `local::infeasible`).
    pub(crate) infeasible_noted: bool,
}

impl TaskEntry {
    /// A task as accepted: waiting for `missing` arguments.
    pub(crate) fn new(spec: Arc<TaskSpec>, missing: u32) -> Self {
        let resources = resources_of(&spec);
        Self {
            retries_left: spec.max_retries,
            spec,
            missing,
            resources,
            state: TaskState::Waiting,
            cancelled: false,
            output_to: None,
            guest: None,
            stay_local: false,
            inputs_elsewhere: false,
            children: Vec::new(),
            infeasible_noted: false,
        }
    }
}

/// The resources a spec asks for.
pub(crate) fn resources_of(spec: &TaskSpec) -> Resources {
    Resources::from_pairs(spec.resources.iter().map(|(k, v)| (k.as_str(), *v)))
}

/// The tasks this node knows, the queue of runnable ones, and what it learnt
/// of their functions.
#[derive(Debug, Default)]
pub(crate) struct Tasks {
    entries: FxHashMap<TaskId, TaskEntry>,
    /// Runnable tasks (not actor calls) waiting for a worker, oldest first.
    /// May hold ids of tasks that ended meanwhile: readers skip those.
    ready: VecDeque<TaskId>,
    /// Pickled functions and classes, by id.
    functions: FxHashMap<FnId, Arc<ByteBuf>>,
    /// Mean run time of each function (µs, moving average) and how many runs it is based on.
    run_us: FxHashMap<FnId, (f64, u32)>,
}

impl Tasks {
    pub(crate) fn get(&self, id: &TaskId) -> Option<&TaskEntry> {
        self.entries.get(id)
    }

    pub(crate) fn get_mut(&mut self, id: &TaskId) -> Option<&mut TaskEntry> {
        self.entries.get_mut(id)
    }

    pub(crate) fn contains(&self, id: &TaskId) -> bool {
        self.entries.contains_key(id)
    }

    pub(crate) fn insert(&mut self, id: TaskId, t: TaskEntry) {
        self.entries.insert(id, t);
    }

    pub(crate) fn remove(&mut self, id: &TaskId) -> Option<TaskEntry> {
        self.entries.remove(id)
    }

    pub(crate) fn values(&self) -> impl Iterator<Item = &TaskEntry> {
        self.entries.values()
    }

    pub(crate) fn entries(&self) -> impl Iterator<Item = (&TaskId, &TaskEntry)> {
        self.entries.iter()
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// A task entry's spec (for callers that only need to read it).
    pub(crate) fn spec(&self, id: &TaskId) -> Option<Arc<TaskSpec>> {
        self.entries.get(id).map(|t| Arc::clone(&t.spec))
    }

    /// Queue a runnable task behind the others.
    pub(crate) fn push_ready(&mut self, id: TaskId) {
        self.ready.push_back(id);
    }

    /// Queue a runnable task ahead of the others (it was taken back from a worker).
    pub(crate) fn push_ready_front(&mut self, id: TaskId) {
        self.ready.push_front(id);
    }

    pub(crate) fn ready_len(&self) -> usize {
        self.ready.len()
    }

    pub(crate) fn ready_is_empty(&self) -> bool {
        self.ready.is_empty()
    }

    pub(crate) fn ready_at(&self, i: usize) -> Option<TaskId> {
        self.ready.get(i).copied()
    }

    pub(crate) fn remove_ready_at(&mut self, i: usize) {
        self.ready.remove(i);
    }

    pub(crate) fn ready_front(&self) -> Option<TaskId> {
        self.ready.front().copied()
    }

    pub(crate) fn pop_ready_front(&mut self) -> Option<TaskId> {
        self.ready.pop_front()
    }

    /// The ready queue, oldest first.
    pub(crate) fn ready(&self) -> impl Iterator<Item = TaskId> + '_ {
        self.ready.iter().copied()
    }

    fn unqueue(&mut self, id: TaskId) {
        self.ready.retain(|x| *x != id);
    }

    pub(crate) fn function(&self, id: &FnId) -> Option<&Arc<ByteBuf>> {
        self.functions.get(id)
    }

    pub(crate) fn has_function(&self, id: &FnId) -> bool {
        self.functions.contains_key(id)
    }

    /// Keep a pickled function (the first copy of it wins).
    pub(crate) fn register_function(&mut self, id: FnId, blob: ByteBuf) {
        self.functions.entry(id).or_insert_with(|| Arc::new(blob));
    }

    /// Mean run time of a function in µs, once it ran at least `min_runs` times.
    pub(crate) fn mean_run_us(&self, f: &FnId, min_runs: u32) -> Option<f64> {
        self.run_us
            .get(f)
            .filter(|(_, n)| *n >= min_runs)
            .map(|(mean, _)| *mean)
    }

    fn record_run_time(&mut self, f: FnId, run_us: u64) {
        let e = self.run_us.entry(f).or_insert((run_us as f64, 0));
        e.0 = 0.8 * e.0 + 0.2 * run_us as f64;
        e.1 = e.1.saturating_add(1);
    }
}

#[cfg(test)]
impl Tasks {
    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The ready queue as a list, oldest first.
    pub(crate) fn ready_list(&self) -> Vec<TaskId> {
        self.ready.iter().copied().collect()
    }

    pub(crate) fn remove_ready(&mut self, id: TaskId) {
        self.unqueue(id);
    }

    pub(crate) fn mean_run_time(&self, f: &FnId) -> Option<(f64, u32)> {
        self.run_us.get(f).copied()
    }
}

#[cfg(test)]
impl std::ops::Index<&TaskId> for Tasks {
    type Output = TaskEntry;
    fn index(&self, id: &TaskId) -> &TaskEntry {
        &self.entries[id]
    }
}

impl Core {
    /// Accept a task. Errors (a taken actor name) are returned to the submitter;
    /// a rejected task's arguments, already written into the store, are dropped.
    pub(crate) fn submit(&mut self, spec: TaskSpec, from: Holder) -> Result<(), SubmitError> {
        let rejected = self.check_submission(&spec);
        if rejected.is_err()
            && let Value::Stored { .. } = spec.args
        {
            let args_id = args_object_id(spec.task);
            // A sealed object of that id (a duplicate submission) is left alone.
            if self.store.abort(args_id).is_ok()
                && let Holder::Conn(c) = from
            {
                self.conns.forget_unsealed(c, &args_id);
            }
        }
        rejected?;
        let child = spec.task;
        self.accept(spec, from, None);
        if let Holder::Conn(conn) = from
            && let Some(parent) = self.running_task_of(conn)
            && let Some(p) = self.tasks.get_mut(&parent)
        {
            p.children.push(child);
        }
        Ok(())
    }

    /// Whether a task may be accepted (registering its actor if it creates one).
    pub(crate) fn check_submission(&mut self, spec: &TaskSpec) -> Result<(), SubmitError> {
        let tid = spec.task;
        if self.tasks.contains(&tid) {
            return Err(SubmitError::Duplicate(tid));
        }
        if let Some((name, amount)) = spec
            .resources
            .iter()
            .find(|(_, v)| !v.is_finite() || *v < 0.0 || *v > MAX_RESOURCE)
        {
            return Err(SubmitError::BadResource {
                task: spec.name.clone(),
                resource: name.clone(),
                amount: *amount,
                max: MAX_RESOURCE,
            });
        }
        if let Some(env) = &spec.runtime_env
            && env.setup.len() > RUNTIME_ENV_MAX
        {
            return Err(SubmitError::RuntimeEnvTooLarge {
                task: spec.name.clone(),
                len: env.setup.len(),
                max: RUNTIME_ENV_MAX,
            });
        }
        if spec.kind == TaskKind::ActorCreate {
            self.register_actor(spec)?;
        }
        Ok(())
    }

    /// Take a checked task: resolve its arguments and queue it (`guest`: it
    /// came from another peer, which owns it).
    pub(crate) fn accept(&mut self, spec: TaskSpec, from: Holder, guest: Option<Guest>) {
        let tid = spec.task;
        self.stats.tasks_submitted += 1;
        for id in spec.return_ids() {
            self.objects.entry(id);
        }
        for c in &spec.contained {
            if let Some(e) = self.objects.get_mut(c) {
                e.holds += 1;
            }
        }
        if let Value::Stored { .. } = spec.args {
            let args_id = args_object_id(tid);
            self.seal_object(from, args_id, Vec::new());
            if let Some(e) = self.objects.get_mut(&args_id) {
                e.had_handle = true;
                e.holds += 1;
            }
        }
        let mut missing = 0;
        let mut inputs_elsewhere = false;
        let mut failure: Option<ErrorInfo> = None;
        for dep in &spec.deps {
            if self.cluster.is_member() {
                self.fetch_foreign(*dep);
            }
            match self.objects.get_mut(dep) {
                None => {
                    failure.get_or_insert_with(|| {
                        ErrorInfo::new(
                            ErrorKind::ObjectLost,
                            format!(
                                "argument {dep} of task {} is not known to this node",
                                spec.name
                            ),
                        )
                    });
                }
                Some(e) => {
                    e.holds += 1;
                    match &e.state {
                        // In another peer's store: pulled (or the task placed
                        // near it) once it is runnable.
                        ObjState::Pending if e.elsewhere.is_some() => inputs_elsewhere = true,
                        ObjState::Pending => {
                            e.dependents.push(tid);
                            missing += 1;
                        }
                        ObjState::Ready(Value::Error(err)) => {
                            failure.get_or_insert_with(|| err.clone());
                        }
                        ObjState::Ready(_) => {}
                    }
                }
            }
        }
        let output_to = self.output_target(from);
        let kind = spec.kind;
        let actor = spec.actor;
        let mut entry = TaskEntry::new(Arc::new(spec), missing);
        entry.output_to = output_to;
        entry.guest = guest.map(Box::new);
        entry.inputs_elsewhere = inputs_elsewhere;
        self.tasks.insert(tid, entry);
        if kind == TaskKind::ActorMethod
            && let Err(err) = self.queue_actor_call(actor.unwrap_or_default_actor(), tid)
        {
            failure = Some(err);
        }
        if let Some(err) = failure {
            self.fail_task(tid, err);
        } else if missing == 0 {
            self.make_runnable(tid);
        }
        self.schedule();
    }

    /// One of a task's arguments now has a value in another peer's store.
    pub(crate) fn dep_located(&mut self, tid: TaskId) {
        let Some(t) = self.tasks.get_mut(&tid) else {
            return;
        };
        t.inputs_elsewhere = true;
        t.missing = t.missing.saturating_sub(1);
        if t.missing == 0 && t.state == TaskState::Waiting {
            self.make_runnable(tid);
            self.schedule();
        }
    }

    /// One of a task's arguments got its value (`error`: it is an error).
    pub(crate) fn dep_resolved(&mut self, tid: TaskId, error: Option<&ErrorInfo>) {
        let Some(t) = self.tasks.get_mut(&tid) else {
            return;
        };
        if let Some(err) = error {
            if t.state == TaskState::Waiting {
                let err = err.clone();
                self.fail_task(tid, err);
            }
            return;
        }
        t.missing = t.missing.saturating_sub(1);
        if t.missing == 0 && t.state == TaskState::Waiting {
            self.make_runnable(tid);
            self.schedule();
        }
    }

    pub(crate) fn make_runnable(&mut self, tid: TaskId) {
        let Some(t) = self.tasks.get_mut(&tid) else {
            return;
        };
        t.state = TaskState::Queued;
        match t.spec.kind {
            TaskKind::Normal | TaskKind::ActorCreate => self.tasks.push_ready(tid),
            TaskKind::ActorMethod => {
                let aid = t.spec.actor.unwrap_or_default_actor();
                self.pump_actor(aid);
            }
        }
    }

    /// Where the output of a task submitted by `from` goes: an attached
    /// driver, or whatever its submitting task's output goes to (nested tasks).
    fn output_target(&self, from: Holder) -> Option<ConnId> {
        let Holder::Conn(c) = from else {
            return None;
        };
        match self.conns.role(c)? {
            Role::Driver => Some(c),
            Role::Worker(w) => {
                let task = self.task_of_worker(w)?;
                self.tasks.get(&task)?.output_to
            }
            Role::Control => None,
        }
    }

    /// A worker printed something for task `tid`: pass it to the driver that wants it.
    pub(crate) fn forward_output(&mut self, tid: TaskId, stream: u8, data: ByteBuf) {
        let Some(t) = self.tasks.get(&tid) else {
            return;
        };
        if let Some(g) = t.guest.as_deref() {
            let owner = g.owner;
            self.send_peer(
                owner,
                PeerMsg::Output {
                    task: tid,
                    stream,
                    data,
                },
            );
        } else if let Some(conn) = t.output_to {
            self.send_to(conn, NodeMsg::Output { stream, data });
        } else if t.state == TaskState::Remote || self.observing() {
            // Printed on another peer for this process's own (embedded)
            // driver, or sent here only to be kept for the dashboard: it
            // goes to the terminal the worker would have printed on.
            self.emit(Command::Print { stream, data });
        }
    }

    /// Fold a run time into its function's moving average.
    pub(crate) fn record_run_time(&mut self, tid: TaskId, run_us: u64) {
        let Some(t) = self.tasks.get(&tid) else {
            return;
        };
        if t.spec.kind != TaskKind::Normal {
            return;
        }
        let f = t.spec.fn_id;
        self.tasks.record_run_time(f, run_us);
    }

    /// A worker reports a task's outcome.
    pub(crate) fn task_done(
        &mut self,
        wid: WorkerId,
        tid: TaskId,
        outcome: Outcome,
        contained: Vec<Vec<ObjectId>>,
    ) {
        let conn = self.workers.get(&wid).and_then(|w| w.conn);
        let actor_of_worker = self.worker_finished(wid, tid);
        let Some(t) = self.tasks.get_mut(&tid) else {
            self.discard_outcome(conn, tid, &outcome);
            self.schedule();
            return;
        };
        if t.state != TaskState::Running(wid) {
            // A worker the task has left (killed, its actor restarted
            // elsewhere, or the task taken back): its outcome is not the task's.
            tracing::debug!("a stale outcome of task {} is dropped", t.spec.name);
            self.discard_outcome(conn, tid, &outcome);
            if let Some(aid) = actor_of_worker {
                self.pump_actor(aid);
            }
            self.schedule();
            return;
        }
        let spec = Arc::clone(&t.spec);
        if t.cancelled {
            if let Some(c) = conn
                && spec.kind == TaskKind::Normal
            {
                // An interrupted get of the task is over: its answer (and
                // the pins it would bring) is not wanted any more.
                let ids = self
                    .waits
                    .forget(|w| matches!(w.target, Target::Conn { conn: wc, .. } if wc == c));
                for id in ids {
                    self.maybe_free(&id);
                }
            }
            self.discard_outcome(conn, tid, &outcome);
            self.fail_task(tid, cancelled_error(&spec.name));
            self.schedule();
            return;
        }
        match (spec.kind, outcome) {
            (TaskKind::ActorCreate, Outcome::Returns(_)) => {
                self.actor_created(&spec);
                self.finish_task(tid);
            }
            (TaskKind::ActorCreate, Outcome::Failed(err) | Outcome::FailedFinal(err)) => {
                let aid = spec.actor.unwrap_or_default_actor();
                // The message's first line (a task error's traceback follows it).
                let msg = format!(
                    "the actor {} died because its constructor raised: {}",
                    spec.actor_name(),
                    err.message.lines().next().unwrap_or_default()
                );
                self.finish_task(tid);
                self.actor_died(aid, ErrorInfo::new(ErrorKind::ActorDied, msg), false);
            }
            (_, Outcome::Returns(values)) if values.len() == spec.num_returns as usize => {
                let mut contained = contained.into_iter();
                for (id, v) in spec.return_ids().zip(values) {
                    let inside = contained.next().unwrap_or_default();
                    if !self.objects.contains(&id) {
                        // Freed already (every ref dropped; another run's value
                        // came first): this value is not wanted.
                        if let Value::Stored { .. } = v {
                            self.abort_object(conn_holder(conn), id);
                        }
                        continue;
                    }
                    self.attach_contained(id, inside);
                    match v {
                        Value::Stored { .. } => self.seal_object(conn_holder(conn), id, Vec::new()),
                        v => self.object_ready(id, v),
                    }
                }
                self.stats.tasks_finished += 1;
                self.finish_task(tid);
            }
            (_, Outcome::Returns(values)) => {
                self.discard_outcome(conn, tid, &Outcome::Returns(values.clone()));
                let err = ErrorInfo::new(
                    ErrorKind::Task,
                    format!(
                        "task {} returned {} values but num_returns is {}",
                        spec.name,
                        values.len(),
                        spec.num_returns
                    ),
                );
                self.fail_task(tid, err);
            }
            (_, Outcome::FailedFinal(err)) => {
                self.abort_unsealed_returns(conn, &spec);
                self.fail_task(tid, err);
            }
            (_, Outcome::Failed(err)) => {
                self.abort_unsealed_returns(conn, &spec);
                let t = self.tasks.get_mut(&tid);
                match t {
                    Some(t)
                        if spec.retry_exceptions
                            && t.retries_left != 0
                            && spec.kind == TaskKind::Normal =>
                    {
                        if t.retries_left > 0 {
                            t.retries_left -= 1;
                        }
                        t.state = TaskState::Queued;
                        self.stats.tasks_retried += 1;
                        self.tasks.push_ready(tid);
                    }
                    _ => self.fail_task(tid, err),
                }
            }
        }
        if let Some(aid) = actor_of_worker {
            self.pump_actor(aid);
        }
        self.schedule();
    }

    /// A failed task may have created some of its returns in the store before failing.
    fn abort_unsealed_returns(&mut self, conn: Option<ConnId>, spec: &TaskSpec) {
        let Some(c) = conn else {
            return;
        };
        let ids: Vec<ObjectId> = spec
            .return_ids()
            .filter(|id| self.conns.forget_unsealed(c, id))
            .collect();
        for id in ids {
            let _ = self.store.abort(id);
        }
    }

    /// Drop store allocations a worker made for an outcome nobody wants.
    fn discard_outcome(&mut self, conn: Option<ConnId>, tid: TaskId, outcome: &Outcome) {
        if let Outcome::Returns(values) = outcome {
            for (i, v) in values.iter().enumerate() {
                if let Value::Stored { .. } = v {
                    let id = ObjectId::for_return(tid, i as u32 + 1);
                    if let Some(c) = conn {
                        self.conns.forget_unsealed(c, &id);
                    }
                    let _ = self.store.abort(id);
                }
            }
        }
    }

    /// Every return of the task becomes `err`; the task is over.
    pub(crate) fn fail_task(&mut self, tid: TaskId, err: ErrorInfo) {
        self.note_failure(tid, &err);
        let Some(t) = self.tasks.get(&tid) else {
            return;
        };
        let spec = Arc::clone(&t.spec);
        if t.state == TaskState::Queued && spec.kind != TaskKind::ActorMethod {
            self.tasks.unqueue(tid);
        }
        let actor = spec.actor.filter(|_| spec.kind == TaskKind::ActorMethod);
        if let Some(aid) = actor {
            self.unqueue_actor_call(aid, tid);
        }
        self.finish_task(tid);
        for id in spec.return_ids() {
            // A result freed already (every ref to it was dropped) stays freed.
            if self.objects.contains(&id) {
                self.object_ready(id, Value::Error(err.clone()));
            }
        }
        if let Some(aid) = actor {
            // Calls queued behind this one may go now.
            self.pump_actor(aid);
        }
    }

    /// Forget a task and release what it held.
    pub(crate) fn finish_task(&mut self, tid: TaskId) {
        let Some(t) = self.tasks.remove(&tid) else {
            return;
        };
        if t.state == TaskState::Remote {
            self.cluster.forget_sent(&tid);
        }
        let keep_deps = t.spec.kind == TaskKind::ActorCreate
            && t.spec
                .actor_options
                .as_ref()
                .is_some_and(|o| o.max_restarts != 0);
        if !keep_deps {
            self.release_task_inputs(&t.spec);
        }
    }

    /// Release the holds a task has on its arguments.
    pub(crate) fn release_task_inputs(&mut self, spec: &TaskSpec) {
        let mut inputs = spec.deps.clone();
        inputs.extend_from_slice(&spec.contained);
        if let Value::Stored { .. } = spec.args {
            inputs.push(args_object_id(spec.task));
        }
        self.release_holds(&inputs, Some(spec.task));
    }

    /// `cancel(ref, force, recursive)`, with Ray's semantics:
    /// - a task not started yet fails with `TaskCancelledError` and never runs;
    /// - a running task is interrupted (`KeyboardInterrupt` in it: the worker
    ///   is told which task, then signalled), or with `force` its worker is
    ///   killed; either way it fails with `TaskCancelledError`, never retried;
    /// - an actor call not started yet is skipped; a running one of an async
    ///   actor is cancelled as an asyncio task, of another actor runs on;
    /// - a task sent to another peer, or owned by one, is cancelled there;
    /// - `recursive`: the tasks it submitted are cancelled too;
    /// - a finished task: nothing happens.
    pub(crate) fn cancel(&mut self, id: ObjectId, force: bool, recursive: bool) {
        let tid = id.task();
        let Some(t) = self.tasks.get_mut(&tid) else {
            if self.is_foreign(id.owner())
                && let Some(owner) = self.peer_of(id.owner())
            {
                // A borrowed ref: its owner knows where the task is.
                self.send_peer(
                    owner,
                    PeerMsg::Cancel {
                        task: tid,
                        force,
                        recursive,
                    },
                );
            }
            return;
        };
        if t.spec.kind == TaskKind::ActorCreate {
            // An actor is ended with kill(), not cancel().
            return;
        }
        let children = if recursive {
            std::mem::take(&mut t.children)
        } else {
            Vec::new()
        };
        let actor_call = t.spec.kind == TaskKind::ActorMethod;
        match t.state {
            TaskState::Waiting | TaskState::Queued | TaskState::Placing => {
                let name = t.spec.name.clone();
                if let (true, Some(aid)) = (actor_call, t.spec.actor) {
                    self.unqueue_actor_call(aid, tid);
                }
                self.fail_task(tid, cancelled_error(&name));
            }
            TaskState::Remote => {
                if let Some(peer) = self.cluster.sent_to(&tid) {
                    self.send_peer(
                        peer,
                        PeerMsg::Cancel {
                            task: tid,
                            force,
                            recursive,
                        },
                    );
                }
            }
            TaskState::Running(wid) => {
                let (conn, pid, running) = match self.workers.get(&wid) {
                    Some(w) => (w.conn, w.pid, w.busy == Some(tid)),
                    None => (None, None, false),
                };
                if !actor_call {
                    t.cancelled = true;
                }
                if force && !actor_call {
                    if let Some(pid) = pid {
                        self.kill_process(pid);
                    }
                } else if let Some(conn) = conn {
                    self.send_to(conn, NodeMsg::Cancel { task: tid });
                    if running
                        && !actor_call
                        && let Some(pid) = pid.filter(|p| *p > 1)
                    {
                        self.emit(Command::Interrupt { pid });
                    }
                }
            }
        }
        for child in children {
            self.cancel(ObjectId::for_return(child, 1), force, true);
        }
    }

    /// The task a connection's worker is running now (the caller of a nested
    /// submit): a task worker's task, or a one-call-at-a-time actor's call.
    fn running_task_of(&self, conn: ConnId) -> Option<TaskId> {
        let Some(Role::Worker(wid)) = self.conns.role(conn) else {
            return None;
        };
        let w = self.workers.get(&wid)?;
        match w.kind {
            crate::local::workers::WorkerKind::Task => w.busy,
            crate::local::workers::WorkerKind::Actor(aid) => {
                self.actors.get(&aid)?.inflight.front().copied()
            }
        }
    }

    /// SIGKILL a worker process (pids of 1 and below, which fake workers use, never).
    pub(crate) fn kill_process(&mut self, pid: u32) {
        if pid > 1 {
            self.emit(Command::Kill { pid });
        }
    }
}

fn conn_holder(conn: Option<ConnId>) -> Holder {
    conn.map_or(Holder::Local, Holder::Conn)
}

pub(crate) fn cancelled_error(name: &str) -> ErrorInfo {
    ErrorInfo::new(
        ErrorKind::Cancelled,
        format!("task {name} was cancelled with peer.cancel()"),
    )
}

/// Actor ids on method tasks are always set by the submitter; a missing one
/// reads as an unknown actor.
pub(crate) trait ActorIdExt {
    fn unwrap_or_default_actor(self) -> ActorId;
}

impl ActorIdExt for Option<ActorId> {
    fn unwrap_or_default_actor(self) -> ActorId {
        self.unwrap_or(ActorId([0; 16]))
    }
}
