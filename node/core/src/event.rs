//! What happens to a node, as the core is told: one enum for everything the
//! shell observes (frames, peers, timers, processes, pulls). Every event is
//! handed in with the time it happened ([`Core::handle`](crate::Core::handle)).

use std::time::Duration;

use crate::ids::{ConnId, ObjectId, PeerId};
use crate::wire::local::ClientMsg;
use crate::wire::peer::PeerMsg;

/// One thing that happened.
#[derive(Debug)]
pub enum Event {
    /// A frame from local connection `conn` (opened with [`Core::open_conn`](crate::Core::open_conn)).
    Client { conn: ConnId, msg: ClientMsg },
    /// A local connection closed; what it held is released.
    Closed { conn: ConnId },
    /// A frame from a local client or a peer could not be read (it is counted).
    BadFrame,
    /// A message from another peer.
    Peer { from: PeerId, msg: PeerMsg },
    /// A stream with `peer` opened and it said which run of it this is.
    Incarnation { peer: PeerId, incarnation: u64 },
    /// This node's stream to `peer` broke and was opened again: messages on
    /// it may have been lost.
    LinkReset { peer: PeerId },
    /// Another peer is gone (dead, or unreachable).
    PeerGone { peer: PeerId, why: String },
    /// The node joined its cluster (its links and pulls run from now on).
    Joined {
        listen: Vec<String>,
        key_fingerprint: String,
    },
    /// The gossip layer's view, refreshed (a few times a second).
    View {
        listen: Vec<String>,
        peers: Vec<PeerView>,
        network: NetworkView,
    },
    /// A time asked for with [`Command::Timer`](crate::Command::Timer) came.
    Timer,
    /// Chunk `chunk` of a pull is in the store.
    PullChunk { id: ObjectId, chunk: usize },
    /// A pull ended.
    PullDone {
        id: ObjectId,
        result: Result<(), PullFailure>,
    },
    /// Bytes of an object were sent to a pulling peer.
    Served { bytes: u64 },
    /// The worker fork server is gone: no more workers can start.
    SpawnerFailed { why: String },
}

/// What a peer publishes about its load.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PeerLoad {
    pub cpus_total: f64,
    pub cpus_free: f64,
    /// Custom resources as `(name, total, free)`.
    pub resources: Vec<(String, f64, f64)>,
    pub queue_len: u64,
    pub store_used: u64,
    pub store_total: u64,
    /// Memory of its GPUs in all, in bytes.
    pub gpu_memory: u64,
}

/// One other peer as the gossip layer last heard of it.
#[derive(Debug, Clone)]
pub struct PeerView {
    pub peer: PeerId,
    pub addresses: Vec<String>,
    pub load: Option<PeerLoad>,
    /// Large objects it announced.
    pub objects: usize,
    /// How old the information was when the view was taken.
    pub age: Duration,
    /// The best connection to it; `None` while it is heard of only through others.
    pub link: Option<PeerLink>,
    /// The latest ping round trip on that connection.
    pub rtt: Option<Duration>,
}

/// What carries the traffic to a peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerLink {
    Direct,
    /// Through a relaying member: fine for control messages and small values, slow (and
    /// capped) for large ones.
    Relayed,
    /// Direct, punched through NATs (DCUtR).
    HolePunched,
}

impl PeerLink {
    pub fn as_str(self) -> &'static str {
        match self {
            PeerLink::Direct => "direct",
            PeerLink::Relayed => "relayed",
            PeerLink::HolePunched => "hole-punched",
        }
    }
}

/// This node's place in the network, as the shell reports it (for `peer status`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetworkView {
    /// `"public"`, `"private"` (behind a NAT or firewall) or `"unknown"`.
    pub reachability: String,
    /// External addresses confirmed to work.
    pub external: Vec<String>,
    /// Relays holding a slot for this node.
    pub relays: Vec<String>,
    /// Whether this node relays for other members now.
    pub relaying: bool,
    pub reservations_served: u64,
    pub circuits_served: u64,
    /// Bytes sent and received over relayed connections since start.
    pub relayed_bytes: u64,
    /// Pulls going over a relay now (every holder is behind one), and bytes pulled that way.
    pub relayed_pulls: u64,
    pub relayed_pull_bytes: u64,
    /// Bytes this node pulled, and served, over direct connections (large objects) since start.
    pub direct_pull_bytes: u64,
    pub direct_served_bytes: u64,
}

/// Why a pull failed, and the holders that failed it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PullFailure {
    pub why: String,
    pub bad: Vec<PeerId>,
}

impl From<&str> for PullFailure {
    fn from(why: &str) -> Self {
        Self {
            why: why.to_string(),
            bad: Vec::new(),
        }
    }
}
