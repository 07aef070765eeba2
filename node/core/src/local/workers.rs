//! The worker pool: asking the shell for worker processes, workers saying
//! Hello, the idle list, resources a worker holds for its task (given back
//! while it blocks in `get`), and workers dying.
//!
//! A task worker is started for one runtime environment (or for none: the
//! node's own) and runs only tasks of that environment. When tasks of an
//! environment find no idle worker of theirs and the pool is full, an idle
//! worker of another environment leaves to make room.

use std::collections::VecDeque;
use std::sync::Arc;

use rustc_hash::{FxHashMap, FxHashSet};

use crate::command::Command;
use crate::core::Core;
use crate::error::ProtocolError;
use crate::ids::{ActorId, ConnId, EnvKey, FnId, TaskId, WorkerId};
use crate::local::gpus::GpuGrant;
use crate::local::objects::Holder;
use crate::local::scheduler::Short;
use crate::local::tasks::{TaskState, cancelled_error};
use crate::resources::Resources;
use crate::wire::local::{ErrorInfo, ErrorKind, NodeMsg, Role, RuntimeEnv, TaskKind};

/// What a worker process is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WorkerKind {
    Task,
    Actor(ActorId),
}

/// One worker process.
#[derive(Debug)]
pub(crate) struct WorkerEntry {
    pub(crate) kind: WorkerKind,
    pub(crate) conn: Option<ConnId>,
    pub(crate) pid: Option<u32>,
    /// The task it runs (task workers).
    pub(crate) busy: Option<TaskId>,
    /// Short tasks sent to it to start right after `busy` (pipelining).
    pub(crate) queued: VecDeque<TaskId>,
    /// Resources it holds for its task.
    pub(crate) held: Resources,
    /// The GPU devices it holds for its task.
    pub(crate) gpus: GpuGrant,
    /// Nesting depth of gets/waits it is blocked in.
    pub(crate) blocked: u32,
    pub(crate) known_fns: FxHashSet<FnId>,
    /// The runtime environment it was started for (None: the node's own);
    /// it runs tasks of that environment only.
    pub(crate) env: Option<Arc<RuntimeEnv>>,
    /// Told to exit to make room for a worker of another environment: no
    /// pool counts it and none replaces it.
    pub(crate) leaving: bool,
}

impl WorkerEntry {
    pub(crate) fn env_key(&self) -> Option<EnvKey> {
        self.env.as_ref().map(|e| e.key)
    }
}

/// Task workers by state: what growing the pool needs to know.
#[derive(Debug, Default, Clone, Copy)]
struct PoolCounts {
    /// Alive or starting (not leaving).
    all: usize,
    /// Starting in the node's own environment.
    starting_plain: usize,
    /// Blocked in a get.
    blocked: usize,
}

/// The worker processes of this node.
#[derive(Debug, Default)]
pub(crate) struct Workers {
    entries: FxHashMap<WorkerId, WorkerEntry>,
    /// Task workers with nothing to run.
    idle: Vec<WorkerId>,
    /// Set when the worker fork server failed: why tasks cannot run.
    spawn_failure: Option<String>,
    /// Task workers started for a runtime environment (none: every task
    /// worker serves every task, as without environments).
    env_workers: usize,
}

impl Workers {
    pub(crate) fn get(&self, id: &WorkerId) -> Option<&WorkerEntry> {
        self.entries.get(id)
    }

    pub(crate) fn get_mut(&mut self, id: &WorkerId) -> Option<&mut WorkerEntry> {
        self.entries.get_mut(id)
    }

    pub(crate) fn values(&self) -> impl Iterator<Item = &WorkerEntry> {
        self.entries.values()
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (&WorkerId, &WorkerEntry)> {
        self.entries.iter()
    }

    pub(crate) fn idle_ids(&self) -> &[WorkerId] {
        &self.idle
    }

    /// An idle task worker of environment `env` (the most recently idle one).
    pub(crate) fn pop_idle_for(&mut self, env: Option<EnvKey>) -> Option<WorkerId> {
        if self.env_workers == 0 && env.is_none() {
            return self.idle.pop();
        }
        let entries = &self.entries;
        let at = self
            .idle
            .iter()
            .rposition(|w| entries.get(w).is_some_and(|e| e.env_key() == env))?;
        Some(self.idle.remove(at))
    }

    /// Whether some task workers run in a runtime environment.
    pub(crate) fn has_env_workers(&self) -> bool {
        self.env_workers > 0
    }

    /// Task workers of environment `env` that have not said Hello yet.
    fn starting_for(&self, env: EnvKey) -> usize {
        self.entries
            .values()
            .filter(|w| {
                w.kind == WorkerKind::Task
                    && !w.leaving
                    && w.conn.is_none()
                    && w.env_key() == Some(env)
            })
            .count()
    }

    pub(crate) fn has_idle(&self) -> bool {
        !self.idle.is_empty()
    }

    pub(crate) fn idle_count(&self) -> usize {
        self.idle.len()
    }

    pub(crate) fn spawn_failure(&self) -> Option<&str> {
        self.spawn_failure.as_deref()
    }

    /// The pids of every worker process (to wait for them at shutdown).
    pub(crate) fn pids(&self) -> Vec<u32> {
        self.entries.values().filter_map(|w| w.pid).collect()
    }

    /// Task workers not leaving, by state.
    fn task_worker_counts(&self) -> PoolCounts {
        let mut c = PoolCounts::default();
        for w in self.entries.values() {
            if w.kind == WorkerKind::Task && !w.leaving {
                c.all += 1;
                c.starting_plain += usize::from(w.conn.is_none() && w.env.is_none());
                c.blocked += usize::from(w.blocked > 0);
            }
        }
        c
    }

    /// The busy task worker of environment `env` with the fewest tasks queued
    /// behind its own, below `depth`, holding exactly `resources` (a
    /// pipelined task inherits its slot).
    pub(crate) fn least_queued_busy(
        &self,
        resources: &Resources,
        env: Option<EnvKey>,
        depth: usize,
    ) -> Option<WorkerId> {
        self.entries
            .iter()
            .filter(|(_, w)| {
                w.kind == WorkerKind::Task
                    && w.busy.is_some()
                    && w.blocked == 0
                    && w.conn.is_some()
                    && w.queued.len() < depth
                    && w.held == *resources
                    && w.env_key() == env
            })
            .min_by_key(|(_, w)| w.queued.len())
            .map(|(wid, _)| *wid)
    }
}

#[cfg(test)]
impl Workers {
    pub(crate) fn idle_list(&self) -> Vec<WorkerId> {
        self.idle.clone()
    }

    pub(crate) fn ids(&self) -> Vec<WorkerId> {
        self.entries.keys().copied().collect()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
impl std::ops::Index<&WorkerId> for Workers {
    type Output = WorkerEntry;
    fn index(&self, id: &WorkerId) -> &WorkerEntry {
        &self.entries[id]
    }
}

impl Core {
    /// Ask the shell for one more worker process, for runtime environment
    /// `env` (None: the node's own).
    pub(crate) fn spawn_worker(
        &mut self,
        kind: WorkerKind,
        env: Option<Arc<RuntimeEnv>>,
    ) -> WorkerId {
        let wid = WorkerId::from_rng(&mut self.rng);
        if kind == WorkerKind::Task && env.is_some() {
            self.workers.env_workers += 1;
        }
        let spawn_env = env.clone();
        self.workers.entries.insert(
            wid,
            WorkerEntry {
                kind,
                conn: None,
                pid: None,
                busy: None,
                queued: Default::default(),
                held: Default::default(),
                gpus: GpuGrant::default(),
                blocked: 0,
                known_fns: Default::default(),
                env,
                leaving: false,
            },
        );
        self.stats.workers_started += 1;
        if !self.shutting_down {
            self.emit(Command::SpawnWorker {
                worker: wid,
                env: spawn_env,
            });
        }
        wid
    }

    /// Start the initial pool: one task worker per CPU.
    pub fn start_pool(&mut self) {
        let n = self.pool_size();
        for _ in 0..n {
            self.spawn_worker(WorkerKind::Task, None);
        }
    }

    fn pool_size(&self) -> usize {
        self.config.num_cpus.ceil().max(1.0) as usize
    }

    /// More runnable tasks than idle workers: start workers, up to one per CPU
    /// plus one for each worker blocked in `get` (so nested tasks never deadlock).
    /// `short` says which tasks the scheduler saw find no idle worker of
    /// their environment; `cpu_free` of them need no CPU.
    pub(crate) fn grow_pool(&mut self, short: Short) {
        if self.shutting_down || self.workers.spawn_failure.is_some() {
            return;
        }
        let c = self.workers.task_worker_counts();
        // A task that takes no CPU (`num_cpus=0`) never waits for one: it
        // gets a worker beyond the pool's size.
        let cap = self.pool_size() + c.blocked + short.cpu_free;
        let mut room = cap.saturating_sub(c.all);
        let env_tasks = short.envs.len();
        // Tasks in an environment: a worker each, beyond those starting; an
        // idle worker of another environment leaves if the pool is full.
        let mut envs: Vec<(Arc<RuntimeEnv>, usize)> = Vec::new();
        for env in short.envs {
            match envs.iter_mut().find(|(e, _)| e.key == env.key) {
                Some((_, n)) => *n += 1,
                None => envs.push((env, 1)),
            }
        }
        for (env, n) in envs {
            let want = n.saturating_sub(self.workers.starting_for(env.key));
            for _ in 0..want {
                if !self.take_room(&mut room, Some(env.key)) {
                    break;
                }
                self.spawn_worker(WorkerKind::Task, Some(Arc::clone(&env)));
            }
        }
        // Tasks in the node's own environment. With no environments about,
        // every ready task counts (the scheduler stops looking at the first
        // that finds no idle worker); else only those seen short.
        let plain = if env_tasks == 0 && !self.workers.has_env_workers() {
            self.tasks.ready_len()
        } else {
            short.plain
        };
        let want = plain.saturating_sub(c.starting_plain);
        for _ in 0..want {
            if !self.take_room(&mut room, None) {
                break;
            }
            self.spawn_worker(WorkerKind::Task, None);
        }
    }

    /// Room in the pool for one more worker of environment `env`: a free
    /// place, else one an idle worker of another environment leaves (the
    /// one idle longest). False when there is none.
    fn take_room(&mut self, room: &mut usize, env: Option<EnvKey>) -> bool {
        if *room > 0 {
            *room -= 1;
            return true;
        }
        let entries = &self.workers.entries;
        let Some(at) = self
            .workers
            .idle
            .iter()
            .position(|w| entries.get(w).is_some_and(|e| e.env_key() != env))
        else {
            return false;
        };
        let wid = self.workers.idle.remove(at);
        let Some(w) = self.workers.entries.get_mut(&wid) else {
            return false;
        };
        w.leaving = true;
        if w.env.is_some() {
            self.workers.env_workers = self.workers.env_workers.saturating_sub(1);
        }
        if let Some(conn) = w.conn {
            self.send_to(conn, NodeMsg::Exit);
        }
        true
    }

    /// A connection said who it is.
    pub(crate) fn hello(
        &mut self,
        conn: ConnId,
        role: Role,
        pid: u32,
    ) -> Result<(), ProtocolError> {
        if self.shutting_down {
            // A worker forked just before shutdown: tell it to go.
            if self.conns.contains(conn) {
                self.send_to(conn, NodeMsg::Exit);
                self.emit(Command::Close { conn });
            }
            return Ok(());
        }
        if let Role::Worker(wid) = role {
            let Some(w) = self.workers.entries.get_mut(&wid) else {
                return Err(ProtocolError::UnknownWorker(wid));
            };
            if w.conn.is_some() {
                return Err(ProtocolError::WorkerTwice(wid));
            }
            w.conn = Some(conn);
            w.pid = Some(pid);
            let kind = w.kind;
            if let Some(c) = self.conns.get_mut(conn) {
                c.role = Some(role);
                c.pid = pid;
            }
            self.send_welcome(conn);
            match kind {
                WorkerKind::Task => {
                    self.workers.idle.push(wid);
                    self.schedule();
                }
                WorkerKind::Actor(aid) => self.actor_worker_ready(aid, wid),
            }
        } else {
            if let Some(c) = self.conns.get_mut(conn) {
                c.role = Some(role);
                c.pid = pid;
            }
            self.send_welcome(conn);
        }
        Ok(())
    }

    fn send_welcome(&mut self, conn: ConnId) {
        let msg = NodeMsg::Welcome {
            node_id: self.node_name(),
            owner_tag: self.owner_tag,
            arena_path: self.config.store_path.to_string_lossy().into_owned(),
            arena_size: self.config.store_size,
        };
        self.send_to(conn, msg);
    }

    /// A connection closed (or sent garbage): release what it held.
    pub(crate) fn conn_closed(&mut self, conn: ConnId) {
        let Some(c) = self.conns.remove(conn) else {
            return;
        };
        for (id, n) in c.pins {
            for _ in 0..n {
                let _ = self.store.release(&id);
            }
        }
        for id in c.unsealed {
            let _ = self.store.abort(id);
        }
        // The process's handles are gone with it.
        for (id, n) in c.refs {
            if let Some(e) = self.objects.get_mut(&id) {
                e.refs = e.refs.saturating_sub(n);
            }
            self.maybe_free(&id);
        }
        self.waits.forget(|w| {
            matches!(w.target, crate::local::waits::Target::Conn { conn: c2, .. } if c2 == conn)
        });
        if let Some(Role::Worker(wid)) = c.role {
            self.worker_lost(wid, c.pid);
        }
    }

    /// A worker process is gone.
    pub(crate) fn worker_lost(&mut self, wid: WorkerId, pid: u32) {
        let Some(w) = self.workers.entries.remove(&wid) else {
            return;
        };
        self.workers.idle.retain(|x| *x != wid);
        if w.kind == WorkerKind::Task && w.env.is_some() && !w.leaving {
            self.workers.env_workers = self.workers.env_workers.saturating_sub(1);
        }
        if !self.shutting_down && !w.leaving {
            self.stats.workers_died += 1;
        }
        match w.kind {
            WorkerKind::Task => {
                if w.blocked > 0 {
                    self.available.take(&w.held.cpu_only());
                }
                self.available.give(&w.held);
                self.gpus.give_back(w.gpus);
                // Queued tasks never started: run them elsewhere, retries untouched.
                for tid in w.queued.iter().rev() {
                    if let Some(t) = self.tasks.get_mut(tid) {
                        t.state = TaskState::Queued;
                        self.tasks.push_ready_front(*tid);
                    }
                }
                if let Some(tid) = w.busy {
                    self.task_lost_worker(tid, pid);
                }
                if !self.shutting_down && self.workers.spawn_failure.is_none() && !w.leaving {
                    // Its replacement is of its environment: the work it
                    // did is likely to come again.
                    if self.workers.task_worker_counts().all < self.pool_size() {
                        self.spawn_worker(WorkerKind::Task, w.env.clone());
                    }
                }
            }
            WorkerKind::Actor(aid) => {
                if self.actor_worker_is(aid, wid) && self.is_out_of_scope(aid) {
                    let name = self.actor_class(aid).unwrap_or_default();
                    let err = ErrorInfo::new(
                        ErrorKind::ActorDied,
                        format!(
                            "the actor {name} ended: every handle to it went out of scope \
                             (pass lifetime=\"detached\" to keep an actor without handles)"
                        ),
                    );
                    self.actor_died(aid, err, false);
                } else if self.actor_worker_is(aid, wid) && !self.shutting_down {
                    let name = self.actor_class(aid).unwrap_or_default();
                    let err = ErrorInfo::new(
                        ErrorKind::ActorDied,
                        format!(
                            "the actor {name} died: its worker process (pid {pid}) exited \
                             unexpectedly; check its output above for the cause"
                        ),
                    );
                    self.actor_died(aid, err, true);
                }
            }
        }
        self.schedule();
    }

    /// The worker running `tid` died: retry or fail the task.
    fn task_lost_worker(&mut self, tid: TaskId, pid: u32) {
        let Some(t) = self.tasks.get_mut(&tid) else {
            return;
        };
        if t.cancelled {
            let name = t.spec.name.clone();
            self.fail_task(tid, cancelled_error(&name));
            return;
        }
        if t.retries_left != 0 && !self.shutting_down {
            if t.retries_left > 0 {
                t.retries_left -= 1;
            }
            t.state = TaskState::Queued;
            self.stats.tasks_retried += 1;
            tracing::warn!(
                "worker (pid {pid}) died running task {}; retrying it",
                t.spec.name
            );
            self.tasks.push_ready_front(tid);
            return;
        }
        let used = t.spec.max_retries.max(0);
        let msg = format!(
            "the worker process (pid {pid}) running task {} died unexpectedly (e.g. killed, \
             out of memory, or os._exit) after {used} retries; set max_retries to retry more",
            t.spec.name
        );
        self.fail_task(tid, ErrorInfo::new(ErrorKind::WorkerCrashed, msg));
    }

    /// A worker finished `tid`: its slot passes to the next task queued
    /// behind it, or it becomes idle. Returns the actor it runs, if any.
    pub(crate) fn worker_finished(&mut self, wid: WorkerId, tid: TaskId) -> Option<ActorId> {
        let w = self.workers.entries.get_mut(&wid)?;
        match w.kind {
            WorkerKind::Task => {
                if w.busy == Some(tid) {
                    if w.blocked > 0 {
                        // It returned while still blocked in a get (from another
                        // thread): take back the CPU it had lent first.
                        w.blocked = 0;
                        self.available.take(&w.held.cpu_only());
                    }
                    // A pipelined task starts at once and inherits the slot.
                    w.busy = w.queued.pop_front();
                    if w.busy.is_none() {
                        let held = std::mem::take(&mut w.held);
                        let grant = std::mem::take(&mut w.gpus);
                        self.give_resources(&held, grant);
                        self.workers.idle.push(wid);
                    }
                }
                None
            }
            WorkerKind::Actor(aid) => {
                self.actor_call_done(aid, tid);
                Some(aid)
            }
        }
    }

    /// A task worker waits in `get`: give its CPU back so others can run.
    pub(crate) fn block_worker(&mut self, wid: WorkerId) {
        let Some(w) = self.workers.entries.get_mut(&wid) else {
            return;
        };
        if w.kind != WorkerKind::Task || w.busy.is_none() {
            return;
        }
        w.blocked += 1;
        if w.blocked == 1 {
            let cpu = w.held.cpu_only();
            let revoked: Vec<_> = w.queued.drain(..).collect();
            let conn = w.conn;
            self.available.give(&cpu);
            if !revoked.is_empty() {
                // They would wait behind a blocked task (maybe for each other): take them back.
                for tid in revoked.iter().rev() {
                    if let Some(t) = self.tasks.get_mut(tid) {
                        t.state = TaskState::Queued;
                        self.tasks.push_ready_front(*tid);
                    }
                }
                if let Some(c) = conn {
                    self.send_to(c, NodeMsg::Revoke { tasks: revoked });
                }
            }
            self.schedule();
        }
    }

    /// A task worker exits after the task it reported last (its function's
    /// `max_calls`): the tasks sent to it that it did not start run
    /// elsewhere, its slot is free, and it gets nothing more; it is told to
    /// exit (a new worker replaces it once it is gone). False when `wid` is
    /// no task worker.
    pub(crate) fn worker_retires(&mut self, wid: WorkerId) -> bool {
        let Some(w) = self.workers.entries.get_mut(&wid) else {
            return false;
        };
        if w.kind != WorkerKind::Task {
            return false;
        }
        let not_started: Vec<TaskId> = w
            .busy
            .take()
            .into_iter()
            .chain(w.queued.drain(..))
            .collect();
        if w.blocked > 0 {
            w.blocked = 0;
            self.available.take(&w.held.cpu_only());
        }
        let held = std::mem::take(&mut w.held);
        let grant = std::mem::take(&mut w.gpus);
        let conn = w.conn;
        self.give_resources(&held, grant);
        self.workers.idle.retain(|x| *x != wid);
        for tid in not_started.iter().rev() {
            if let Some(t) = self.tasks.get_mut(tid)
                && t.state == TaskState::Running(wid)
            {
                t.state = TaskState::Queued;
                self.tasks.push_ready_front(*tid);
            }
        }
        if let Some(c) = conn {
            self.send_to(c, NodeMsg::Exit);
        }
        self.schedule();
        true
    }

    /// Its get returned: take the CPU again (possibly oversubscribing for a moment).
    pub(crate) fn unblock_worker(&mut self, wid: WorkerId) {
        let Some(w) = self.workers.entries.get_mut(&wid) else {
            return;
        };
        if w.blocked == 0 {
            return;
        }
        w.blocked -= 1;
        if w.blocked == 0 {
            let cpu = w.held.cpu_only();
            self.available.take(&cpu);
        }
    }

    /// The worker a connection belongs to, if it is a task worker running a task.
    pub(crate) fn task_worker_of(&self, conn: ConnId) -> Option<WorkerId> {
        match self.conns.role(conn)? {
            Role::Worker(wid) => {
                let w = self.workers.get(&wid)?;
                (w.kind == WorkerKind::Task && w.busy.is_some()).then_some(wid)
            }
            _ => None,
        }
    }

    /// The task a worker works for: its running task, or its actor's creation.
    pub(crate) fn task_of_worker(&self, wid: WorkerId) -> Option<TaskId> {
        let worker = self.workers.get(&wid)?;
        match worker.kind {
            WorkerKind::Task => worker.busy,
            WorkerKind::Actor(a) => self.actor_creation_task(a),
        }
    }

    /// The fork server is gone: fail what cannot run.
    pub(crate) fn spawner_failed(&mut self, why: String) {
        if self.shutting_down {
            return;
        }
        tracing::error!("cannot start worker processes: {why}");
        self.workers.spawn_failure = Some(why);
        // Workers that were asked for will never come.
        let never: Vec<WorkerId> = self
            .workers
            .entries
            .iter()
            .filter(|(_, w)| w.conn.is_none())
            .map(|(id, _)| *id)
            .collect();
        for wid in never {
            self.worker_lost(wid, 0);
        }
        self.fail_unservable();
    }

    /// With no way to start workers, fail what nothing can run: actor
    /// creations, and every task once no task worker is left.
    pub(crate) fn fail_unservable(&mut self) {
        let Some(why) = self.workers.spawn_failure.clone() else {
            return;
        };
        let err = ErrorInfo::new(
            ErrorKind::WorkerCrashed,
            format!("no worker process could be started: {why}"),
        );
        let no_task_workers = !self
            .workers
            .entries
            .values()
            .any(|w| w.kind == WorkerKind::Task && w.conn.is_some());
        let doomed: Vec<_> = self
            .tasks
            .ready()
            .filter(|tid| {
                self.tasks
                    .get(tid)
                    .is_some_and(|t| t.spec.kind == TaskKind::ActorCreate || no_task_workers)
            })
            .collect();
        for tid in doomed {
            let actor = self.tasks.get(&tid).and_then(|t| t.spec.actor);
            self.fail_task(tid, err.clone());
            if let Some(aid) = actor {
                self.actor_died(aid, err.clone(), false);
            }
        }
    }

    /// Pins of the embedded driver.
    pub(crate) fn release_local(&mut self, ids: &[crate::ids::ObjectId]) {
        self.release_pins(Holder::Local, ids);
    }

    /// Pids of the worker processes (the shell waits for them at shutdown).
    pub fn worker_pids(&self) -> Vec<u32> {
        self.workers.pids()
    }

    /// The node is stopping: every local client is told to exit and closed,
    /// and no more workers start.
    pub fn begin_shutdown(&mut self) {
        self.shutting_down = true;
        for conn in self.conns.ids() {
            self.send_to(conn, NodeMsg::Exit);
            self.emit(Command::Close { conn });
        }
    }
}
