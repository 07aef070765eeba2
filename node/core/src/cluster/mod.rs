//! This node as a member of a cluster: what it keeps about the other peers,
//! and what it does with each [`PeerMsg`].
//!
//! - `membership`: who this node is, the peers it knows (owner tags,
//!   incarnations, peers gone), the gossip view for `peer status`;
//! - `placement`: bid rounds over the `peer-placement` policy;
//! - `tasks`: tasks sent to peers and tasks run here as guests;
//! - `objects`: values crossing peers (results coming home, refs owned
//!   elsewhere fetched from their owner, where copies of large values are);
//! - `pulls`: large values pulled from the peers that hold them;
//! - `borrows`: refs lent to peers and borrowed from them (an object is
//!   freed once no peer holds a ref to it);
//! - `actors`: actors on other peers, named-actor lookups;
//! - `gather`: listings of every peer's state (`peer list`, the dashboard);
//! - `failure`: peers that die, and the lineage that rebuilds what they held.
//!
//! In laptop mode the node is no member: nothing here is touched on the task
//! path (`placement_active` is false), so the single-node fast path stays.

mod actors;
mod borrows;
mod failure;
mod gather;
mod membership;
mod objects;
pub(crate) mod placement;
pub(crate) mod pulls;
mod tasks;

use std::time::Instant;

use rand::rngs::SmallRng;
use rustc_hash::FxHashSet;

use crate::core::Core;
use crate::event::{NetworkView, PeerView};
use crate::ids::{ObjectId, OwnerTag, PeerId, TaskId};
use crate::resources::Resources;
use crate::wire::local::TaskKind;
use crate::wire::peer::PeerMsg;

pub(crate) use actors::LookupTarget;
use actors::RemoteActors;
use borrows::Borrows;
use failure::Lineages;
pub use gather::GATHER_TIMEOUT;
pub(crate) use gather::GatherTarget;
use membership::Membership;
pub(crate) use membership::best_address;
use placement::Placement;
use pulls::Pulls;
use tasks::RemoteTasks;

/// What a node keeps about the other peers.
#[derive(Debug)]
pub(crate) struct Cluster {
    membership: Membership,
    placement: Placement,
    tasks: RemoteTasks,
    pulls: Pulls,
    actors: RemoteActors,
    lineage: Lineages,
    borrows: Borrows,
    gathers: gather::Gathers,
    /// Numbers bid rounds and lookups.
    next_req: u64,
}

impl Cluster {
    pub(crate) fn new(me: Option<PeerId>, incarnation: u64, rng: &mut SmallRng) -> Self {
        Self {
            membership: Membership::new(me, incarnation),
            placement: Placement::new(rng),
            tasks: RemoteTasks::new(),
            pulls: Pulls::default(),
            actors: RemoteActors::default(),
            lineage: Lineages::default(),
            borrows: Borrows::default(),
            gathers: gather::Gathers::default(),
            next_req: 1,
        }
    }

    /// Whether this node is a member of a cluster (else it has no peers, ever).
    pub(crate) fn is_member(&self) -> bool {
        self.membership.me.is_some()
    }

    /// This node's peer id.
    pub(crate) fn me(&self) -> Option<PeerId> {
        self.membership.me
    }

    /// A fresh request number.
    pub(crate) fn next_req(&mut self) -> u64 {
        self.next_req += 1;
        self.next_req
    }

    /// The other peers as of the last gossip view, with ages as of `now`.
    pub(crate) fn peers(&self, now: Instant) -> Vec<PeerView> {
        self.membership.peers(now)
    }

    /// This node's reachability and relaying, as of the last view.
    pub(crate) fn network(&self) -> &NetworkView {
        self.membership.network()
    }

    /// Whether `peer` is reached only through a relay (as of the last view).
    pub(crate) fn is_relayed(&self, peer: &PeerId) -> bool {
        self.membership.is_relayed(peer)
    }

    /// Where this node listens and its cluster key's fingerprint, once joined.
    pub(crate) fn joined_info(&self) -> Option<(&[String], &str)> {
        self.membership.joined_info()
    }

    /// Tasks waiting for placement (queued for a round or in one).
    pub(crate) fn placing(&self) -> usize {
        self.placement.placing()
    }

    /// Whether a peer may hold a ref to `id` lent from here.
    pub(crate) fn is_lent(&self, id: &ObjectId) -> bool {
        self.borrows.is_lent(id)
    }

    /// Whether this node borrowed `id` from a peer.
    pub(crate) fn is_borrowed(&self, id: &ObjectId) -> bool {
        self.borrows.is_borrowed(id)
    }

    /// Objects lent to peers and objects borrowed from them.
    pub(crate) fn borrow_counts(&self) -> (usize, usize) {
        (self.borrows.lent_count(), self.borrows.borrowed_count())
    }

    /// The objects lent to peers, with the peers each is lent to.
    pub(crate) fn lent(&self) -> impl Iterator<Item = (&ObjectId, Vec<PeerId>)> {
        self.borrows
            .lent()
            .map(|(id, b)| (id, b.iter().map(|(p, _)| *p).collect()))
    }

    /// The task specs kept to rebuild objects from.
    pub(crate) fn lineage_specs(&self) -> impl Iterator<Item = &crate::wire::local::TaskSpec> {
        self.lineage.specs()
    }
}

#[cfg(test)]
impl Cluster {
    /// Whether `peer` is remembered as gone.
    pub(crate) fn is_gone(&self, peer: &PeerId) -> bool {
        self.membership.is_gone(peer)
    }

    /// Peers remembered as gone.
    pub(crate) fn gone_count(&self) -> usize {
        self.membership.gone_count()
    }

    /// Pretend a task was sent to `peer`.
    pub(crate) fn note_sent(&mut self, tid: TaskId, peer: PeerId) {
        self.tasks.note_sent(tid, peer);
    }

    /// Tasks in the bid round in flight.
    pub(crate) fn round_size(&self) -> Option<usize> {
        self.placement.round_size()
    }

    /// Learn of a peer (its owner tag names it), as the gossip view would teach it.
    pub(crate) fn learn_peer(&mut self, peer: PeerId) {
        self.membership.seen(peer);
    }

    /// Whether tasks wait here for functions from peers.
    pub(crate) fn awaits_functions(&self) -> bool {
        !self.tasks.awaiting_fn_tasks().is_empty()
    }
}

impl Core {
    /// Whether ids with this owner tag belong to another node of the cluster.
    pub(crate) fn is_foreign(&self, owner: OwnerTag) -> bool {
        self.cluster.is_member() && owner != self.owner_tag
    }

    /// The peer behind an owner tag, if it is known.
    pub(crate) fn peer_of(&self, owner: OwnerTag) -> Option<PeerId> {
        self.cluster.membership.peer_of(owner)
    }

    /// One message from a peer.
    pub(crate) fn handle_peer(&mut self, from: PeerId, msg: PeerMsg) {
        self.cluster.membership.heard_from(from);
        match msg {
            PeerMsg::BidRequest { round, demand, .. } => {
                let demand = Resources::from_pairs(
                    demand
                        .iter()
                        .filter(|(_, v)| v.is_finite() && *v >= 0.0)
                        .map(|(k, v)| (k.as_str(), *v)),
                );
                let load = self.bid_load(&demand);
                self.send_peer(from, PeerMsg::Bid { round, load });
            }
            PeerMsg::Bid { round, load } => self.on_bid(from, round, load),
            PeerMsg::Function { id, blob } => {
                self.tasks.register_function(id, blob);
                for (from, msg) in self.cluster.tasks.take_awaiting_fn(&id) {
                    self.on_task(from, msg, true);
                }
            }
            PeerMsg::NeedFunction { id } => {
                if let Some(blob) = self.tasks.function(&id).map(|b| (**b).clone()) {
                    self.send_peer(from, PeerMsg::Function { id, blob });
                    self.cluster.membership.sent_function(from, id);
                }
            }
            msg @ PeerMsg::Task { .. } => self.on_task(from, msg, false),
            PeerMsg::Objects {
                values,
                contains,
                lend,
            } => self.receive_objects(from, values, contains, lend),
            PeerMsg::Fetch { id, failed } => {
                let failed: Vec<PeerId> = failed
                    .iter()
                    .filter_map(|p| PeerId::from_bytes(p).ok())
                    .collect();
                self.serve_fetch(from, id, &failed)
            }
            PeerMsg::LocateActor { actor } => self.locate_actor(from, actor),
            PeerMsg::ActorAt { actor, host, error } => self.actor_located(actor, host, error),
            PeerMsg::LookupName { req, name } => {
                let (handle, lent) = match self.named_actor_handle(&name) {
                    Some((handle, aid)) => (Some(handle), vec![ObjectId::for_actor(aid)]),
                    None => (None, Vec::new()),
                };
                let lend = self.lend(from, &lent);
                self.send_peer(
                    from,
                    PeerMsg::NameFound {
                        req,
                        handle,
                        lent,
                        lend,
                    },
                );
            }
            PeerMsg::NameFound {
                req,
                handle,
                lent,
                lend,
            } => {
                let taken = self.take_lends(from, lend, &lent);
                let actor = lent.first().and_then(ObjectId::actor);
                self.name_found(req, handle.zip(actor));
                self.settle_borrows(&taken);
            }
            PeerMsg::KillActor { actor, no_restart } => self.kill_actor(actor, no_restart),
            PeerMsg::Cancel {
                task,
                force,
                recursive,
            } => self.cancel(ObjectId::for_return(task, 1), force, recursive),
            PeerMsg::LinkReset => self.link_reset(from, false),
            PeerMsg::Moved { task, to } => match PeerId::from_bytes(&to) {
                Ok(to) => self.task_moved(task, to),
                Err(_) => self.stats.bad_frames += 1,
            },
            PeerMsg::Which { tasks } => {
                let parked = self.cluster.tasks.awaiting_fn_tasks();
                let tasks = tasks
                    .into_iter()
                    .filter(|t| {
                        parked.contains(t) || self.tasks.get(t).is_some_and(|t| t.guest.is_some())
                    })
                    .collect();
                self.send_peer(from, PeerMsg::Have { tasks });
            }
            PeerMsg::Have { tasks } => self.replace_missing(from, &tasks),
            PeerMsg::Located { id } => self.copy_located(id, from),
            PeerMsg::Free { ids } => self.owner_freed(&ids),
            PeerMsg::Release { ids, seen } => self.refs_released(from, &ids, seen),
            PeerMsg::AskBorrows { ids, upto } => self.borrows_asked(from, &ids, upto),
            PeerMsg::Borrowing { ids } => self.borrowing(from, &ids),
            PeerMsg::CopiesKept { ids } => self.copies_kept(from, ids),
            PeerMsg::ActorOutOfScope { actor } => self.actor_out_of_scope(actor),
            PeerMsg::Output { task, stream, data } => self.forward_output(task, stream, data),
            PeerMsg::StateQuery { req, what } => self.state_asked(from, req, what),
            PeerMsg::StateReply { req, json } => self.state_answered(from, req, &json),
        }
    }

    /// A task a peer placed here: held while its function or an earlier copy
    /// of its result is on the way, else taken in. `parked`: it was held
    /// here before (its refs were counted as parked).
    fn on_task(&mut self, from: PeerId, msg: PeerMsg, parked: bool) {
        let PeerMsg::Task { spec, .. } = &msg else {
            return;
        };
        // Unparked without settling: the task takes its refs over below.
        let unparked = if parked {
            self.unpark_lends(&msg)
        } else {
            Vec::new()
        };
        if spec.kind != TaskKind::ActorMethod && !self.tasks.has_function(&spec.fn_id) {
            // Asked once of the task's owner (which registered it; the sender
            // may be a peer that only passed the task on, and may die); the
            // tasks wait for it.
            let id = spec.fn_id;
            let ask = task_owner(&msg).unwrap_or(from);
            self.park_lends(&msg);
            match self.cluster.tasks.await_function(id, from, msg) {
                tasks::Awaiting::First => self.send_peer(ask, PeerMsg::NeedFunction { id }),
                tasks::Awaiting::Queued => {}
                tasks::Awaiting::TooMany(msg) => {
                    let ids = self.unpark_lends(&msg);
                    self.settle_borrows(&ids);
                    // Its owner's audit places it again (`Which` does not list it).
                    tracing::warn!(%from, "too many functions awaited from peers; a task waiting for one is dropped");
                }
            }
            return;
        }
        let pulled = spec.return_ids().find(|r| self.cluster.is_pulling(r));
        if let Some(r) = pulled {
            // An earlier copy of its result is being pulled here: run it, or
            // answer with that copy, once the pull ends.
            self.park_lends(&msg);
            self.cluster.pulls.run_after_pull(r, from, msg);
            self.settle_borrows(&unparked);
            return;
        }
        if let PeerMsg::Task {
            spec,
            deps,
            deps_contain,
            owner,
            hops,
            expect_queue,
            lend,
        } = msg
        {
            let lent = borrows::task_lends(&spec, &deps_contain);
            let args = tasks::Arrival {
                deps,
                deps_contain,
                lend,
                lent: &lent,
            };
            self.receive_task(from, *spec, args, &owner, (hops, expect_queue));
        }
        self.settle_borrows(&unparked);
    }

    /// The node joined its cluster: what `peer status` says about it.
    pub(crate) fn joined(&mut self, listen: Vec<String>, key_fingerprint: String) {
        self.cluster.membership.joined(listen, key_fingerprint);
    }

    /// The gossip view, refreshed: placement learns the peers' loads, and
    /// deadlines are checked (the view comes a few times a second).
    pub(crate) fn view_refreshed(
        &mut self,
        listen: Vec<String>,
        peers: Vec<PeerView>,
        network: NetworkView,
    ) {
        let loads: Vec<(PeerId, crate::event::PeerLoad)> = peers
            .iter()
            .filter_map(|p| p.load.clone().map(|l| (p.peer, l)))
            .collect();
        self.cluster
            .membership
            .remember_view(listen, peers, network, self.now);
        self.update_view(loads);
        self.cluster_deadlines();
    }

    /// Time passed: late bid rounds are decided, lookups given up on, failed
    /// pulls asked again, and tasks sent to peers checked on.
    pub(crate) fn cluster_deadlines(&mut self) {
        if !self.cluster.is_member() {
            return;
        }
        let now = self.now;
        self.expire_placement(now);
        self.expire_lookups(now);
        self.expire_gathers(now);
        self.ask_borrowers_due(now);
        self.refetch_due(now);
        self.audit_remote_tasks(now);
    }
}

/// The owner a task message names (where its results and function come from).
pub(crate) fn task_owner(msg: &PeerMsg) -> Option<PeerId> {
    match msg {
        PeerMsg::Task { owner, .. } => PeerId::from_bytes(owner).ok(),
        _ => None,
    }
}

/// Task ids of `PeerMsg::Task` messages.
pub(crate) fn task_ids<'a>(msgs: impl Iterator<Item = &'a PeerMsg>) -> FxHashSet<TaskId> {
    msgs.filter_map(|m| match m {
        PeerMsg::Task { spec, .. } => Some(spec.task),
        _ => None,
    })
    .collect()
}
