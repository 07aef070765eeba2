//! The worker pool: spawning processes (through the fork server), workers
//! joining, blocking in `get`, and dying.

use std::time::Instant;

use crate::ids::WorkerId;
use crate::protocol::{ErrorInfo, ErrorKind, NodeMsg, Role};
use crate::state::{ConnId, Holder, SpawnRequest, State, TaskState, WorkerEntry, WorkerKind};
use crate::tasks::cancelled_error;

impl State {
    /// Ask the fork server for one more worker process.
    pub fn spawn_worker(&mut self, kind: WorkerKind) -> WorkerId {
        let wid = WorkerId::random();
        self.workers.insert(
            wid,
            WorkerEntry {
                kind,
                conn: None,
                pid: None,
                busy: None,
                queued: Default::default(),
                held: Default::default(),
                blocked: 0,
                known_fns: Default::default(),
                spawned_at: Instant::now(),
            },
        );
        self.stats.workers_started += 1;
        if let Some(tx) = &self.spawn_tx {
            let _ = tx.send(SpawnRequest { worker: wid });
        }
        wid
    }

    /// Start the initial pool: one task worker per CPU.
    pub fn start_pool(&mut self) {
        let n = self.config.num_cpus.ceil().max(1.0) as usize;
        for _ in 0..n {
            self.spawn_worker(WorkerKind::Task);
        }
    }

    /// Task workers: (alive or starting, starting, blocked).
    fn task_worker_counts(&self) -> (usize, usize, usize) {
        let mut all = 0;
        let mut starting = 0;
        let mut blocked = 0;
        for w in self.workers.values() {
            if w.kind == WorkerKind::Task {
                all += 1;
                starting += usize::from(w.conn.is_none());
                blocked += usize::from(w.blocked > 0);
            }
        }
        (all, starting, blocked)
    }

    /// More runnable tasks than idle workers: start workers, up to one per CPU
    /// plus one for each worker blocked in `get` (so nested tasks never deadlock).
    /// `cpu_free`: ready tasks that need no CPU and found no idle worker.
    pub fn grow_pool(&mut self, cpu_free: usize) {
        if self.shutting_down || self.spawn_failure.is_some() {
            return;
        }
        let (all, starting, blocked) = self.task_worker_counts();
        // A task that takes no CPU (`num_cpus=0`) never waits for one: it
        // gets a worker beyond the pool's size.
        let cap = self.config.num_cpus.ceil().max(1.0) as usize + blocked + cpu_free;
        let want = self
            .ready
            .len()
            .saturating_sub(starting)
            .min(cap.saturating_sub(all));
        for _ in 0..want {
            self.spawn_worker(WorkerKind::Task);
        }
    }

    /// A connection said who it is.
    pub fn hello(&mut self, conn: ConnId, role: Role, pid: u32) -> Result<(), String> {
        if self.shutting_down {
            // A worker forked just before shutdown: tell it to go.
            if let Some(c) = self.conns.get(&conn) {
                c.outbox.send(&NodeMsg::Exit);
                c.outbox.close();
            }
            return Ok(());
        }
        if let Role::Worker(wid) = role {
            let Some(w) = self.workers.get_mut(&wid) else {
                return Err(format!("unknown worker {wid}"));
            };
            if w.conn.is_some() {
                return Err(format!("worker {wid} connected twice"));
            }
            w.conn = Some(conn);
            w.pid = Some(pid);
            let kind = w.kind;
            if let Some(c) = self.conns.get_mut(&conn) {
                c.role = Some(role);
                c.pid = pid;
            }
            self.send_welcome(conn);
            match kind {
                WorkerKind::Task => {
                    self.idle.push(wid);
                    self.schedule();
                }
                WorkerKind::Actor(aid) => self.actor_worker_ready(aid, wid),
            }
        } else {
            if let Some(c) = self.conns.get_mut(&conn) {
                c.role = Some(role);
                c.pid = pid;
            }
            self.send_welcome(conn);
        }
        Ok(())
    }

    fn send_welcome(&self, conn: ConnId) {
        let arena = self.store.arena();
        self.send_to(
            conn,
            &NodeMsg::Welcome {
                node_id: self.node_name(),
                owner_tag: self.owner_tag,
                arena_path: arena.path().to_string_lossy().into_owned(),
                arena_size: arena.len() as u64,
            },
        );
    }

    /// A connection closed (or sent garbage): release what it held.
    pub fn conn_closed(&mut self, conn: ConnId) {
        let Some(c) = self.conns.remove(&conn) else {
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
        self.waits.retain(
            |_, w| !matches!(w.target, crate::state::Target::Remote { conn: c2, .. } if c2 == conn),
        );
        if let Some(Role::Worker(wid)) = c.role {
            self.worker_lost(wid, c.pid);
        }
    }

    /// A worker process is gone.
    pub fn worker_lost(&mut self, wid: WorkerId, pid: u32) {
        let Some(w) = self.workers.remove(&wid) else {
            return;
        };
        self.idle.retain(|x| *x != wid);
        if !self.shutting_down {
            self.stats.workers_died += 1;
        }
        match w.kind {
            WorkerKind::Task => {
                if w.blocked > 0 {
                    self.available.take(&w.held.cpu_only());
                }
                self.available.give(&w.held);
                // Queued tasks never started: run them elsewhere, retries untouched.
                for tid in w.queued.iter().rev() {
                    if let Some(t) = self.tasks.get_mut(tid) {
                        t.state = TaskState::Queued;
                        self.ready.push_front(*tid);
                    }
                }
                if let Some(tid) = w.busy {
                    self.task_lost_worker(tid, pid);
                }
                if !self.shutting_down && self.spawn_failure.is_none() {
                    let (all, _, _) = self.task_worker_counts();
                    if all < self.config.num_cpus.ceil().max(1.0) as usize {
                        self.spawn_worker(WorkerKind::Task);
                    }
                }
            }
            WorkerKind::Actor(aid) => {
                let attached = self.actors.get(&aid).is_some_and(|a| a.worker == Some(wid));
                if attached && !self.shutting_down {
                    let name = self
                        .actors
                        .get(&aid)
                        .map(|a| a.creation.actor_name().to_string())
                        .unwrap_or_default();
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
    fn task_lost_worker(&mut self, tid: crate::ids::TaskId, pid: u32) {
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
            self.ready.push_front(tid);
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

    /// A task worker waits in `get`: give its CPU back so others can run.
    pub fn block_worker(&mut self, wid: WorkerId) {
        let Some(w) = self.workers.get_mut(&wid) else {
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
                        self.ready.push_front(*tid);
                    }
                }
                if let Some(c) = conn {
                    self.send_to(c, &NodeMsg::Revoke { tasks: revoked });
                }
            }
            self.schedule();
        }
    }

    /// Its get returned: take the CPU again (possibly oversubscribing for a moment).
    pub fn unblock_worker(&mut self, wid: WorkerId) {
        let Some(w) = self.workers.get_mut(&wid) else {
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
    pub fn task_worker_of(&self, conn: ConnId) -> Option<WorkerId> {
        match self.conns.get(&conn)?.role? {
            Role::Worker(wid) => {
                let w = self.workers.get(&wid)?;
                (w.kind == WorkerKind::Task && w.busy.is_some()).then_some(wid)
            }
            _ => None,
        }
    }

    /// The fork server is gone: fail what cannot run.
    pub fn spawner_failed(&mut self, why: String) {
        if self.shutting_down {
            return;
        }
        tracing::error!("cannot start worker processes: {why}");
        self.spawn_failure = Some(why);
        // Workers that were asked for will never come.
        let never: Vec<WorkerId> = self
            .workers
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
    pub fn fail_unservable(&mut self) {
        let Some(why) = self.spawn_failure.clone() else {
            return;
        };
        let err = ErrorInfo::new(
            ErrorKind::WorkerCrashed,
            format!("no worker process could be started: {why}"),
        );
        let no_task_workers = !self
            .workers
            .values()
            .any(|w| w.kind == WorkerKind::Task && w.conn.is_some());
        let doomed: Vec<_> = self
            .ready
            .iter()
            .copied()
            .filter(|tid| {
                self.tasks.get(tid).is_some_and(|t| {
                    t.spec.kind == crate::protocol::TaskKind::ActorCreate || no_task_workers
                })
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
    pub fn release_local(&mut self, ids: &[crate::ids::ObjectId]) {
        self.release_pins(Holder::Local, ids);
    }
}
