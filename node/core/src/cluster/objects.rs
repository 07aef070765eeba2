//! Values crossing peers: results coming home, refs owned elsewhere fetched
//! from their owner, values served to peers, where copies of large values
//! are (they travel as locations and are pulled, see `pulls`). The refs
//! nested in values that cross peers are lent (`borrows`).

use std::sync::Arc;

use serde_bytes::ByteBuf;

use crate::core::Core;
use crate::ids::{ObjectId, PeerId, TaskId};
use crate::local::objects::{Elsewhere, Holder, ObjState, ObjectEntry};
use crate::local::tasks::TaskState;
use crate::local::waits::{Awaited, Target};
use crate::wire::local::{ErrorInfo, ErrorKind, INLINE_MAX, Reserved, TaskSpec, Value};
use crate::wire::peer::{IN_MESSAGE_MAX, PeerMsg, WireValue};

fn peer_bytes(p: &PeerId) -> ByteBuf {
    ByteBuf::from(p.as_bytes().to_vec())
}

impl Core {
    /// Results of tasks this node sent away, or fetched values; `contains`:
    /// the refs nested in them, lent by `from` with number `lend`.
    pub(super) fn receive_objects(
        &mut self,
        from: PeerId,
        values: Vec<(ObjectId, WireValue)>,
        contains: Vec<(ObjectId, Vec<ObjectId>)>,
        lend: u64,
    ) {
        let nested: Vec<ObjectId> = contains.iter().flat_map(|(_, c)| c).copied().collect();
        let taken = self.take_lends(from, lend, &nested);
        let mut contains: rustc_hash::FxHashMap<ObjectId, Vec<ObjectId>> =
            contains.into_iter().collect();
        let mut tasks: Vec<TaskId> = Vec::new();
        let mut set = Vec::new();
        for (id, value) in values {
            // A result counts for its task even when it is not taken (a copy
            // of it came first, or every ref to it was dropped and it is gone).
            let tid = id.task();
            if !tasks.contains(&tid) {
                tasks.push(tid);
            }
            let pending = self
                .objects
                .get(&id)
                .is_some_and(|e| e.is_pending() && e.elsewhere.is_none());
            if !pending {
                continue;
            }
            if let Some(inside) = contains.remove(&id) {
                // The value holds its nested refs while it lives.
                self.attach_contained(id, inside);
            }
            self.set_value(id, value);
            set.push(id);
        }
        for tid in tasks {
            let Some(t) = self.tasks.get(&tid) else {
                continue;
            };
            if t.state != TaskState::Remote {
                continue;
            }
            let spec = Arc::clone(&t.spec);
            let all_back = spec.return_ids().all(|id| {
                self.objects
                    .get(&id)
                    .is_none_or(|e| e.is_ready() || e.is_elsewhere())
            });
            if all_back {
                self.stats.tasks_finished += 1;
                let elsewhere = spec.return_ids().any(|id| self.objects.is_elsewhere(&id));
                if elsewhere && self.keep_lineage(tid) {
                    // Its inputs stay held: a rebuild needs them.
                    self.tasks.remove(&tid);
                    self.cluster.forget_sent(&tid);
                } else {
                    self.finish_task(tid);
                }
            }
        }
        // A result whose refs were all dropped while it was computed goes now.
        for id in &set {
            self.maybe_free(id);
        }
        self.settle_borrows(&taken);
    }

    /// Give a pending object the value that came from a peer (large ones go into the store).
    pub(super) fn set_value(&mut self, id: ObjectId, value: WireValue) {
        let value = match value {
            WireValue::At {
                len,
                holders,
                complete,
            } => {
                let mut copies = Vec::new();
                let mut partial = Vec::new();
                for (i, h) in holders.iter().enumerate() {
                    if let Ok(p) = PeerId::from_bytes(h) {
                        if i < complete as usize {
                            &mut copies
                        } else {
                            &mut partial
                        }
                        .push(p);
                    }
                }
                return self.object_located(id, len, copies, partial);
            }
            WireValue::Error(e) => Value::Error(e),
            WireValue::Blob(b) if b.len() <= INLINE_MAX => Value::Inline(b),
            WireValue::Blob(b) => match self.create_object(Holder::Local, id, b.len() as u64) {
                Ok(Reserved::Present { offset, len }) => Value::Stored { offset, len },
                Ok(Reserved::Write { offset }) => match self.store.write(offset, &b) {
                    Ok(()) => {
                        self.seal_object(Holder::Local, id, Vec::new());
                        return;
                    }
                    Err(e) => {
                        let _ = self.store.abort(id);
                        Value::Error(self.store_error(e))
                    }
                },
                Err(e) => Value::Error(e),
            },
        };
        self.object_ready(id, value);
    }

    /// A copy of a stored object's bytes.
    pub(crate) fn stored_bytes(&mut self, id: &ObjectId) -> Option<ByteBuf> {
        // Pinned while copied, so a restore or compaction cannot move it.
        match self.value_for(id, Holder::Local) {
            Value::Stored { offset, len } => {
                let bytes = self.store.read(offset, len).map(ByteBuf::from);
                self.release_pins(Holder::Local, &[*id]);
                bytes.ok()
            }
            Value::Inline(b) => Some(b),
            Value::Error(_) => None,
        }
    }

    /// An object's value as it travels to a peer.
    pub(crate) fn wire_value(&mut self, id: &ObjectId) -> WireValue {
        let Some(e) = self.objects.get(id) else {
            return WireValue::Error(ErrorInfo::new(
                ErrorKind::ObjectLost,
                format!("object {id} is not known to its owner (it was freed)"),
            ));
        };
        let me = self.cluster.me();
        let at = |len: u64, here: bool, ew: Option<&Elsewhere>| WireValue::At {
            len,
            holders: me
                .filter(|_| here)
                .into_iter()
                .chain(ew.into_iter().flat_map(|ew| ew.holders()))
                .map(|p| peer_bytes(&p))
                .collect(),
            complete: (usize::from(here && me.is_some()) + ew.map_or(0, |ew| ew.copies.len()))
                as u32,
        };
        match &e.state {
            ObjState::Pending if e.elsewhere.is_some() => at(
                e.elsewhere.as_ref().map_or(0, |ew| ew.len),
                false,
                e.elsewhere.as_deref(),
            ),
            ObjState::Pending => WireValue::Error(ErrorInfo::new(
                ErrorKind::ObjectLost,
                format!("object {id} has no value yet"),
            )),
            ObjState::Ready(Value::Inline(b)) => WireValue::Blob(b.clone()),
            ObjState::Ready(Value::Error(err)) => WireValue::Error(err.clone()),
            ObjState::Ready(Value::Stored { len, .. }) => {
                let len = *len;
                if len as usize > IN_MESSAGE_MAX {
                    // Too big for a message: the peer pulls it from the stores that have it.
                    return at(len, true, e.elsewhere.as_deref());
                }
                match self.stored_bytes(id) {
                    Some(b) => WireValue::Blob(b),
                    None => WireValue::Error(ErrorInfo::new(
                        ErrorKind::ObjectLost,
                        format!("object {id} could not be read from the store"),
                    )),
                }
            }
        }
    }

    /// A wait on behalf of a peer completed: send it the values (the refs
    /// nested in them are lent to it).
    pub(crate) fn send_values_to_peer(&mut self, peer: PeerId, ids: &[ObjectId], free_after: bool) {
        let values: Vec<(ObjectId, WireValue)> =
            ids.iter().map(|id| (*id, self.wire_value(id))).collect();
        let contains = self.nested_refs(ids);
        let lent: Vec<ObjectId> = contains.iter().flat_map(|(_, c)| c).copied().collect();
        let lend = self.lend(peer, &lent);
        let kept: Vec<bool> = values
            .iter()
            .map(|(_, v)| matches!(v, WireValue::At { .. }))
            .collect();
        self.send_peer(
            peer,
            PeerMsg::Objects {
                values,
                contains,
                lend,
            },
        );
        if free_after {
            for (id, kept) in ids.iter().zip(kept) {
                if let Some(e) = self.objects.get_mut(id) {
                    e.had_handle = true;
                    // The owner pulls it from here (or tells others to): keep it until it says.
                    e.held_for_owner = kept;
                }
                if kept {
                    self.arm_ask();
                }
                self.maybe_free(id);
                if !kept {
                    self.hand_over_value(id);
                }
            }
        }
    }

    /// A small value made here for its owner went to it, and refs to it are
    /// still held here: the value is the owner's now (as in Ray, a small
    /// result lives with its owner), so a later `get` here asks the owner,
    /// and fails with `OwnerDiedError` once the owner is gone. A wait here
    /// that counted the value already keeps it.
    fn hand_over_value(&mut self, id: &ObjectId) {
        let Some(e) = self.objects.get(id) else {
            return;
        };
        if !matches!(e.state, ObjState::Ready(Value::Inline(_))) {
            return;
        }
        if self.waits.values().any(|w| w.ids.contains(id)) {
            return;
        }
        if let Some(e) = self.objects.get_mut(id) {
            e.state = ObjState::Pending;
            e.unfetched = true;
        }
    }

    /// The refs nested in the values of `ids`, for those that have any.
    pub(crate) fn nested_refs(&self, ids: &[ObjectId]) -> Vec<(ObjectId, Vec<ObjectId>)> {
        ids.iter()
            .filter_map(|id| {
                let e = self.objects.get(id)?;
                (!e.contains.is_empty()).then(|| (*id, e.contains.clone()))
            })
            .collect()
    }

    /// A handle of a ref owned by another peer arrived: an entry to count it,
    /// with nothing asked of the owner yet.
    pub(crate) fn note_foreign(&mut self, id: ObjectId) {
        if !self.is_foreign(id.owner()) || self.objects.contains(&id) {
            return;
        }
        let mut e = ObjectEntry::pending();
        e.had_handle = true;
        e.unfetched = true;
        self.objects.insert(id, e);
    }

    /// The value of a ref is needed here: if another peer owns it and it was
    /// not asked for yet, ask the owner.
    pub(crate) fn fetch_foreign(&mut self, id: ObjectId) {
        let foreign = self.is_foreign(id.owner());
        match self.objects.get_mut(&id) {
            Some(e) if e.unfetched => e.unfetched = false,
            Some(_) => return,
            None if foreign => {
                let mut e = ObjectEntry::pending();
                e.had_handle = true;
                self.objects.insert(id, e);
            }
            None => return,
        }
        match self.peer_of(id.owner()) {
            Some(owner) => {
                let failed = self
                    .cluster
                    .pulls
                    .take_failed_holders(&id)
                    .iter()
                    .map(peer_bytes)
                    .collect();
                self.send_peer(owner, PeerMsg::Fetch { id, failed })
            }
            None => {
                let err = ErrorInfo::new(
                    ErrorKind::ObjectLost,
                    format!(
                        "object {id} belongs to peer {} (by its id), which is not in this node's \
                         view: it left the cluster, or never was in it",
                        id.owner()
                    ),
                );
                self.object_ready(id, Value::Error(err));
            }
        }
    }

    /// Send `peer` the value of `id` once it has one (now, if it has).
    fn answer_when_ready(&mut self, id: ObjectId, peer: PeerId) {
        let target = Target::Peer {
            peer,
            free_after: false,
        };
        self.begin_wait(vec![id], 1, Awaited::Values, target, None, None);
    }

    /// A peer wants the value of an object owned here.
    pub(super) fn serve_fetch(&mut self, from: PeerId, id: ObjectId, failed: &[PeerId]) {
        // A peer asking for it has no copy (any more: it may have dropped it,
        // or restarted), whatever it said before; nor have the holders it
        // could not pull it from.
        if let Some(ew) = self.objects.get_mut(&id).and_then(|e| e.elsewhere.as_mut()) {
            ew.copies.retain(|p| *p != from && !failed.contains(p));
            ew.partial.retain(|p| *p != from && !failed.contains(p));
        }
        match self.objects.get_mut(&id) {
            Some(e)
                if e.is_elsewhere()
                    && e.elsewhere.as_ref().is_some_and(|ew| ew.copies.is_empty()) =>
            {
                // Only peers still pulling it, no complete copy: it is lost;
                // answer once it is rebuilt.
                self.object_lost(id, "no peer holds a complete copy");
                self.answer_when_ready(id, from);
            }
            Some(e) if e.is_elsewhere() => {
                let value = match self.wire_value(&id) {
                    // The asker is pulling it already and knows it lacks it.
                    WireValue::At {
                        len,
                        holders,
                        complete,
                    } => {
                        let asker = from.as_bytes();
                        let mut kept = Vec::with_capacity(holders.len());
                        let mut whole = 0;
                        for (i, h) in holders.into_iter().enumerate() {
                            if *h != *asker {
                                whole += u32::from((i as u32) < complete);
                                kept.push(h);
                            }
                        }
                        WireValue::At {
                            len,
                            holders: kept,
                            complete: whole,
                        }
                    }
                    v => v,
                };
                self.note_puller(id, from);
                let contains = self.nested_refs(&[id]);
                let lent: Vec<ObjectId> = contains.iter().flat_map(|(_, c)| c).copied().collect();
                let lend = self.lend(from, &lent);
                self.send_peer(
                    from,
                    PeerMsg::Objects {
                        values: vec![(id, value)],
                        contains,
                        lend,
                    },
                );
            }
            Some(_) => self.answer_when_ready(id, from),
            None => {
                let value = self.wire_value(&id);
                let lend = self.lend(from, &[]);
                self.send_peer(
                    from,
                    PeerMsg::Objects {
                        values: vec![(id, value)],
                        contains: Vec::new(),
                        lend,
                    },
                );
            }
        }
    }

    /// An object now has a value in other peers' stores: whole `copies`, and
    /// `partial` ones of peers still pulling it. Peers waiting for it are
    /// told where; local needs pull it.
    pub(crate) fn object_located(
        &mut self,
        id: ObjectId,
        len: u64,
        copies: Vec<PeerId>,
        partial: Vec<PeerId>,
    ) {
        let Some(e) = self.objects.get_mut(&id) else {
            return;
        };
        if !e.is_pending() {
            return;
        }
        let was_located = e.elsewhere.is_some();
        let ew = e.elsewhere.get_or_insert_with(Box::default);
        ew.len = len;
        for h in copies {
            if !ew.copies.contains(&h) {
                ew.copies.push(h);
            }
            ew.partial.retain(|p| *p != h);
        }
        for h in partial {
            if !ew.copies.contains(&h) && !ew.partial.contains(&h) {
                ew.partial.push(h);
            }
        }
        if was_located {
            return;
        }
        let dependents = std::mem::take(&mut e.dependents);
        let waiters = std::mem::take(&mut e.waiters);
        let (located_is_ready, local): (Vec<_>, Vec<_>) = waiters
            .into_iter()
            .partition(|(w, _)| self.waits.get(w).is_some_and(|w| w.located_is_ready));
        if let Some(e) = self.objects.get_mut(&id) {
            e.waiters = local;
        }
        for (wid, idx) in located_is_ready {
            self.wait_item_ready(wid, idx);
        }
        if self.objects.get(&id).is_some_and(|e| !e.waiters.is_empty()) {
            self.start_pull(id);
        }
        for tid in dependents {
            self.dep_located(tid);
        }
    }

    /// A peer asked for an object whose copies are elsewhere: it pulls one
    /// and serves what it has meanwhile, so it is a holder for the next asker.
    pub(crate) fn note_puller(&mut self, id: ObjectId, peer: PeerId) {
        let len = self.store.get(&id).map(|a| a.len);
        let Some(e) = self.objects.get_mut(&id) else {
            return;
        };
        let ew = e.elsewhere.get_or_insert_with(|| {
            Box::new(Elsewhere {
                len: len.unwrap_or(0),
                ..Elsewhere::default()
            })
        });
        if !ew.copies.contains(&peer) && !ew.partial.contains(&peer) {
            ew.partial.push(peer);
        }
    }

    /// A peer holds a complete copy of an object owned here.
    pub(super) fn copy_located(&mut self, id: ObjectId, peer: PeerId) {
        let Some(e) = self.objects.get_mut(&id) else {
            return;
        };
        let ew = e.elsewhere.get_or_insert_with(Box::default);
        ew.partial.retain(|p| *p != peer);
        if !ew.copies.contains(&peer) {
            ew.copies.push(peer);
        }
    }

    /// A peer keeps copies of objects owned here: those this node freed, or
    /// no longer counts as copies (a pull from it failed), it drops.
    pub(super) fn copies_kept(&mut self, from: PeerId, ids: Vec<ObjectId>) {
        let unwanted: Vec<ObjectId> = ids
            .into_iter()
            .filter(|id| !self.is_foreign(id.owner()))
            .filter(|id| {
                self.objects.get(id).is_none_or(|e| {
                    !e.elsewhere
                        .as_ref()
                        .is_some_and(|ew| ew.holders().any(|p| p == from))
                })
            })
            .collect();
        if !unwanted.is_empty() {
            self.send_peer(from, PeerMsg::Free { ids: unwanted });
        }
    }

    /// The owner freed objects this node kept copies of for it.
    pub(super) fn owner_freed(&mut self, ids: &[ObjectId]) {
        for id in ids {
            self.drop_copy(id);
        }
    }

    /// Whether every argument of a task has its value on this node.
    pub(crate) fn inputs_here(&self, spec: &TaskSpec) -> bool {
        spec.deps.iter().all(|d| {
            self.objects
                .get(d)
                .is_none_or(|e| matches!(e.state, ObjState::Ready(_)))
        })
    }

    /// A task that runs here needs arguments from other peers: it waits while
    /// they are pulled (or rebuilt, when their copies were lost meanwhile).
    pub(crate) fn pull_inputs(&mut self, tid: TaskId) {
        let Some(spec) = self.tasks.spec(&tid) else {
            return;
        };
        // One wait per occurrence, as `accept` counts them: an argument
        // passed twice is waited for (and resolved) twice.
        let mut missing = 0;
        for d in &spec.deps {
            if let Some(e) = self.objects.get_mut(d)
                && e.is_pending()
            {
                e.dependents.push(tid);
                missing += 1;
            }
        }
        if let Some(t) = self.tasks.get_mut(&tid) {
            t.inputs_elsewhere = false;
            t.missing += missing;
            t.state = if t.missing > 0 {
                TaskState::Waiting
            } else {
                TaskState::Queued
            };
        }
        for d in &spec.deps {
            if self.objects.is_elsewhere(d) {
                self.start_pull(*d);
            }
        }
        if missing == 0 {
            self.make_runnable(tid);
        }
    }
}
