//! Cluster-wide listings with no head node: the asking node sends a
//! [`PeerMsg::StateQuery`] to every peer in its view and answers once each
//! sent its [`PeerMsg::StateReply`], or when [`GATHER_TIMEOUT`] passed (the
//! peers that were too late are named as missing).
//!
//! - a peer answers from its own tables at once (`Core::listing`), read-only;
//! - a reply that no gather waits for is dropped; a peer whose reply is not
//!   JSON is named as missing;
//! - a peer that goes away is not waited for any more (it is named missing).

use std::time::{Duration, Instant};

use rustc_hash::{FxHashMap, FxHashSet};
use serde_bytes::ByteBuf;
use serde_json::{Value as Json, json};

use crate::command::Command;
use crate::core::Core;
use crate::ids::{ConnId, LookupId, PeerId};
use crate::wire::local::{Listing, NodeMsg};
use crate::wire::peer::PeerMsg;

/// How long a gather waits for the peers' answers.
pub const GATHER_TIMEOUT: Duration = Duration::from_secs(2);

/// Where a gather's answer goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum GatherTarget {
    /// A local client's query.
    Conn { conn: ConnId, req: u64 },
    /// The embedded driver (or the dashboard in this process): told with
    /// [`Command::GatherDone`].
    Local(LookupId),
}

#[derive(Debug)]
struct Gathering {
    target: GatherTarget,
    waiting: FxHashSet<PeerId>,
    /// Peers that went away, or whose answer could not be read.
    failed: Vec<PeerId>,
    parts: Vec<Json>,
    deadline: Instant,
}

/// Gathers in flight.
#[derive(Debug, Default)]
pub(crate) struct Gathers {
    pending: FxHashMap<u64, Gathering>,
}

impl Core {
    /// Answer `what` for the whole cluster: this node's part now, the
    /// peers' parts as they come.
    pub(crate) fn gather(&mut self, what: Listing, target: GatherTarget) {
        let mine = self.listing(what);
        let peers: Vec<PeerId> = if self.cluster.is_member() {
            self.cluster
                .peers(self.now)
                .into_iter()
                .map(|p| p.peer)
                .collect()
        } else {
            Vec::new()
        };
        let g = Gathering {
            target,
            waiting: peers.iter().copied().collect(),
            failed: Vec::new(),
            parts: vec![mine],
            deadline: self.now + GATHER_TIMEOUT,
        };
        if g.waiting.is_empty() {
            return self.answer_gather(g);
        }
        let req = self.cluster.next_req();
        for p in peers {
            self.send_peer(p, PeerMsg::StateQuery { req, what });
        }
        let deadline = g.deadline;
        self.cluster.gathers.pending.insert(req, g);
        self.arm_timer(deadline);
    }

    /// A peer asks for a listing of this node.
    pub(super) fn state_asked(&mut self, from: PeerId, req: u64, what: Listing) {
        let json = ByteBuf::from(self.listing(what).to_string().into_bytes());
        self.send_peer(from, PeerMsg::StateReply { req, json });
    }

    /// A peer answered a gather.
    pub(super) fn state_answered(&mut self, from: PeerId, req: u64, json: &[u8]) {
        let Some(g) = self.cluster.gathers.pending.get_mut(&req) else {
            return;
        };
        if !g.waiting.remove(&from) {
            return;
        }
        match serde_json::from_slice::<Json>(json) {
            Ok(part) => g.parts.push(part),
            Err(e) => {
                tracing::debug!(%from, "a state reply that is not JSON is dropped: {e}");
                g.failed.push(from);
            }
        }
        if g.waiting.is_empty()
            && let Some(g) = self.cluster.gathers.pending.remove(&req)
        {
            self.answer_gather(g);
        }
    }

    /// A peer is gone: gathers stop waiting for it.
    pub(super) fn gathers_forget(&mut self, peer: PeerId) {
        let done: Vec<u64> = self
            .cluster
            .gathers
            .pending
            .iter_mut()
            .filter_map(|(req, g)| {
                if !g.waiting.remove(&peer) {
                    return None;
                }
                g.failed.push(peer);
                g.waiting.is_empty().then_some(*req)
            })
            .collect();
        for req in done {
            if let Some(g) = self.cluster.gathers.pending.remove(&req) {
                self.answer_gather(g);
            }
        }
    }

    /// Time passed: gathers past their deadline answer with what they have.
    pub(super) fn expire_gathers(&mut self, now: Instant) {
        let due: Vec<u64> = self
            .cluster
            .gathers
            .pending
            .iter()
            .filter(|(_, g)| g.deadline <= now)
            .map(|(req, _)| *req)
            .collect();
        for req in due {
            if let Some(g) = self.cluster.gathers.pending.remove(&req) {
                self.answer_gather(g);
            }
        }
    }

    fn answer_gather(&mut self, g: Gathering) {
        let mut missing: Vec<String> = g
            .waiting
            .iter()
            .chain(&g.failed)
            .map(|p| p.to_string())
            .collect();
        missing.sort();
        // When this node last heard of each peer (gossip), as the view has it.
        let heard: serde_json::Map<String, Json> = self
            .cluster
            .peers(self.now)
            .into_iter()
            .map(|p| (p.peer.to_string(), json!(p.age.as_secs_f64())))
            .collect();
        let answer = json!({"nodes": g.parts, "missing": missing, "heard_s": heard}).to_string();
        match g.target {
            GatherTarget::Conn { conn, req } => self.send_to(
                conn,
                NodeMsg::Reply {
                    req,
                    result: Ok(answer),
                },
            ),
            GatherTarget::Local(gather) => self.emit(Command::GatherDone { gather, answer }),
        }
    }
}
