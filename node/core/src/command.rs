//! What the core asks its shell to do: one typed enum, in the order the
//! shell must carry the commands out (like libp2p's `ToSwarm`).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use serde_bytes::ByteBuf;

use crate::error::ProtocolError;
use crate::ids::{ConnId, LookupId, ObjectId, PeerId, WaitId, WorkerId};
use crate::wire::local::{NodeMsg, RuntimeEnv};
use crate::wire::peer::PeerMsg;

/// One thing for the shell to do.
#[derive(Debug)]
pub enum Command {
    /// Send `msg` to local connection `conn`. `at_once`: the receiver waits
    /// for it (write it now if nothing is queued); otherwise it may wait for
    /// the connection's batching writer (a task queued behind a running one).
    Send {
        conn: ConnId,
        msg: NodeMsg,
        at_once: bool,
    },
    /// Send what is queued for `conn`, then close it (the node is stopping).
    Close { conn: ConnId },
    /// Drop `conn` now: it broke the protocol (`why` is logged).
    Disconnect { conn: ConnId, why: ProtocolError },
    /// A control client asked the daemon to stop (`peer down`).
    Stop,
    /// Send `msg` to another peer (to this node itself: deliver it back as a
    /// peer's message would be).
    ToPeer { peer: PeerId, msg: PeerMsg },
    /// Start a worker process that says Hello as `worker`, set up for
    /// runtime environment `env` (None: the node's own).
    SpawnWorker {
        worker: WorkerId,
        env: Option<Arc<RuntimeEnv>>,
    },
    /// SIGKILL a worker process.
    Kill { pid: u32 },
    /// Tell a worker process to look for a cancel of the task it runs (a
    /// signal: its Python handler raises `KeyboardInterrupt` in the task if
    /// the node's [`NodeMsg::Cancel`](crate::wire::local::NodeMsg::Cancel)
    /// names that task).
    Interrupt { pid: u32 },
    /// Pull object `id` (`len` bytes) from `sources` into the store at
    /// `offset` (created there, unsealed); report each chunk with
    /// [`Event::PullChunk`](crate::Event::PullChunk) and the end with
    /// [`Event::PullDone`](crate::Event::PullDone). The first `complete`
    /// sources hold whole copies; the others are pulling it too and serve
    /// the chunks they have.
    Pull {
        id: ObjectId,
        offset: u64,
        len: u64,
        sources: Vec<PeerId>,
        complete: usize,
    },
    /// Tell the cluster (gossip) that this node holds a large object.
    Announce { id: ObjectId, len: u64 },
    /// Deliver [`Event::Timer`](crate::Event::Timer) at (or soon after) `at`.
    Timer { at: Instant },
    /// Print a task's output on this process's terminal (`stream` 1 or 2).
    Print { stream: u8, data: ByteBuf },
    /// Remove a spill file whose object was freed.
    DeleteSpillFile { path: PathBuf },
    /// A get/wait of the embedded driver finished: wake the waiting thread.
    WaitDone { wait: WaitId },
    /// A named-actor lookup of the embedded driver has its answer.
    LookupDone {
        lookup: LookupId,
        handle: Option<ByteBuf>,
    },
    /// A cluster-wide query of the embedded driver has its answer (JSON).
    GatherDone { gather: LookupId, answer: String },
}
