//! Object table operations: values, handle counts, pins, gets and waits.

use std::time::Instant;

use serde_bytes::ByteBuf;

use crate::ids::{ObjectId, WorkerId};
use crate::protocol::{ErrorInfo, ErrorKind, NodeMsg, Reserved, Value};
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
    /// New `ObjectRef` handles in `holder`'s process. Ids this node does not
    /// know are ignored (a get on them reads as lost).
    pub fn add_refs(&mut self, holder: Holder, ids: &[ObjectId]) {
        for id in ids {
            if self.remote.out.is_some() && !self.objects.contains_key(id) {
                // A ref owned by another peer: count it here; the value is
                // fetched from the owner when someone needs it.
                self.note_foreign(*id);
            }
            let Some(e) = self.objects.get_mut(id) else {
                continue;
            };
            e.refs += 1;
            e.had_handle = true;
            if let Holder::Conn(c) = holder
                && let Some(conn) = self.conns.get_mut(&c)
            {
                *conn.refs.entry(*id).or_insert(0) += 1;
            }
        }
    }

    /// Handles dropped; frees objects nobody can reach any more.
    pub fn dec_refs(&mut self, holder: Holder, ids: &[ObjectId]) {
        for id in ids {
            if let Holder::Conn(c) = holder
                && let Some(conn) = self.conns.get_mut(&c)
            {
                match conn.refs.get_mut(id) {
                    Some(n) if *n > 1 => *n -= 1,
                    Some(_) => {
                        conn.refs.remove(id);
                    }
                    // A handle this client never registered: not its to release.
                    None => continue,
                }
            }
            if let Some(e) = self.objects.get_mut(id) {
                e.refs = e.refs.saturating_sub(1);
                self.maybe_free(id);
            }
        }
    }

    /// Record the refs serialized inside object `id`'s value: it keeps them alive.
    pub fn attach_contained(&mut self, id: ObjectId, contained: Vec<ObjectId>) {
        if contained.is_empty() {
            return;
        }
        let mut kept = Vec::with_capacity(contained.len());
        for c in contained {
            if c == id {
                continue;
            }
            if let Some(ce) = self.objects.get_mut(&c) {
                ce.holds += 1;
                kept.push(c);
            }
        }
        self.objects
            .entry(id)
            .or_insert_with(ObjectEntry::pending)
            .contains
            .extend(kept);
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
        self.free_if_unused(id, true);
    }

    /// Drop an object nothing here uses; `may_cache`: a large copy of another
    /// peer's object is kept instead, for peers to pull, until its owner frees
    /// it or the store needs the room.
    fn free_if_unused(&mut self, id: &ObjectId, may_cache: bool) {
        let Some(e) = self.objects.get(id) else {
            return;
        };
        // A foreign ref never asked for has no value to wait for.
        let ready = matches!(e.state, ObjState::Ready(_)) || e.unfetched || e.is_elsewhere();
        let unused = e.refs == 0
            && e.had_handle
            && !e.escaped
            && !e.held_for_owner
            && e.holds == 0
            && ready
            && !e.cached
            && !self.pulls.contains_key(id);
        if !unused {
            return;
        }
        let foreign_copy = self.is_foreign(id.owner())
            && matches!(e.state, ObjState::Ready(Value::Stored { len, .. })
                if len as usize > crate::peer_msg::IN_MESSAGE_MAX);
        // A copy a local reader still looks at stays known (its id may come
        // back, e.g. to rebuild it here, and the store cannot hold it twice).
        if foreign_copy && (may_cache || self.store.is_pinned(id)) {
            if let Some(e) = self.objects.get_mut(id) {
                e.cached = true;
                self.cached.push_back(*id);
            }
            return;
        }
        let Some(e) = self.objects.remove(id) else {
            return;
        };
        if let Some(ew) = &e.elsewhere
            && !self.is_foreign(id.owner())
        {
            // Copies kept for this owner on other peers go too.
            for peer in ew.holders() {
                self.send_peer(peer, crate::peer_msg::PeerMsg::Free { ids: vec![*id] });
            }
        }
        if let ObjState::Ready(Value::Stored { .. }) = e.state {
            if let Some((path, _)) = self.spilled.remove(id) {
                let _ = std::fs::remove_file(path);
            } else if let Err(err) = self.store.delete(id) {
                tracing::warn!("freeing object {id}: {err}");
            }
        }
        for c in e.contains {
            if let Some(ce) = self.objects.get_mut(&c) {
                ce.holds = ce.holds.saturating_sub(1);
            }
            self.maybe_free(&c);
        }
        if !self.remote.lineage.is_empty() {
            self.release_lineage(id);
        }
    }

    /// Stop keeping a copy for other peers (its owner freed the object, or
    /// the store needs the room); it goes unless something here uses it.
    pub(crate) fn drop_copy(&mut self, id: &ObjectId) {
        if let Some(e) = self.objects.get_mut(id) {
            e.held_for_owner = false;
            e.cached = false;
            e.had_handle = true;
        }
        self.free_if_unused(id, false);
    }

    /// The value of an object for `holder`, pinning it if it is stored.
    pub fn value_for(&mut self, id: &ObjectId, holder: Holder) -> Value {
        let Some(e) = self.objects.get(id) else {
            return lost(id);
        };
        match &e.state {
            ObjState::Pending => lost(id),
            ObjState::Ready(Value::Stored { .. }) => {
                match self
                    .restore_if_spilled(id)
                    .and_then(|()| match self.store.pin(id) {
                        Ok(a) => Ok(a),
                        Err(e) => Err(self.store_error(e)),
                    }) {
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
                    Err(err) => Value::Error(err),
                }
            }
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

    /// Bring a spilled object back into the store (spilling others if needed).
    fn restore_if_spilled(&mut self, id: &ObjectId) -> Result<(), ErrorInfo> {
        let Some((path, len)) = self.spilled.get(id).cloned() else {
            return Ok(());
        };
        match self.store.restore(*id, &path, len, &self.spill_dir) {
            Ok((_, others)) => {
                self.spilled.remove(id);
                self.note_spilled(others);
                Ok(())
            }
            Err(e) => {
                let mut err = self.store_error(e);
                err.message = format!("cannot restore spilled object {id}: {}", err.message);
                Err(err)
            }
        }
    }

    fn note_spilled(&mut self, spilled: Vec<peer_objstore::Spilled<ObjectId>>) {
        for s in spilled {
            tracing::debug!(
                "spilled object {} ({} bytes) to {}",
                s.key,
                s.len,
                s.path.display()
            );
            self.spilled.insert(s.key, (s.path, s.len));
        }
    }

    /// A store error as an error value, saying who pins the memory when it is full.
    pub fn store_error(&self, e: peer_objstore::StoreError) -> ErrorInfo {
        match e {
            peer_objstore::StoreError::Full { .. } => {
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
                        std::process::id()
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
            e => ErrorInfo::new(ErrorKind::StoreFull, e.to_string()),
        }
    }

    /// Reserve store space for an object a client is about to write, or say
    /// that the store already holds its value.
    ///
    /// A task run again (to rebuild a lost object, or re-placed after a peer
    /// died) can finish on a node that already has a copy of its result: a
    /// sealed one (kept, pulled, or deleted but still read by someone) is the
    /// object's value as much as the new one, so it is kept and the writer
    /// writes nothing. An object still being written (a pull in progress) is
    /// waited for by [`State::create_for_client`].
    pub fn create_object(
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
        match self.store.create_or_spill(id, len, &self.spill_dir) {
            Ok((a, spilled)) => {
                self.note_spilled(spilled);
                if let Holder::Conn(c) = holder
                    && let Some(conn) = self.conns.get_mut(&c)
                {
                    conn.unsealed.insert(id);
                }
                Ok(Reserved::Write { offset: a.offset })
            }
            Err(peer_objstore::StoreError::AlreadyExists) => Err(ErrorInfo::new(
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
    pub fn create_for_client(&mut self, conn: u64, req: u64, id: ObjectId, len: u64) {
        if self.pulls.contains_key(&id) {
            self.remote
                .creates_after_pull
                .entry(id)
                .or_default()
                .push((conn, req, len));
            return;
        }
        let result = self.create_object(Holder::Conn(conn), id, len);
        self.send_to(conn, &NodeMsg::Created { req, result });
    }

    /// Drop cached copies of other peers' objects (oldest first) until `len`
    /// bytes are free, before anything of this node's own is spilled.
    fn make_room(&mut self, len: u64) {
        // Each cached copy is looked at once (one still pinned goes to the back).
        let mut budget = self.cached.len();
        while budget > 0 {
            budget -= 1;
            let stats = self.store.stats();
            if stats.capacity.saturating_sub(stats.used) >= len.saturating_add(64) {
                return;
            }
            let Some(id) = self.cached.pop_front() else {
                return;
            };
            if self.objects.get(&id).is_some_and(|e| e.cached) {
                self.drop_copy(&id);
            }
        }
    }

    /// A client finished writing a created object: it becomes the object's value.
    pub fn seal_object(&mut self, holder: Holder, id: ObjectId, contained: Vec<ObjectId>) {
        self.attach_contained(id, contained);
        if let Holder::Conn(c) = holder
            && let Some(conn) = self.conns.get_mut(&c)
        {
            conn.unsealed.remove(&id);
        }
        let sealed = match self.store.seal(id) {
            Ok(a) => Some(a),
            // Written before (see `create_object`): the value is what is there.
            Err(peer_objstore::StoreError::AlreadySealed) => self.store.get(&id),
            Err(e) => {
                tracing::warn!("sealing object {id}: {e}");
                None
            }
        };
        let Some(a) = sealed else {
            return;
        };
        if self.cluster.is_some()
            && a.len >= crate::cluster::ANNOUNCE_MIN_BYTES
            && self.to_announce.len() < crate::cluster::ANNOUNCE_QUEUE_MAX
        {
            self.to_announce.push((id, a.len));
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
    pub fn put_inline(&mut self, id: ObjectId, blob: ByteBuf, contained: Vec<ObjectId>) {
        self.attach_contained(id, contained);
        self.object_ready(id, Value::Inline(blob));
    }

    /// An object got its value: wake gets, waits and dependent tasks.
    pub fn object_ready(&mut self, id: ObjectId, value: Value) {
        let e = self.objects.entry(id).or_insert_with(ObjectEntry::pending);
        if matches!(e.state, ObjState::Ready(_)) {
            tracing::debug!("object {id} got a second value; keeping the first");
            // A stored second value lives under the same key as a stored first one:
            // delete it only when the first is not in the store.
            if let (Value::Stored { .. }, ObjState::Ready(first)) = (&value, &e.state)
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
        if self.remote.out.is_some() {
            let for_a_peer = matches!(target, Target::Peer { .. });
            for id in &ids {
                self.fetch_foreign(*id);
                if !for_a_peer && self.objects.get(id).is_some_and(|e| e.is_elsewhere()) {
                    self.start_pull(*id);
                }
            }
        }
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
    pub(crate) fn complete_wait(&mut self, wid: WaitId) {
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
        if let Target::Peer { peer, free_after } = w.target {
            self.send_values_to_peer(peer, &w.ids, free_after);
            return;
        }
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
