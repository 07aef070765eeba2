//! Peers that fail: what a node does when another peer is gone (its link
//! broke, or the gossip view dropped it), and the lineage that lets an owner
//! rebuild objects whose every copy was lost.
//!
//! - Tasks sent to the dead peer are placed again while `max_retries` allows
//!   (else they fail saying which peer died); actor calls in flight there fail
//!   with `ActorDiedError` (Ray's semantics).
//! - Actors it hosted restart elsewhere when their creator is here and
//!   `max_restarts` allows (the constructor runs again; queued calls follow),
//!   else every later call fails; nodes that only called the actor ask its
//!   creator where it runs now.
//! - Copies it held are forgotten. An object owned here with no copy left is
//!   rebuilt from its lineage (the spec of the task that made it, kept while
//!   the object lives; its inputs stay held for that), recursively, up to the
//!   task's `max_retries`; without lineage or retries it becomes
//!   `ObjectLostError`. Refs owned by the dead peer become `OwnerDiedError`,
//!   and values of its objects kept here go (as Ray frees a dead owner's objects).

use std::sync::Arc;

use rustc_hash::FxHashMap;

use crate::core::Core;
use crate::ids::{ObjectId, OwnerTag, PeerId, TaskId};
use crate::local::actors::ActorState;
use crate::local::objects::{Holder, ObjState};
use crate::local::waits::Target;
use crate::wire::local::{ErrorInfo, ErrorKind, TaskKind, TaskSpec, Value};
use crate::wire::peer::PeerMsg;

/// Most lineage entries an owner keeps (past it, new results are not rebuildable).
const MAX_LINEAGE: usize = 100_000;

/// What rebuilds an object owned here: the task that made it.
#[derive(Debug)]
struct Lineage {
    spec: Arc<TaskSpec>,
    /// Rebuilds left (the task's `max_retries`; -1: no limit).
    retries_left: i32,
}

/// How to rebuild objects owned here whose copies are on other peers.
#[derive(Debug, Default)]
pub(super) struct Lineages {
    by_task: FxHashMap<TaskId, Lineage>,
}

impl Lineages {
    pub(super) fn specs(&self) -> impl Iterator<Item = &TaskSpec> {
        self.by_task.values().map(|l| &*l.spec)
    }
}

impl Core {
    /// Another peer is gone (dead, or unreachable): recover what depended on it.
    pub(crate) fn peer_gone(&mut self, peer: PeerId, why: &str) {
        if Some(peer) == self.cluster.me() {
            return;
        }
        tracing::info!(%peer, "peer gone ({why}): recovering the work and objects it had");
        let now = self.now;
        self.cluster.membership.gone(peer, now);
        self.placement_forget(peer);
        self.gathers_forget(peer);
        let unwanted = self
            .waits
            .forget(|w| matches!(w.target, Target::Peer { peer: p, .. } if p == peer));
        // Results made here for it have nobody to go to: they go once made.
        for id in unwanted {
            if let Some(e) = self.objects.get_mut(&id) {
                e.had_handle = true;
            }
            self.maybe_free(&id);
        }
        self.functions_awaited_from(peer, true);
        self.replace_tasks_sent_to(peer, why);
        self.recover_actors_on(peer, why);
        self.forget_copies_on(peer, why);
        self.borrows_peer_gone(peer);
        // Copies kept for it: it forgot them (or is dead), so nobody frees them.
        for id in self.objects.copies_kept_for(OwnerTag::of_peer(&peer)) {
            self.drop_copy(&id);
        }
        self.schedule();
    }

    /// A stream with `peer` opened and it said which run of it this is: if an
    /// earlier run was known, that one is gone (it restarted), with all it had.
    pub(crate) fn peer_incarnation(&mut self, peer: PeerId, incarnation: u64) {
        let before = self.cluster.membership.incarnation_of(peer, incarnation);
        if before.is_some_and(|b| b != incarnation) {
            self.peer_gone(peer, "it restarted");
            // The new run is not gone: work may be moved to it at once.
            self.cluster.membership.back(peer);
        }
    }

    /// This node's incarnation (sent first on every stream).
    pub fn incarnation(&self) -> u64 {
        self.cluster.membership.incarnation
    }

    /// Actors that ran on `peer`: restart them (when created here and allowed) or mark them dead.
    fn recover_actors_on(&mut self, peer: PeerId, why: &str) {
        for aid in self.cluster.actors.hosted_on(peer) {
            let created_here = self.actors.contains(&aid);
            let restarts_left = self.actors.get(&aid).map_or(0, |a| a.restarts_left);
            let creator = self.peer_of(aid.owner());
            let Some(proxy) = self.cluster.actors.proxy_mut(&aid) else {
                continue;
            };
            proxy.host = None;
            if !created_here {
                // Its creator knows whether (and where) it comes back.
                match creator {
                    Some(creator) if creator != peer => {
                        self.send_peer(creator, PeerMsg::LocateActor { actor: aid })
                    }
                    _ => {
                        proxy.dead = Some(ErrorInfo::new(
                            ErrorKind::ActorDied,
                            format!(
                                "the actor's peer {peer} is gone ({why}), and so is its creator"
                            ),
                        ));
                    }
                }
                self.pump_proxy(aid);
                continue;
            }
            let Some(a) = self.actors.get_mut(&aid) else {
                continue;
            };
            let class = a.creation.actor_name().to_string();
            if restarts_left != 0 {
                if a.restarts_left > 0 {
                    a.restarts_left -= 1;
                }
                a.state = ActorState::Pending;
                let creation = Arc::clone(&a.creation);
                self.stats.actors_restarted += 1;
                tracing::info!("restarting actor {class} (its peer {peer} is gone)");
                if let Some(queue) = self.cluster.actors.take_proxy(&aid)
                    && let Some(a) = self.actors.get_mut(&aid)
                {
                    a.queue.extend(queue);
                }
                self.resubmit(&creation);
            } else {
                let err = ErrorInfo::new(
                    ErrorKind::ActorDied,
                    format!(
                        "the actor {class} ran on peer {peer}, which is gone ({why}); it has no \
                         restarts left (max_restarts)"
                    ),
                );
                a.state = ActorState::Dead(err.clone());
                if let Some(p) = self.cluster.actors.proxy_mut(&aid) {
                    p.dead = Some(err);
                }
                self.pump_proxy(aid);
            }
        }
    }

    /// Copies on `peer` are gone: objects left with none are rebuilt or fail;
    /// refs it owned fail with `OwnerDiedError`.
    fn forget_copies_on(&mut self, peer: PeerId, why: &str) {
        let dead_owner = OwnerTag::of_peer(&peer);
        let mut lost = Vec::new();
        let mut orphaned = Vec::new();
        for (id, e) in self.objects.iter_mut() {
            if let Some(ew) = e.elsewhere.as_mut() {
                ew.copies.retain(|p| *p != peer);
                ew.partial.retain(|p| *p != peer);
                // Peers still pulling cannot finish without a complete copy.
                if matches!(e.state, ObjState::Pending) && ew.copies.is_empty() {
                    lost.push(*id);
                }
            }
            // Its refs fail, with a value here or not (Ray frees an owner's
            // objects when it dies), but for errors they hold already.
            if id.owner() == dead_owner && !matches!(e.state, ObjState::Ready(Value::Error(_))) {
                orphaned.push(*id);
            }
        }
        for id in orphaned {
            self.drop_value(&id);
            let err = ErrorInfo::new(
                ErrorKind::OwnerDied,
                format!(
                    "object {id} was owned by peer {peer}, which is gone ({why}); its value and \
                     lineage went with it"
                ),
            );
            self.set_error(id, err);
        }
        for id in lost {
            if self.objects.is_elsewhere(&id) {
                self.object_lost(
                    id,
                    &format!("its copies were on peer {peer}, which is gone ({why})"),
                );
            }
        }
    }

    /// An object with no reachable copy left: rebuild it from lineage, ask
    /// its owner again, or fail it.
    pub(crate) fn object_lost(&mut self, id: ObjectId, how: &str) {
        if self.cluster.is_pulling(&id) {
            return;
        }
        if self.is_foreign(id.owner()) {
            // Its owner may know other copies, or rebuild it.
            if let Some(e) = self.objects.get_mut(&id) {
                e.elsewhere = None;
                e.unfetched = true;
            }
            return self.fetch_foreign(id);
        }
        let tid = id.task();
        if self.tasks.contains(&tid) {
            // Its task is queued or running again (re-placed): it makes a new copy.
            if let Some(e) = self.objects.get_mut(&id) {
                e.elsewhere = None;
            }
            return;
        }
        let rebuild = match self.cluster.lineage.by_task.get_mut(&tid) {
            Some(l) if l.retries_left != 0 => {
                if l.retries_left > 0 {
                    l.retries_left -= 1;
                }
                Some(Arc::clone(&l.spec))
            }
            _ => None,
        };
        match rebuild {
            Some(spec) => {
                self.stats.objects_rebuilt += 1;
                tracing::info!(
                    "rebuilding object {id} by running {} again: {how}",
                    spec.name
                );
                self.resubmit(&spec);
            }
            None => {
                let retries =
                    self.cluster.lineage.by_task.get(&tid).map(|l| {
                        format!("its task {} has no retries left (max_retries)", l.spec.name)
                    });
                let err = ErrorInfo::new(
                    ErrorKind::ObjectLost,
                    format!(
                        "object {id} is lost: {how}; {}",
                        retries.unwrap_or_else(|| "this node kept no lineage to rebuild it".into())
                    ),
                );
                self.set_error(id, err);
            }
        }
    }

    /// Forget the value of `id` here (its store entry or spill file goes).
    fn drop_value(&mut self, id: &ObjectId) {
        let Some(e) = self.objects.get_mut(id) else {
            return;
        };
        let ObjState::Ready(value) = &e.state else {
            return;
        };
        let stored = matches!(value, Value::Stored { .. });
        e.state = ObjState::Pending;
        e.cached = false;
        e.held_for_owner = false;
        if stored {
            if let Some((path, _)) = self.objects.unspill(id) {
                self.emit(crate::command::Command::DeleteSpillFile { path });
            } else if let Err(err) = self.store.delete(id) {
                tracing::warn!("dropping the value of object {id}: {err}");
            }
        }
    }

    /// Give an object that has no value here an error value.
    fn set_error(&mut self, id: ObjectId, err: ErrorInfo) {
        // An entry freed meanwhile (say, a value that held the only ref to it
        // went) stays freed: nothing here wants it.
        let Some(e) = self.objects.get_mut(&id) else {
            return;
        };
        e.elsewhere = None;
        e.unfetched = false;
        self.object_ready(id, Value::Error(err));
    }

    /// Run a finished task again (to rebuild its lost results or restart its
    /// actor): its returns go back to waiting, its lost inputs are rebuilt first.
    fn resubmit(&mut self, spec: &Arc<TaskSpec>) {
        for dep in &spec.deps {
            let lost = self.objects.get(dep).is_some_and(|e| {
                e.is_elsewhere() && e.elsewhere.as_ref().is_some_and(|ew| ew.copies.is_empty())
            });
            if lost {
                self.object_lost(*dep, "it is an input of an object being rebuilt");
            }
        }
        for id in spec.return_ids() {
            if let Some(e) = self.objects.get_mut(&id) {
                e.state = ObjState::Pending;
                e.elsewhere = None;
            }
        }
        self.accept((**spec).clone(), Holder::Local, None);
    }

    /// A task sent away finished and some of its results stay on other peers:
    /// keep its spec (and its inputs) to rebuild them if those peers die.
    /// False when it is not kept, or kept already (a rebuild ran it again:
    /// the first record keeps the inputs and counts the retries).
    pub(crate) fn keep_lineage(&mut self, tid: TaskId) -> bool {
        if self.cluster.lineage.by_task.len() >= MAX_LINEAGE
            || self.cluster.lineage.by_task.contains_key(&tid)
        {
            return false;
        }
        let Some(t) = self.tasks.get(&tid) else {
            return false;
        };
        if t.spec.kind != TaskKind::Normal {
            return false;
        }
        let spec = Arc::clone(&t.spec);
        let retries_left = t.spec.max_retries;
        self.cluster
            .lineage
            .by_task
            .insert(tid, Lineage { spec, retries_left });
        true
    }

    /// An object was freed: drop its task's lineage (and the inputs it held)
    /// once none of the task's results is left.
    pub(crate) fn release_lineage(&mut self, id: &ObjectId) {
        let tid = id.task();
        let Some(l) = self.cluster.lineage.by_task.get(&tid) else {
            return;
        };
        if self.tasks.contains(&tid) || l.spec.return_ids().any(|r| self.objects.contains(&r)) {
            return;
        }
        if let Some(l) = self.cluster.lineage.by_task.remove(&tid) {
            self.release_task_inputs(&l.spec);
        }
    }
}
