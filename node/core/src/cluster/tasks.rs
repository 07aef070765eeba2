//! Tasks crossing peers: shipping one to the peer placement chose, taking one
//! in as a guest, handing a guest on, and finding out which tasks sent to a
//! peer were lost on the way (link resets, audits) so they run again.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rustc_hash::{FxHashMap, FxHashSet};
use serde_bytes::ByteBuf;

use crate::core::Core;
use crate::ids::{FnId, ObjectId, PeerId, TaskId};
use crate::local::objects::{Holder, ObjectEntry};
use crate::local::tasks::{Guest, TaskState};
use crate::local::waits::{Awaited, Target};
use crate::wire::local::{ErrorInfo, ErrorKind, TaskKind, TaskSpec, Value, args_object_id};
use crate::wire::peer::{PeerMsg, WireValue};

/// Task arguments (not refs) up to this size travel with a task to another
/// peer; a task with larger ones runs where they are.
const ARGS_IN_MESSAGE_MAX: usize = 64 * 1024 * 1024;
/// How often tasks sent to other peers are checked on, and at most how many per peer.
const AUDIT_PERIOD: Duration = Duration::from_secs(2);
const AUDIT_MAX: usize = 4096;
/// Tasks held at most per missing function.
const MAX_AWAITING_FN: usize = 100_000;
/// Missing functions waited for at once (a function normally arrives just
/// before its first task, so only a peer that never sends them fills this).
const MAX_AWAITED_FNS: usize = 256;

/// Tasks sent to peers, and tasks from peers waiting for their function.
#[derive(Debug)]
pub(super) struct RemoteTasks {
    /// The peer each task in state `Remote` was sent to.
    sent_to: FxHashMap<TaskId, PeerId>,
    /// When tasks sent to peers are next checked on (None: no check armed).
    next_audit: Option<Instant>,
    /// Tasks received before their function, by function.
    pub(super) awaiting_fn: FxHashMap<FnId, Vec<(PeerId, PeerMsg)>>,
}

/// What became of a task that arrived before its function.
pub(super) enum Awaiting {
    /// The first for this function: ask for it.
    First,
    /// Queued behind others waiting for the same function.
    Queued,
    /// Not kept: too many functions are awaited already.
    TooMany(PeerMsg),
}

/// What came with a task from a peer besides its spec.
pub(super) struct Arrival<'a> {
    /// The values of the spec's `deps`, in order.
    pub(super) deps: Vec<WireValue>,
    /// The refs nested in each of those values.
    pub(super) deps_contain: Vec<Vec<ObjectId>>,
    /// The message's lend number, and every ref it lends.
    pub(super) lend: u64,
    pub(super) lent: &'a [ObjectId],
}

impl RemoteTasks {
    pub(super) fn new() -> Self {
        Self {
            sent_to: FxHashMap::default(),
            next_audit: None,
            awaiting_fn: FxHashMap::default(),
        }
    }

    #[cfg(test)]
    pub(super) fn note_sent(&mut self, tid: TaskId, peer: PeerId) {
        self.sent_to.insert(tid, peer);
    }

    /// Hold a task message until function `id` arrives.
    pub(super) fn await_function(&mut self, id: FnId, from: PeerId, msg: PeerMsg) -> Awaiting {
        if !self.awaiting_fn.contains_key(&id) && self.awaiting_fn.len() >= MAX_AWAITED_FNS {
            return Awaiting::TooMany(msg);
        }
        let waiting = self.awaiting_fn.entry(id).or_default();
        let first = waiting.is_empty();
        if waiting.len() >= MAX_AWAITING_FN {
            return Awaiting::TooMany(msg);
        }
        waiting.push((from, msg));
        if first {
            Awaiting::First
        } else {
            Awaiting::Queued
        }
    }

    /// The tasks that waited for function `id`, which arrived.
    pub(super) fn take_awaiting_fn(&mut self, id: &FnId) -> Vec<(PeerId, PeerMsg)> {
        self.awaiting_fn.remove(id).unwrap_or_default()
    }

    /// Tasks waiting here for their function.
    pub(super) fn awaiting_fn_tasks(&self) -> FxHashSet<TaskId> {
        super::task_ids(self.awaiting_fn.values().flatten().map(|(_, m)| m))
    }
}

impl super::Cluster {
    /// The peer a task was sent to.
    pub(crate) fn sent_to(&self, tid: &TaskId) -> Option<PeerId> {
        self.tasks.sent_to.get(tid).copied()
    }

    /// A task sent to a peer is over (or runs elsewhere now).
    pub(crate) fn forget_sent(&mut self, tid: &TaskId) {
        self.tasks.sent_to.remove(tid);
    }

    /// Tasks sent to each peer, for `peer status`.
    pub(crate) fn sent_by_peer(&self) -> std::collections::BTreeMap<String, usize> {
        let mut m = std::collections::BTreeMap::new();
        for p in self.tasks.sent_to.values() {
            *m.entry(p.to_string()).or_default() += 1;
        }
        m
    }

    /// Tasks sent to `peer`.
    pub(super) fn sent_to_peer(&self, peer: PeerId) -> Vec<TaskId> {
        self.tasks
            .sent_to
            .iter()
            .filter(|(_, p)| **p == peer)
            .map(|(t, _)| *t)
            .collect()
    }
}

impl Core {
    /// Ship a runnable task to `peer`. Tasks owned here wait for their results;
    /// a guest task is handed on and forgotten (its owner gets the results).
    pub(crate) fn send_task(&mut self, tid: TaskId, peer: PeerId, expect_queue: u32) {
        let Some(t) = self.tasks.get(&tid) else {
            return;
        };
        let spec = Arc::clone(&t.spec);
        let guest = t.guest.as_deref().copied();
        let mut wire = (*spec).clone();
        if let Value::Stored { .. } = spec.args {
            // Arguments (not refs) travel with the task, whatever their size.
            match self.stored_bytes(&args_object_id(tid)) {
                Some(b) if b.len() <= ARGS_IN_MESSAGE_MAX => wire.args = Value::Inline(b),
                _ => return self.keep_local_after_all(tid),
            }
        }
        let rebuilding = spec.deps.iter().any(|d| {
            self.objects
                .get(d)
                .is_some_and(|e| e.is_pending() && e.elsewhere.is_none())
        });
        if rebuilding {
            // An input lost its copies and is being rebuilt: wait for it here.
            return self.pull_inputs(tid);
        }
        let mut deps = Vec::with_capacity(spec.deps.len());
        let mut deps_contain = Vec::with_capacity(spec.deps.len());
        for d in &spec.deps {
            deps_contain.push(
                self.objects
                    .get(d)
                    .map(|e| e.contains.clone())
                    .unwrap_or_default(),
            );
            let v = self.wire_value(d);
            if let WireValue::At { .. } = v {
                // The peer pulls it; it serves what it has to the next ones.
                self.note_puller(*d, peer);
            }
            deps.push(v);
        }
        if spec.kind != TaskKind::ActorMethod
            && !self.cluster.membership.has_function(&peer, &spec.fn_id)
        {
            let Some(blob) = self.tasks.function(&spec.fn_id).map(|b| (**b).clone()) else {
                let err = ErrorInfo::new(
                    ErrorKind::Task,
                    format!("function of task {} was never registered", spec.name),
                );
                return self.fail_task(tid, err);
            };
            self.send_peer(
                peer,
                PeerMsg::Function {
                    id: spec.fn_id,
                    blob,
                },
            );
            self.cluster.membership.sent_function(peer, spec.fn_id);
        }
        let Some(owner) = guest.map(|g| g.owner).or(self.cluster.me()) else {
            return self.keep_local_after_all(tid);
        };
        let hops = guest.map_or(1, |g| g.hops.saturating_add(1));
        // The peer borrows these refs (and may pass them on) until it says it is done.
        let lent = super::borrows::task_lends(&spec, &deps_contain);
        let lend = self.lend(peer, &lent);
        self.send_peer(
            peer,
            PeerMsg::Task {
                spec: Box::new(wire),
                deps,
                deps_contain,
                owner: ByteBuf::from(owner.as_bytes().to_vec()),
                hops,
                expect_queue,
                lend,
            },
        );
        match guest {
            Some(g) => {
                self.stats.tasks_forwarded += 1;
                // Its owner follows it: that is where it asks about it.
                self.send_peer(
                    g.owner,
                    PeerMsg::Moved {
                        task: tid,
                        to: ByteBuf::from(peer.as_bytes().to_vec()),
                    },
                );
                self.forget_guest(tid);
            }
            None => {
                self.stats.tasks_sent += 1;
                if let Some(t) = self.tasks.get_mut(&tid) {
                    t.state = TaskState::Remote;
                    self.cluster.tasks.sent_to.insert(tid, peer);
                    self.arm_audit();
                }
                if spec.kind == TaskKind::ActorCreate {
                    self.actor_sent(&spec, peer);
                }
            }
        }
    }

    /// Make sure tasks sent to peers are checked on in a while.
    fn arm_audit(&mut self) {
        if self.cluster.tasks.next_audit.is_none() {
            let at = self.now + AUDIT_PERIOD;
            self.cluster.tasks.next_audit = Some(at);
            self.arm_timer(at);
        }
    }

    /// A task chosen for another peer turned out unable to travel: it runs here.
    fn keep_local_after_all(&mut self, tid: TaskId) {
        let Some(t) = self.tasks.get_mut(&tid) else {
            return;
        };
        t.stay_local = true;
        match t.spec.kind {
            TaskKind::ActorMethod => {
                // Calls of a remote actor cannot run here: say why.
                let err = ErrorInfo::new(
                    ErrorKind::Task,
                    format!(
                        "the arguments of {} are over {ARGS_IN_MESSAGE_MAX} bytes and its \
                         actor runs on another peer; pass large values as refs (put) instead",
                        t.spec.name
                    ),
                );
                self.fail_task(tid, err);
            }
            _ => {
                t.state = TaskState::Queued;
                self.tasks.push_ready(tid);
            }
        }
    }

    /// A guest task was handed on: this node no longer waits for its results.
    fn forget_guest(&mut self, tid: TaskId) {
        let Some(spec) = self.tasks.spec(&tid) else {
            return;
        };
        let returns: Vec<ObjectId> = spec.return_ids().collect();
        self.waits
            .forget(|w| matches!(w.target, Target::Peer { .. }) && w.ids == returns);
        for id in &returns {
            if self
                .objects
                .get(id)
                .is_some_and(|e| e.is_pending() && e.dependents.is_empty())
            {
                self.objects.remove(id);
            }
        }
        self.finish_task(tid);
    }

    /// A peer placed a task here: the refs it lends are counted, and those
    /// nothing here takes over go back at once.
    pub(super) fn receive_task(
        &mut self,
        from: PeerId,
        spec: TaskSpec,
        arrival: Arrival<'_>,
        owner: &[u8],
        placement: (u8, u32),
    ) {
        let taken = self.take_lends(from, arrival.lend, arrival.lent);
        // A value without its nested refs listed (a malformed message) holds none.
        let contains = arrival
            .deps_contain
            .into_iter()
            .chain(std::iter::repeat(Vec::new()));
        let values = arrival.deps.into_iter().zip(contains);
        self.take_task(from, spec, values.collect(), owner, placement);
        self.settle_borrows(&taken);
    }

    /// Take in a task from a peer; `deps`: its arguments' values and the refs nested in each.
    fn take_task(
        &mut self,
        from: PeerId,
        mut spec: TaskSpec,
        deps: Vec<(WireValue, Vec<ObjectId>)>,
        owner: &[u8],
        (hops, expect_queue): (u8, u32),
    ) {
        let Ok(owner) = PeerId::from_bytes(owner) else {
            tracing::warn!(%from, "a task from peer names no valid owner; dropped");
            self.stats.bad_frames += 1;
            return;
        };
        if self
            .tasks
            .get(&spec.task)
            .is_some_and(|t| t.guest.is_some())
        {
            // A duplicate (sent again after a link reset): it is here already.
            return;
        }
        self.stats.tasks_received += 1;
        if let Some(t) = self.tasks.get_mut(&spec.task) {
            if t.guest.is_none() && t.state == TaskState::Remote {
                self.cluster.tasks.sent_to.remove(&spec.task);
                // A task of ours came back (placed again by a busier peer): it runs here.
                t.state = TaskState::Queued;
                t.stay_local = true;
                self.tasks.push_ready(spec.task);
                return self.schedule();
            }
            // Ours and already queued or running here again (it was re-placed
            // while this copy travelled): nothing more to do.
            return;
        }
        let returns: Vec<ObjectId> = spec.return_ids().collect();
        if spec.kind == TaskKind::Normal
            && !returns.is_empty()
            && returns.iter().all(|id| self.objects.is_ready(id))
        {
            // Run here before (sent again after a link reset, or to rebuild a
            // copy its owner could not reach): the results are still here.
            for id in &returns {
                if let Some(e) = self.objects.get_mut(id) {
                    e.cached = false;
                }
            }
            return self.send_values_to_peer(owner, &returns, true);
        }
        for id in &returns {
            // A stale part of an earlier run's results: this run makes them anew.
            if self.objects.is_ready(id) {
                self.drop_copy(id);
            }
        }
        // The creator holds an actor's name; this node only runs it.
        if let Some(o) = spec.actor_options.as_mut() {
            o.name = None;
        }
        // Copies of the arguments, held by the task (so freed with it); values
        // are set once it holds them. A ref known here but never fetched
        // takes the value that came with the task.
        let mut copies = Vec::new();
        for (dep, value) in spec.deps.iter().zip(deps) {
            let copy = match self.objects.get_mut(dep) {
                None => {
                    let mut e = ObjectEntry::pending();
                    e.had_handle = true;
                    self.objects.insert(*dep, e);
                    true
                }
                Some(e) if e.unfetched && e.is_pending() && e.elsewhere.is_none() => {
                    e.unfetched = false;
                    true
                }
                Some(_) => false,
            };
            if copy {
                copies.push((*dep, value));
            }
        }
        for id in &returns {
            self.objects.entry(*id);
        }
        if !returns.is_empty() {
            let n = returns.len();
            self.begin_wait(
                returns.clone(),
                n,
                Awaited::Values,
                Target::Peer {
                    peer: owner,
                    free_after: true,
                },
                None,
                None,
            );
        }
        if let Err(e) = self.check_submission(&spec) {
            tracing::warn!(%from, "refused a task from peer: {e}");
            for (id, _) in copies {
                match self.objects.get_mut(&id) {
                    Some(e) if e.refs > 0 => e.unfetched = true,
                    _ => {
                        self.objects.remove(&id);
                    }
                }
            }
            for id in returns {
                let err = ErrorInfo::new(ErrorKind::Task, e.to_string());
                self.object_ready(id, Value::Error(err));
            }
            return;
        }
        // A received actor creation stays: its creator already told others where it runs.
        let hops = if spec.kind == TaskKind::ActorCreate {
            super::placement::MAX_HOPS
        } else {
            hops
        };
        let guest = Guest {
            owner,
            hops,
            expect_queue,
        };
        self.accept(spec, Holder::Local, Some(guest));
        for (id, (value, inside)) in copies {
            // The value holds its nested refs while it lives.
            self.attach_contained(id, inside);
            self.set_value(id, value);
        }
    }

    /// The link with `peer` broke and came back (`ours`: our stream to it;
    /// else it told us about its stream to us): messages in flight may be
    /// lost. Ask which tasks sent to it it has; the others run again.
    pub(crate) fn link_reset(&mut self, peer: PeerId, ours: bool) {
        // It may be a new incarnation of that peer: it has none of our functions.
        self.cluster.membership.forget_functions(&peer);
        if ours {
            self.send_peer(peer, PeerMsg::LinkReset);
        }
        // Lends, releases and frees may have been lost with the link.
        self.ask_borrower(peer);
        let theirs = crate::ids::OwnerTag::of_peer(&peer);
        let kept = self.objects.copies_kept_for(theirs);
        if !kept.is_empty() {
            self.send_peer(peer, PeerMsg::CopiesKept { ids: kept });
        }
        // Values asked of it whose answers may have been lost: ask again.
        for id in self.objects.fetched_from(theirs) {
            // (Results of a task run here are made here, not asked for.)
            if !self.cluster.is_pulling(&id) && !self.tasks.contains(&id.task()) {
                self.send_peer(
                    peer,
                    PeerMsg::Fetch {
                        id,
                        failed: Vec::new(),
                    },
                );
            }
        }
        let tasks = self.cluster.sent_to_peer(peer);
        if !tasks.is_empty() {
            self.send_peer(peer, PeerMsg::Which { tasks });
        }
        self.functions_awaited_from(peer, false);
    }

    /// Tasks waiting here for a function from `peer`, which is gone (`gone`:
    /// they are dropped; their results have nowhere to go) or whose link was
    /// reset (the question may be lost: ask again).
    pub(super) fn functions_awaited_from(&mut self, peer: PeerId, gone: bool) {
        let mut ask = Vec::new();
        for (id, waiting) in self.cluster.tasks.awaiting_fn.iter_mut() {
            let before = waiting.len();
            if gone {
                waiting.retain(|(_, m)| super::task_owner(m) != Some(peer));
                if waiting.len() < before
                    && let Some(next) = waiting.first().and_then(|(_, m)| super::task_owner(m))
                {
                    ask.push((next, *id));
                }
            } else if waiting
                .iter()
                .any(|(_, m)| super::task_owner(m) == Some(peer))
            {
                ask.push((peer, *id));
            }
        }
        self.cluster.tasks.awaiting_fn.retain(|_, w| !w.is_empty());
        for (peer, id) in ask {
            self.send_peer(peer, PeerMsg::NeedFunction { id });
        }
    }

    /// `peer` answered which of our tasks it has: the rest never arrived (or
    /// their results were lost): place them again. An actor call cannot run
    /// again (it may have run, and the calls after it may have run already):
    /// it fails with `ActorUnavailable`, as a Ray call does whose actor's
    /// connection broke.
    pub(super) fn replace_missing(&mut self, peer: PeerId, have: &[TaskId]) {
        let missing: Vec<TaskId> = self
            .cluster
            .sent_to_peer(peer)
            .into_iter()
            .filter(|t| !have.contains(t))
            .collect();
        for tid in missing {
            let Some(t) = self.tasks.get(&tid) else {
                continue;
            };
            if t.state != TaskState::Remote {
                continue;
            }
            self.cluster.tasks.sent_to.remove(&tid);
            if t.spec.kind == TaskKind::ActorMethod {
                let err = ErrorInfo::new(
                    ErrorKind::ActorUnavailable,
                    format!(
                        "the call {} went to peer {peer}, whose link broke, and the peer does not \
                         have it: it may or may not have run; call again if that is safe",
                        t.spec.name
                    ),
                );
                self.fail_task(tid, err);
                continue;
            }
            self.stats.tasks_retried += 1;
            self.await_placement(tid);
        }
        self.schedule();
    }

    /// A task of ours was placed once more by the peer we sent it to.
    pub(super) fn task_moved(&mut self, tid: TaskId, to: PeerId) {
        if self
            .tasks
            .get(&tid)
            .is_none_or(|t| t.state != TaskState::Remote)
        {
            return;
        }
        if self.cluster.membership.is_gone(&to) {
            // Moved to a peer already gone: run it again.
            self.cluster.tasks.sent_to.remove(&tid);
            self.stats.tasks_retried += 1;
            self.await_placement(tid);
            return self.schedule();
        }
        self.cluster.tasks.sent_to.insert(tid, to);
    }

    /// Every few seconds: ask each peer which of the tasks sent to it it still
    /// has, so a task lost on the way (or with a peer that died unnoticed) runs again.
    pub(super) fn audit_remote_tasks(&mut self, now: Instant) {
        let Some(at) = self.cluster.tasks.next_audit else {
            return;
        };
        if now < at {
            return;
        }
        self.cluster.tasks.next_audit = None;
        if self.cluster.tasks.sent_to.is_empty() {
            return;
        }
        let mut by_peer: FxHashMap<PeerId, Vec<TaskId>> = Default::default();
        for (t, p) in &self.cluster.tasks.sent_to {
            let list = by_peer.entry(*p).or_default();
            if list.len() < AUDIT_MAX {
                list.push(*t);
            }
        }
        for (peer, tasks) in by_peer {
            self.send_peer(peer, PeerMsg::Which { tasks });
        }
        self.arm_audit();
    }

    /// Tasks sent to `peer`, which is gone: they run elsewhere (while
    /// retries allow); calls of its actors fail.
    pub(super) fn replace_tasks_sent_to(&mut self, peer: PeerId, why: &str) {
        let sent: Vec<TaskId> = self
            .cluster
            .sent_to_peer(peer)
            .into_iter()
            .filter(|id| {
                self.tasks
                    .get(id)
                    .is_some_and(|t| t.state == TaskState::Remote)
            })
            .collect();
        for tid in sent {
            self.cluster.tasks.sent_to.remove(&tid);
            let Some(t) = self.tasks.get_mut(&tid) else {
                continue;
            };
            let name = t.spec.name.clone();
            if t.spec.kind == TaskKind::ActorMethod && t.retries_left != 0 {
                // `max_task_retries`: it goes to the actor again once it is
                // known where the actor runs now (order is not kept, as in Ray).
                if t.retries_left > 0 {
                    t.retries_left -= 1;
                }
                t.state = TaskState::Queued;
                self.stats.tasks_retried += 1;
                if let Some(aid) = t.spec.actor
                    && !self.cluster.requeue_at_proxy(aid, tid)
                {
                    let err = ErrorInfo::new(
                        ErrorKind::ActorDied,
                        format!(
                            "the call {name} was running on peer {peer}, which is gone ({why})"
                        ),
                    );
                    self.fail_task(tid, err);
                }
            } else if t.spec.kind == TaskKind::ActorMethod {
                let err = ErrorInfo::new(
                    ErrorKind::ActorDied,
                    format!("the call {name} was running on peer {peer}, which is gone ({why})"),
                );
                self.fail_task(tid, err);
            } else if t.retries_left == 0 {
                let used = t.spec.max_retries;
                let err = ErrorInfo::new(
                    ErrorKind::WorkerCrashed,
                    format!(
                        "task {name} was running on peer {peer}, which is gone ({why}); no retries \
                         left ({used} used, max_retries={used})"
                    ),
                );
                self.fail_task(tid, err);
            } else {
                if t.retries_left > 0 {
                    t.retries_left -= 1;
                }
                self.stats.tasks_retried += 1;
                self.await_placement(tid);
            }
        }
    }
}
