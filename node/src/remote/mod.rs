//! Work and values crossing peers: what a node does with each [`PeerMsg`],
//! and the sending side of the same conversations.
//!
//! - **Tasks** (`tasks`). `State::send_task` ships a runnable task with its
//!   arguments' values to the peer placement chose; the receiver runs it as a
//!   guest and sends the results to the task's owner (the node it was
//!   submitted to), which made the refs and keeps waiting on them.
//! - **Objects** (`objects`). A ref owned by another peer is resolved by asking its owner
//!   ([`PeerMsg::Fetch`]); the owner answers once the object has a value.
//!   Values travel inside messages up to `IN_MESSAGE_MAX`; a larger one
//!   travels as the list of peers that hold it and is pulled (`pull`).
//! - **Actors** (`actors`). An actor is placed once; calls made on any other
//!   node go to an `ActorProxy` that learns the host from the actor's creator and
//!   forwards the calls in submission order. Names are held by the creator
//!   and found by asking the peers.

mod actors;
mod objects;
mod tasks;

use std::io::Write;
use std::sync::Arc;

use peer_gossip::PeerId;

use crate::ids::{ObjectId, OwnerTag, TaskId};
use crate::peer_msg::PeerMsg;
use crate::resources::Resources;
use crate::state::State;

/// Print output that a task on another peer produced for this process's driver.
pub fn print_output(stream: u8, data: &[u8]) {
    let _ = if stream == 2 {
        std::io::stderr().write_all(data)
    } else {
        std::io::stdout().write_all(data)
    };
}

/// Tasks held at most per missing function.
const MAX_AWAITING_FN: usize = 100_000;
/// Missing functions waited for at once (a function normally arrives just
/// before its first task, so only a peer that never sends them fills this).
const MAX_AWAITED_FNS: usize = 256;

impl State {
    /// Queue a message for a peer (dropped in laptop mode, where there are none).
    pub fn send_peer(&self, peer: PeerId, msg: PeerMsg) {
        if let Some(out) = &self.remote.out
            && out.send((peer, msg)).is_err()
        {
            tracing::debug!(%peer, "peer links are stopped; message dropped");
        }
    }

    /// Whether ids with this owner tag belong to another node of the cluster.
    pub fn is_foreign(&self, owner: OwnerTag) -> bool {
        self.remote.out.is_some() && owner != self.owner_tag
    }

    /// The peer behind an owner tag, if it is known.
    fn peer_of(&self, owner: OwnerTag) -> Option<PeerId> {
        self.remote.tags.get(&owner).copied()
    }

    /// One message from a peer.
    pub fn handle_peer(&mut self, from: PeerId, msg: PeerMsg) {
        self.remote
            .tags
            .entry(OwnerTag::of_peer(&from))
            .or_insert(from);
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
                self.functions.entry(id).or_insert_with(|| Arc::new(blob));
                for (from, msg) in self.remote.awaiting_fn.remove(&id).unwrap_or_default() {
                    self.handle_peer(from, msg);
                }
            }
            PeerMsg::NeedFunction { id } => {
                if let Some(blob) = self.functions.get(&id).map(|b| (**b).clone()) {
                    self.send_peer(from, PeerMsg::Function { id, blob });
                    self.remote.fns_sent.entry(from).or_default().insert(id);
                }
            }
            msg @ PeerMsg::Task { .. } => self.on_task(from, msg),
            PeerMsg::Objects { values } => self.receive_objects(values),
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
                let handle = self.named_actor_handle(&name);
                self.send_peer(from, PeerMsg::NameFound { req, handle });
            }
            PeerMsg::NameFound { req, handle } => self.name_found(req, handle),
            PeerMsg::KillActor { actor, no_restart } => self.kill_actor(actor, no_restart),
            PeerMsg::Cancel { task, force } => self.cancel(ObjectId::for_return(task, 1), force),
            PeerMsg::LinkReset => self.link_reset(from, false),
            PeerMsg::Moved { task, to } => match PeerId::from_bytes(&to) {
                Ok(to) => self.task_moved(task, to),
                Err(_) => self.stats.bad_frames += 1,
            },
            PeerMsg::Which { tasks } => {
                let parked: rustc_hash::FxHashSet<TaskId> = self
                    .remote
                    .awaiting_fn
                    .values()
                    .flatten()
                    .filter_map(|(_, m)| match m {
                        PeerMsg::Task { spec, .. } => Some(spec.task),
                        _ => None,
                    })
                    .collect();
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
            PeerMsg::Output { task, stream, data } => self.forward_output(task, stream, data),
        }
    }

    /// Tasks waiting here for a function from `peer`, which is gone (`gone`:
    /// they are dropped; their results have nowhere to go) or whose link was
    /// reset (the question may be lost: ask again).
    pub(crate) fn functions_awaited_from(&mut self, peer: PeerId, gone: bool) {
        let mut ask = Vec::new();
        for (id, waiting) in self.remote.awaiting_fn.iter_mut() {
            let before = waiting.len();
            if gone {
                waiting.retain(|(_, m)| task_owner(m) != Some(peer));
                if waiting.len() < before
                    && let Some(next) = waiting.first().and_then(|(_, m)| task_owner(m))
                {
                    ask.push((next, *id));
                }
            } else if waiting.iter().any(|(_, m)| task_owner(m) == Some(peer)) {
                ask.push((peer, *id));
            }
        }
        self.remote.awaiting_fn.retain(|_, w| !w.is_empty());
        for (peer, id) in ask {
            self.send_peer(peer, PeerMsg::NeedFunction { id });
        }
    }

    /// A task a peer placed here: held while its function or an earlier copy
    /// of its result is on the way, else taken in.
    fn on_task(&mut self, from: PeerId, msg: PeerMsg) {
        let PeerMsg::Task { spec, .. } = &msg else {
            return;
        };
        if spec.kind != crate::protocol::TaskKind::ActorMethod
            && !self.functions.contains_key(&spec.fn_id)
        {
            // Asked once of the task's owner (which registered it; the sender
            // may be a peer that only passed the task on, and may die); the
            // tasks wait for it.
            let id = spec.fn_id;
            let ask = task_owner(&msg).unwrap_or(from);
            if !self.remote.awaiting_fn.contains_key(&id)
                && self.remote.awaiting_fn.len() >= MAX_AWAITED_FNS
            {
                // Its owner's audit places it again (`Which` does not list it).
                tracing::warn!(%from, "too many functions awaited from peers; a task waiting for one is dropped");
                return;
            }
            let waiting = self.remote.awaiting_fn.entry(id).or_default();
            if waiting.is_empty() {
                self.send_peer(ask, PeerMsg::NeedFunction { id });
            }
            if let Some(w) = self.remote.awaiting_fn.get_mut(&id)
                && w.len() < MAX_AWAITING_FN
            {
                w.push((from, msg));
            }
            return;
        }
        let pulled = spec.return_ids().find(|r| self.pulls.contains_key(r));
        if let Some(r) = pulled {
            // An earlier copy of its result is being pulled here: run it, or
            // answer with that copy, once the pull ends.
            self.remote
                .after_pull
                .entry(r)
                .or_default()
                .push((from, msg));
            return;
        }
        if let PeerMsg::Task {
            spec,
            deps,
            owner,
            hops,
            expect_queue,
        } = msg
        {
            self.receive_task(from, *spec, deps, &owner, (hops, expect_queue));
        }
    }
}

/// The owner a task message names (where its results and function come from).
fn task_owner(msg: &PeerMsg) -> Option<PeerId> {
    match msg {
        PeerMsg::Task { owner, .. } => PeerId::from_bytes(owner).ok(),
        _ => None,
    }
}
