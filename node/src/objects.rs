//! Object table operations: values, handle counts, pins, gets and waits.

use std::time::Instant;

use serde_bytes::ByteBuf;

use crate::ids::{ObjectId, WorkerId};
use crate::protocol::{ErrorInfo, ErrorKind, NodeMsg, Value};
use crate::state::{Holder, ObjState, ObjectEntry, PendingWait, State, Target, WaitId};

fn lost(id: &ObjectId) -> Value {
    Value::Error(ErrorInfo::new(
        ErrorKind::ObjectLost,
        format!(
            "object {id} is not known to this node: it was freed, or its ref comes from another \
             session; keep an ObjectRef alive for as long as you need its value"
        ),
    ))
}

impl State {
    /// New local handles of these objects.
    pub fn add_refs(&mut self, ids: &[ObjectId]) {
        for id in ids {
            let e = self.objects.entry(*id).or_insert_with(ObjectEntry::pending);
            e.refs += 1;
            e.had_handle = true;
        }
    }

    /// Handles dropped; frees objects nobody can reach any more.
    pub fn dec_refs(&mut self, ids: &[ObjectId]) {
        for id in ids {
            if let Some(e) = self.objects.get_mut(id) {
                e.refs = e.refs.saturating_sub(1);
                self.maybe_free(id);
            }
        }
    }

    /// Refs that were serialized: keep their objects (no distributed counting yet).
    pub fn mark_escaped(&mut self, ids: &[ObjectId]) {
        for id in ids {
            if let Some(e) = self.objects.get_mut(id) {
                e.escaped = true;
            }
        }
    }

    /// Drop an object if no handle, task or serialized ref can reach it.
    pub fn maybe_free(&mut self, id: &ObjectId) {
        let Some(e) = self.objects.get(id) else {
            return;
        };
        let ready = matches!(e.state, ObjState::Ready(_));
        if e.refs == 0
            && e.had_handle
            && !e.escaped
            && e.holds == 0
            && ready
            && let Some(e) = self.objects.remove(id)
            && let ObjState::Ready(Value::Stored { .. }) = e.state
            && let Err(err) = self.store.delete(id)
        {
            tracing::warn!("freeing object {id}: {err}");
        }
    }

    /// The value of an object for `holder`, pinning it if it is stored.
    pub fn value_for(&mut self, id: &ObjectId, holder: Holder) -> Value {
        let Some(e) = self.objects.get(id) else {
            return lost(id);
        };
        match &e.state {
            ObjState::Pending => lost(id),
            ObjState::Ready(Value::Stored { .. }) => match self.store.pin(id) {
                Ok(a) => {
                    if let Holder::Conn(c) = holder
                        && let Some(conn) = self.conns.get_mut(&c)
                    {
                        *conn.pins.entry(*id).or_insert(0) += 1;
                    }
                    Value::Stored {
                        offset: a.offset,
                        len: a.len,
                    }
                }
                Err(err) => Value::Error(ErrorInfo::new(
                    ErrorKind::ObjectLost,
                    format!("object {id} is missing from the store: {err}"),
                )),
            },
            ObjState::Ready(v) => v.clone(),
        }
    }

    /// Drop pins taken by [`State::value_for`].
    pub fn release_pins(&mut self, holder: Holder, ids: &[ObjectId]) {
        for id in ids {
            if let Holder::Conn(c) = holder {
                let Some(conn) = self.conns.get_mut(&c) else {
                    return;
                };
                match conn.pins.get_mut(id) {
                    Some(n) if *n > 1 => *n -= 1,
                    Some(_) => {
                        conn.pins.remove(id);
                    }
                    None => {
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

    /// Reserve store space for an object a client is about to write.
    pub fn create_object(
        &mut self,
        holder: Holder,
        id: ObjectId,
        len: u64,
    ) -> Result<u64, ErrorInfo> {
        match self.store.create(id, len) {
            Ok(a) => {
                if let Holder::Conn(c) = holder
                    && let Some(conn) = self.conns.get_mut(&c)
                {
                    conn.unsealed.insert(id);
                }
                Ok(a.offset)
            }
            Err(e) => Err(ErrorInfo::new(ErrorKind::StoreFull, e.to_string())),
        }
    }

    /// A client finished writing a created object: it becomes the object's value.
    pub fn seal_object(&mut self, holder: Holder, id: ObjectId) {
        if let Holder::Conn(c) = holder
            && let Some(conn) = self.conns.get_mut(&c)
        {
            conn.unsealed.remove(&id);
        }
        match self.store.seal(id) {
            Ok(a) => self.object_ready(
                id,
                Value::Stored {
                    offset: a.offset,
                    len: a.len,
                },
            ),
            Err(e) => tracing::warn!("sealing object {id}: {e}"),
        }
    }

    /// A small `put`.
    pub fn put_inline(&mut self, id: ObjectId, blob: ByteBuf) {
        self.object_ready(id, Value::Inline(blob));
    }

    /// An object got its value: wake gets, waits and dependent tasks.
    pub fn object_ready(&mut self, id: ObjectId, value: Value) {
        let e = self.objects.entry(id).or_insert_with(ObjectEntry::pending);
        if matches!(e.state, ObjState::Ready(_)) {
            tracing::debug!("object {id} got a second value; keeping the first");
            if let Value::Stored { .. } = value {
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
            if let Some(w) = self.waits.get_mut(&wid) {
                w.ready.push(idx);
                if w.ready.len() == w.need {
                    self.complete_wait(wid);
                }
            }
        }
        for tid in dependents {
            self.dep_resolved(tid, is_error.as_ref());
        }
        self.maybe_free(&id);
    }

    /// Start a get (`is_get`, needs all ids) or a wait (needs `need` of them).
    /// Returns the wait's id and whether it completed at once.
    pub fn begin_wait(
        &mut self,
        ids: Vec<ObjectId>,
        need: usize,
        is_get: bool,
        target: Target,
        blocked_worker: Option<WorkerId>,
        deadline: Option<Instant>,
    ) -> WaitId {
        let wid = self.next_wait;
        self.next_wait += 1;
        let mut ready = Vec::new();
        for (i, id) in ids.iter().enumerate() {
            match self.objects.get_mut(id) {
                Some(e) if matches!(e.state, ObjState::Pending) => e.waiters.push((wid, i as u32)),
                _ => ready.push(i as u32),
            }
        }
        let done = ready.len() >= need;
        self.waits.insert(
            wid,
            PendingWait {
                ids,
                ready,
                need,
                is_get,
                target,
                blocked_worker: None,
            },
        );
        if done {
            self.complete_wait(wid);
        } else {
            if let Some(w) = blocked_worker {
                self.block_worker(w);
                if let Some(pw) = self.waits.get_mut(&wid) {
                    pw.blocked_worker = Some(w);
                }
            }
            if let Some(d) = deadline {
                let _ = self.timer_tx.send((d, wid));
            }
        }
        wid
    }

    /// Answer a finished get/wait. Local waits are only signalled: the
    /// waiting thread collects and removes them itself.
    fn complete_wait(&mut self, wid: WaitId) {
        if let Some(PendingWait {
            target: Target::Local(sig),
            ..
        }) = self.waits.get(&wid)
        {
            *sig.done.lock() = true;
            sig.cv.notify_all();
            return;
        }
        let Some(w) = self.waits.remove(&wid) else {
            return;
        };
        if let Target::Remote { conn, req } = w.target {
            let msg = if w.is_get {
                let values = w
                    .ids
                    .iter()
                    .map(|id| self.value_for(id, Holder::Conn(conn)))
                    .collect();
                NodeMsg::Values {
                    req,
                    values: Some(values),
                }
            } else {
                let mut indices = w.ready;
                indices.truncate(w.need);
                NodeMsg::Ready { req, indices }
            };
            self.send_to(conn, &msg);
        }
        if let Some(worker) = w.blocked_worker {
            self.unblock_worker(worker);
        }
    }

    /// A get/wait's deadline passed.
    pub fn expire_wait(&mut self, wid: WaitId) {
        let Some(w) = self.waits.remove(&wid) else {
            return;
        };
        if let Target::Remote { conn, req } = w.target {
            let msg = if w.is_get {
                NodeMsg::Values { req, values: None }
            } else {
                NodeMsg::Ready {
                    req,
                    indices: w.ready,
                }
            };
            self.send_to(conn, &msg);
        }
        if let Some(worker) = w.blocked_worker {
            self.unblock_worker(worker);
        }
    }

    /// Whether every id has a value (or is unknown, which reads as lost).
    pub fn all_ready(&self, ids: &[ObjectId]) -> bool {
        ids.iter().all(|id| {
            self.objects
                .get(id)
                .is_none_or(|e| matches!(e.state, ObjState::Ready(_)))
        })
    }

    /// Values for the embedded driver (pinned for it).
    pub fn collect_local(&mut self, ids: &[ObjectId]) -> Vec<Value> {
        ids.iter()
            .map(|id| self.value_for(id, Holder::Local))
            .collect()
    }
}
