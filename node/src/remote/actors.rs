//! Actors across peers: the creator places an actor once and says where it
//! runs; calls made anywhere else go through an `ActorProxy` in submission
//! order; `kill` reaches the host; names are held by the creator and found by
//! asking the peers.

use std::time::{Duration, Instant};

use peer_gossip::PeerId;
use serde_bytes::ByteBuf;

use crate::cluster_state::{ActorProxy, LookupTarget, NameLookup};
use crate::ids::{ActorId, TaskId};
use crate::peer_msg::PeerMsg;
use crate::protocol::{ErrorInfo, ErrorKind, NodeMsg, TaskSpec};
use crate::state::State;

/// How long a named-actor lookup waits for the peers' answers.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(2);

impl State {
    // ---- actors ------------------------------------------------------------------------------

    /// The creation of an actor made here went to `host`: calls follow it there.
    pub(super) fn actor_sent(&mut self, spec: &TaskSpec, host: PeerId) {
        let Some(aid) = spec.actor else {
            return;
        };
        let queued = self
            .actors
            .get_mut(&aid)
            .map(|a| std::mem::take(&mut a.queue))
            .unwrap_or_default();
        self.remote.proxies.insert(
            aid,
            ActorProxy {
                host: Some(host),
                queue: queued,
                dead: None,
            },
        );
        // Its inputs went along; restarts happen where it runs.
        self.finish_task(spec.task);
        self.actor_placed(aid, host);
        self.pump_proxy(aid);
    }

    /// Tell the peers that asked where an actor created here runs.
    pub(crate) fn actor_placed(&mut self, aid: ActorId, host: PeerId) {
        if let Some(waiters) = self.remote.locate_waiters.remove(&aid) {
            for w in waiters {
                self.send_peer(
                    w,
                    PeerMsg::ActorAt {
                        actor: aid,
                        host: Some(ByteBuf::from(host.to_bytes())),
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
        self.remote.proxies.insert(aid, proxy);
    }

    /// The creator of an actor is asked where it runs.
    pub(super) fn locate_actor(&mut self, from: PeerId, aid: ActorId) {
        let reply = |host: Option<PeerId>, error: Option<ErrorInfo>| PeerMsg::ActorAt {
            actor: aid,
            host: host.map(|h| ByteBuf::from(h.to_bytes())),
            error,
        };
        if let Some(p) = self.remote.proxies.get(&aid) {
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
            crate::state::ActorState::Dead(e) => {
                let e = e.clone();
                self.send_peer(from, reply(None, Some(e)));
            }
            crate::state::ActorState::Pending => {
                self.remote
                    .locate_waiters
                    .entry(aid)
                    .or_default()
                    .push(from);
            }
            _ => {
                let me = self.remote.me;
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
        let Some(p) = self.remote.proxies.get_mut(&aid) else {
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
        let Some(p) = self.remote.proxies.get_mut(&aid) else {
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
    }

    /// `kill` of an actor that runs on another peer: tell its host. Returns
    /// false when the actor runs here.
    pub(crate) fn kill_remote_actor(&mut self, aid: ActorId, no_restart: bool) -> bool {
        let Some(p) = self.remote.proxies.get(&aid) else {
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
        if no_restart && let Some(a) = self.actors.get_mut(&aid) {
            let err = ErrorInfo::new(
                ErrorKind::ActorDied,
                format!(
                    "the actor {} was killed with peer.kill()",
                    a.creation.actor_name()
                ),
            );
            a.state = crate::state::ActorState::Dead(err);
            if let Some(name) = a.name.clone()
                && self.named_actors.get(&name) == Some(&aid)
            {
                self.named_actors.remove(&name);
            }
        }
        true
    }

    // ---- named actors ------------------------------------------------------------------------

    /// `get_actor(name)`: this node's own names first, then every peer is asked.
    pub fn lookup_actor(&mut self, name: &str, target: LookupTarget) {
        if let Some(h) = self.named_actor_handle(name) {
            return self.answer_lookup(target, Some(h));
        }
        let peers: Vec<PeerId> = self.remote.view.entries().iter().map(|e| e.peer).collect();
        if self.remote.out.is_none() || peers.is_empty() {
            return self.answer_lookup(target, None);
        }
        let req = self.remote.next_req();
        for &p in &peers {
            self.send_peer(
                p,
                PeerMsg::LookupName {
                    req,
                    name: name.to_string(),
                },
            );
        }
        self.remote.lookups.insert(
            req,
            NameLookup {
                target,
                outstanding: peers.len(),
                deadline: Instant::now() + LOOKUP_TIMEOUT,
            },
        );
    }

    pub(super) fn name_found(&mut self, req: u64, handle: Option<ByteBuf>) {
        let Some(l) = self.remote.lookups.get_mut(&req) else {
            return;
        };
        l.outstanding = l.outstanding.saturating_sub(1);
        if (handle.is_some() || l.outstanding == 0)
            && let Some(l) = self.remote.lookups.remove(&req)
        {
            self.answer_lookup(l.target, handle);
        }
    }

    pub(super) fn answer_lookup(&mut self, target: LookupTarget, handle: Option<ByteBuf>) {
        match target {
            LookupTarget::Conn { conn, req } => {
                self.send_to(conn, &NodeMsg::ActorHandle { req, blob: handle });
            }
            LookupTarget::Local(l) => {
                *l.answer.lock() = Some(handle);
                l.cv.notify_all();
            }
        }
    }

    /// Time passed: lookups whose peers did not all answer end with "not found".
    pub fn expire_lookups(&mut self, now: Instant) {
        let late: Vec<u64> = self
            .remote
            .lookups
            .iter()
            .filter(|(_, l)| l.deadline <= now)
            .map(|(r, _)| *r)
            .collect();
        for req in late {
            if let Some(l) = self.remote.lookups.remove(&req) {
                self.answer_lookup(l.target, None);
            }
        }
    }
}
