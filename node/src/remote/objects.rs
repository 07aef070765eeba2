//! Values crossing peers: results coming home, refs owned elsewhere fetched
//! from their owner, values served to peers, and what may no longer be freed
//! because another peer can hold refs to it.

use std::sync::Arc;

use peer_gossip::PeerId;
use serde_bytes::ByteBuf;

use crate::ids::{ObjectId, TaskId};
use crate::peer_msg::{MESSAGE_VALUE_MAX, PeerMsg, WireValue};
use crate::protocol::{ErrorInfo, ErrorKind, INLINE_MAX, Value};
use crate::state::{Holder, ObjState, ObjectEntry, State, Target, TaskState};

fn too_large(id: &ObjectId, len: u64) -> ErrorInfo {
    ErrorInfo::new(
        ErrorKind::ObjectLost,
        format!(
            "object {id} is {len} bytes; values over {MESSAGE_VALUE_MAX} bytes cannot move \
             between peers yet (the object plane will move them); use it on the peer that \
             made it"
        ),
    )
}

impl State {
    /// Results of tasks this node sent away, or fetched values.
    pub(super) fn receive_objects(&mut self, values: Vec<(ObjectId, WireValue)>) {
        let mut tasks: Vec<TaskId> = Vec::new();
        for (id, value) in values {
            let pending = self
                .objects
                .get(&id)
                .is_some_and(|e| matches!(e.state, ObjState::Pending));
            if !pending {
                continue;
            }
            self.set_value(id, value);
            let tid = id.task();
            if !tasks.contains(&tid) {
                tasks.push(tid);
            }
        }
        for tid in tasks {
            let Some(t) = self.tasks.get(&tid) else {
                continue;
            };
            if !matches!(t.state, TaskState::Remote(_)) {
                continue;
            }
            let spec = Arc::clone(&t.spec);
            let all_back = spec.return_ids().all(|id| {
                self.objects
                    .get(&id)
                    .is_none_or(|e| matches!(e.state, ObjState::Ready(_)))
            });
            if all_back {
                self.stats.tasks_finished += 1;
                self.finish_task(tid);
            }
        }
    }

    /// Give a pending object the value that came from a peer (large ones go into the store).
    pub(super) fn set_value(&mut self, id: ObjectId, value: WireValue) {
        let value = match value {
            WireValue::Error(e) => Value::Error(e),
            WireValue::Blob(b) if b.len() <= INLINE_MAX => Value::Inline(b),
            WireValue::Blob(b) => match self.create_object(Holder::Local, id, b.len() as u64) {
                Ok(offset) => match self.store.arena().write(offset, &b) {
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

    /// An object's value as it travels to a peer.
    pub(crate) fn wire_value(&mut self, id: &ObjectId) -> WireValue {
        let Some(e) = self.objects.get(id) else {
            return WireValue::Error(ErrorInfo::new(
                ErrorKind::ObjectLost,
                format!("object {id} is not known to its owner (it was freed)"),
            ));
        };
        match &e.state {
            ObjState::Pending => WireValue::Error(ErrorInfo::new(
                ErrorKind::ObjectLost,
                format!("object {id} has no value yet"),
            )),
            ObjState::Ready(Value::Inline(b)) => WireValue::Blob(b.clone()),
            ObjState::Ready(Value::Error(err)) => WireValue::Error(err.clone()),
            ObjState::Ready(Value::Stored { len, .. }) => {
                let len = *len;
                if len as usize > MESSAGE_VALUE_MAX {
                    return WireValue::Error(too_large(id, len));
                }
                // Pinned while copied, so a restore or compaction cannot move it.
                match self.value_for(id, Holder::Local) {
                    Value::Stored { offset, len } => {
                        let bytes = self
                            .store
                            .arena()
                            .slice(offset, len)
                            .map(|s| ByteBuf::from(s.to_vec()));
                        self.release_pins(Holder::Local, &[*id]);
                        match bytes {
                            Ok(b) => WireValue::Blob(b),
                            Err(e) => WireValue::Error(self.store_error(e)),
                        }
                    }
                    Value::Error(err) => WireValue::Error(err),
                    Value::Inline(b) => WireValue::Blob(b),
                }
            }
        }
    }

    /// A wait on behalf of a peer completed: send it the values.
    pub(crate) fn send_values_to_peer(&mut self, peer: PeerId, ids: &[ObjectId], free_after: bool) {
        let values = ids.iter().map(|id| (*id, self.wire_value(id))).collect();
        let inside: Vec<ObjectId> = ids
            .iter()
            .filter_map(|id| self.objects.get(id))
            .flat_map(|e| e.contains.iter().copied())
            .collect();
        self.escape_with_contents(&inside);
        self.send_peer(peer, PeerMsg::Objects { values });
        if free_after {
            for id in ids {
                if let Some(e) = self.objects.get_mut(id) {
                    e.had_handle = true;
                }
                self.maybe_free(id);
            }
        }
    }

    /// Objects (and the refs inside their values) that another peer may now
    /// hold refs to: the ones owned here are never freed under it (there is no
    /// counting of references across peers yet).
    pub(super) fn escape_with_contents(&mut self, ids: &[ObjectId]) {
        let mut owned: Vec<ObjectId> = Vec::new();
        for id in ids {
            if self.is_foreign(id.owner()) {
                continue;
            }
            owned.push(*id);
            if let Some(e) = self.objects.get(id) {
                owned.extend(e.contains.iter().filter(|c| !self.is_foreign(c.owner())));
            }
        }
        self.mark_escaped(&owned);
    }

    /// A handle of a ref owned by another peer arrived: an entry to count it,
    /// with nothing asked of the owner yet.
    pub(crate) fn note_foreign(&mut self, id: ObjectId) {
        if !self.is_foreign(id.owner()) || self.objects.contains_key(&id) {
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
            Some(owner) => self.send_peer(owner, PeerMsg::Fetch { id }),
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

    /// A peer wants the value of an object owned here.
    pub(super) fn serve_fetch(&mut self, from: PeerId, id: ObjectId) {
        match self.objects.get_mut(&id) {
            Some(e) => {
                e.escaped = true;
                self.begin_wait(
                    vec![id],
                    1,
                    true,
                    Target::Peer {
                        peer: from,
                        free_after: false,
                    },
                    None,
                    None,
                );
            }
            None => {
                let value = self.wire_value(&id);
                self.send_peer(
                    from,
                    PeerMsg::Objects {
                        values: vec![(id, value)],
                    },
                );
            }
        }
    }
}
