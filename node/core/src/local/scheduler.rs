//! Which ready task runs where: idle workers first, then (with every worker
//! busy) known-short tasks queued behind running ones, then more workers;
//! tasks that do not fit here go to the next bid round (`cluster::placement`).
//! A task runs only on a worker started for its runtime environment.

use std::sync::Arc;

use crate::core::Core;
use crate::ids::{TaskId, WorkerId};
use crate::local::objects::Holder;
use crate::local::tasks::TaskState;
use crate::wire::local::{
    ErrorInfo, ErrorKind, Execution, NodeMsg, Outcome, RuntimeEnv, TaskKind, Value, args_object_id,
};

/// How many queue entries one scheduling pass looks at past tasks that do not fit.
const SCAN_LIMIT: usize = 256;
/// Tasks queued behind a running one, for functions that take under 200 µs.
const PIPELINE_DEPTH_TINY: usize = 4;

/// The ready tasks one scheduling pass saw find no idle worker of their
/// runtime environment (see `Core::grow_pool`).
#[derive(Debug, Default)]
pub(crate) struct Short {
    /// In the node's own environment.
    pub(crate) plain: usize,
    /// In a runtime environment: one entry per task.
    pub(crate) envs: Vec<Arc<RuntimeEnv>>,
    /// Of all of them, those that need no CPU.
    pub(crate) cpu_free: usize,
}

impl Core {
    /// Start queued tasks that fit on idle workers; ask for more workers when short.
    pub(crate) fn schedule(&mut self) {
        if self.shutting_down {
            return;
        }
        if self.workers.spawn_failure().is_some() {
            self.fail_unservable();
        }
        let mut i = 0;
        let mut skipped = 0;
        let mut short = Short::default();
        while i < self.tasks.ready_len() && skipped < SCAN_LIMIT {
            let Some(tid) = self.tasks.ready_at(i) else {
                break;
            };
            let Some(t) = self.tasks.get(&tid) else {
                self.tasks.remove_ready_at(i);
                continue;
            };
            if t.inputs_elsewhere && !self.inputs_here(&t.spec) {
                // Its arguments are on other peers: near them, or pull them first.
                let leave = self.placement_active() && self.may_leave(t);
                self.tasks.remove_ready_at(i);
                if leave {
                    self.await_placement(tid);
                } else {
                    self.pull_inputs(tid);
                }
                continue;
            }
            let fits = self.fits_here(&t.resources);
            if (!fits || self.wants_a_free_cpu(t)) && self.placement_active() && self.may_leave(t) {
                // Another peer may run it sooner: it joins the next bid round.
                self.tasks.remove_ready_at(i);
                self.await_placement(tid);
                continue;
            }
            if !fits {
                if !t.infeasible_noted
                    && !self.could_ever_fit_here(&t.resources)
                    && !self.fits_somewhere(&t.resources)
                {
                    // It waits for a node that has what it needs to join.
                    self.note_infeasible(tid);
                }
                i += 1;
                skipped += 1;
                continue;
            }
            match t.spec.kind {
                TaskKind::ActorCreate => {
                    self.tasks.remove_ready_at(i);
                    self.start_actor(tid);
                }
                _ => {
                    let res = t.resources.clone();
                    let env = t.spec.runtime_env.as_ref();
                    let Some(wid) = self.workers.pop_idle_for(env.map(|e| e.key)) else {
                        let needs_cpu = res.get("CPU") != 0.0;
                        match env {
                            Some(e) => short.envs.push(Arc::clone(e)),
                            None => short.plain += 1,
                        }
                        if !needs_cpu {
                            // Needs no CPU: it gets a worker of its own (below).
                            short.cpu_free += 1;
                        }
                        if !needs_cpu || self.workers.has_idle() {
                            // Idle workers of other environments may suit
                            // tasks further on.
                            i += 1;
                            skipped += 1;
                            continue;
                        }
                        break;
                    };
                    self.tasks.remove_ready_at(i);
                    let grant = self.take_resources(&res);
                    if let Some(w) = self.workers.get_mut(&wid) {
                        w.held = res;
                        w.gpus = grant;
                        w.busy = Some(tid);
                    }
                    self.send_execution(tid, wid);
                }
            }
        }
        // (With workers of several environments, idle ones may suit none of
        // the ready tasks.)
        let mixed = self.workers.has_env_workers() || !short.envs.is_empty();
        if !self.tasks.ready_is_empty() && (!self.workers.has_idle() || mixed) {
            self.pipeline_short_tasks();
        }
        if !self.tasks.ready_is_empty() && (!self.workers.has_idle() || mixed) {
            self.grow_pool(short);
        }
        if self.cluster.has_unplaced() {
            self.start_round();
        }
    }

    /// With every worker busy, queue known-short tasks behind running ones so a
    /// worker never waits a round trip between two of them (and reads several
    /// per syscall). Long or unknown functions are never queued behind anything.
    fn pipeline_short_tasks(&mut self) {
        while let Some(tid) = self.tasks.ready_front() {
            let Some(t) = self.tasks.get(&tid) else {
                self.tasks.pop_ready_front();
                continue;
            };
            if t.spec.kind != TaskKind::Normal {
                return;
            }
            let depth = match self.tasks.mean_run_us(&t.spec.fn_id, 3) {
                Some(mean) if mean < 200.0 => PIPELINE_DEPTH_TINY,
                Some(mean) if mean < 1000.0 => 1,
                _ => return,
            };
            let env = t.spec.env_key();
            let Some(wid) = self.workers.least_queued_busy(&t.resources, env, depth) else {
                return;
            };
            self.tasks.pop_ready_front();
            if let Some(w) = self.workers.get_mut(&wid) {
                w.queued.push_back(tid);
            }
            self.send_execution_via(tid, wid, false);
        }
    }

    /// Hand task `tid` to worker `wid`.
    pub(crate) fn send_execution(&mut self, tid: TaskId, wid: WorkerId) {
        self.send_execution_via(tid, wid, true);
    }

    /// Hand task `tid` to worker `wid`; `at_once`: write it at once if possible
    /// (the worker is waiting for it), else leave it to the batching writer.
    pub(crate) fn send_execution_via(&mut self, tid: TaskId, wid: WorkerId, at_once: bool) {
        let Some(conn) = self.workers.get(&wid).and_then(|w| w.conn) else {
            return;
        };
        let observing = self.observing();
        let Some(t) = self.tasks.get_mut(&tid) else {
            return;
        };
        t.state = TaskState::Running(wid);
        let spec = Arc::clone(&t.spec);
        let forward_output = t.output_to.is_some() || t.guest.is_some() || observing;
        let fn_blob = match self.workers.get_mut(&wid) {
            Some(w) if !w.known_fns.contains(&spec.fn_id) && spec.kind != TaskKind::ActorMethod => {
                match self.tasks.function(&spec.fn_id) {
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
        let gpu_ids = self.gpu_ids_of(wid);
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
            gpu_ids,
            runtime_env: spec.runtime_env.clone(),
        };
        if self.conns.contains(conn) {
            self.emit(crate::Command::Send {
                conn,
                msg: NodeMsg::Execute(Box::new(exec)),
                at_once,
            });
        }
    }
}
