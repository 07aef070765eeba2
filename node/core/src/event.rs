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
