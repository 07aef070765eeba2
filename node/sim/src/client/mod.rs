//! The processes that talk to a simulated node over its (simulated) socket:
//! workers that run the task language, and the driver that runs a script.
//!
//! Both speak the real local protocol (`ClientMsg` / `NodeMsg`) and follow
//! its rules as the Python client does: values over a message's size go
//! through the store (create, write, seal), stored values a reader gets are
//! released once read, handles are counted (`AddRefs`/`DecRefs`), a worker
//! blocked in `get` waits for its reply.

mod driver;
mod worker;

use std::time::Duration;

use peer_node_core::ids::{FnId, ObjectId, OwnerTag, TaskId};
use peer_node_core::store::ObjectStore;
use peer_node_core::store::memory::MemStore;
use peer_node_core::wire::local::{ClientMsg, ErrorInfo, ErrorKind, Value};
use rand::Rng;
use rand::rngs::SmallRng;

pub use driver::{Driver, NEXT_STEP};
pub use worker::{INTERRUPT, Worker};

use crate::program::{Op, Val};

/// What a process does in reply to something, for the world to carry out.
pub struct Ctx<'a> {
    pub now: Duration,
    pub rng: &'a mut SmallRng,
    pub store: &'a mut MemStore,
    /// Messages to the node, in order.
    pub out: Vec<ClientMsg>,
    /// Wake the process after this long (with this token).
    pub wake: Vec<(Duration, u64)>,
    /// The process ends (its connection closes).
    pub exit: bool,
}

/// A fresh id owned by `owner`, drawn from the simulation's rng.
pub fn task_id(owner: OwnerTag, rng: &mut SmallRng) -> TaskId {
    let mut b: [u8; 16] = rng.random();
    b[..8].copy_from_slice(&owner.0);
    TaskId(b)
}

/// The function id of an op (what the driver registers it under).
pub fn fn_id(op: Op) -> FnId {
    let mut b = [0u8; 16];
    let name = op.blob();
    b[..name.len().min(16)].copy_from_slice(&name[..name.len().min(16)]);
    FnId(b)
}

/// Read a value the node sent: inline, or from the store (then released).
pub(crate) fn read_value(v: &Value, id: ObjectId, ctx: &mut Ctx<'_>) -> Result<Val, ErrorInfo> {
    match v {
        Value::Inline(b) => Val::decode(b).map_err(|e| ErrorInfo::new(ErrorKind::Task, e)),
        Value::Stored { offset, len } => {
            let bytes = ctx.store.read(*offset, *len);
            ctx.out.push(ClientMsg::Release { ids: vec![id] });
            let bytes = bytes.map_err(|e| ErrorInfo::new(ErrorKind::StoreFull, e.to_string()))?;
            Val::decode(&bytes).map_err(|e| ErrorInfo::new(ErrorKind::Task, e))
        }
        Value::Error(e) => Err(e.clone()),
    }
}
