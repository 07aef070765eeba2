//! The node's tables behind one lock: objects (values, refcounts, waiters),
//! tasks, workers, actors and connections.
//!
//! Everything that changes the tables is a method on [`State`], split over
//! `objects.rs` (values and waiters), `tasks.rs` (dependencies, queueing,
//! dispatch, completion), `actors.rs` and `workers.rs`. Methods never block
//! and never do I/O: messages go to per-connection [`Outbox`]es, process
//! spawns to the spawner task.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use parking_lot::{Condvar, Mutex};
use peer_objstore::Store;
use rustc_hash::{FxHashMap, FxHashSet};
use serde_bytes::ByteBuf;
use tokio::sync::mpsc;

use crate::config::NodeConfig;
use crate::ids::{ActorId, FnId, NodeId, ObjectId, OwnerTag, TaskId, WorkerId};
use crate::outbox::Outbox;
use crate::protocol::{ErrorInfo, Role, TaskSpec, Value};
use crate::resources::Resources;

/// A connection number.
pub type ConnId = u64;
/// A pending get/wait number.
pub type WaitId = u64;

/// One client connection.
pub struct Conn {
    pub outbox: Arc<Outbox>,
    pub role: Option<Role>,
    pub pid: u32,
    /// Pins this client holds on stored objects.
    pub pins: FxHashMap<ObjectId, u32>,
    /// Objects it created in the store and has not sealed yet.
    pub unsealed: FxHashSet<ObjectId>,
    /// `ObjectRef` handles alive in that process, released if it dies.
    pub refs: FxHashMap<ObjectId, u32>,
}

/// Who holds a pin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Holder {
    /// The embedded driver of this process.
    Local,
    Conn(ConnId),
}

/// An object's value, once it exists.
#[derive(Debug)]
pub enum ObjState {
    Pending,
    Ready(Value),
}

/// One object in the owner table.
#[derive(Debug)]
pub struct ObjectEntry {
    pub state: ObjState,
    /// Live `ObjectRef` handles in local processes.
    pub refs: u32,
    /// Whether a handle ever existed (so a result that arrives before its
    /// first handle is not freed early).
    pub had_handle: bool,
    /// A ref was serialized: it may be alive where we cannot count it.
    pub escaped: bool,
    /// Queued or running tasks that take it as an argument.
    pub holds: u32,
    /// Tasks waiting for it.
    pub dependents: Vec<TaskId>,
    /// Pending gets/waits for it: (wait, index in that wait's ids).
    pub waiters: Vec<(WaitId, u32)>,
    /// Refs serialized inside its value: it holds them while it lives.
    pub contains: Vec<ObjectId>,
    /// Owned by another peer and not asked for yet (a handle arrived here
    /// before anyone needed the value).
    pub unfetched: bool,
    /// Copies of the value in other peers' stores. While the state is
    /// `Pending`, a set `elsewhere` means the value exists but not here yet:
    /// it is pulled when needed.
    pub elsewhere: Option<Box<Elsewhere>>,
    /// A copy kept for its owner on another peer (the result of a task run
    /// here): freed when the owner says so.
    pub held_for_owner: bool,
    /// A copy of another peer's object that nobody here uses any more, kept
    /// so peers can pull it from here: dropped when the owner frees the
    /// object or when the store needs the room.
    pub cached: bool,
}

/// Where copies of an object's value are, besides this node.
#[derive(Debug, Clone, Default)]
pub struct Elsewhere {
    pub len: u64,
    /// Peers with a complete copy.
    pub copies: Vec<peer_gossip::PeerId>,
    /// Peers pulling a copy (they serve the chunks they have).
    pub partial: Vec<peer_gossip::PeerId>,
}

impl Elsewhere {
    /// Every holder, complete copies first.
    pub fn holders(&self) -> impl Iterator<Item = peer_gossip::PeerId> + '_ {
        self.copies.iter().chain(&self.partial).copied()
    }
}

impl ObjectEntry {
    pub fn pending() -> Self {
        Self {
            state: ObjState::Pending,
            refs: 0,
            had_handle: false,
            escaped: false,
            holds: 0,
            dependents: Vec::new(),
            waiters: Vec::new(),
            contains: Vec::new(),
            unfetched: false,
            elsewhere: None,
            held_for_owner: false,
            cached: false,
        }
    }

    /// The value exists on other peers only.
    pub fn is_elsewhere(&self) -> bool {
        matches!(self.state, ObjState::Pending) && self.elsewhere.is_some()
    }
}

/// Wakes an embedded driver thread blocked in `get`/`wait`.
#[derive(Default)]
pub struct LocalSignal {
    pub done: Mutex<bool>,
    pub cv: Condvar,
}

/// Where the answer to a get/wait goes.
pub enum Target {
    Local(Arc<LocalSignal>),
    Remote {
        conn: ConnId,
        req: u64,
    },
    /// Another node: the owner of a guest task's results, or a peer that
    /// fetched an object. `free_after`: the values were only kept for it.
    Peer {
        peer: peer_gossip::PeerId,
        free_after: bool,
    },
}

/// A get or wait that is not satisfied yet.
pub struct PendingWait {
    pub ids: Vec<ObjectId>,
    /// Indices of `ids` that are ready, in completion order.
    pub ready: Vec<u32>,
    /// How many ready indices complete it (all of them for a get).
    pub need: usize,
    pub is_get: bool,
    pub target: Target,
    /// A task worker that gave its CPU back while it waits.
    pub blocked_worker: Option<WorkerId>,
}

/// Where a task is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskState {
    /// Some arguments do not exist yet.
    Waiting,
    /// Runnable: in the ready queue, or for actor methods in the actor's queue.
    Queued,
    /// Runnable here only later: waiting for other peers' bids (or for a
    /// peer that can run it at all to join).
    Placing,
    Running(WorkerId),
    /// Sent to another peer (`ClusterState::sent_to` says which), which
    /// sends the results back.
    Remote,
}

/// A task this node runs for another peer (the task's owner).
#[derive(Debug, Clone, Copy)]
pub struct Guest {
    /// Where the results go.
    pub owner: peer_gossip::PeerId,
    /// How many times the task has been placed so far.
    pub hops: u8,
    /// The queue length the sender expected here (see `PeerMsg::Task`).
    pub expect_queue: u32,
}

/// A task that has not finished.
pub struct TaskEntry {
    pub spec: Arc<TaskSpec>,
    pub missing: u32,
    pub resources: Resources,
    pub retries_left: i32,
    pub state: TaskState,
    pub cancelled: bool,
    /// The attached driver that should see the task's printed output (None:
    /// the workers' own terminal, which is the embedded driver's).
    pub output_to: Option<ConnId>,
    /// Set when another peer owns the task and this node runs it.
    pub guest: Option<Box<Guest>>,
    /// Placement chose this node: it waits here for a free slot.
    pub stay_local: bool,
    /// Some arguments are in other peers' stores: they are pulled here before
    /// it runs here (or it is placed near them).
    pub inputs_elsewhere: bool,
}

/// What a worker process is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkerKind {
    Task,
    Actor(ActorId),
}

/// One worker process.
pub struct WorkerEntry {
    pub kind: WorkerKind,
    pub conn: Option<ConnId>,
    pub pid: Option<u32>,
    /// The task it runs (task workers).
    pub busy: Option<TaskId>,
    /// Short tasks sent to it to start right after `busy` (pipelining).
    pub queued: VecDeque<TaskId>,
    /// Resources it holds for its task.
    pub held: Resources,
    /// Nesting depth of gets/waits it is blocked in.
    pub blocked: u32,
    pub known_fns: FxHashSet<FnId>,
    pub spawned_at: Instant,
}

/// Life of an actor.
#[derive(Debug, Clone, PartialEq)]
pub enum ActorState {
    /// Creation task waits for arguments or resources.
    Pending,
    /// Its worker is starting or running the constructor.
    Creating,
    Alive,
    Dead(ErrorInfo),
}

/// One actor.
pub struct ActorEntry {
    pub creation: Arc<TaskSpec>,
    pub worker: Option<WorkerId>,
    pub state: ActorState,
    /// Method calls not yet sent, in submission order.
    pub queue: VecDeque<TaskId>,
    /// Method calls sent to the worker, in order.
    pub inflight: VecDeque<TaskId>,
    pub name: Option<String>,
    pub handle_blob: ByteBuf,
    pub resources: Resources,
    pub holds_resources: bool,
    pub restarts_left: i32,
}

/// A request to the spawner: start one worker process.
#[derive(Debug, Clone, Copy)]
pub struct SpawnRequest {
    pub worker: WorkerId,
}

/// All of a node's mutable state.
pub struct State {
    pub node_id: NodeId,
    pub config: NodeConfig,
    pub store: Store<ObjectId>,
    pub total: Resources,
    pub available: Resources,
    pub objects: FxHashMap<ObjectId, ObjectEntry>,
    pub tasks: FxHashMap<TaskId, TaskEntry>,
    pub ready: VecDeque<TaskId>,
    pub functions: FxHashMap<FnId, Arc<ByteBuf>>,
    pub workers: FxHashMap<WorkerId, WorkerEntry>,
    pub idle: Vec<WorkerId>,
    pub conns: FxHashMap<ConnId, Conn>,
    pub next_conn: ConnId,
    pub actors: FxHashMap<ActorId, ActorEntry>,
    pub named_actors: FxHashMap<String, ActorId>,
    pub waits: FxHashMap<WaitId, PendingWait>,
    pub next_wait: WaitId,
    pub spawn_tx: Option<mpsc::UnboundedSender<SpawnRequest>>,
    pub timer_tx: mpsc::UnboundedSender<(Instant, WaitId)>,
    pub shutting_down: bool,
    /// Set when the worker fork server failed: why tasks cannot run.
    pub spawn_failure: Option<String>,
    pub warned_infeasible: FxHashSet<TaskId>,
    /// Stored objects whose bytes were spilled to disk: file and length.
    pub spilled: FxHashMap<ObjectId, (std::path::PathBuf, u64)>,
    /// Where spilled objects go.
    pub spill_dir: std::path::PathBuf,
    /// The id other peers know this node by (its PeerId), when it joins a cluster.
    pub public_id: Option<String>,
    /// Membership of a multi-peer cluster (None in laptop mode).
    pub cluster: Option<Arc<crate::cluster::Cluster>>,
    /// Large objects sealed here and not yet announced to the cluster.
    pub to_announce: Vec<(ObjectId, u64)>,
    /// Mean run time of each function (µs, moving average) and how many runs it is based on.
    pub fn_run_us: FxHashMap<FnId, (f64, u32)>,
    /// Whose ids this node makes: its own tag.
    pub owner_tag: OwnerTag,
    /// Placement and the other peers (inactive in laptop mode).
    pub remote: crate::cluster_state::ClusterState,
    /// Objects being pulled into the store from other peers.
    pub pulls: FxHashMap<ObjectId, Arc<crate::pull::PullProgress>>,
    /// Cached copies of other peers' objects, least recently cached first.
    pub cached: VecDeque<ObjectId>,
    pub stats: Stats,
}

/// Counters shown by `peer status`.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct Stats {
    pub tasks_submitted: u64,
    pub tasks_finished: u64,
    pub tasks_retried: u64,
    pub workers_started: u64,
    pub workers_died: u64,
    pub bad_frames: u64,
    /// Tasks this node placed on other peers.
    pub tasks_sent: u64,
    /// Tasks other peers placed here.
    pub tasks_received: u64,
    /// Tasks received from a peer and placed once more.
    pub tasks_forwarded: u64,
    /// Placement rounds (one bid request per candidate each).
    pub placement_rounds: u64,
    /// Objects pulled into this store from other peers, and their bytes.
    pub objects_pulled: u64,
    pub bytes_pulled: u64,
    /// Bytes of objects this node served to pulling peers.
    pub bytes_served: u64,
    /// Objects owned here rebuilt from lineage after their copies were lost.
    pub objects_rebuilt: u64,
    /// Actors restarted because their peer died.
    pub actors_restarted: u64,
}

impl State {
    pub fn new(
        node_id: NodeId,
        config: NodeConfig,
        store: Store<ObjectId>,
        spawn_tx: mpsc::UnboundedSender<SpawnRequest>,
        timer_tx: mpsc::UnboundedSender<(Instant, WaitId)>,
    ) -> Self {
        let spill_dir = config.state_dir.join("spill").join(format!("{node_id}"));
        let mut pairs: Vec<(&str, f64)> = vec![("CPU", config.num_cpus)];
        pairs.extend(config.resources.iter().map(|(k, v)| (k.as_str(), *v)));
        let total = Resources::from_pairs(pairs);
        Self {
            node_id,
            store,
            available: total.clone(),
            total,
            config,
            objects: FxHashMap::default(),
            tasks: FxHashMap::default(),
            ready: VecDeque::new(),
            functions: FxHashMap::default(),
            workers: FxHashMap::default(),
            idle: Vec::new(),
            conns: FxHashMap::default(),
            next_conn: 1,
            actors: FxHashMap::default(),
            named_actors: FxHashMap::default(),
            waits: FxHashMap::default(),
            next_wait: 1,
            spawn_tx: Some(spawn_tx),
            timer_tx,
            shutting_down: false,
            spawn_failure: None,
            warned_infeasible: FxHashSet::default(),
            fn_run_us: FxHashMap::default(),
            owner_tag: OwnerTag::of_node(&node_id),
            remote: crate::cluster_state::ClusterState::new(),
            pulls: FxHashMap::default(),
            cached: VecDeque::new(),
            spilled: FxHashMap::default(),
            cluster: None,
            public_id: None,
            to_announce: Vec::new(),
            spill_dir,
            stats: Stats::default(),
        }
    }

    /// Send a message to a connection, if it is still there.
    pub fn send_to<T: serde::Serialize>(&self, conn: ConnId, msg: &T) {
        if let Some(c) = self.conns.get(&conn) {
            c.outbox.send(msg);
        }
    }
}
