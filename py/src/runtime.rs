//! The one runtime of this process: an embedded node (laptop mode) or a
//! client of another node's socket (workers, drivers attached to a daemon).

use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Mutex, RwLock};
use peer_node::client::Client;
use peer_node::ids::{ActorId, FnId, ObjectId, OwnerTag, TaskId, WorkerId};
use peer_node::protocol::{ErrorInfo, Query, Reserved, TaskSpec, Value};
use peer_node::{Node, NodeError};
use peer_objstore::Arena;
use pyo3::prelude::*;

use crate::errors::NativeNotInitializedError;

/// How this process reaches its node.
pub enum Backend {
    Embedded(Node),
    Remote(Client),
}

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

/// The process's connection to its node plus the store mapping.
pub struct Runtime {
    pub backend: Backend,
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
    pub fn new(
        backend: Backend,
        arena: Arc<Arena>,
        info: RuntimeInfo,
        worker_id: Option<WorkerId>,
    ) -> Self {
        Self {
            backend,
            arena,
            info,
            worker_id,
            context: Mutex::new(Context::default()),
        }
    }

    pub fn arena(&self) -> &Arc<Arena> {
        &self.arena
    }

    pub fn release(&self, ids: &[ObjectId]) {
        match &self.backend {
            Backend::Embedded(n) => n.release(ids),
            Backend::Remote(c) => c.release(ids),
        }
    }

    pub fn add_refs(&self, ids: &[ObjectId]) {
        match &self.backend {
            Backend::Embedded(n) => n.add_refs(ids),
            Backend::Remote(c) => c.add_refs(ids),
        }
    }

    pub fn dec_refs(&self, ids: &[ObjectId]) {
        match &self.backend {
            Backend::Embedded(n) => n.dec_refs(ids),
            Backend::Remote(c) => c.dec_refs(ids),
        }
    }

    pub fn mark_escaped(&self, ids: &[ObjectId]) {
        match &self.backend {
            Backend::Embedded(n) => n.mark_escaped(ids),
            Backend::Remote(c) => c.mark_escaped(ids),
        }
    }

    pub fn register_function(&self, id: FnId, blob: Vec<u8>) -> Result<(), NodeError> {
        match &self.backend {
            Backend::Embedded(n) => {
                n.register_function(id, blob);
                Ok(())
            }
            Backend::Remote(c) => c.register_function(id, blob),
        }
    }

    pub fn submit(&self, spec: TaskSpec) -> Result<(), NodeError> {
        match &self.backend {
            Backend::Embedded(n) => n.submit(spec),
            Backend::Remote(c) => c.submit(spec),
        }
    }

    pub fn get(
        &self,
        ids: &[ObjectId],
        timeout: Option<Duration>,
        interrupted: &mut dyn FnMut() -> bool,
    ) -> Result<Option<Vec<Value>>, NodeError> {
        match &self.backend {
            Backend::Embedded(n) => Ok(n.get(ids, timeout, interrupted)),
            Backend::Remote(c) => c.get(ids, timeout, interrupted),
        }
    }

    pub fn wait(
        &self,
        ids: &[ObjectId],
        num_returns: usize,
        timeout: Option<Duration>,
        interrupted: &mut dyn FnMut() -> bool,
    ) -> Result<Vec<u32>, NodeError> {
        match &self.backend {
            Backend::Embedded(n) => Ok(n.wait(ids, num_returns, timeout, interrupted)),
            Backend::Remote(c) => c.wait(ids, num_returns, timeout, interrupted),
        }
    }

    pub fn create_object(
        &self,
        id: ObjectId,
        len: u64,
    ) -> Result<Result<Reserved, ErrorInfo>, NodeError> {
        match &self.backend {
            Backend::Embedded(n) => Ok(n.create_object(id, len)),
            Backend::Remote(c) => c.create_object(id, len),
        }
    }

    pub fn seal(&self, id: ObjectId, contained: Vec<ObjectId>) -> Result<(), NodeError> {
        match &self.backend {
            Backend::Embedded(n) => {
                n.seal(id, contained);
                Ok(())
            }
            Backend::Remote(c) => c.seal(id, contained),
        }
    }

    pub fn put_inline(
        &self,
        id: ObjectId,
        blob: Vec<u8>,
        contained: Vec<ObjectId>,
    ) -> Result<(), NodeError> {
        match &self.backend {
            Backend::Embedded(n) => {
                n.put_inline(id, blob, contained);
                Ok(())
            }
            Backend::Remote(c) => c.put_inline(id, blob, contained),
        }
    }

    pub fn cancel(&self, id: ObjectId, force: bool) -> Result<(), NodeError> {
        match &self.backend {
            Backend::Embedded(n) => {
                n.cancel(id, force);
                Ok(())
            }
            Backend::Remote(c) => c.cancel(id, force),
        }
    }

    pub fn kill_actor(&self, id: ActorId, no_restart: bool) -> Result<(), NodeError> {
        match &self.backend {
            Backend::Embedded(n) => {
                n.kill_actor(id, no_restart);
                Ok(())
            }
            Backend::Remote(c) => c.kill_actor(id, no_restart),
        }
    }

    pub fn get_actor(&self, name: &str) -> Result<Option<Vec<u8>>, NodeError> {
        match &self.backend {
            Backend::Embedded(n) => Ok(n.get_actor(name)),
            Backend::Remote(c) => c.get_actor(name),
        }
    }

    pub fn query(&self, q: Query) -> Result<serde_json::Value, NodeError> {
        match &self.backend {
            Backend::Embedded(n) => Ok(n.query(q)),
            Backend::Remote(c) => c.query(q),
        }
    }

    /// Stop an embedded node, or flush a client's bookkeeping.
    pub fn stop(&self) {
        match &self.backend {
            Backend::Embedded(n) => n.stop(),
            Backend::Remote(c) => {
                let _ = c.flush();
            }
        }
    }
}
