//! Values: objects getting theirs (a `put`, a task's result, a copy from a
//! peer), reading them for a holder (pinning stored ones), and the store
//! space they are written into.

use serde_bytes::ByteBuf;

use crate::core::Core;
use crate::ids::{ConnId, ObjectId};
use crate::local::objects::{Holder, ObjState};
use crate::store::StoreError;
use crate::wire::local::{ErrorInfo, ErrorKind, NodeMsg, Reserved, Value};

/// Objects at least this large are announced to the cluster (placement will
/// prefer their holders; smaller ones are cheaper to move than to track).
pub const ANNOUNCE_MIN_BYTES: u64 = 1 << 20;

/// The error of an object this node does not know (freed, or never here).
pub(crate) fn lost_error(id: &ObjectId) -> ErrorInfo {
    ErrorInfo::new(
        ErrorKind::ObjectLost,
        format!(
            "object {id} is not known to this node: it was freed, or its ref comes from another \
             session; keep an ObjectRef alive for as long as you need its value"
        ),
    )
}

fn lost(id: &ObjectId) -> Value {
    Value::Error(lost_error(id))
}

impl Core {
    /// The value of an object for `holder`, pinning it if it is stored.
    pub(crate) fn value_for(&mut self, id: &ObjectId, holder: Holder) -> Value {
        let Some(e) = self.objects.get(id) else {
            return lost(id);
        };
        match &e.state {
            ObjState::Pending => lost(id),
            ObjState::Ready(Value::Stored { .. }) => {
                let pinned = self
                    .restore_if_spilled(id)
                    .and_then(|()| self.store.pin(id).map_err(|e| self.store_error(e)));
                match pinned {
                    Ok(a) => {
                        if let Holder::Conn(c) = holder {
                            self.conns.add_pin(c, *id);
                        }
                        Value::Stored {
                            offset: a.offset,
                            len: a.len,
                        }
                    }
                    Err(err) => Value::Error(err),
                }
            }
            ObjState::Ready(v) => v.clone(),
        }
    }

    /// Drop pins taken by [`Core::value_for`].
    pub(crate) fn release_pins(&mut self, holder: Holder, ids: &[ObjectId]) {
        for id in ids {
            if let Holder::Conn(c) = holder {
                match self.conns.drop_pin(c, id) {
                    None => return,
                    Some(true) => {}
                    Some(false) => {
                        tracing::warn!("client released object {id} it did not hold");
                        continue;
                    }
                }
            }
            if let Err(err) = self.store.release(id) {
                tracing::warn!("releasing object {id}: {err}");
            }
        }
    }

    /// Bring a spilled object back into the store (spilling others if needed).
    fn restore_if_spilled(&mut self, id: &ObjectId) -> Result<(), ErrorInfo> {
        let Some((path, len)) = self.objects.spill_of(id) else {
            return Ok(());
        };
        match self.store.restore(*id, &path, len) {
            Ok((_, others)) => {
                self.objects.unspill(id);
                self.objects.note_spilled(others);
                Ok(())
            }
            Err(e) => {
                let mut err = self.store_error(e);
                err.message = format!("cannot restore spilled object {id}: {}", err.message);
                Err(err)
            }
        }
    }

    /// A store error as an error value, saying who pins the memory when it is full.
    pub(crate) fn store_error(&self, e: StoreError) -> ErrorInfo {
        let StoreError::Full(_) = e else {
            return ErrorInfo::new(ErrorKind::StoreFull, e.to_string());
        };
        let mut by_pid: Vec<(u32, u64, usize)> = Vec::new();
        let mut client_bytes = 0;
        for c in self.conns.values() {
            let bytes: u64 = c
                .pins
                .keys()
                .filter_map(|id| self.store.get(id).map(|a| a.len))
                .sum();
            if bytes > 0 {
                by_pid.push((c.pid, bytes, c.pins.len()));
                client_bytes += bytes;
            }
        }
        let total = self.store.stats().pinned_bytes;
        let mut who: Vec<String> = by_pid
            .iter()
            .map(|(pid, b, n)| format!("{b} bytes in {n} objects by pid {pid}"))
            .collect();
        if total > client_bytes {
            who.push(format!(
                "{} bytes by the driver (pid {})",
                total - client_bytes,
                self.config.pid
            ));
        }
        let who = if who.is_empty() {
            String::new()
        } else {
            format!(" Pinned: {}.", who.join("; "))
        };
        ErrorInfo::new(
            ErrorKind::StoreFull,
            format!(
                "{e}.{who} Values stay pinned while a numpy array or other view of them is                          alive in some process: drop those views, or raise object_store_memory"
            ),
        )
    }

    /// Reserve store space for an object a client is about to write, or say
    /// that the store already holds its value.
    ///
    /// A task run again (to rebuild a lost object, or re-placed after a peer
    /// died) can finish on a node that already has a copy of its result: a
    /// sealed one (kept, pulled, or deleted but still read by someone) is the
    /// object's value as much as the new one, so it is kept and the writer
    /// writes nothing. An object still being written (a pull in progress) is
    /// waited for by [`Core::create_for_client`].
    pub(crate) fn create_object(
        &mut self,
        holder: Holder,
        id: ObjectId,
        len: u64,
    ) -> Result<Reserved, ErrorInfo> {
        if let Some(a) = self.store.revive(&id) {
            tracing::debug!("object {id} is already in the store; the new run writes nothing");
            return Ok(Reserved::Present {
                offset: a.offset,
                len: a.len,
            });
        }
        self.make_room(len);
        match self.store.create(id, len) {
            Ok((a, spilled)) => {
                self.objects.note_spilled(spilled);
                if let Holder::Conn(c) = holder {
                    self.conns.note_unsealed(c, id);
                }
                Ok(Reserved::Write { offset: a.offset })
            }
            Err(StoreError::AlreadyExists) => Err(ErrorInfo::new(
                ErrorKind::StoreFull,
                format!(
                    "object {id} is already being written into this node's store (by another \
                     run of the task that makes it, or a pull from a peer)"
                ),
            )),
            Err(e) => Err(self.store_error(e)),
        }
    }

    /// A client's `Create`: answered now, or once a pull writing the same
    /// object into this store ends (it succeeds: the value is present; it
    /// fails: the client writes it).
    pub(crate) fn create_for_client(&mut self, conn: ConnId, req: u64, id: ObjectId, len: u64) {
        if self.cluster.is_pulling(&id) {
            self.cluster.create_after_pull(id, conn, req, len);
            return;
        }
        let result = self.create_object(Holder::Conn(conn), id, len);
        self.send_to(conn, NodeMsg::Created { req, result });
    }

    /// A client finished writing a created object: it becomes the object's value.
    pub(crate) fn seal_object(&mut self, holder: Holder, id: ObjectId, contained: Vec<ObjectId>) {
        self.attach_contained(id, contained);
        if let Holder::Conn(c) = holder {
            self.conns.forget_unsealed(c, &id);
        }
        let sealed = match self.store.seal(id) {
            Ok(a) => Some(a),
            // Written before (see `create_object`): the value is what is there.
            Err(StoreError::AlreadySealed) => self.store.get(&id),
            Err(e) => {
                tracing::warn!("sealing object {id}: {e}");
                None
            }
        };
        let Some(a) = sealed else {
            return;
        };
        if self.cluster.is_member() && a.len >= ANNOUNCE_MIN_BYTES {
            self.emit(crate::Command::Announce { id, len: a.len });
        }
        self.object_ready(
            id,
            Value::Stored {
                offset: a.offset,
                len: a.len,
            },
        );
    }

    /// A small `put`.
    pub(crate) fn put_inline(&mut self, id: ObjectId, blob: ByteBuf, contained: Vec<ObjectId>) {
        self.attach_contained(id, contained);
        self.object_ready(id, Value::Inline(blob));
    }

    /// Give up an object created in the store and never sealed.
    pub(crate) fn abort_object(&mut self, holder: Holder, id: ObjectId) {
        if let Holder::Conn(c) = holder {
            self.conns.forget_unsealed(c, &id);
        }
        let _ = self.store.abort(id);
    }

    /// An object got its value: wake gets, waits and dependent tasks.
    pub(crate) fn object_ready(&mut self, id: ObjectId, value: Value) {
        let e = self.objects.entry(id);
        if let ObjState::Ready(first) = &e.state {
            tracing::debug!("object {id} got a second value; keeping the first");
            // A stored second value lives under the same key as a stored first one:
            // delete it only when the first is not in the store.
            if let Value::Stored { .. } = value
                && !matches!(first, Value::Stored { .. })
            {
                let _ = self.store.delete(&id);
            }
            return;
        }
        let is_error = match &value {
            Value::Error(err) => Some(err.clone()),
            _ => None,
        };
        e.state = ObjState::Ready(value);
        let waiters = std::mem::take(&mut e.waiters);
        let dependents = std::mem::take(&mut e.dependents);
        for (wid, idx) in waiters {
            self.wait_item_ready(wid, idx);
        }
        for tid in dependents {
            self.dep_resolved(tid, is_error.as_ref());
        }
        self.maybe_free(&id);
    }
}
