//! Tasks crossing peers: shipping one to the peer placement chose, taking one
//! in as a guest, handing a guest on, and re-placing work sent to a peer whose
//! link broke.

use std::sync::Arc;

use peer_gossip::PeerId;
use serde_bytes::ByteBuf;

use crate::ids::{ObjectId, TaskId};
use crate::peer_msg::{PeerMsg, WireValue};
use crate::protocol::{ErrorInfo, ErrorKind, TaskKind, TaskSpec, Value, args_object_id};
use crate::state::{Guest, Holder, ObjState, ObjectEntry, State, Target, TaskState};

/// Task arguments (not refs) up to this size travel with a task to another
/// peer; a task with larger ones runs where they are.
const ARGS_IN_MESSAGE_MAX: usize = 64 * 1024 * 1024;

/// How often tasks sent to other peers are checked on, and at most how many per peer.
const AUDIT_PERIOD: std::time::Duration = std::time::Duration::from_secs(2);
const AUDIT_MAX: usize = 4096;

impl State {
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
                .is_some_and(|e| matches!(e.state, ObjState::Pending) && e.elsewhere.is_none())
        });
        if rebuilding {
            // An input lost its copies and is being rebuilt: wait for it here.
            return self.pull_inputs(tid);
        }
        let mut deps = Vec::with_capacity(spec.deps.len());
        for d in &spec.deps {
            let v = self.wire_value(d);
            if let WireValue::At { .. } = v {
                // The peer pulls it; it serves what it has to the next ones.
                self.note_puller(*d, peer);
            }
            deps.push(v);
        }
        if spec.kind != TaskKind::ActorMethod
            && !self
                .remote
                .fns_sent
                .get(&peer)
                .is_some_and(|s| s.contains(&spec.fn_id))
        {
            let Some(blob) = self.functions.get(&spec.fn_id).map(|b| (**b).clone()) else {
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
            self.remote
                .fns_sent
                .entry(peer)
                .or_default()
                .insert(spec.fn_id);
        }
        let Some(owner) = guest.map(|g| g.owner).or(self.remote.me) else {
            return self.keep_local_after_all(tid);
        };
        let hops = guest.map_or(1, |g| g.hops.saturating_add(1));
        // The peer may keep and pass on these refs: never free them under it.
        let leaving: Vec<ObjectId> = spec.deps.iter().chain(&spec.contained).copied().collect();
        self.escape_with_contents(&leaving);
        self.send_peer(
            peer,
            PeerMsg::Task {
                spec: Box::new(wire),
                deps,
                owner: ByteBuf::from(owner.to_bytes()),
                hops,
                expect_queue,
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
                        to: ByteBuf::from(peer.to_bytes()),
                    },
                );
                self.forget_guest(tid);
            }
            None => {
                self.stats.tasks_sent += 1;
                if let Some(t) = self.tasks.get_mut(&tid) {
                    t.state = TaskState::Remote;
                    self.remote.sent_to.insert(tid, peer);
                }
                if spec.kind == TaskKind::ActorCreate {
                    self.actor_sent(&spec, peer);
                }
            }
        }
    }

    /// A task chosen for another peer turned out unable to travel: it runs here.
    pub(super) fn keep_local_after_all(&mut self, tid: TaskId) {
        if let Some(t) = self.tasks.get_mut(&tid) {
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
                    self.ready.push_back(tid);
                }
            }
        }
    }

    /// A guest task was handed on: this node no longer waits for its results.
    pub(super) fn forget_guest(&mut self, tid: TaskId) {
        let Some(spec) = self.spec_of(&tid) else {
            return;
        };
        let returns: Vec<ObjectId> = spec.return_ids().collect();
        self.waits
            .retain(|_, w| !(matches!(w.target, Target::Peer { .. }) && w.ids == returns));
        for id in &returns {
            if self
                .objects
                .get(id)
                .is_some_and(|e| matches!(e.state, ObjState::Pending) && e.dependents.is_empty())
            {
                self.objects.remove(id);
            }
        }
        self.finish_task(tid);
    }

    /// A peer placed a task here.
    pub(super) fn receive_task(
        &mut self,
        from: PeerId,
        mut spec: TaskSpec,
        deps: Vec<WireValue>,
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
                self.remote.sent_to.remove(&spec.task);
                // A task of ours came back (placed again by a busier peer): it runs here.
                t.state = TaskState::Queued;
                t.stay_local = true;
                self.ready.push_back(spec.task);
                return self.schedule();
            }
            // Ours and already queued or running here again (it was re-placed
            // while this copy travelled): nothing more to do.
            return;
        }
        let returns: Vec<ObjectId> = spec.return_ids().collect();
        if spec.kind == TaskKind::Normal
            && !returns.is_empty()
            && returns.iter().all(|id| {
                self.objects
                    .get(id)
                    .is_some_and(|e| matches!(e.state, ObjState::Ready(_)))
            })
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
            if self
                .objects
                .get(id)
                .is_some_and(|e| matches!(e.state, ObjState::Ready(_)))
            {
                self.drop_copy(id);
            }
        }
        // The creator holds an actor's name; this node only runs it.
        if let Some(o) = spec.actor_options.as_mut() {
            o.name = None;
        }
        // Copies of the arguments, held by the task (so freed with it); values
        // are set once it holds them.
        let mut copies = Vec::new();
        for (dep, value) in spec.deps.iter().zip(deps) {
            if !self.objects.contains_key(dep) {
                let mut e = ObjectEntry::pending();
                e.had_handle = true;
                self.objects.insert(*dep, e);
                copies.push((*dep, value));
            }
        }
        for id in &returns {
            self.objects.entry(*id).or_insert_with(ObjectEntry::pending);
        }
        if !returns.is_empty() {
            let n = returns.len();
            self.begin_wait(
                returns.clone(),
                n,
                true,
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
                self.objects.remove(&id);
            }
            for id in returns {
                self.object_ready(id, Value::Error(ErrorInfo::new(ErrorKind::Task, e.clone())));
            }
            return;
        }
        // A received actor creation stays: its creator already told others where it runs.
        let hops = if spec.kind == TaskKind::ActorCreate {
            crate::placement::MAX_HOPS
        } else {
            hops
        };
        let guest = Guest {
            owner,
            hops,
            expect_queue,
        };
        self.accept(spec, Holder::Local, Some(guest));
        for (id, value) in copies {
            self.set_value(id, value);
        }
    }

    /// The link with `peer` broke and came back (`ours`: our stream to it;
    /// else it told us about its stream to us): messages in flight may be
    /// lost. Ask which tasks sent to it it has; the others run again.
    pub fn link_reset(&mut self, peer: PeerId, ours: bool) {
        // It may be a new incarnation of that peer: it has none of our functions.
        self.remote.fns_sent.remove(&peer);
        if ours {
            self.send_peer(peer, PeerMsg::LinkReset);
        }
        let tasks: Vec<TaskId> = self
            .remote
            .sent_to
            .iter()
            .filter(|(_, p)| **p == peer)
            .map(|(t, _)| *t)
            .collect();
        if !tasks.is_empty() {
            self.send_peer(peer, PeerMsg::Which { tasks });
        }
        self.functions_awaited_from(peer, false);
    }

    /// `peer` answered which of our tasks it has: the rest never arrived (or
    /// their results were lost): place them again.
    pub(super) fn replace_missing(&mut self, peer: PeerId, have: &[TaskId]) {
        let missing: Vec<TaskId> = self
            .remote
            .sent_to
            .iter()
            .filter(|(t, p)| **p == peer && !have.contains(t))
            .map(|(t, _)| *t)
            .collect();
        for tid in missing {
            let Some(t) = self.tasks.get(&tid) else {
                continue;
            };
            if t.state != TaskState::Remote || t.spec.kind == TaskKind::ActorMethod {
                continue;
            }
            self.remote.sent_to.remove(&tid);
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
        if self.remote.gone_at.contains_key(&to) {
            // Moved to a peer already gone: run it again.
            self.remote.sent_to.remove(&tid);
            self.stats.tasks_retried += 1;
            self.await_placement(tid);
            return self.schedule();
        }
        self.remote.sent_to.insert(tid, to);
    }

    /// Every few seconds: ask each peer which of the tasks sent to it it still
    /// has, so a task lost on the way (or with a peer that died unnoticed) runs again.
    pub fn audit_remote_tasks(&mut self, now: std::time::Instant) {
        if now < self.remote.next_audit || self.remote.sent_to.is_empty() {
            return;
        }
        self.remote.next_audit = now + AUDIT_PERIOD;
        let mut by_peer: rustc_hash::FxHashMap<PeerId, Vec<TaskId>> = Default::default();
        for (t, p) in &self.remote.sent_to {
            let list = by_peer.entry(*p).or_default();
            if list.len() < AUDIT_MAX {
                list.push(*t);
            }
        }
        for (peer, tasks) in by_peer {
            self.send_peer(peer, PeerMsg::Which { tasks });
        }
    }

    /// A peer's link broke: treat it as gone.
    pub fn peer_unreachable(&mut self, peer: PeerId) {
        self.peer_gone(peer, "its link broke");
    }
}
