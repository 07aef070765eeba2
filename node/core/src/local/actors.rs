//! Actors created or hosted here: a dedicated worker each, method calls sent
//! in submission order (pipelined to the worker, which runs them one at a
//! time, or concurrently for a threaded or async actor), names, restart
//! (calls with `max_task_retries` left run again) and death, an actor that
//! exits on purpose (`exit_actor()`), and the end of an actor whose handles
//! are all gone (Ray's actor lifetimes: every handle holds a ref to the
//! object [`ObjectId::for_actor`]; once it is freed, the actor finishes its
//! queued calls and its worker exits; a detached actor's object is never
//! freed). (Calls of actors on other peers: `cluster::actors`.)

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustc_hash::FxHashMap;
use serde_bytes::ByteBuf;

use crate::core::Core;
use crate::error::SubmitError;
use crate::ids::{ActorId, ObjectId, TaskId, WorkerId};
use crate::local::gpus::GpuGrant;
use crate::local::objects::{ObjState, ObjectEntry};
use crate::local::tasks::{TaskEntry, TaskState, resources_of};
use crate::local::workers::WorkerKind;
use crate::resources::Resources;
use crate::wire::local::{ErrorInfo, ErrorKind, TaskSpec};
use crate::wire::local::{NodeMsg, Value};

/// Life of an actor.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum ActorState {
    /// Creation task waits for arguments or resources.
    Pending,
    /// Its worker is starting or running the constructor.
    Creating,
    Alive,
    Dead(ErrorInfo),
}

/// One actor.
#[derive(Debug)]
pub(crate) struct ActorEntry {
    pub(crate) creation: Arc<TaskSpec>,
    pub(crate) worker: Option<WorkerId>,
    pub(crate) state: ActorState,
    /// Method calls not yet sent, in submission order.
    pub(crate) queue: VecDeque<TaskId>,
    /// Method calls sent to the worker, in order.
    pub(crate) inflight: VecDeque<TaskId>,
    pub(crate) name: Option<String>,
    pub(crate) handle_blob: ByteBuf,
    pub(crate) resources: Resources,
    pub(crate) holds_resources: bool,
    /// The GPU devices it holds while `holds_resources`.
    pub(crate) gpus: GpuGrant,
    pub(crate) restarts_left: i32,
    /// Every handle is gone: it ends once its queued calls are done.
    pub(crate) out_of_scope: bool,
}

/// How long an actor told to exit (its handles are gone) may take to run its
/// exit hooks before its worker is killed.
const EXIT_GRACE: Duration = Duration::from_secs(10);

/// The actors created here (wherever they run) and hosted here.
#[derive(Debug, Default)]
pub(crate) struct Actors {
    entries: FxHashMap<ActorId, ActorEntry>,
    /// Names of live actors created here.
    named: FxHashMap<String, ActorId>,
    /// Actors told to exit, and when their workers are killed if still there.
    exiting: Vec<(ActorId, WorkerId, Instant)>,
}

impl Actors {
    pub(crate) fn get(&self, id: &ActorId) -> Option<&ActorEntry> {
        self.entries.get(id)
    }

    pub(crate) fn get_mut(&mut self, id: &ActorId) -> Option<&mut ActorEntry> {
        self.entries.get_mut(id)
    }

    pub(crate) fn contains(&self, id: &ActorId) -> bool {
        self.entries.contains_key(id)
    }

    pub(crate) fn entries(&self) -> impl Iterator<Item = (&ActorId, &ActorEntry)> {
        self.entries.iter()
    }

    pub(crate) fn values(&self) -> impl Iterator<Item = &ActorEntry> {
        self.entries.values()
    }

    pub(crate) fn named_count(&self) -> usize {
        self.named.len()
    }

    /// Mark an actor dead for good; its name is free again.
    pub(crate) fn set_dead(&mut self, aid: ActorId, err: ErrorInfo) {
        let Some(a) = self.entries.get_mut(&aid) else {
            return;
        };
        a.state = ActorState::Dead(err);
        if let Some(name) = a.name.clone()
            && self.named.get(&name) == Some(&aid)
        {
            self.named.remove(&name);
        }
    }

    /// Take the calls queued for an actor (they follow it to another peer).
    pub(crate) fn take_queue(&mut self, aid: &ActorId) -> VecDeque<TaskId> {
        self.entries
            .get_mut(aid)
            .map(|a| std::mem::take(&mut a.queue))
            .unwrap_or_default()
    }
}

#[cfg(test)]
impl Actors {
    pub(crate) fn is_named(&self, name: &str) -> bool {
        self.named.contains_key(name)
    }
}

#[cfg(test)]
impl std::ops::Index<&ActorId> for Actors {
    type Output = ActorEntry;
    fn index(&self, id: &ActorId) -> &ActorEntry {
        &self.entries[id]
    }
}

impl Core {
    /// Register the actor an actor-creation task makes (its name must be free).
    pub(crate) fn register_actor(&mut self, spec: &TaskSpec) -> Result<(), SubmitError> {
        let Some(opts) = &spec.actor_options else {
            return Err(SubmitError::NoActorOptions);
        };
        if spec.actor != Some(opts.actor) {
            return Err(SubmitError::ActorMismatch);
        }
        if let Some(name) = &opts.name {
            if let Some(old) = self.actors.named.get(name)
                && self
                    .actors
                    .get(old)
                    .is_some_and(|a| !matches!(a.state, ActorState::Dead(_)))
            {
                return Err(SubmitError::NameTaken(name.clone()));
            }
            self.actors.named.insert(name.clone(), opts.actor);
        }
        self.actors.entries.insert(
            opts.actor,
            ActorEntry {
                creation: Arc::new(spec.clone()),
                worker: None,
                state: ActorState::Pending,
                queue: Default::default(),
                inflight: Default::default(),
                name: opts.name.clone(),
                handle_blob: opts.handle_blob.clone(),
                resources: resources_of(spec),
                holds_resources: false,
                gpus: GpuGrant::default(),
                restarts_left: opts.max_restarts,
                out_of_scope: false,
            },
        );
        if !self.is_foreign(opts.actor.owner()) {
            // Created here: its handles hold this object's refs.
            let mut e = ObjectEntry::pending();
            e.state = ObjState::Ready(Value::Inline(Default::default()));
            e.escaped = opts.detached;
            self.objects.insert(ObjectId::for_actor(opts.actor), e);
        }
        Ok(())
    }

    /// Every handle of actor `aid` is gone (Ray's out-of-scope actor): it is
    /// not restarted, and it ends once the calls queued for it are done.
    pub(crate) fn actor_out_of_scope(&mut self, aid: ActorId) {
        let Some(a) = self.actors.entries.get_mut(&aid) else {
            return;
        };
        a.restarts_left = 0;
        a.out_of_scope = true;
        if let Some(host) = self.cluster.actor_host(&aid) {
            if Some(host) != self.cluster.me() {
                self.tell_host_out_of_scope(aid);
            }
            return;
        }
        self.pump_actor(aid);
    }

    /// An actor out of scope with nothing left to run: its worker is told to
    /// exit (so `atexit` hooks and `__del__` run), and killed if it lingers.
    fn exit_if_done(&mut self, aid: ActorId) {
        let Some(a) = self.actors.entries.get(&aid) else {
            return;
        };
        if !a.out_of_scope
            || a.state != ActorState::Alive
            || !a.queue.is_empty()
            || !a.inflight.is_empty()
        {
            return;
        }
        let Some(wid) = a.worker else {
            return;
        };
        if self
            .actors
            .exiting
            .iter()
            .any(|(x, w, _)| *x == aid && *w == wid)
        {
            return;
        }
        tracing::debug!(
            "actor {} is out of scope: its worker exits",
            a.creation.actor_name()
        );
        if let Some(conn) = self.workers.get(&wid).and_then(|w| w.conn) {
            self.send_to(conn, NodeMsg::Exit);
        }
        let at = self.now + EXIT_GRACE;
        self.actors.exiting.push((aid, wid, at));
        self.arm_timer(at);
    }

    /// The actor in worker `wid` exits on purpose (`exit_actor()`,
    /// `__ray_terminate__`), as Ray's intentional exit: it is not restarted,
    /// its calls in flight and queued fail with `ActorDiedError` saying
    /// `reason`, and its worker is told to exit (its exit hooks run) and
    /// killed if it lingers. False when `wid` runs no actor.
    pub(crate) fn actor_exits(&mut self, wid: WorkerId, reason: String) -> bool {
        let Some(WorkerKind::Actor(aid)) = self.workers.get(&wid).map(|w| w.kind) else {
            return false;
        };
        if !self.actor_worker_is(aid, wid) {
            // An earlier run of the actor (it restarted since): nothing of it is left here.
            return true;
        }
        tracing::debug!("actor {aid} exits: {reason}");
        if let Some(conn) = self.workers.get(&wid).and_then(|w| w.conn) {
            self.send_to(conn, NodeMsg::Exit);
        }
        let at = self.now + EXIT_GRACE;
        self.actors.exiting.push((aid, wid, at));
        self.arm_timer(at);
        self.actor_died(aid, ErrorInfo::new(ErrorKind::ActorDied, reason), false);
        true
    }

    /// Time passed: actor workers told to exit that are still there are killed.
    pub(crate) fn kill_lingering_actors(&mut self) {
        let now = self.now;
        let due: Vec<(ActorId, WorkerId)> = self
            .actors
            .exiting
            .iter()
            .filter(|(_, _, at)| *at <= now)
            .map(|(a, w, _)| (*a, *w))
            .collect();
        self.actors.exiting.retain(|(_, _, at)| *at > now);
        for (aid, wid) in due {
            // The worker is still connected (an actor that exited on purpose
            // is no longer its worker's, but the process is still its).
            if let Some(pid) = self.workers.get(&wid).and_then(|w| w.pid) {
                tracing::warn!(
                    "actor {aid} did not exit within {EXIT_GRACE:?} of going out of scope: killed"
                );
                self.kill_process(pid);
            }
        }
    }

    /// Whether the actor ended because its handles were all gone.
    pub(crate) fn is_out_of_scope(&self, aid: ActorId) -> bool {
        self.actors.get(&aid).is_some_and(|a| a.out_of_scope)
    }

    /// Queue a method call behind the actor's earlier ones (here, or for an
    /// actor on another peer, at its proxy).
    pub(crate) fn queue_actor_call(&mut self, aid: ActorId, tid: TaskId) -> Result<(), ErrorInfo> {
        if self.cluster.queue_at_proxy(aid, tid) {
            return Ok(());
        }
        if let Some(a) = self.actors.entries.get_mut(&aid) {
            a.queue.push_back(tid);
            return Ok(());
        }
        if self.is_foreign(aid.owner()) {
            self.start_proxy(aid);
            self.cluster.queue_at_proxy(aid, tid);
            return Ok(());
        }
        Err(ErrorInfo::new(
            ErrorKind::ActorDied,
            format!("actor {aid} is not known to this node"),
        ))
    }

    /// A call leaves the actor's queues (it failed or was cancelled).
    pub(crate) fn unqueue_actor_call(&mut self, aid: ActorId, tid: TaskId) {
        if let Some(a) = self.actors.entries.get_mut(&aid) {
            a.queue.retain(|x| *x != tid);
        }
        self.cluster.unqueue_at_proxy(aid, tid);
    }

    /// The actor's worker reported call (or constructor) `tid`.
    pub(crate) fn actor_call_done(&mut self, aid: ActorId, tid: TaskId) {
        if let Some(a) = self.actors.entries.get_mut(&aid)
            && let Some(pos) = a.inflight.iter().position(|t| *t == tid)
        {
            a.inflight.remove(pos);
        }
    }

    /// Whether `wid` is the worker the actor runs in now.
    pub(crate) fn actor_worker_is(&self, aid: ActorId, wid: WorkerId) -> bool {
        self.actors.get(&aid).is_some_and(|a| a.worker == Some(wid))
    }

    /// The actor's class name, for messages.
    pub(crate) fn actor_class(&self, aid: ActorId) -> Option<String> {
        self.actors
            .get(&aid)
            .map(|a| a.creation.actor_name().to_string())
    }

    /// The task that creates the actor.
    pub(crate) fn actor_creation_task(&self, aid: ActorId) -> Option<TaskId> {
        self.actors.get(&aid).map(|a| a.creation.task)
    }

    /// The creation task is runnable and fits: give the actor its worker.
    pub(crate) fn start_actor(&mut self, tid: TaskId) {
        let Some(t) = self.tasks.get(&tid) else {
            return;
        };
        let Some(aid) = t.spec.actor else {
            return;
        };
        let res = t.resources.clone();
        let env = t.spec.runtime_env.clone();
        let Some(a) = self.actors.entries.get_mut(&aid) else {
            return;
        };
        if let ActorState::Dead(err) = &a.state {
            let err = err.clone();
            self.fail_task(tid, err);
            return;
        }
        a.state = ActorState::Creating;
        a.holds_resources = true;
        let grant = self.take_resources(&res);
        let wid = self.spawn_worker(WorkerKind::Actor(aid), env);
        if let Some(me) = self.cluster.me() {
            self.actor_placed(aid, me);
        }
        if let Some(a) = self.actors.entries.get_mut(&aid) {
            a.worker = Some(wid);
            a.gpus = grant;
        }
        if let Some(t) = self.tasks.get_mut(&tid) {
            t.state = TaskState::Running(wid);
        }
    }

    /// An actor worker said hello: run the constructor.
    pub(crate) fn actor_worker_ready(&mut self, aid: ActorId, wid: WorkerId) {
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
    pub(crate) fn actor_created(&mut self, spec: &TaskSpec) {
        let Some(aid) = spec.actor else {
            return;
        };
        if let Some(a) = self.actors.entries.get_mut(&aid)
            && a.state == ActorState::Creating
        {
            a.state = ActorState::Alive;
        }
        self.pump_actor(aid);
    }

    /// Send runnable method calls, in order, stopping at the first that waits for arguments.
    pub(crate) fn pump_actor(&mut self, aid: ActorId) {
        if self.cluster.has_proxy(&aid) {
            self.pump_proxy(aid);
            return;
        }
        let Some(a) = self.actors.entries.get_mut(&aid) else {
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
        if a.queue.is_empty() && a.inflight.is_empty() {
            return self.exit_if_done(aid);
        }
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
                .tasks
                .spec(&tid)
                .is_some_and(|spec| self.inputs_here(&spec))
            {
                if let Some(t) = self.tasks.get_mut(&tid) {
                    t.inputs_elsewhere = false;
                }
                // Pulled already: send it along with the ones before it.
                self.send_actor_calls(wid, to_send, was_idle);
                return self.pump_actor(aid);
            }
            self.pull_inputs(tid);
        }
        self.send_actor_calls(wid, to_send, was_idle);
    }

    fn send_actor_calls(&mut self, wid: WorkerId, to_send: Vec<TaskId>, was_idle: bool) {
        for (i, tid) in to_send.into_iter().enumerate() {
            // Only a call the actor is waiting for goes out at once; calls
            // queued behind it leave with the batching writer.
            self.send_execution_via(tid, wid, i == 0 && was_idle);
        }
    }

    /// The actor's process died or it was killed: fail its calls, maybe restart it.
    pub(crate) fn actor_died(&mut self, aid: ActorId, err: ErrorInfo, allow_restart: bool) {
        let Some(a) = self.actors.entries.get_mut(&aid) else {
            return;
        };
        if matches!(a.state, ActorState::Dead(_)) {
            return;
        }
        a.worker = None;
        if a.holds_resources {
            a.holds_resources = false;
            self.available.give(&a.resources);
            self.gpus.give_back(std::mem::take(&mut a.gpus));
        }
        let inflight: Vec<TaskId> = a.inflight.drain(..).collect();
        let restart = allow_restart && a.restarts_left != 0;
        let creation = Arc::clone(&a.creation);
        if restart {
            if a.restarts_left > 0 {
                a.restarts_left -= 1;
            }
            a.state = ActorState::Pending;
        } else {
            self.actors.set_dead(aid, err.clone());
        }
        // Calls it was running fail, but for those with retries left
        // (`max_task_retries`) when it restarts: they run again on the new
        // instance, ahead of the calls queued behind them.
        for tid in inflight.into_iter().rev() {
            let retry = restart
                && self.tasks.get_mut(&tid).is_some_and(|t| {
                    if t.retries_left == 0 {
                        return false;
                    }
                    if t.retries_left > 0 {
                        t.retries_left -= 1;
                    }
                    t.state = TaskState::Queued;
                    true
                });
            match self.actors.entries.get_mut(&aid) {
                Some(a) if retry => {
                    self.stats.tasks_retried += 1;
                    a.queue.push_front(tid);
                }
                _ => self.fail_task(tid, err.clone()),
            }
        }
        // A constructor that was running runs again; one still waiting for
        // its arguments, a slot or a peer keeps its place.
        if let Some(t) = self.tasks.get_mut(&creation.task) {
            if !restart {
                self.fail_task(creation.task, err.clone());
            } else if matches!(t.state, TaskState::Running(_)) {
                t.state = TaskState::Queued;
                self.tasks.push_ready(creation.task);
            }
        } else if restart {
            tracing::info!("restarting actor {}", creation.actor_name());
            let mut entry = TaskEntry::new(Arc::clone(&creation), 0);
            entry.retries_left = 0;
            entry.state = TaskState::Queued;
            self.tasks.insert(creation.task, entry);
            self.tasks.push_ready(creation.task);
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
    pub(crate) fn kill_actor(&mut self, aid: ActorId, no_restart: bool) {
        if self.kill_remote_actor(aid, no_restart) {
            return;
        }
        let Some(a) = self.actors.entries.get_mut(&aid) else {
            return;
        };
        if no_restart {
            a.restarts_left = 0;
        }
        let name = a.creation.actor_name().to_string();
        let pid = a
            .worker
            .and_then(|w| self.workers.get(&w))
            .and_then(|w| w.pid);
        if let Some(pid) = pid {
            self.kill_process(pid);
        }
        let err = ErrorInfo::new(
            ErrorKind::ActorDied,
            format!("the actor {name} was killed with peer.kill()"),
        );
        self.actor_died(aid, err, !no_restart);
    }

    /// The pickled handle of a live named actor, and its id.
    pub(crate) fn named_actor_handle(&self, name: &str) -> Option<(ByteBuf, ActorId)> {
        let aid = self.actors.named.get(name)?;
        let a = self.actors.get(aid)?;
        match a.state {
            ActorState::Dead(_) => None,
            _ => Some((a.handle_blob.clone(), *aid)),
        }
    }
}

impl crate::wire::local::TaskKind {
    /// Whether tasks of this kind run on an actor's worker.
    pub fn is_actor(self) -> bool {
        !matches!(self, crate::wire::local::TaskKind::Normal)
    }
}
