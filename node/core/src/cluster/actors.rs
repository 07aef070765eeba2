//! Actors across peers: the creator places an actor once and says where it
//! runs; calls made anywhere else go through an [`ActorProxy`] in
//! submission order; `kill` reaches the host; names are held by the creator
//! and found by asking the peers.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use rustc_hash::FxHashMap;
use serde_bytes::ByteBuf;

use crate::command::Command;
use crate::core::Core;
use crate::ids::{ActorId, ConnId, LookupId, ObjectId, PeerId, TaskId};
use crate::local::actors::ActorState;
use crate::local::objects::Holder;
use crate::wire::local::{ErrorInfo, ErrorKind, NodeMsg, TaskSpec};
use crate::wire::peer::PeerMsg;

/// How long a named-actor lookup waits for the peers' answers.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(2);

/// An actor that runs on another peer: calls made here are forwarded to it in order.
#[derive(Debug, Default)]
pub(super) struct ActorProxy {
    /// Where it runs (None: still asking its creator).
    pub(super) host: Option<PeerId>,
    /// Calls not yet forwarded, in submission order.
    queue: VecDeque<TaskId>,
    /// Set when the actor is gone for good.
    pub(super) dead: Option<ErrorInfo>,
    /// The host told that every handle is gone (see [`Core::tell_host_out_of_scope`]).
    told_out_of_scope: Option<PeerId>,
}

/// Where the answer to a named-actor lookup goes.
#[derive(Debug, Clone, Copy)]
pub(crate) enum LookupTarget {
    Conn {
        conn: ConnId,
        req: u64,
    },
    /// The embedded driver: told with [`Command::LookupDone`].
    Local(LookupId),
}

/// A named-actor lookup waiting for peers' answers.
#[derive(Debug)]
struct NameLookup {
    target: LookupTarget,
    outstanding: usize,
    deadline: Instant,
}

/// Actors on other peers, and lookups in flight.
#[derive(Debug, Default)]
pub(super) struct RemoteActors {
    proxies: FxHashMap<ActorId, ActorProxy>,
    /// Peers waiting to learn where an actor created here will run.
    locate_waiters: FxHashMap<ActorId, Vec<PeerId>>,
    lookups: FxHashMap<u64, NameLookup>,
}

impl RemoteActors {
    /// The actors whose host is `peer`.
    pub(super) fn hosted_on(&self, peer: PeerId) -> Vec<ActorId> {
        self.proxies
            .iter()
            .filter(|(_, p)| p.host == Some(peer))
            .map(|(a, _)| *a)
            .collect()
    }

    pub(super) fn proxy_mut(&mut self, aid: &ActorId) -> Option<&mut ActorProxy> {
        self.proxies.get_mut(aid)
    }

    /// Stop proxying an actor (it restarts here): the calls queued for it.
    pub(super) fn take_proxy(&mut self, aid: &ActorId) -> Option<VecDeque<TaskId>> {
        self.proxies.remove(aid).map(|p| p.queue)
    }
}

impl super::Cluster {
    pub(crate) fn has_proxy(&self, aid: &ActorId) -> bool {
        self.actors.proxies.contains_key(aid)
    }

    /// The peer an actor created here runs on, when it runs on another one.
    pub(crate) fn actor_host(&self, aid: &ActorId) -> Option<PeerId> {
        self.actors.proxies.get(aid).and_then(|p| p.host)
    }

    /// Queue a call at the actor's proxy, if it runs on another peer.
    pub(crate) fn queue_at_proxy(&mut self, aid: ActorId, tid: TaskId) -> bool {
        match self.actors.proxies.get_mut(&aid) {
            Some(p) => {
                p.queue.push_back(tid);
                true
            }
            None => false,
        }
    }

    /// Put a call back at the front of the actor's proxy queue (it is sent
    /// again); false when there is no proxy for it here.
    pub(crate) fn requeue_at_proxy(&mut self, aid: ActorId, tid: TaskId) -> bool {
        match self.actors.proxies.get_mut(&aid) {
            Some(p) => {
                p.queue.push_front(tid);
                true
            }
            None => false,
        }
    }

    pub(crate) fn unqueue_at_proxy(&mut self, aid: ActorId, tid: TaskId) {
        if let Some(p) = self.actors.proxies.get_mut(&aid) {
            p.queue.retain(|x| *x != tid);
        }
    }
}

impl Core {
    /// The creation of an actor made here went to `host`: calls follow it there.
    pub(crate) fn actor_sent(&mut self, spec: &TaskSpec, host: PeerId) {
        let Some(aid) = spec.actor else {
            return;
        };
        let queue = self.actors.take_queue(&aid);
        self.cluster.actors.proxies.insert(
            aid,
            ActorProxy {
                host: Some(host),
                queue,
                dead: None,
                told_out_of_scope: None,
            },
        );
        // Its inputs went along; restarts happen where it runs.
        self.finish_task(spec.task);
        self.actor_placed(aid, host);
        // Its handles may have gone while it was being placed: the host hears
        // so once the calls queued here have gone to it.
        self.pump_proxy(aid);
    }

    /// Every handle of actor `aid` (created here, running on another peer)
    /// is gone: its host is told so once every call made here has been sent
    /// to it (the stream keeps them in order), so that it runs them before
    /// it ends, and told again if the actor moved to another host.
    pub(crate) fn tell_host_out_of_scope(&mut self, aid: ActorId) {
        if !self.is_out_of_scope(aid) {
            return;
        }
        let Some(p) = self.cluster.actors.proxies.get_mut(&aid) else {
            return;
        };
        let Some(host) = p.host else {
            return;
        };
        if !p.queue.is_empty() || p.told_out_of_scope == Some(host) {
            return;
        }
        p.told_out_of_scope = Some(host);
        self.send_peer(host, PeerMsg::ActorOutOfScope { actor: aid });
    }

    /// Tell the peers that asked where an actor created here runs.
    pub(crate) fn actor_placed(&mut self, aid: ActorId, host: PeerId) {
        if let Some(waiters) = self.cluster.actors.locate_waiters.remove(&aid) {
            for w in waiters {
                self.send_peer(
                    w,
                    PeerMsg::ActorAt {
                        actor: aid,
                        host: Some(ByteBuf::from(host.as_bytes().to_vec())),
                        error: None,
                    },
                );
            }
        }
    }

    /// A call for an actor created on another peer: ask the creator where it runs.
    pub(crate) fn start_proxy(&mut self, aid: ActorId) {
        let mut proxy = ActorProxy::default();
        match self.peer_of(aid.owner()) {
            Some(owner) => self.send_peer(owner, PeerMsg::LocateActor { actor: aid }),
            None => {
                proxy.dead = Some(ErrorInfo::new(
                    ErrorKind::ActorDied,
                    format!(
                        "actor {aid} was created by peer {} (by its id), which is not in this \
                         node's view",
                        aid.owner()
                    ),
                ))
            }
        }
        self.cluster.actors.proxies.insert(aid, proxy);
    }

    /// The creator of an actor is asked where it runs.
    pub(super) fn locate_actor(&mut self, from: PeerId, aid: ActorId) {
        let reply = |host: Option<PeerId>, error: Option<ErrorInfo>| PeerMsg::ActorAt {
            actor: aid,
            host: host.map(|h| ByteBuf::from(h.as_bytes().to_vec())),
            error,
        };
        if let Some(p) = self.cluster.actors.proxies.get(&aid) {
            let msg = reply(p.host, p.dead.clone());
            return self.send_peer(from, msg);
        }
        let Some(a) = self.actors.get(&aid) else {
            let err = ErrorInfo::new(
                ErrorKind::ActorDied,
                format!("actor {aid} is not known to the peer that created it"),
            );
            return self.send_peer(from, reply(None, Some(err)));
        };
        match &a.state {
            ActorState::Dead(e) => {
                let e = e.clone();
                self.send_peer(from, reply(None, Some(e)));
            }
            ActorState::Pending => {
                self.cluster
                    .actors
                    .locate_waiters
                    .entry(aid)
                    .or_default()
                    .push(from);
            }
            _ => {
                let me = self.cluster.me();
                self.send_peer(from, reply(me, None));
            }
        }
    }

    /// The creator said where an actor runs.
    pub(super) fn actor_located(
        &mut self,
        aid: ActorId,
        host: Option<ByteBuf>,
        error: Option<ErrorInfo>,
    ) {
        let Some(p) = self.cluster.actors.proxies.get_mut(&aid) else {
            return;
        };
        match (host.and_then(|h| PeerId::from_bytes(&h).ok()), error) {
            (Some(h), _) => p.host = Some(h),
            (None, e) => {
                p.dead = Some(e.unwrap_or_else(|| {
                    ErrorInfo::new(ErrorKind::ActorDied, format!("actor {aid} cannot be found"))
                }))
            }
        }
        self.pump_proxy(aid);
    }

    /// Forward the runnable calls of a remote actor, in order.
    pub(crate) fn pump_proxy(&mut self, aid: ActorId) {
        let Some(p) = self.cluster.actors.proxies.get_mut(&aid) else {
            return;
        };
        if let Some(err) = p.dead.clone() {
            let queued: Vec<TaskId> = p.queue.drain(..).collect();
            for tid in queued {
                self.fail_task(tid, err.clone());
            }
            return;
        }
        let Some(host) = p.host else {
            return;
        };
        let mut to_send = Vec::new();
        while let Some(&tid) = p.queue.front() {
            match self.tasks.get(&tid) {
                Some(t) if t.missing == 0 => {
                    p.queue.pop_front();
                    to_send.push(tid);
                }
                Some(_) => break,
                None => {
                    p.queue.pop_front();
                }
            }
        }
        for tid in to_send {
            self.send_task(tid, host, 0);
        }
        self.tell_host_out_of_scope(aid);
    }

    /// `kill` of an actor that runs on another peer: tell its host. Returns
    /// false when the actor runs here.
    pub(crate) fn kill_remote_actor(&mut self, aid: ActorId, no_restart: bool) -> bool {
        let Some(p) = self.cluster.actors.proxies.get(&aid) else {
            return false;
        };
        if let Some(host) = p.host {
            self.send_peer(
                host,
                PeerMsg::KillActor {
                    actor: aid,
                    no_restart,
                },
            );
        }
        if no_restart && let Some(class) = self.actor_class(aid) {
            let err = ErrorInfo::new(
                ErrorKind::ActorDied,
                format!("the actor {class} was killed with peer.kill()"),
            );
            self.actors.set_dead(aid, err);
        }
        true
    }

    /// `get_actor(name)`: this node's own names first, then every peer is asked.
    pub(crate) fn lookup_actor(&mut self, name: &str, target: LookupTarget) {
        if let Some(found) = self.named_actor_handle(name) {
            return self.answer_lookup(target, Some(found));
        }
        let peers = self.cluster.placement.peers();
        if !self.cluster.is_member() || peers.is_empty() {
            return self.answer_lookup(target, None);
        }
        let req = self.cluster.next_req();
        for &p in &peers {
            self.send_peer(
                p,
                PeerMsg::LookupName {
                    req,
                    name: name.to_string(),
                },
            );
        }
        let deadline = self.now + LOOKUP_TIMEOUT;
        self.cluster.actors.lookups.insert(
            req,
            NameLookup {
                target,
                outstanding: peers.len(),
                deadline,
            },
        );
        self.arm_timer(deadline);
    }

    /// A peer answered a lookup: `handle` is the named actor's, if it has it.
    pub(super) fn name_found(&mut self, req: u64, handle: Option<(ByteBuf, ActorId)>) {
        let Some(l) = self.cluster.actors.lookups.get_mut(&req) else {
            return;
        };
        l.outstanding = l.outstanding.saturating_sub(1);
        if (handle.is_some() || l.outstanding == 0)
            && let Some(l) = self.cluster.actors.lookups.remove(&req)
        {
            self.answer_lookup(l.target, handle);
        }
    }

    /// Answer a lookup. A handle found comes with one ref to the actor's
    /// handle object for the asker, which its new handle takes over.
    fn answer_lookup(&mut self, target: LookupTarget, found: Option<(ByteBuf, ActorId)>) {
        let handle = found.map(|(blob, aid)| {
            let holder = match target {
                LookupTarget::Conn { conn, .. } => Holder::Conn(conn),
                LookupTarget::Local(_) => Holder::Local,
            };
            self.add_refs(holder, &[ObjectId::for_actor(aid)]);
            blob
        });
        match target {
            LookupTarget::Conn { conn, req } => {
                self.send_to(conn, NodeMsg::ActorHandle { req, blob: handle });
            }
            LookupTarget::Local(lookup) => self.emit(Command::LookupDone { lookup, handle }),
        }
    }

    /// Time passed: lookups whose peers did not all answer end with "not found".
    pub(super) fn expire_lookups(&mut self, now: Instant) {
        let late: Vec<u64> = self
            .cluster
            .actors
            .lookups
            .iter()
            .filter(|(_, l)| l.deadline <= now)
            .map(|(r, _)| *r)
            .collect();
        for req in late {
            if let Some(l) = self.cluster.actors.lookups.remove(&req) {
                self.answer_lookup(l.target, None);
            }
        }
    }
}
