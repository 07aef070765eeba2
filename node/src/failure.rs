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
//!   `ObjectLostError`. Refs owned by the dead peer that have no value here
//!   become `OwnerDiedError`.

use std::sync::Arc;

use peer_gossip::PeerId;

use crate::ids::{ObjectId, OwnerTag, TaskId};
use crate::peer_msg::PeerMsg;
use crate::protocol::{ErrorInfo, ErrorKind, TaskKind, TaskSpec, Value};
use crate::state::{ActorState, Holder, ObjState, State, Target, TaskState};

/// Most lineage entries an owner keeps (past it, new results are not rebuildable).
const MAX_LINEAGE: usize = 100_000;
/// How long a gone peer is remembered as gone (tasks moved to it run again).
const GONE_MEMORY: std::time::Duration = std::time::Duration::from_secs(60);

/// What rebuilds an object owned here: the task that made it.
pub struct Lineage {
    pub spec: Arc<TaskSpec>,
    /// Rebuilds left (the task's `max_retries`; -1: no limit).
    pub retries_left: i32,
}

impl State {
    /// Another peer is gone (dead, or unreachable): recover what depended on it.
    pub fn peer_gone(&mut self, peer: PeerId, why: &str) {
        if Some(peer) == self.remote.me {
            return;
        }
        tracing::info!(%peer, "peer gone ({why}): recovering the work and objects it had");
        let now = std::time::Instant::now();
        self.remote
            .gone_at
            .retain(|_, at| now.duration_since(*at) < GONE_MEMORY);
        self.remote.gone_at.insert(peer, now);
        self.remote.view.remove(peer);
        self.remote.fns_sent.remove(&peer);
        if let Some(r) = self.remote.round.as_mut() {
            r.asked.retain(|p| *p != peer);
            if r.bids.len() >= r.asked.len() {
                self.finish_round();
            }
        }
        self.waits
            .retain(|_, w| !matches!(w.target, Target::Peer { peer: p, .. } if p == peer));
        self.functions_awaited_from(peer, true);
        self.replace_tasks_sent_to(peer, why);
        self.recover_actors_on(peer, why);
        self.forget_copies_on(peer, why);
        self.schedule();
    }

    /// A stream with `peer` opened and it said which run of it this is: if an
    /// earlier run was known, that one is gone (it restarted), with all it had.
    pub fn peer_incarnation(&mut self, peer: PeerId, incarnation: u64) {
        let before = self.remote.incarnations.insert(peer, incarnation);
        if before.is_some_and(|b| b != incarnation) {
            self.peer_gone(peer, "it restarted");
            // The new run is not gone: work may be moved to it at once.
            self.remote.gone_at.remove(&peer);
        }
    }

    /// Tasks sent to `peer` run elsewhere (while retries allow); calls of its actors fail.
    fn replace_tasks_sent_to(&mut self, peer: PeerId, why: &str) {
        let sent: Vec<TaskId> = self
            .tasks
            .iter()
            .filter(|(id, t)| {
                t.state == TaskState::Remote && self.remote.sent_to.get(id) == Some(&peer)
            })
            .map(|(id, _)| *id)
            .collect();
        for tid in sent {
            self.remote.sent_to.remove(&tid);
            let Some(t) = self.tasks.get_mut(&tid) else {
                continue;
            };
            let name = t.spec.name.clone();
            if t.spec.kind == TaskKind::ActorMethod {
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

    /// Actors that ran on `peer`: restart them (when created here and allowed) or mark them dead.
    fn recover_actors_on(&mut self, peer: PeerId, why: &str) {
        let hosted: Vec<_> = self
            .remote
            .proxies
            .iter()
            .filter(|(_, p)| p.host == Some(peer))
            .map(|(a, _)| *a)
            .collect();
        for aid in hosted {
            let created_here = self.actors.contains_key(&aid);
            let restarts_left = self.actors.get(&aid).map_or(0, |a| a.restarts_left);
            let Some(proxy) = self.remote.proxies.get_mut(&aid) else {
                continue;
            };
            proxy.host = None;
            if !created_here {
                // Its creator knows whether (and where) it comes back.
                match self.remote.tags.get(&aid.owner()).copied() {
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
                if let Some(p) = self.remote.proxies.remove(&aid)
                    && let Some(a) = self.actors.get_mut(&aid)
                {
                    a.queue.extend(p.queue);
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
                if let Some(p) = self.remote.proxies.get_mut(&aid) {
                    p.dead = Some(err);
                }
                self.pump_proxy(aid);
            }
        }
    }

    /// Copies on `peer` are gone: objects left with none are rebuilt or fail;
    /// refs it owned with no value here fail with `OwnerDiedError`.
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
            if id.owner() == dead_owner && matches!(e.state, ObjState::Pending) {
                orphaned.push(*id);
            }
        }
        for id in orphaned {
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
            if self.objects.get(&id).is_some_and(|e| e.is_elsewhere()) {
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
        if self.pulls.contains_key(&id) {
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
        if self.tasks.contains_key(&tid) {
            // Its task is queued or running again (re-placed): it makes a new copy.
            if let Some(e) = self.objects.get_mut(&id) {
                e.elsewhere = None;
            }
            return;
        }
        let rebuild = match self.remote.lineage.get_mut(&tid) {
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
                    self.remote.lineage.get(&tid).map(|l| {
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

    /// Give an object that has no value here an error value.
    fn set_error(&mut self, id: ObjectId, err: ErrorInfo) {
        if let Some(e) = self.objects.get_mut(&id) {
            e.elsewhere = None;
            e.unfetched = false;
        }
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
    pub(crate) fn keep_lineage(&mut self, tid: TaskId) -> bool {
        if self.remote.lineage.len() >= MAX_LINEAGE {
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
        self.remote
            .lineage
            .insert(tid, Lineage { spec, retries_left });
        true
    }

    /// An object was freed: drop its task's lineage (and the inputs it held)
    /// once none of the task's results is left.
    pub(crate) fn release_lineage(&mut self, id: &ObjectId) {
        let tid = id.task();
        let Some(l) = self.remote.lineage.get(&tid) else {
            return;
        };
        if self.tasks.contains_key(&tid)
            || l.spec.return_ids().any(|r| self.objects.contains_key(&r))
        {
            return;
        }
        if let Some(l) = self.remote.lineage.remove(&tid) {
            self.release_task_inputs(&l.spec);
        }
    }
}
