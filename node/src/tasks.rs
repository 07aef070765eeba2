//! Task life: submission and dependency resolution, the ready queue,
//! dispatch to idle workers, completion, retries and failure.

use std::sync::Arc;

use crate::ids::{ObjectId, TaskId, WorkerId};
use crate::protocol::Role;
use crate::protocol::{
    ErrorInfo, ErrorKind, Execution, NodeMsg, Outcome, TaskKind, TaskSpec, Value, args_object_id,
};
use crate::resources::Resources;
use crate::state::{
    ActorEntry, ActorState, Guest, Holder, ObjState, ObjectEntry, State, TaskEntry, TaskState,
};

/// How many queue entries one scheduling pass looks at past tasks that do not fit.
const SCAN_LIMIT: usize = 256;
/// The largest amount of one resource a task may ask for.
const MAX_RESOURCE: f64 = 1e9;
/// Tasks queued behind a running one, for functions that take under 200 µs.
const PIPELINE_DEPTH_TINY: usize = 4;

impl State {
    /// Accept a task. Errors (a taken actor name) are returned to the submitter;
    /// a rejected task's arguments, already written into the store, are dropped.
    pub fn submit(&mut self, spec: TaskSpec, from: Holder) -> Result<(), String> {
        let rejected = self.check_submission(&spec);
        if rejected.is_err()
            && let Value::Stored { .. } = spec.args
        {
            let args_id = args_object_id(spec.task);
            // A sealed object of that id (a duplicate submission) is left alone.
            if self.store.abort(args_id).is_ok()
                && let Holder::Conn(c) = from
                && let Some(conn) = self.conns.get_mut(&c)
            {
                conn.unsealed.remove(&args_id);
            }
        }
        rejected?;
        self.accept(spec, from, None);
        Ok(())
    }

    /// Whether a task may be accepted (registering its actor if it creates one).
    pub(crate) fn check_submission(&mut self, spec: &TaskSpec) -> Result<(), String> {
        let tid = spec.task;
        if self.tasks.contains_key(&tid) {
            return Err(format!("task {tid} was submitted twice"));
        }
        if let Some((name, amount)) = spec
            .resources
            .iter()
            .find(|(_, v)| !v.is_finite() || *v < 0.0 || *v > MAX_RESOURCE)
        {
            return Err(format!(
                "task {} asks for {amount} of resource {name:?}; amounts must be between 0 and {MAX_RESOURCE}",
                spec.name
            ));
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
            self.objects.entry(id).or_insert_with(ObjectEntry::pending);
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
            if self.remote.out.is_some() {
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
        let resources = Resources::from_pairs(spec.resources.iter().map(|(k, v)| (k.as_str(), *v)));
        let retries_left = spec.max_retries;
        let output_to = self.output_target(from);
        let kind = spec.kind;
        let actor = spec.actor;
        self.tasks.insert(
            tid,
            TaskEntry {
                spec: Arc::new(spec),
                missing,
                resources,
                retries_left,
                state: TaskState::Waiting,
                cancelled: false,
                output_to,
                guest: guest.map(Box::new),
                stay_local: false,
                inputs_elsewhere,
            },
        );
        if kind == TaskKind::ActorMethod {
            let aid = actor.unwrap_or_default_actor();
            if let Some(p) = self.remote.proxies.get_mut(&aid) {
                p.queue.push_back(tid);
            } else if let Some(a) = self.actors.get_mut(&aid) {
                a.queue.push_back(tid);
            } else if self.is_foreign(aid.owner()) {
                self.start_proxy(aid);
                if let Some(p) = self.remote.proxies.get_mut(&aid) {
                    p.queue.push_back(tid);
                }
            } else {
                failure = Some(ErrorInfo::new(
                    ErrorKind::ActorDied,
                    format!("actor {aid} is not known to this node"),
                ));
            }
        }
        if let Some(err) = failure {
            self.fail_task(tid, err);
        } else if missing == 0 {
            self.make_runnable(tid);
        }
        self.schedule();
    }

    /// One of a task's arguments now has a value in another peer's store.
    pub fn dep_located(&mut self, tid: TaskId) {
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
    pub fn dep_resolved(&mut self, tid: TaskId, error: Option<&ErrorInfo>) {
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
            TaskKind::Normal | TaskKind::ActorCreate => self.ready.push_back(tid),
            TaskKind::ActorMethod => {
                let aid = t.spec.actor.unwrap_or_default_actor();
                self.pump_actor(aid);
            }
        }
    }

    /// Start queued tasks that fit on idle workers; ask for more workers when short.
    pub fn schedule(&mut self) {
        if self.shutting_down {
            return;
        }
        if self.spawn_failure.is_some() {
            self.fail_unservable();
        }
        let mut i = 0;
        let mut skipped = 0;
        let mut cpu_free = 0;
        while i < self.ready.len() && skipped < SCAN_LIMIT {
            let tid = self.ready[i];
            let Some(t) = self.tasks.get(&tid) else {
                self.ready.remove(i);
                continue;
            };
            if t.inputs_elsewhere && !self.inputs_here(&t.spec) {
                // Its arguments are on other peers: near them, or pull them first.
                self.ready.remove(i);
                if self.placement_active() && self.may_leave(t) {
                    self.await_placement(tid);
                } else {
                    self.pull_inputs(tid);
                }
                continue;
            }
            let fits = self.available.fits(&t.resources);
            if (!fits || self.wants_a_free_cpu(t)) && self.placement_active() && self.may_leave(t) {
                // Another peer may run it sooner: it joins the next bid round.
                self.ready.remove(i);
                self.await_placement(tid);
                continue;
            }
            if !fits {
                if !self.total.fits(&t.resources)
                    && !self.placement_active()
                    && self.warned_infeasible.insert(tid)
                {
                    tracing::warn!(
                        "task {} needs {:?} but this node has only {:?}; it waits until a \
                         node with those resources joins",
                        t.spec.name,
                        t.resources.to_map(),
                        self.total.to_map()
                    );
                }
                i += 1;
                skipped += 1;
                continue;
            }
            match t.spec.kind {
                TaskKind::ActorCreate => {
                    self.ready.remove(i);
                    self.start_actor(tid);
                }
                _ => {
                    let Some(wid) = self.idle.pop() else {
                        if t.resources.get("CPU") == 0.0 {
                            // Needs no CPU: it gets a worker of its own (below).
                            cpu_free += 1;
                            i += 1;
                            skipped += 1;
                            continue;
                        }
                        break;
                    };
                    self.ready.remove(i);
                    let res = t.resources.clone();
                    self.available.take(&res);
                    if let Some(w) = self.workers.get_mut(&wid) {
                        w.held = res;
                        w.busy = Some(tid);
                    }
                    self.send_execution(tid, wid);
                }
            }
        }
        if !self.ready.is_empty() && self.idle.is_empty() {
            self.pipeline_short_tasks();
        }
        if !self.ready.is_empty() && self.idle.is_empty() {
            self.grow_pool(cpu_free);
        }
        if !self.remote.unplaced.is_empty() {
            self.start_round();
        }
    }

    /// With every worker busy, queue known-short tasks behind running ones so a
    /// worker never waits a round trip between two of them (and reads several
    /// per syscall). Long or unknown functions are never queued behind anything.
    fn pipeline_short_tasks(&mut self) {
        while let Some(&tid) = self.ready.front() {
            let Some(t) = self.tasks.get(&tid) else {
                self.ready.pop_front();
                continue;
            };
            if t.spec.kind != TaskKind::Normal {
                return;
            }
            let depth = match self.fn_run_us.get(&t.spec.fn_id) {
                Some(&(mean, n)) if n >= 3 && mean < 200.0 => PIPELINE_DEPTH_TINY,
                Some(&(mean, n)) if n >= 3 && mean < 1000.0 => 1,
                _ => return,
            };
            let target = self
                .workers
                .iter()
                .filter(|(_, w)| {
                    w.kind == crate::state::WorkerKind::Task
                        && w.busy.is_some()
                        && w.blocked == 0
                        && w.conn.is_some()
                        && w.queued.len() < depth
                        && w.held == t.resources
                })
                .min_by_key(|(_, w)| w.queued.len())
                .map(|(wid, _)| *wid);
            let Some(wid) = target else {
                return;
            };
            self.ready.pop_front();
            if let Some(w) = self.workers.get_mut(&wid) {
                w.queued.push_back(tid);
            }
            self.send_execution_via(tid, wid, false);
        }
    }

    /// Where the output of a task submitted by `from` goes: an attached
    /// driver, or whatever its submitting task's output goes to (nested tasks).
    fn output_target(&self, from: Holder) -> Option<crate::state::ConnId> {
        let Holder::Conn(c) = from else {
            return None;
        };
        match self.conns.get(&c)?.role? {
            Role::Driver => Some(c),
            Role::Worker(w) => {
                let worker = self.workers.get(&w)?;
                let task = match worker.kind {
                    crate::state::WorkerKind::Task => worker.busy?,
                    crate::state::WorkerKind::Actor(a) => self.actors.get(&a)?.creation.task,
                };
                self.tasks.get(&task)?.output_to
            }
            Role::Control => None,
        }
    }

    /// A worker printed something for task `tid`: pass it to the driver that wants it.
    pub fn forward_output(&self, tid: TaskId, stream: u8, data: serde_bytes::ByteBuf) {
        let Some(t) = self.tasks.get(&tid) else {
            return;
        };
        if let Some(g) = t.guest.as_deref() {
            self.send_peer(
                g.owner,
                crate::peer_msg::PeerMsg::Output {
                    task: tid,
                    stream,
                    data,
                },
            );
        } else if let Some(conn) = t.output_to {
            self.send_to(conn, &NodeMsg::Output { stream, data });
        } else if t.state == TaskState::Remote {
            // Printed on another peer for this process's own (embedded) driver.
            crate::remote::print_output(stream, &data);
        }
    }

    /// Fold a run time into its function's moving average.
    pub fn record_run_time(&mut self, _wid: WorkerId, tid: TaskId, run_us: u64) {
        let Some(t) = self.tasks.get(&tid) else {
            return;
        };
        if t.spec.kind != TaskKind::Normal {
            return;
        }
        let e = self
            .fn_run_us
            .entry(t.spec.fn_id)
            .or_insert((run_us as f64, 0));
        e.0 = 0.8 * e.0 + 0.2 * run_us as f64;
        e.1 = e.1.saturating_add(1);
    }

    /// Hand task `tid` to worker `wid`.
    pub fn send_execution(&mut self, tid: TaskId, wid: WorkerId) {
        self.send_execution_via(tid, wid, true);
    }

    /// Hand task `tid` to worker `wid`; `now`: write it at once if possible
    /// (the worker is waiting for it), else leave it to the batching writer.
    pub(crate) fn send_execution_via(&mut self, tid: TaskId, wid: WorkerId, now: bool) {
        let Some(conn) = self.workers.get(&wid).and_then(|w| w.conn) else {
            return;
        };
        let Some(t) = self.tasks.get_mut(&tid) else {
            return;
        };
        t.state = TaskState::Running(wid);
        let spec = Arc::clone(&t.spec);
        let forward_output = t.output_to.is_some() || t.guest.is_some();
        let fn_blob = match self.workers.get_mut(&wid) {
            Some(w) if !w.known_fns.contains(&spec.fn_id) && spec.kind != TaskKind::ActorMethod => {
                match self.functions.get(&spec.fn_id) {
                    Some(b) => {
                        w.known_fns.insert(spec.fn_id);
                        Some((**b).clone())
                    }
                    None => {
                        let err = ErrorInfo::new(
                            ErrorKind::Task,
                            format!("function of task {} was never registered", spec.name),
                        );
                        self.task_done(wid, tid, Outcome::Failed(err), Vec::new());
                        return;
                    }
                }
            }
            _ => None,
        };
        let args = match &spec.args {
            Value::Stored { .. } => self.value_for(&args_object_id(tid), Holder::Conn(conn)),
            v => v.clone(),
        };
        let deps = spec
            .deps
            .iter()
            .map(|d| self.value_for(d, Holder::Conn(conn)))
            .collect();
        let exec = Execution {
            kind: spec.kind,
            task: tid,
            fn_id: spec.fn_id,
            fn_blob,
            method: spec.method.clone(),
            name: spec.name.clone(),
            actor: spec.actor,
            args,
            dep_ids: spec.deps.clone(),
            deps,
            num_returns: spec.num_returns,
            forward_output,
        };
        let msg = NodeMsg::Execute(Box::new(exec));
        if let Some(c) = self.conns.get(&conn) {
            if now {
                c.outbox.send(&msg);
            } else {
                c.outbox.send_queued(&msg);
            }
        }
    }

    /// A worker reports a task's outcome.
    pub fn task_done(
        &mut self,
        wid: WorkerId,
        tid: TaskId,
        outcome: Outcome,
        contained: Vec<Vec<ObjectId>>,
    ) {
        let conn = self.workers.get(&wid).and_then(|w| w.conn);
        let mut actor_of_worker = None;
        if let Some(w) = self.workers.get_mut(&wid) {
            match w.kind {
                crate::state::WorkerKind::Task => {
                    if w.busy == Some(tid) {
                        if w.blocked > 0 {
                            // It returned while still blocked in a get (from another
                            // thread): take back the CPU it had lent first.
                            w.blocked = 0;
                            let cpu = w.held.cpu_only();
                            self.available.take(&cpu);
                        }
                        // A pipelined task starts at once and inherits the slot.
                        let Some(w) = self.workers.get_mut(&wid) else {
                            return;
                        };
                        w.busy = w.queued.pop_front();
                        if w.busy.is_none() {
                            let held = std::mem::take(&mut w.held);
                            self.available.give(&held);
                            self.idle.push(wid);
                        }
                    }
                }
                crate::state::WorkerKind::Actor(aid) => actor_of_worker = Some(aid),
            }
        }
        if let Some(aid) = actor_of_worker
            && let Some(a) = self.actors.get_mut(&aid)
            && let Some(pos) = a.inflight.iter().position(|t| *t == tid)
        {
            a.inflight.remove(pos);
        }
        let Some(t) = self.tasks.get_mut(&tid) else {
            self.discard_outcome(conn, tid, &outcome);
            self.schedule();
            return;
        };
        let spec = Arc::clone(&t.spec);
        if t.cancelled {
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
            (TaskKind::ActorCreate, Outcome::Failed(err)) => {
                let aid = spec.actor.unwrap_or_default_actor();
                let msg = format!(
                    "the actor {} died because its constructor raised: {}",
                    spec.actor_name(),
                    err.message
                );
                self.finish_task(tid);
                self.actor_died(aid, ErrorInfo::new(ErrorKind::ActorDied, msg), false);
            }
            (_, Outcome::Returns(values)) if values.len() == spec.num_returns as usize => {
                let mut contained = contained.into_iter();
                for (id, v) in spec.return_ids().zip(values) {
                    self.attach_contained(id, contained.next().unwrap_or_default());
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
                        self.ready.push_back(tid);
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
    fn abort_unsealed_returns(&mut self, conn: Option<u64>, spec: &TaskSpec) {
        let Some(c) = conn.and_then(|c| self.conns.get_mut(&c)) else {
            return;
        };
        let ids: Vec<ObjectId> = spec
            .return_ids()
            .filter(|id| c.unsealed.remove(id))
            .collect();
        for id in ids {
            let _ = self.store.abort(id);
        }
    }

    /// Drop store allocations a worker made for an outcome nobody wants.
    fn discard_outcome(&mut self, conn: Option<u64>, tid: TaskId, outcome: &Outcome) {
        if let Outcome::Returns(values) = outcome {
            for (i, v) in values.iter().enumerate() {
                if let Value::Stored { .. } = v {
                    let id = ObjectId::for_return(tid, i as u32 + 1);
                    if let Some(c) = conn.and_then(|c| self.conns.get_mut(&c)) {
                        c.unsealed.remove(&id);
                    }
                    let _ = self.store.abort(id);
                }
            }
        }
    }

    /// Every return of the task becomes `err`; the task is over.
    pub fn fail_task(&mut self, tid: TaskId, err: ErrorInfo) {
        let Some(t) = self.tasks.get(&tid) else {
            return;
        };
        let spec = Arc::clone(&t.spec);
        if t.state == TaskState::Queued && spec.kind != TaskKind::ActorMethod {
            self.ready.retain(|x| *x != tid);
        }
        let actor = spec.actor.filter(|_| spec.kind == TaskKind::ActorMethod);
        if let Some(aid) = actor {
            if let Some(a) = self.actors.get_mut(&aid) {
                a.queue.retain(|x| *x != tid);
            }
            if let Some(p) = self.remote.proxies.get_mut(&aid) {
                p.queue.retain(|x| *x != tid);
            }
        }
        self.finish_task(tid);
        for id in spec.return_ids() {
            self.object_ready(id, Value::Error(err.clone()));
        }
        if let Some(aid) = actor {
            // Calls queued behind this one may go now.
            self.pump_actor(aid);
        }
    }

    /// Forget a task and release what it held.
    pub fn finish_task(&mut self, tid: TaskId) {
        let Some(t) = self.tasks.remove(&tid) else {
            return;
        };
        if t.state == TaskState::Remote {
            self.remote.sent_to.remove(&tid);
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
    pub fn release_task_inputs(&mut self, spec: &TaskSpec) {
        let mut inputs = spec.deps.clone();
        inputs.extend_from_slice(&spec.contained);
        if let Value::Stored { .. } = spec.args {
            inputs.push(args_object_id(spec.task));
        }
        for id in &inputs {
            if let Some(e) = self.objects.get_mut(id) {
                e.holds = e.holds.saturating_sub(1);
                if e.holds == 0 {
                    e.dependents.retain(|d| *d != spec.task);
                }
            }
            self.maybe_free(id);
        }
    }

    /// Cancel the task that makes `id`.
    pub fn cancel(&mut self, id: ObjectId, force: bool) {
        let tid = id.task();
        let Some(t) = self.tasks.get_mut(&tid) else {
            return;
        };
        match t.state {
            TaskState::Waiting | TaskState::Queued | TaskState::Placing => {
                let name = t.spec.name.clone();
                self.fail_task(tid, cancelled_error(&name));
            }
            TaskState::Remote => {
                if let Some(&peer) = self.remote.sent_to.get(&tid) {
                    self.send_peer(peer, crate::peer_msg::PeerMsg::Cancel { task: tid, force });
                }
            }
            TaskState::Running(wid) => {
                t.cancelled = true;
                if force
                    && t.spec.kind == TaskKind::Normal
                    && let Some(pid) = self.workers.get(&wid).and_then(|w| w.pid)
                {
                    crate::sys::kill_process(pid);
                }
            }
        }
    }

    fn register_actor(&mut self, spec: &TaskSpec) -> Result<(), String> {
        let Some(opts) = &spec.actor_options else {
            return Err("actor creation without actor options".into());
        };
        if spec.actor != Some(opts.actor) {
            return Err("actor creation names two different actors".into());
        }
        if let Some(name) = &opts.name {
            if let Some(old) = self.named_actors.get(name)
                && self
                    .actors
                    .get(old)
                    .is_some_and(|a| !matches!(a.state, ActorState::Dead(_)))
            {
                return Err(format!("an actor named {name:?} already exists"));
            }
            self.named_actors.insert(name.clone(), opts.actor);
        }
        let resources = Resources::from_pairs(spec.resources.iter().map(|(k, v)| (k.as_str(), *v)));
        self.actors.insert(
            opts.actor,
            ActorEntry {
                creation: Arc::new(spec.clone()),
                worker: None,
                state: ActorState::Pending,
                queue: Default::default(),
                inflight: Default::default(),
                name: opts.name.clone(),
                handle_blob: opts.handle_blob.clone(),
                resources,
                holds_resources: false,
                restarts_left: opts.max_restarts,
            },
        );
        Ok(())
    }
}

fn conn_holder(conn: Option<u64>) -> Holder {
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
    fn unwrap_or_default_actor(self) -> crate::ids::ActorId;
}

impl ActorIdExt for Option<crate::ids::ActorId> {
    fn unwrap_or_default_actor(self) -> crate::ids::ActorId {
        self.unwrap_or(crate::ids::ActorId([0; 16]))
    }
}
