//! Wire messages between a node and its local clients (workers, attached
//! drivers, the `peer` CLI) over the node's Unix socket.
//!
//! Every message is a postcard-encoded [`ClientMsg`] or [`NodeMsg`] inside a
//! length-prefixed frame (see [`crate::wire::codec`]). A client opens with
//! [`ClientMsg::Hello`]; the node answers [`NodeMsg::Welcome`]. Requests that
//! need an answer carry a `req` number that the answer repeats.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

use crate::ids::{ActorId, EnvKey, FnId, ObjectId, OwnerTag, TaskId, WorkerId};

/// Values up to this many encoded bytes travel inside messages; larger ones
/// go through the shared-memory store.
pub const INLINE_MAX: usize = 100 * 1024;

/// The object id under which a task's arguments are stored when they are too
/// large to travel inline.
pub fn args_object_id(task: TaskId) -> ObjectId {
    ObjectId::for_return(task, u32::MAX)
}

/// The value of an object, as it travels.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Value {
    /// An encoded object blob (see [`crate::wire::blob`]), carried in the message.
    Inline(ByteBuf),
    /// An encoded object blob in the node's store at `offset`, `len` bytes.
    /// A receiver holds one pin on it and must send [`ClientMsg::Release`].
    Stored { offset: u64, len: u64 },
    /// The object is an error.
    Error(ErrorInfo),
}

/// The answer to [`ClientMsg::Create`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reserved {
    /// Write the object's bytes at this offset of the arena, then seal it.
    Write { offset: u64 },
    /// The store already holds this object's value (another run of the task
    /// that makes it, or a copy pulled from a peer, got there first): write
    /// nothing and report it as stored here.
    Present { offset: u64, len: u64 },
}

/// What kind of failure an error value records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ErrorKind {
    /// The task raised; the blob is the pickled exception.
    Task,
    WorkerCrashed,
    ActorDied,
    StoreFull,
    Cancelled,
    ObjectLost,
    /// The peer that owns the object (made its ref) is gone.
    OwnerDied,
    /// An actor call's fate is unknown: the link to the actor's peer broke
    /// and the call is not there (it may or may not have run; Ray's
    /// `ActorUnavailableError`).
    ActorUnavailable,
}

impl ErrorKind {
    /// Name shown to Python (`peer._native.ERR_*`).
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Task => "task",
            ErrorKind::WorkerCrashed => "worker_crashed",
            ErrorKind::ActorDied => "actor_died",
            ErrorKind::StoreFull => "store_full",
            ErrorKind::Cancelled => "cancelled",
            ErrorKind::ObjectLost => "object_lost",
            ErrorKind::OwnerDied => "owner_died",
            ErrorKind::ActorUnavailable => "actor_unavailable",
        }
    }
}

/// An error value: what happened, in words, plus an optional pickled payload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorInfo {
    pub kind: ErrorKind,
    pub message: String,
    pub blob: Option<ByteBuf>,
}

impl ErrorInfo {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            blob: None,
        }
    }
}

/// What a task does when it runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TaskKind {
    /// Call a function (one decorated with `@remote`).
    Normal,
    /// Construct an actor in its dedicated worker.
    ActorCreate,
    /// Call a method of an existing actor.
    ActorMethod,
}

/// Options that only an actor-creation task has.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActorOptions {
    pub actor: ActorId,
    pub name: Option<String>,
    pub class_name: String,
    pub max_restarts: i32,
    /// The pickled actor handle, handed out by `get_actor(name)`.
    pub handle_blob: ByteBuf,
    /// `lifetime="detached"`: it lives until `kill()`, not until its handles are gone.
    pub detached: bool,
}

/// The most bytes a runtime environment's `setup` may have.
pub const RUNTIME_ENV_MAX: usize = 64 * 1024;

/// A task's runtime environment (Ray's `runtime_env`), as its driver
/// normalised it: the node matches workers by `key` and hands `setup` to the
/// worker, which applies it (the packages it names travel as objects, among
/// the task's `contained` refs).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuntimeEnv {
    /// What workers are matched by: equal keys set up equal environments.
    pub key: EnvKey,
    /// What a worker applies (JSON the node does not read), at most
    /// [`RUNTIME_ENV_MAX`] bytes.
    pub setup: String,
}

/// A task as submitted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskSpec {
    pub task: TaskId,
    pub kind: TaskKind,
    /// The function, or for actor tasks the class.
    pub fn_id: FnId,
    /// The actor an `ActorMethod` task calls.
    pub actor: Option<ActorId>,
    pub method: String,
    /// Display name (function or `Class.method`).
    pub name: String,
    /// Encoded arguments: inline, or stored under [`args_object_id`].
    pub args: Value,
    /// Top-level ObjectRef arguments, in placeholder order.
    pub deps: Vec<ObjectId>,
    /// Refs nested deeper inside the arguments: the task holds them until it ends.
    pub contained: Vec<ObjectId>,
    pub num_returns: u32,
    /// Resources held while it runs (`CPU` included).
    pub resources: Vec<(String, f64)>,
    /// Retries after a worker crash (-1: forever).
    pub max_retries: i32,
    /// Also retry when the task raised.
    pub retry_exceptions: bool,
    pub actor_options: Option<ActorOptions>,
    /// Where it runs: a worker set up for this environment (None: a plain
    /// worker, in the node's own environment). An actor's calls run in its
    /// creation's environment.
    pub runtime_env: Option<Arc<RuntimeEnv>>,
}

impl TaskSpec {
    /// The key of the environment it runs in (None: the node's own).
    pub fn env_key(&self) -> Option<EnvKey> {
        self.runtime_env.as_ref().map(|e| e.key)
    }

    /// What to call the actor (its class name) in messages; the task name otherwise.
    pub fn actor_name(&self) -> &str {
        self.actor_options
            .as_ref()
            .map_or(self.name.as_str(), |o| o.class_name.as_str())
    }

    /// The ids of the objects this task returns.
    pub fn return_ids(&self) -> impl Iterator<Item = ObjectId> + '_ {
        (1..=self.num_returns).map(|i| ObjectId::for_return(self.task, i))
    }
}

/// A task handed to a worker to run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Execution {
    pub kind: TaskKind,
    pub task: TaskId,
    pub fn_id: FnId,
    /// The pickled function/class, the first time this worker sees `fn_id`.
    pub fn_blob: Option<ByteBuf>,
    pub method: String,
    pub name: String,
    pub actor: Option<ActorId>,
    pub args: Value,
    /// The spec's `deps` and their values, in order.
    pub dep_ids: Vec<ObjectId>,
    pub deps: Vec<Value>,
    pub num_returns: u32,
    /// Send what the task prints to the node ([`ClientMsg::Output`]): its
    /// driver is attached from another process.
    pub forward_output: bool,
    /// The GPU devices the task (or its actor) holds; empty when it asked
    /// for none. The worker sets `CUDA_VISIBLE_DEVICES` to exactly these.
    pub gpu_ids: Vec<String>,
    /// The task's environment: the worker was started for it and sets it up
    /// before its first task; the packages it names are the task's, for
    /// tasks it submits.
    pub runtime_env: Option<Arc<RuntimeEnv>>,
}

/// How a task ended, as its worker reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Outcome {
    /// One value per return (inline, or stored by the worker and unsealed).
    Returns(Vec<Value>),
    /// The task raised.
    Failed(ErrorInfo),
    /// The task raised an exception its `retry_exceptions` list does not
    /// name: it fails without a retry.
    FailedFinal(ErrorInfo),
}

/// Who is on the other end of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Role {
    Worker(WorkerId),
    Driver,
    /// The `peer` CLI: status and shutdown only.
    Control,
}

/// Read-only questions about the node; answered with JSON text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Query {
    Nodes,
    ClusterResources,
    AvailableResources,
    Status,
    /// One kind of this node's state, as rows (`{"node": …, "rows": […]}`).
    List(Listing),
    /// The same from every peer in the view, asked over the peer protocol:
    /// `{"nodes": [one answer of List each], "missing": [peers that did not
    /// answer in time]}`.
    Cluster(Listing),
}

/// What a [`Query::List`] lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Listing {
    /// This node: resources, queue, store, workers, counters (one row).
    Peers,
    /// Tasks running or queued here, then recent runs and failures.
    Tasks,
    /// Actors hosted here.
    Actors,
    /// Objects this node knows, largest first.
    Objects,
    /// Every run, get, put and transfer kept here, with wall-clock times.
    Timeline,
    /// What a dashboard shows of this node: its row, running tasks, recent
    /// failures, actors, the largest objects, transfers, worker output, and
    /// the runs of the last minute.
    Overview,
}

impl Listing {
    pub fn name(self) -> &'static str {
        match self {
            Listing::Peers => "peers",
            Listing::Tasks => "tasks",
            Listing::Actors => "actors",
            Listing::Objects => "objects",
            Listing::Timeline => "timeline",
            Listing::Overview => "overview",
        }
    }

    /// The listing a name (as `peer list` takes it) stands for.
    pub fn from_name(name: &str) -> Option<Listing> {
        [
            Listing::Peers,
            Listing::Tasks,
            Listing::Actors,
            Listing::Objects,
            Listing::Timeline,
            Listing::Overview,
        ]
        .into_iter()
        .find(|l| l.name() == name)
    }
}

/// Client → node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ClientMsg {
    Hello {
        role: Role,
        pid: u32,
    },
    RegisterFunction {
        id: FnId,
        blob: ByteBuf,
    },
    Submit(Box<TaskSpec>),
    /// Create an actor; answered by [`NodeMsg::Reply`] (an error if the name is taken).
    CreateActor {
        req: u64,
        spec: Box<TaskSpec>,
    },
    Get {
        req: u64,
        ids: Vec<ObjectId>,
        timeout_ms: Option<u64>,
    },
    Wait {
        req: u64,
        ids: Vec<ObjectId>,
        num_returns: u32,
        timeout_ms: Option<u64>,
        /// Ray's `fetch_local`: ready means here (pulled if need be), or
        /// anywhere in the cluster.
        fetch_local: bool,
    },
    /// Reserve `len` bytes in the store for object `id`; answered by [`NodeMsg::Created`].
    Create {
        req: u64,
        id: ObjectId,
        len: u64,
    },
    /// The client wrote a created object: seal it (a `put`). `contained`:
    /// refs serialized inside the value, which it keeps alive.
    Seal {
        id: ObjectId,
        contained: Vec<ObjectId>,
    },
    /// A small `put`.
    PutInline {
        id: ObjectId,
        blob: ByteBuf,
        contained: Vec<ObjectId>,
    },
    /// Drop pins taken by values the node sent.
    Release {
        ids: Vec<ObjectId>,
    },
    AddRefs {
        ids: Vec<ObjectId>,
    },
    DecRefs {
        ids: Vec<ObjectId>,
    },
    /// Refs that were serialized and may outlive every handle.
    Escaped {
        ids: Vec<ObjectId>,
    },
    /// `run_us`: how long the worker spent running it (the scheduler uses it
    /// to decide which functions are short enough to queue behind another).
    /// `contained`: for each return, the refs serialized inside it.
    TaskDone {
        task: TaskId,
        outcome: Outcome,
        run_us: u64,
        contained: Vec<Vec<ObjectId>>,
    },
    /// `cancel(ref, force, recursive)`: `recursive` cancels the tasks the
    /// task submitted too.
    Cancel {
        id: ObjectId,
        force: bool,
        recursive: bool,
    },
    /// Lines a task printed (`stream` 1: stdout, 2: stderr), for its driver.
    Output {
        task: TaskId,
        stream: u8,
        data: ByteBuf,
    },
    KillActor {
        actor: ActorId,
        no_restart: bool,
    },
    GetActor {
        req: u64,
        name: String,
    },
    Query {
        req: u64,
        query: Query,
    },
    /// Stop the node (a daemon's `peer down`).
    Shutdown,
    /// A task worker exits after the task it reported last (`max_calls`):
    /// the tasks sent to it that it did not start go elsewhere.
    Retire,
    /// An actor worker's actor exits on purpose (`exit_actor()`,
    /// `__ray_terminate__`): `reason` is what its callers' errors say.
    ActorExit {
        reason: String,
    },
}

/// Node → client.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum NodeMsg {
    /// `node_id`: the node's public id (its PeerId in a cluster);
    /// `owner_tag`: what the client starts the ids it makes with (see [`crate::ids`]).
    Welcome {
        node_id: String,
        owner_tag: OwnerTag,
        arena_path: String,
        arena_size: u64,
    },
    Execute(Box<Execution>),
    /// Answer to `Get`: one value per id, or `None` when the timeout passed
    /// first. As soon as one of the ids fails, the answer is that error
    /// alone (the first failed in the ids' order), for the get to raise.
    Values {
        req: u64,
        values: Option<Vec<Value>>,
    },
    /// Answer to `Wait`: indices into its ids, in completion order.
    Ready {
        req: u64,
        indices: Vec<u32>,
    },
    Created {
        req: u64,
        result: Result<Reserved, ErrorInfo>,
    },
    ActorHandle {
        req: u64,
        blob: Option<ByteBuf>,
    },
    /// Generic answer: JSON text, or an error message.
    Reply {
        req: u64,
        result: Result<String, String>,
    },
    /// Tasks queued at this worker behind a task that is now blocked in
    /// `get`: drop them unstarted (the node runs them elsewhere).
    Revoke {
        tasks: Vec<TaskId>,
    },
    /// Lines printed by a task this driver submitted (`stream` 1 or 2).
    Output {
        stream: u8,
        data: ByteBuf,
    },
    /// The node is stopping: exit.
    Exit,
    /// To a worker: task `task`, sent to it earlier, is cancelled. Not yet
    /// started: skip it. Running: a task is interrupted (the node signals
    /// the process too), an async actor's call is cancelled as an asyncio
    /// task, a call of another actor runs on (Ray's rules).
    Cancel {
        task: TaskId,
    },
}

impl ClientMsg {
    /// The message's name, for logs and errors.
    pub fn name(&self) -> &'static str {
        match self {
            ClientMsg::Hello { .. } => "Hello",
            ClientMsg::RegisterFunction { .. } => "RegisterFunction",
            ClientMsg::Submit(_) => "Submit",
            ClientMsg::CreateActor { .. } => "CreateActor",
            ClientMsg::Get { .. } => "Get",
            ClientMsg::Wait { .. } => "Wait",
            ClientMsg::Create { .. } => "Create",
            ClientMsg::Seal { .. } => "Seal",
            ClientMsg::PutInline { .. } => "PutInline",
            ClientMsg::Release { .. } => "Release",
            ClientMsg::AddRefs { .. } => "AddRefs",
            ClientMsg::DecRefs { .. } => "DecRefs",
            ClientMsg::Escaped { .. } => "Escaped",
            ClientMsg::TaskDone { .. } => "TaskDone",
            ClientMsg::Cancel { .. } => "Cancel",
            ClientMsg::Output { .. } => "Output",
            ClientMsg::KillActor { .. } => "KillActor",
            ClientMsg::GetActor { .. } => "GetActor",
            ClientMsg::Query { .. } => "Query",
            ClientMsg::Shutdown => "Shutdown",
            ClientMsg::ActorExit { .. } => "ActorExit",
            ClientMsg::Retire => "Retire",
        }
    }
}
