//! Actors: a dedicated worker each, method calls run one at a time in
//! submission order (pipelined to the worker), restart and death.

use std::sync::Arc;

use crate::ids::{ActorId, TaskId};
use crate::protocol::{ErrorInfo, ErrorKind, TaskKind, TaskSpec};
use crate::state::{ActorState, State, TaskEntry, TaskState, WorkerKind};

impl State {
    /// The creation task is runnable and fits: give the actor its worker.
    pub fn start_actor(&mut self, tid: TaskId) {
        let Some(t) = self.tasks.get(&tid) else {
            return;
        };
        let Some(aid) = t.spec.actor else {
            return;
        };
        let res = t.resources.clone();
        let Some(a) = self.actors.get_mut(&aid) else {
            return;
        };
        if matches!(a.state, ActorState::Dead(_)) {
            let err = match &a.state {
                ActorState::Dead(e) => e.clone(),
                _ => unreachable!(),
            };
            self.fail_task(tid, err);
            return;
        }
        a.state = ActorState::Creating;
        a.holds_resources = true;
        self.available.take(&res);
        let wid = self.spawn_worker(WorkerKind::Actor(aid));
        if let Some(me) = self.remote.me {
            self.actor_placed(aid, me);
        }
        if let Some(a) = self.actors.get_mut(&aid) {
            a.worker = Some(wid);
        }
        if let Some(t) = self.tasks.get_mut(&tid) {
            t.state = TaskState::Running(wid);
        }
    }

    /// An actor worker said hello: run the constructor.
    pub fn actor_worker_ready(&mut self, aid: ActorId, wid: crate::ids::WorkerId) {
        let Some(a) = self.actors.get(&aid) else {
            return;
        };
        if a.worker != Some(wid) {
            return;
        }
        let tid = a.creation.task;
        self.send_execution(tid, wid);
    }

    /// The constructor returned.
    pub fn actor_created(&mut self, spec: &TaskSpec) {
        let Some(aid) = spec.actor else {
            return;
        };
        if let Some(a) = self.actors.get_mut(&aid)
            && a.state == ActorState::Creating
        {
            a.state = ActorState::Alive;
        }
        self.pump_actor(aid);
    }

    /// Send runnable method calls, in order, stopping at the first that waits for arguments.
    pub fn pump_actor(&mut self, aid: ActorId) {
        if self.remote.proxies.contains_key(&aid) {
            self.pump_proxy(aid);
            return;
        }
        let Some(a) = self.actors.get_mut(&aid) else {
            return;
        };
        if let ActorState::Dead(err) = &a.state {
            let err = err.clone();
            let queued: Vec<TaskId> = a.queue.drain(..).collect();
            for tid in queued {
                self.fail_task(tid, err.clone());
            }
            return;
        }
        if a.state != ActorState::Alive {
            return;
        }
        let Some(wid) = a.worker else {
            return;
        };
        let mut to_send = Vec::new();
        let was_idle = a.inflight.is_empty();
        let mut to_pull = None;
        while let Some(&tid) = a.queue.front() {
            match self.tasks.get(&tid) {
                Some(t) if t.missing == 0 && t.inputs_elsewhere => {
                    // Its arguments are pulled first; the calls behind it wait (order).
                    to_pull = Some(tid);
                    break;
                }
                Some(t) if t.missing == 0 => {
                    a.queue.pop_front();
                    a.inflight.push_back(tid);
                    to_send.push(tid);
                }
                Some(_) => break,
                None => {
                    a.queue.pop_front();
                }
            }
        }
        if let Some(tid) = to_pull {
            if self
                .spec_of(&tid)
                .is_some_and(|spec| self.inputs_here(&spec))
            {
                if let Some(t) = self.tasks.get_mut(&tid) {
                    t.inputs_elsewhere = false;
                }
                // Pulled already: send it along with the ones before it.
                return self.pump_actor_after(aid, to_send, was_idle);
            }
            self.pull_inputs(tid);
        }
        self.send_actor_calls(wid, to_send, was_idle);
    }

    /// `pump_actor` again once a call's arguments turned out to be here.
    fn pump_actor_after(&mut self, aid: ActorId, sent: Vec<TaskId>, was_idle: bool) {
        if let Some(wid) = self.actors.get(&aid).and_then(|a| a.worker) {
            self.send_actor_calls(wid, sent, was_idle);
        }
        self.pump_actor(aid);
    }

    fn send_actor_calls(
        &mut self,
        wid: crate::ids::WorkerId,
        to_send: Vec<TaskId>,
        was_idle: bool,
    ) {
        for (i, tid) in to_send.into_iter().enumerate() {
            // Only a call the actor is waiting for goes out at once; calls
            // queued behind it leave with the batching writer.
            self.send_execution_via(tid, wid, i == 0 && was_idle);
        }
    }

    /// The actor's process died or it was killed: fail its calls, maybe restart it.
    pub fn actor_died(&mut self, aid: ActorId, err: ErrorInfo, allow_restart: bool) {
        let Some(a) = self.actors.get_mut(&aid) else {
            return;
        };
        if matches!(a.state, ActorState::Dead(_)) {
            return;
        }
        a.worker = None;
        if a.holds_resources {
            a.holds_resources = false;
            let res = a.resources.clone();
            self.available.give(&res);
        }
        let Some(a) = self.actors.get_mut(&aid) else {
            return;
        };
        let inflight: Vec<TaskId> = a.inflight.drain(..).collect();
        let restart = allow_restart && a.restarts_left != 0;
        let creation = Arc::clone(&a.creation);
        if restart {
            if a.restarts_left > 0 {
                a.restarts_left -= 1;
            }
            a.state = ActorState::Pending;
        } else {
            a.state = ActorState::Dead(err.clone());
            if let Some(name) = a.name.clone()
                && self.named_actors.get(&name) == Some(&aid)
            {
                self.named_actors.remove(&name);
            }
        }
        for tid in inflight {
            self.fail_task(tid, err.clone());
        }
        // A constructor that was running when the process died.
        if let Some(t) = self.tasks.get_mut(&creation.task) {
            if restart {
                t.state = TaskState::Queued;
                self.ready.push_back(creation.task);
            } else {
                self.fail_task(creation.task, err.clone());
            }
        } else if restart {
            tracing::info!("restarting actor {}", creation.actor_name());
            let resources = crate::resources::Resources::from_pairs(
                creation.resources.iter().map(|(k, v)| (k.as_str(), *v)),
            );
            self.tasks.insert(
                creation.task,
                TaskEntry {
                    spec: Arc::clone(&creation),
                    missing: 0,
                    resources,
                    retries_left: 0,
                    state: TaskState::Queued,
                    cancelled: false,
                    output_to: None,
                    guest: None,
                    stay_local: false,
                    inputs_elsewhere: false,
                },
            );
            self.ready.push_back(creation.task);
        } else if creation
            .actor_options
            .as_ref()
            .is_some_and(|o| o.max_restarts != 0)
        {
            // The inputs were kept for restarts; no more restarts will come.
            self.release_task_inputs(&creation);
        }
        self.pump_actor(aid);
        self.schedule();
    }

    /// `peer.kill(actor)`.
    pub fn kill_actor(&mut self, aid: ActorId, no_restart: bool) {
        if self.kill_remote_actor(aid, no_restart) {
            return;
        }
        let Some(a) = self.actors.get_mut(&aid) else {
            return;
        };
        if no_restart {
            a.restarts_left = 0;
        }
        let pid = a
            .worker
            .and_then(|w| self.workers.get(&w))
            .and_then(|w| w.pid);
        let name = a.creation.actor_name().to_string();
        if let Some(pid) = pid {
            crate::sys::kill_process(pid);
        }
        let err = ErrorInfo::new(
            ErrorKind::ActorDied,
            format!("the actor {name} was killed with peer.kill()"),
        );
        self.actor_died(aid, err, !no_restart);
    }

    /// The pickled handle of a live named actor.
    pub fn named_actor_handle(&self, name: &str) -> Option<serde_bytes::ByteBuf> {
        let aid = self.named_actors.get(name)?;
        let a = self.actors.get(aid)?;
        match a.state {
            ActorState::Dead(_) => None,
            _ => Some(a.handle_blob.clone()),
        }
    }

    /// Method calls for a dead actor fail at once.
    pub fn actor_is_dead(&self, aid: &ActorId) -> Option<ErrorInfo> {
        match self.actors.get(aid).map(|a| &a.state) {
            Some(ActorState::Dead(e)) => Some(e.clone()),
            _ => None,
        }
    }
}

impl TaskKind {
    /// Whether tasks of this kind run on an actor's worker.
    pub fn is_actor(self) -> bool {
        !matches!(self, TaskKind::Normal)
    }
}
