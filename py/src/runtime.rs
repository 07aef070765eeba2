//! The one runtime of this process: its node (embedded in this process, or
//! another process's reached through its socket) and the store mapping.

use std::sync::Arc;

use parking_lot::{Mutex, RwLock};
use peer_node::{Client, NodeApi};
use peer_node_core::ids::{ActorId, OwnerTag, TaskId, WorkerId};
use peer_objstore::Arena;
use pyo3::prelude::*;

use crate::errors::NativeNotInitializedError;

/// What the Python side is told about its node.
#[derive(Debug, Clone)]
pub struct RuntimeInfo {
    pub node_id: String,
    pub socket: String,
    pub arena_path: String,
    pub arena_size: u64,
    pub num_cpus: f64,
    pub resources: Vec<(String, f64)>,
    /// What the ids this process makes start with: its node owns them.
    pub owner_tag: OwnerTag,
}

/// Which task/actor this worker is running now.
#[derive(Debug, Default, Clone, Copy)]
pub struct Context {
    pub task: Option<TaskId>,
    pub actor: Option<ActorId>,
    /// The task's driver is another process: send its output to the node.
    pub forward_output: bool,
}

/// The process's node plus the store mapping.
pub struct Runtime {
    /// The node API: an embedded [`peer_node::Node`] or a socket [`Client`].
    pub node: Arc<dyn NodeApi>,
    /// The socket client, when the node is another process's (workers use
    /// it for what only workers do: run tasks, report them, forward output).
    pub client: Option<Arc<Client>>,
    arena: Arc<Arena>,
    pub info: RuntimeInfo,
    pub worker_id: Option<WorkerId>,
    pub context: Mutex<Context>,
}

static RUNTIME: RwLock<Option<Arc<Runtime>>> = RwLock::new(None);

/// The runtime, or the error telling the user to call `init()`.
pub fn current() -> PyResult<Arc<Runtime>> {
    RUNTIME.read().clone().ok_or_else(|| {
        NativeNotInitializedError::new_err("peer is not initialized: call peer.init() first")
    })
}

/// The runtime if there is one (for drop paths that must not fail).
pub fn current_opt() -> Option<Arc<Runtime>> {
    RUNTIME.read().clone()
}

pub fn install(rt: Arc<Runtime>) {
    *RUNTIME.write() = Some(rt);
}

pub fn uninstall() -> Option<Arc<Runtime>> {
    RUNTIME.write().take()
}

impl Runtime {
    /// A runtime on a node embedded in this process.
    pub fn embedded(node: Arc<peer_node::Node>, arena: Arc<Arena>, info: RuntimeInfo) -> Self {
        Self::new(node, None, arena, info, None)
    }

    /// A runtime on another process's node, reached through `client`.
    pub fn connected(
        client: Arc<Client>,
        arena: Arc<Arena>,
        info: RuntimeInfo,
        worker_id: Option<WorkerId>,
    ) -> Self {
        let node: Arc<dyn NodeApi> = client.clone();
        Self::new(node, Some(client), arena, info, worker_id)
    }

    fn new(
        node: Arc<dyn NodeApi>,
        client: Option<Arc<Client>>,
        arena: Arc<Arena>,
        info: RuntimeInfo,
        worker_id: Option<WorkerId>,
    ) -> Self {
        Self {
            node,
            client,
            arena,
            info,
            worker_id,
            context: Mutex::new(Context::default()),
        }
    }

    pub fn arena(&self) -> &Arc<Arena> {
        &self.arena
    }
}
