//! What a node keeps about the other peers, next to its own tables: the
//! placement view and policy, tasks waiting to be placed, the bid round in
//! flight, actors that run elsewhere, and named-actor lookups in flight.
//!
//! In laptop mode `out` is None and nothing here is ever touched on the task
//! path: [`State::placement_active`](crate::state::State::placement_active)
//! is false, so the single-node fast path stays as it was.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use parking_lot::{Condvar, Mutex};
use peer_gossip::PeerId;
use peer_placement::{Bid, Config, PeerTable, Placer, Strategy};
use rand::SeedableRng;
use rand::rngs::SmallRng;
use rustc_hash::{FxHashMap, FxHashSet};
use serde_bytes::ByteBuf;

use crate::ids::{ActorId, FnId, OwnerTag, TaskId};
use crate::links::PeerOutbox;
use crate::protocol::ErrorInfo;
use crate::resources::Resources;
use crate::state::ConnId;

/// A bid round: tasks with one demand, the peers asked, the bids so far.
pub struct Round {
    pub id: u64,
    pub tasks: Vec<TaskId>,
    pub demand: Resources,
    /// Peers that hold the batch's large inputs (preferred).
    pub holders: Vec<PeerId>,
    pub asked: Vec<PeerId>,
    /// `None` is this node.
    pub bids: Vec<Bid<Option<PeerId>>>,
    pub deadline: Instant,
}

/// An actor that runs on another peer: calls made here are forwarded to it in order.
#[derive(Default)]
pub struct ActorProxy {
    /// Where it runs (None: still asking its creator).
    pub host: Option<PeerId>,
    /// Calls not yet forwarded, in submission order.
    pub queue: VecDeque<TaskId>,
    /// Set when the actor is gone for good.
    pub dead: Option<ErrorInfo>,
}

/// Where the answer to a named-actor lookup goes.
pub enum LookupTarget {
    Conn { conn: ConnId, req: u64 },
    Local(Arc<LocalLookup>),
}

/// The embedded driver's side of a lookup: the handle (or None) once known.
#[derive(Default)]
pub struct LocalLookup {
    pub answer: Mutex<Option<Option<ByteBuf>>>,
    pub cv: Condvar,
}

/// A named-actor lookup waiting for peers' answers.
pub struct NameLookup {
    pub target: LookupTarget,
    pub outstanding: usize,
    pub deadline: Instant,
}

/// Cross-peer state of a node.
pub struct ClusterState {
    /// Messages to peers (None in laptop mode).
    pub out: Option<PeerOutbox>,
    /// Pulls of objects from peers, run by the pull task.
    pub pull_jobs: Option<tokio::sync::mpsc::UnboundedSender<crate::pull::PullJob>>,
    /// This node's PeerId.
    pub me: Option<PeerId>,
    /// This run of the node (random at start): a node restarted under the
    /// same PeerId is a new incarnation, which holds none of the old one's
    /// tasks, objects or actors. Exchanged when a stream opens (`links`).
    pub incarnation: u64,
    /// Each peer's incarnation as last heard.
    pub incarnations: FxHashMap<PeerId, u64>,
    /// Other peers: capacity and load as last heard.
    pub view: PeerTable<PeerId>,
    /// Owner tags of known peers.
    pub tags: FxHashMap<OwnerTag, PeerId>,
    pub placer: Placer,
    pub rng: SmallRng,
    /// Runnable tasks that do not fit here now, waiting for the next round.
    pub unplaced: VecDeque<TaskId>,
    /// Tasks no known peer (this one included) could ever run: they wait for one to join.
    pub parked: Vec<TaskId>,
    pub round: Option<Round>,
    /// The peer each task in state `Remote` was sent to.
    pub sent_to: FxHashMap<TaskId, PeerId>,
    /// How to rebuild objects owned here whose copies are on other peers.
    pub lineage: FxHashMap<TaskId, crate::failure::Lineage>,
    /// Fetches asked again after a pull failed, per object (bounded).
    pub refetches: FxHashMap<crate::ids::ObjectId, u8>,
    /// Objects to ask their owner for again, and when.
    pub refetch_at: Vec<(crate::ids::ObjectId, Instant)>,
    /// Peers found gone, and when (a task moved to one runs again).
    pub gone_at: FxHashMap<PeerId, Instant>,
    /// When tasks sent to peers are next checked on.
    pub next_audit: Instant,
    /// Holders a pull of an object failed with (told to its owner on the next fetch).
    pub failed_holders: FxHashMap<crate::ids::ObjectId, Vec<PeerId>>,
    /// Tasks received while one of their results was being pulled here, by that result.
    pub after_pull: FxHashMap<crate::ids::ObjectId, Vec<(PeerId, crate::peer_msg::PeerMsg)>>,
    /// Clients' `Create`s of an object a pull is writing into the store
    /// (connection, request, length): answered when the pull ends.
    pub creates_after_pull: FxHashMap<crate::ids::ObjectId, Vec<(u64, u64, u64)>>,
    /// Tasks received before their function, by function.
    pub awaiting_fn: FxHashMap<FnId, Vec<(PeerId, crate::peer_msg::PeerMsg)>>,
    pub next_req: u64,
    /// Functions each peer has been sent.
    pub fns_sent: FxHashMap<PeerId, FxHashSet<FnId>>,
    pub proxies: FxHashMap<ActorId, ActorProxy>,
    /// Peers waiting to learn where an actor created here will run.
    pub locate_waiters: FxHashMap<ActorId, Vec<PeerId>>,
    pub lookups: FxHashMap<u64, NameLookup>,
}

impl ClusterState {
    pub fn new() -> Self {
        let config = Config {
            strategy: Strategy::BatchBids,
            choices: 2,
            local_first: true,
        };
        Self {
            out: None,
            pull_jobs: None,
            me: None,
            incarnation: rand::random(),
            incarnations: FxHashMap::default(),
            view: PeerTable::new(),
            tags: FxHashMap::default(),
            // Two choices is never zero: `new` cannot fail here.
            placer: Placer::new(config).unwrap_or_else(|e| unreachable!("{e}")),
            rng: SmallRng::from_os_rng(),
            unplaced: VecDeque::new(),
            parked: Vec::new(),
            round: None,
            sent_to: FxHashMap::default(),
            lineage: FxHashMap::default(),
            refetches: FxHashMap::default(),
            refetch_at: Vec::new(),
            gone_at: FxHashMap::default(),
            next_audit: Instant::now(),
            awaiting_fn: FxHashMap::default(),
            failed_holders: FxHashMap::default(),
            after_pull: FxHashMap::default(),
            creates_after_pull: FxHashMap::default(),
            next_req: 1,
            fns_sent: FxHashMap::default(),
            proxies: FxHashMap::default(),
            locate_waiters: FxHashMap::default(),
            lookups: FxHashMap::default(),
        }
    }

    /// A fresh request number.
    pub fn next_req(&mut self) -> u64 {
        self.next_req += 1;
        self.next_req
    }
}

impl Default for ClusterState {
    fn default() -> Self {
        Self::new()
    }
}
