//! The node API, defined once: what a process asks of its node. The node
//! embedded in this process ([`Node`](crate::Node)) and a client of another
//! process's node ([`Client`](crate::Client)) both implement it, and the
//! Python binding holds whichever it has as a `dyn NodeApi`.

use std::time::Duration;

use peer_node_core::ids::{ActorId, FnId, ObjectId};
use peer_node_core::wire::local::{ErrorInfo, Query, Reserved, TaskSpec, Value};

use crate::error::NodeError;

/// Everything a driver or worker process does with its node.
pub trait NodeApi: Send + Sync {
    /// Keep a pickled function for the tasks that call it.
    fn register_function(&self, id: FnId, blob: Vec<u8>) -> Result<(), NodeError>;
    /// Submit a task, or create an actor (a taken name is an error).
    fn submit(&self, spec: TaskSpec) -> Result<(), NodeError>;
    /// The values of `ids`; None on timeout or when `interrupted` (polled
    /// every 100 ms) says so. Stored values come pinned: release them.
    fn get(
        &self,
        ids: &[ObjectId],
        timeout: Option<Duration>,
        interrupted: &mut dyn FnMut() -> bool,
    ) -> Result<Option<Vec<Value>>, NodeError>;
    /// Indices of ready ids, in completion order, at most `num_returns`.
    fn wait(
        &self,
        ids: &[ObjectId],
        num_returns: usize,
        timeout: Option<Duration>,
        interrupted: &mut dyn FnMut() -> bool,
    ) -> Result<Vec<u32>, NodeError>;
    /// Reserve store space for a `put` or large arguments (or learn that the
    /// object is already there).
    fn create_object(
        &self,
        id: ObjectId,
        len: u64,
    ) -> Result<Result<Reserved, ErrorInfo>, NodeError>;
    /// A created object is written: it becomes the object's value.
    /// `contained`: refs serialized inside it, which it keeps alive.
    fn seal(&self, id: ObjectId, contained: Vec<ObjectId>) -> Result<(), NodeError>;
    /// A small `put`.
    fn put_inline(
        &self,
        id: ObjectId,
        blob: Vec<u8>,
        contained: Vec<ObjectId>,
    ) -> Result<(), NodeError>;
    /// Drop pins taken by stored values.
    fn release(&self, ids: &[ObjectId]);
    /// New `ObjectRef` handles in this process.
    fn add_refs(&self, ids: &[ObjectId]);
    /// Handles dropped.
    fn dec_refs(&self, ids: &[ObjectId]);
    /// Refs that were serialized and may outlive every handle.
    fn mark_escaped(&self, ids: &[ObjectId]);
    /// Cancel the task that makes `id`.
    fn cancel(&self, id: ObjectId, force: bool) -> Result<(), NodeError>;
    fn kill_actor(&self, id: ActorId, no_restart: bool) -> Result<(), NodeError>;
    /// The stored handle of a live named actor, on this node or another.
    fn get_actor(&self, name: &str) -> Result<Option<Vec<u8>>, NodeError>;
    /// A read-only question, answered as JSON.
    fn query(&self, q: Query) -> Result<serde_json::Value, NodeError>;
    /// This process is done with the node: an embedded node stops, a
    /// client sends what it batched.
    fn close(&self);
}
