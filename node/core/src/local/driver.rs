//! Calls of the driver embedded in the node's own process (laptop mode, or
//! `init(bootstrap=…)`): the same operations a socket client sends as
//! messages, answered at once instead of by a reply frame.

use std::time::Instant;

use serde_bytes::ByteBuf;

use crate::cluster::LookupTarget;
use crate::core::Core;
use crate::error::SubmitError;
use crate::ids::{ActorId, FnId, LookupId, ObjectId, WaitId};
use crate::local::objects::Holder;
use crate::local::waits::{Awaited, Target};
use crate::wire::local::{ErrorInfo, Listing, Query, Reserved, TaskSpec, Value};

impl Core {
    /// Keep a pickled function for the tasks that call it.
    pub fn driver_register_function(&mut self, id: FnId, blob: Vec<u8>) {
        self.tasks.register_function(id, ByteBuf::from(blob));
    }

    /// Submit a task (or create an actor).
    pub fn driver_submit(&mut self, spec: TaskSpec, now: Instant) -> Result<(), SubmitError> {
        self.now = now;
        self.submit(spec, Holder::Local)
    }

    /// The answer to a get of `ids` if it has one: the values if every one
    /// has its value (unknown ids read as lost; stored values come pinned
    /// for the driver), or, as soon as one of them failed, that error alone
    /// (the first failed in `ids`' order), which the get raises.
    pub fn driver_values(&mut self, ids: &[ObjectId]) -> Option<Vec<Value>> {
        self.local_get_answer(ids)
    }

    /// Start a get ([`Awaited::Values`]: all of `ids`, or the first that
    /// fails) or a wait (`need` of them); the end comes as
    /// [`Command::WaitDone`](crate::Command::WaitDone), and the driver then
    /// calls [`Core::driver_end_wait`] (and for a get [`Core::driver_values`]).
    pub fn driver_begin_wait(
        &mut self,
        ids: Vec<ObjectId>,
        need: usize,
        awaited: Awaited,
        now: Instant,
    ) -> WaitId {
        self.now = now;
        self.begin_wait(ids, need, awaited, Target::Local, None, None)
    }

    /// Forget a wait of the driver (done, timed out or interrupted); the
    /// indices of its ids that are ready, in completion order.
    pub fn driver_end_wait(&mut self, wait: WaitId) -> Vec<u32> {
        let Some(w) = self.waits.remove(&wait) else {
            return Vec::new();
        };
        self.unregister_waiter(wait, &w);
        w.ready
    }

    /// Reserve store space for a `put` or large arguments (or learn that the
    /// object is already there).
    pub fn driver_create(
        &mut self,
        id: ObjectId,
        len: u64,
        now: Instant,
    ) -> Result<Reserved, ErrorInfo> {
        self.now = now;
        self.create_object(Holder::Local, id, len)
    }

    /// The driver wrote a created object: it becomes the object's value.
    pub fn driver_seal(&mut self, id: ObjectId, contained: Vec<ObjectId>, now: Instant) {
        self.now = now;
        self.seal_object(Holder::Local, id, contained);
        self.note_put(0, &id);
    }

    /// Give up a created object that was never sealed.
    pub fn driver_abort(&mut self, id: ObjectId) {
        self.abort_object(Holder::Local, id);
    }

    /// A small `put`.
    pub fn driver_put_inline(
        &mut self,
        id: ObjectId,
        blob: Vec<u8>,
        contained: Vec<ObjectId>,
        now: Instant,
    ) {
        self.now = now;
        self.put_inline(id, ByteBuf::from(blob), contained);
        self.note_put(0, &id);
    }

    /// Drop pins the driver's views held.
    pub fn driver_release(&mut self, ids: &[ObjectId]) {
        self.release_local(ids);
    }

    pub fn driver_add_refs(&mut self, ids: &[ObjectId], now: Instant) {
        self.now = now;
        self.add_refs(Holder::Local, ids);
    }

    pub fn driver_dec_refs(&mut self, ids: &[ObjectId], now: Instant) {
        self.now = now;
        self.dec_refs(Holder::Local, ids);
    }

    /// Refs that were serialized and may outlive every handle.
    pub fn driver_mark_escaped(&mut self, ids: &[ObjectId]) {
        self.mark_escaped(ids);
    }

    /// `cancel(ref, force)`.
    pub fn driver_cancel(&mut self, id: ObjectId, force: bool, recursive: bool, now: Instant) {
        self.now = now;
        self.cancel(id, force, recursive);
    }

    /// `kill(actor, no_restart)`.
    pub fn driver_kill_actor(&mut self, id: ActorId, no_restart: bool, now: Instant) {
        self.now = now;
        self.kill_actor(id, no_restart);
    }

    /// `get_actor(name)`: answered by [`Command::LookupDone`](crate::Command::LookupDone)
    /// (at once when the name is here, else once the peers answered).
    pub fn driver_lookup_actor(&mut self, name: &str, now: Instant) -> LookupId {
        self.now = now;
        let id = self.cluster.next_req();
        self.lookup_actor(name, LookupTarget::Local(id));
        id
    }

    /// A read-only question about the node, answered as JSON. A
    /// [`Query::Cluster`] is answered by [`Command::GatherDone`](crate::Command::GatherDone)
    /// instead: use [`Core::driver_gather`].
    pub fn driver_query(&mut self, q: Query, now: Instant) -> serde_json::Value {
        self.now = now;
        self.query(q)
    }

    /// A listing from every peer: answered by
    /// [`Command::GatherDone`](crate::Command::GatherDone) once every peer
    /// answered or [`GATHER_TIMEOUT`](crate::GATHER_TIMEOUT) passed.
    pub fn driver_gather(&mut self, what: Listing, now: Instant) -> LookupId {
        self.now = now;
        let id = self.cluster.next_req();
        self.gather(what, crate::cluster::GatherTarget::Local(id));
        id
    }
}
