//! Wire messages between the nodes of a cluster, over the `/peer/node/1.0.0`
//! stream protocol (`peer_node::cluster::links`).
//!
//! Each node opens one stream to each peer it talks to and writes
//! length-prefixed postcard frames ([`crate::wire::codec`]) of [`PeerMsg`] on it; the
//! peer answers on its own stream back. Frames from a peer are checked like
//! frames from a local client: a bad one closes that stream, never the node.

use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

use crate::ids::{ActorId, FnId, ObjectId, TaskId};
use crate::wire::local::{ErrorInfo, Listing, TaskSpec};

/// The stream protocol of node-to-node messages.
pub const NODE_PROTOCOL: &str = "/peer/node/2.0.0";

/// Values up to this size travel inside messages; larger ones stay in the
/// store they are in and are pulled in chunks by the peers that need them
/// (`peer_node::cluster::pull`).
pub const IN_MESSAGE_MAX: usize = 1024 * 1024;

/// The stream protocol of chunk pulls between object stores.
pub const PULL_PROTOCOL: &str = "/peer/pull/2.0.0";

/// A value as it crosses peers: the encoded object blob, where it can be
/// pulled from, or an error.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum WireValue {
    Blob(ByteBuf),
    /// `len` bytes in the stores of `holders` (PeerIds as bytes): the first
    /// `complete` hold whole copies, the others are still pulling it (and
    /// serve the chunks they have).
    At {
        len: u64,
        holders: Vec<ByteBuf>,
        complete: u32,
    },
    Error(ErrorInfo),
}

/// The first frame on a pull stream: which bytes of which object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PullRequest {
    pub id: ObjectId,
    pub offset: u64,
    pub len: u64,
}

/// The answer frame; `Data` is followed by exactly the requested bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PullReply {
    /// The bytes follow. (No checksum: TLS authenticates every byte end to end, over relays
    /// too, and a CRC pass cost the sender a tenth of its cycles.)
    Data,
    /// This peer cannot serve them (no copy, or not that far yet).
    Missing(String),
}

/// The protocol on which a node hands a peer a ticket for a direct connection (TLS over a
/// plain TCP socket, beside libp2p's) to pull large objects on. (2.0.0: the holder answers
/// the ticket with a byte before any request, and both ends protect the records themselves.)
pub const DIRECT_PROTOCOL: &str = "/peer/direct/2.0.0";

/// The one frame a node sends on a direct-ticket stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum DirectOffer {
    /// Connect to this node's direct listener on `port` (at an address this node is reached
    /// on), and send `ticket` as the first 16 bytes after the TLS handshake; then the
    /// connection carries [`PullRequest`]s and [`PullReply`]s as a pull stream does. A ticket
    /// is good once, for a short while, and only for the peer it was given to.
    Ticket { port: u16, ticket: [u8; 16] },
    /// No direct connection now (why); pull over libp2p streams.
    Refused(String),
}

/// A load as a bid carries it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct BidLoad {
    /// Tasks queued here and not started.
    pub queue_len: u32,
    pub free_cpu: f64,
    pub total_cpu: f64,
    /// The task's whole demand fits into what is free now.
    pub fits_now: bool,
}

/// Node → node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum PeerMsg {
    /// How would you take `tasks` tasks that each need `demand`? Answered by [`PeerMsg::Bid`].
    BidRequest {
        round: u64,
        demand: Vec<(String, f64)>,
        tasks: u32,
    },
    Bid {
        round: u64,
        load: BidLoad,
    },
    /// A pickled function or class, sent before the first task that needs it.
    Function {
        id: FnId,
        blob: ByteBuf,
    },
    /// A task arrived for a function this node does not have (it restarted,
    /// or the function was lost with a broken link): send it.
    NeedFunction {
        id: FnId,
    },
    /// Run this task. `deps`: the values of `spec.deps`, in order. `owner`:
    /// the PeerId (bytes) its results go to. `hops`: how often it was placed.
    /// `expect_queue`: the queue length the sender's placement expected here
    /// once its batch arrived (a receiver far past it may place the task again).
    /// `deps_contain`: the refs nested in each value of `deps`. `lend`: the
    /// number of this message among those lending refs to the receiver
    /// (`cluster::borrows`).
    Task {
        spec: Box<TaskSpec>,
        deps: Vec<WireValue>,
        deps_contain: Vec<Vec<ObjectId>>,
        owner: ByteBuf,
        hops: u8,
        expect_queue: u32,
        lend: u64,
    },
    /// Values of objects: a remote task's results for its owner, or the
    /// answer to a [`PeerMsg::Fetch`]. `contains`: the refs nested in those
    /// values that have any; `lend` as for a task.
    Objects {
        values: Vec<(ObjectId, WireValue)>,
        contains: Vec<(ObjectId, Vec<ObjectId>)>,
        lend: u64,
    },
    /// Send me the value of `id` (which you own) once it has one. `failed`:
    /// holders (PeerIds as bytes) this node could not pull it from.
    Fetch {
        id: ObjectId,
        failed: Vec<ByteBuf>,
    },
    /// Where does `actor` (which you created) run? Answered by [`PeerMsg::ActorAt`].
    LocateActor {
        actor: ActorId,
    },
    /// `actor` runs on `host` (PeerId bytes), or is dead / unknown (`error`).
    ActorAt {
        actor: ActorId,
        host: Option<ByteBuf>,
        error: Option<ErrorInfo>,
    },
    /// Is there a live actor of this name on your node? Answered by [`PeerMsg::NameFound`].
    LookupName {
        req: u64,
        name: String,
    },
    /// The pickled handle of the named actor, if this node has it; `lent`:
    /// the ref that keeps the actor alive, lent with number `lend`.
    NameFound {
        req: u64,
        handle: Option<ByteBuf>,
        lent: Vec<ObjectId>,
        lend: u64,
    },
    /// `peer.kill()` of an actor that runs on the receiver.
    KillActor {
        actor: ActorId,
        no_restart: bool,
    },
    /// `peer.cancel()` of a task that runs on the receiver.
    Cancel {
        task: TaskId,
        force: bool,
        recursive: bool,
    },
    /// To an object's owner: this node now holds a complete copy.
    Located {
        id: ObjectId,
    },
    /// From an object's owner: the object is freed; drop the copy kept for it.
    Free {
        ids: Vec<ObjectId>,
    },
    /// To a lender: the sender no longer holds these refs, and had seen its
    /// lends up to number `seen`.
    Release {
        ids: Vec<ObjectId>,
        seen: u64,
    },
    /// To a borrower: which of these refs (lent up to number `upto`) do you
    /// still hold? Answered by a [`PeerMsg::Release`] of the others.
    AskBorrows {
        ids: Vec<ObjectId>,
        upto: u64,
    },
    /// To an object's owner: the peer that lent these refs to the sender is
    /// gone; the sender borrows them from the owner now.
    Borrowing {
        ids: Vec<ObjectId>,
    },
    /// To an object's owner: the sender keeps copies of these for it (after
    /// a link reset, a [`PeerMsg::Free`] may have been lost). The owner
    /// answers with a `Free` of those it no longer has.
    CopiesKept {
        ids: Vec<ObjectId>,
    },
    /// To an actor's host: every handle to it is gone; it ends once its
    /// pending calls are done.
    ActorOutOfScope {
        actor: ActorId,
    },
    /// The sender's link to the receiver broke: messages may have been lost.
    LinkReset,
    /// To a task's owner: the sender placed the task once more, on `to` (PeerId bytes).
    Moved {
        task: TaskId,
        to: ByteBuf,
    },
    /// Which of these tasks (sent to you) do you still have? Answered by [`PeerMsg::Have`].
    Which {
        tasks: Vec<TaskId>,
    },
    /// The ones of a [`PeerMsg::Which`] this node has (the rest never arrived, or finished).
    Have {
        tasks: Vec<TaskId>,
    },
    /// Lines a task printed on the receiver's behalf (its driver is there).
    Output {
        task: TaskId,
        stream: u8,
        data: ByteBuf,
    },
    /// What is this kind of your state? Answered by [`PeerMsg::StateReply`]
    /// (read-only: `peer list`, the dashboard, the timeline).
    StateQuery {
        req: u64,
        what: Listing,
    },
    /// The answer to a [`PeerMsg::StateQuery`]: JSON text.
    StateReply {
        req: u64,
        json: ByteBuf,
    },
}

impl PeerMsg {
    /// The message's name, for logs.
    pub fn name(&self) -> &'static str {
        match self {
            PeerMsg::BidRequest { .. } => "BidRequest",
            PeerMsg::Bid { .. } => "Bid",
            PeerMsg::Function { .. } => "Function",
            PeerMsg::NeedFunction { .. } => "NeedFunction",
            PeerMsg::Task { .. } => "Task",
            PeerMsg::Objects { .. } => "Objects",
            PeerMsg::Fetch { .. } => "Fetch",
            PeerMsg::LocateActor { .. } => "LocateActor",
            PeerMsg::ActorAt { .. } => "ActorAt",
            PeerMsg::LookupName { .. } => "LookupName",
            PeerMsg::NameFound { .. } => "NameFound",
            PeerMsg::KillActor { .. } => "KillActor",
            PeerMsg::Cancel { .. } => "Cancel",
            PeerMsg::Located { .. } => "Located",
            PeerMsg::Free { .. } => "Free",
            PeerMsg::Release { .. } => "Release",
            PeerMsg::AskBorrows { .. } => "AskBorrows",
            PeerMsg::Borrowing { .. } => "Borrowing",
            PeerMsg::CopiesKept { .. } => "CopiesKept",
            PeerMsg::ActorOutOfScope { .. } => "ActorOutOfScope",
            PeerMsg::LinkReset => "LinkReset",
            PeerMsg::Moved { .. } => "Moved",
            PeerMsg::Which { .. } => "Which",
            PeerMsg::Have { .. } => "Have",
            PeerMsg::Output { .. } => "Output",
            PeerMsg::StateQuery { .. } => "StateQuery",
            PeerMsg::StateReply { .. } => "StateReply",
        }
    }
}
