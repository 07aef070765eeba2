//! The node API, defined once: what a process asks of its node. The node
//! embedded in this process ([`Node`](crate::Node)) and a client of another
//! process's node ([`Client`](crate::Client)) both implement it, and the
//! Python binding holds whichever it has as a `dyn NodeApi`.

use std::time::Duration;

use peer_node_core::ids::{ActorId, FnId, ObjectId};
use peer_node_core::wire::local::{ErrorInfo, Query, Reserved, TaskSpec, Value};

use crate::error::NodeResult;

/// How long a blocking call may wait: until `timeout` (None: no limit), or
/// until `interrupted`, polled every 100 ms, says to stop (Ctrl-C).
pub struct Patience<'a> {
    pub timeout: Option<Duration>,
    pub interrupted: &'a mut dyn FnMut() -> bool,
}

impl std::fmt::Debug for Patience<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Patience")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// Everything a driver or worker process does with its node.
pub trait NodeApi: Send + Sync {
    /// Keep a pickled function for the tasks that call it.
    fn register_function(&self, id: FnId, blob: Vec<u8>) -> NodeResult<()>;
    /// Submit a task, or create an actor (a taken name is an error).
    fn submit(&self, spec: TaskSpec) -> NodeResult<()>;
    /// The values of `ids`; None when patience ran out first. Stored values
    /// come pinned: release them. As soon as one of them fails, the answer
    /// is that error alone (one `Value::Error`), which the get raises, as
    /// Ray's does, without waiting for the others.
    fn get(&self, ids: &[ObjectId], p: Patience<'_>) -> NodeResult<Option<Vec<Value>>>;
    /// Indices of ready ids, in completion order, at most `num_returns`.
    /// `fetch_local` is Ray's: ready means here (pulled if need be), or
    /// anywhere in the cluster (and nothing is pulled).
    fn wait(
        &self,
        ids: &[ObjectId],
        num_returns: usize,
        fetch_local: bool,
        p: Patience<'_>,
    ) -> NodeResult<Vec<u32>>;
    /// Reserve store space for a `put` or large arguments (or learn that the
    /// object is already there).
    fn create_object(&self, id: ObjectId, len: u64) -> NodeResult<Result<Reserved, ErrorInfo>>;
    /// A created object is written: it becomes the object's value.
    /// `contained`: refs serialized inside it, which it keeps alive.
    fn seal(&self, id: ObjectId, contained: Vec<ObjectId>) -> NodeResult<()>;
    /// A small `put`.
    fn put_inline(&self, id: ObjectId, blob: Vec<u8>, contained: Vec<ObjectId>) -> NodeResult<()>;
    /// Drop pins taken by stored values.
    fn release(&self, ids: &[ObjectId]);
    /// New `ObjectRef` handles in this process.
    fn add_refs(&self, ids: &[ObjectId]);
    /// Handles dropped.
    fn dec_refs(&self, ids: &[ObjectId]);
    /// Refs that were serialized and may outlive every handle.
    fn mark_escaped(&self, ids: &[ObjectId]);
    /// Cancel the task that makes `id`.
    fn cancel(&self, id: ObjectId, force: bool, recursive: bool) -> NodeResult<()>;
    fn kill_actor(&self, id: ActorId, no_restart: bool) -> NodeResult<()>;
    /// The stored handle of a live named actor, on this node or another.
    fn get_actor(&self, name: &str) -> NodeResult<Option<Vec<u8>>>;
    /// A read-only question, answered as JSON.
    fn query(&self, q: Query) -> NodeResult<serde_json::Value>;
    /// This process is done with the node: an embedded node stops, a
    /// client sends what it batched.
    fn close(&self);
}
