//! The object table: every object this node knows (its value once it has
//! one, the handles, tasks and other objects that keep it, where copies
//! are), and freeing an object once nothing can reach it.
//!
//! - handles: `add_refs`/`dec_refs` count `ObjectRef`s alive in local
//!   processes (per connection, so a dead process's handles go with it);
//! - holds: queued or running tasks taking it as an argument, and objects
//!   whose values contain its ref;
//! - borrowers: peers this node lent a ref to (`cluster::borrows`);
//! - an object nothing holds is freed (`maybe_free`): its store entry or
//!   spill file goes, copies kept for it on other peers are freed, the refs
//!   inside its value are let go, and a borrowed ref goes back to its
//!   lender. A large copy of another peer's object is cached instead, for
//!   peers to pull, until the store needs the room.

use std::collections::VecDeque;
use std::path::PathBuf;

use rustc_hash::FxHashMap;

use crate::command::Command;
use crate::core::Core;
use crate::ids::{ConnId, ObjectId, PeerId, TaskId, WaitId};
use crate::store::Spilled;
use crate::wire::local::Value;
use crate::wire::peer::{IN_MESSAGE_MAX, PeerMsg};

/// Who holds a pin or a handle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Holder {
    /// The driver embedded in this process.
    Local,
    Conn(ConnId),
}

/// An object's value, once it exists.
#[derive(Debug)]
pub(crate) enum ObjState {
    Pending,
    Ready(Value),
}

/// One object in the table.
#[derive(Debug)]
pub(crate) struct ObjectEntry {
    pub(crate) state: ObjState,
    /// Live `ObjectRef` handles in local processes.
    pub(crate) refs: u32,
    /// Whether a handle ever existed (so a result that arrives before its
    /// first handle is not freed early).
    pub(crate) had_handle: bool,
    /// A ref was pickled outside peer's serializer: it may be alive where
    /// nothing can count it, so the object lives as long as this node.
    pub(crate) escaped: bool,
    /// Queued or running tasks that take it as an argument, and objects whose values hold it.
    pub(crate) holds: u32,
    /// Tasks waiting for it.
    pub(crate) dependents: Vec<TaskId>,
    /// Pending gets/waits for it: (wait, index in that wait's ids).
    pub(crate) waiters: Vec<(WaitId, u32)>,
    /// Refs serialized inside its value: it holds them while it lives.
    pub(crate) contains: Vec<ObjectId>,
    /// Owned by another peer and not asked for yet (a handle arrived here
    /// before anyone needed the value).
    pub(crate) unfetched: bool,
    /// Copies of the value in other peers' stores. While the state is
    /// `Pending`, a set `elsewhere` means the value exists but not here yet:
    /// it is pulled when needed.
    pub(crate) elsewhere: Option<Box<Elsewhere>>,
    /// A copy kept for its owner on another peer (the result of a task run
    /// here): freed when the owner says so.
    pub(crate) held_for_owner: bool,
    /// A copy of another peer's object that nobody here uses any more, kept
    /// so peers can pull it from here: dropped when the owner frees the
    /// object or when the store needs the room.
    pub(crate) cached: bool,
}

/// Where copies of an object's value are, besides this node.
#[derive(Debug, Clone, Default)]
pub(crate) struct Elsewhere {
    pub(crate) len: u64,
    /// Peers with a complete copy.
    pub(crate) copies: Vec<PeerId>,
    /// Peers pulling a copy (they serve the chunks they have).
    pub(crate) partial: Vec<PeerId>,
}

impl Elsewhere {
    /// Every holder, complete copies first.
    pub(crate) fn holders(&self) -> impl Iterator<Item = PeerId> + '_ {
        self.copies.iter().chain(&self.partial).copied()
    }
}

impl ObjectEntry {
    pub(crate) fn pending() -> Self {
        Self {
            state: ObjState::Pending,
            refs: 0,
            had_handle: false,
            escaped: false,
            holds: 0,
            dependents: Vec::new(),
            waiters: Vec::new(),
            contains: Vec::new(),
            unfetched: false,
            elsewhere: None,
            held_for_owner: false,
            cached: false,
        }
    }

    /// The value exists on other peers only.
    pub(crate) fn is_elsewhere(&self) -> bool {
        matches!(self.state, ObjState::Pending) && self.elsewhere.is_some()
    }

    pub(crate) fn is_ready(&self) -> bool {
        matches!(self.state, ObjState::Ready(_))
    }

    pub(crate) fn is_pending(&self) -> bool {
        matches!(self.state, ObjState::Pending)
    }

    /// Its value is an error (the task that makes it failed, say).
    pub(crate) fn is_error(&self) -> bool {
        matches!(self.state, ObjState::Ready(Value::Error(_)))
    }
}

/// The objects this node knows.
#[derive(Debug, Default)]
pub(crate) struct Objects {
    entries: FxHashMap<ObjectId, ObjectEntry>,
    /// Cached copies of other peers' objects, least recently cached first.
    cached: VecDeque<ObjectId>,
    /// Stored objects whose bytes were spilled to disk: file and length.
    spilled: FxHashMap<ObjectId, (PathBuf, u64)>,
}

impl Objects {
    pub(crate) fn get(&self, id: &ObjectId) -> Option<&ObjectEntry> {
        self.entries.get(id)
    }

    pub(crate) fn get_mut(&mut self, id: &ObjectId) -> Option<&mut ObjectEntry> {
        self.entries.get_mut(id)
    }

    pub(crate) fn contains(&self, id: &ObjectId) -> bool {
        self.entries.contains_key(id)
    }

    /// The entry of `id`, made pending if it was not known.
    pub(crate) fn entry(&mut self, id: ObjectId) -> &mut ObjectEntry {
        self.entries.entry(id).or_insert_with(ObjectEntry::pending)
    }

    pub(crate) fn insert(&mut self, id: ObjectId, e: ObjectEntry) {
        self.entries.insert(id, e);
    }

    pub(crate) fn remove(&mut self, id: &ObjectId) -> Option<ObjectEntry> {
        self.entries.remove(id)
    }

    pub(crate) fn iter_mut(&mut self) -> impl Iterator<Item = (&ObjectId, &mut ObjectEntry)> {
        self.entries.iter_mut()
    }

    pub(crate) fn iter_entries(&self) -> impl Iterator<Item = (&ObjectId, &ObjectEntry)> {
        self.entries.iter()
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether `id` has a value here.
    pub(crate) fn is_ready(&self, id: &ObjectId) -> bool {
        self.entries.get(id).is_some_and(ObjectEntry::is_ready)
    }

    /// Whether the value of `id` is only on other peers.
    pub(crate) fn is_elsewhere(&self, id: &ObjectId) -> bool {
        self.entries.get(id).is_some_and(ObjectEntry::is_elsewhere)
    }

    /// Cached copies of other peers' objects (for `peer status`).
    pub(crate) fn cached_count(&self) -> usize {
        self.entries.values().filter(|e| e.cached).count()
    }

    /// Copies kept for (or cached from) the owner with tag `owner`.
    pub(crate) fn copies_kept_for(&self, owner: crate::ids::OwnerTag) -> Vec<ObjectId> {
        self.entries
            .iter()
            .filter(|(id, e)| id.owner() == owner && (e.held_for_owner || e.cached))
            .map(|(id, _)| *id)
            .collect()
    }

    /// Objects of the owner with tag `owner` asked of it whose values have
    /// not come (nor where they are).
    pub(crate) fn fetched_from(&self, owner: crate::ids::OwnerTag) -> Vec<ObjectId> {
        self.entries
            .iter()
            .filter(|(id, e)| {
                id.owner() == owner && e.is_pending() && e.elsewhere.is_none() && !e.unfetched
            })
            .map(|(id, _)| *id)
            .collect()
    }

    /// Copies kept for their owners on other peers.
    pub(crate) fn copies_kept(&self) -> Vec<ObjectId> {
        self.entries
            .iter()
            .filter(|(_, e)| e.held_for_owner)
            .map(|(id, _)| *id)
            .collect()
    }

    /// Objects spilled to files now.
    pub(crate) fn spilled_count(&self) -> usize {
        self.spilled.len()
    }

    /// Record the objects the store moved to files.
    pub(crate) fn note_spilled(&mut self, spilled: Vec<Spilled>) {
        for s in spilled {
            tracing::debug!(
                "spilled object {} ({} bytes) to {}",
                s.id,
                s.len,
                s.path.display()
            );
            self.spilled.insert(s.id, (s.path, s.len));
        }
    }

    /// The file a spilled object is in, and its length.
    pub(crate) fn spill_of(&self, id: &ObjectId) -> Option<(PathBuf, u64)> {
        self.spilled.get(id).cloned()
    }

    /// A spilled object is back in the store (or freed): forget its file.
    pub(crate) fn unspill(&mut self, id: &ObjectId) -> Option<(PathBuf, u64)> {
        self.spilled.remove(id)
    }
}

#[cfg(test)]
impl Objects {
    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
impl std::ops::Index<&ObjectId> for Objects {
    type Output = ObjectEntry;
    fn index(&self, id: &ObjectId) -> &ObjectEntry {
        &self.entries[id]
    }
}

impl Core {
    /// New `ObjectRef` handles in `holder`'s process. Ids this node does not
    /// know are ignored (a get on them reads as lost).
    pub(crate) fn add_refs(&mut self, holder: Holder, ids: &[ObjectId]) {
        for id in ids {
            if self.cluster.is_member() && !self.objects.contains(id) {
                // A ref owned by another peer: count it here; the value is
                // fetched from the owner when someone needs it.
                self.note_foreign(*id);
            }
            let Some(e) = self.objects.get_mut(id) else {
                continue;
            };
            e.refs += 1;
            e.had_handle = true;
            if let Holder::Conn(c) = holder {
                self.conns.add_ref(c, *id);
            }
        }
    }

    /// Handles dropped; frees objects nobody can reach any more.
    pub(crate) fn dec_refs(&mut self, holder: Holder, ids: &[ObjectId]) {
        for id in ids {
            if let Holder::Conn(c) = holder
                && !self.conns.drop_ref(c, id)
            {
                // A handle this client never registered: not its to release.
                continue;
            }
            if let Some(e) = self.objects.get_mut(id) {
                e.refs = e.refs.saturating_sub(1);
                self.maybe_free(id);
            }
        }
    }

    /// Record the refs serialized inside object `id`'s value: it keeps them alive.
    pub(crate) fn attach_contained(&mut self, id: ObjectId, contained: Vec<ObjectId>) {
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
        self.objects.entry(id).contains.extend(kept);
    }

    /// Refs pickled outside peer's serializer: keep their objects for good.
    pub(crate) fn mark_escaped(&mut self, ids: &[ObjectId]) {
        for id in ids {
            if let Some(e) = self.objects.get_mut(id) {
                e.escaped = true;
            }
        }
    }

    /// Let go of one hold on each of `ids` (a task ended, or an object that
    /// held their refs was freed), freeing those nothing else holds.
    pub(crate) fn release_holds(&mut self, ids: &[ObjectId], task: Option<TaskId>) {
        for id in ids {
            if let Some(e) = self.objects.get_mut(id) {
                e.holds = e.holds.saturating_sub(1);
                if let Some(t) = task
                    && e.holds == 0
                {
                    e.dependents.retain(|d| *d != t);
                }
            }
            self.maybe_free(id);
        }
    }

    /// Drop an object if no handle, task or serialized ref can reach it.
    pub(crate) fn maybe_free(&mut self, id: &ObjectId) {
        self.free_if_unused(id, true);
    }

    /// Drop an object nothing here uses; `may_cache`: a large copy of another
    /// peer's object is kept instead, for peers to pull, until its owner frees
    /// it or the store needs the room.
    fn free_if_unused(&mut self, id: &ObjectId, may_cache: bool) {
        let Some(e) = self.objects.get(id) else {
            return;
        };
        // A foreign ref never asked for has no value to wait for, nor has one
        // asked for that nothing here waits for any more (its value may
        // still come; it is dropped then).
        let foreign_unwaited = self.is_foreign(id.owner())
            && e.waiters.is_empty()
            && e.dependents.is_empty()
            && !self.tasks.contains(&id.task());
        let ready = e.is_ready() || e.unfetched || e.is_elsewhere() || foreign_unwaited;
        let unused = e.refs == 0
            && e.had_handle
            && !e.escaped
            && !e.held_for_owner
            && e.holds == 0
            && ready
            && !e.cached
            && !self.cluster.is_pulling(id)
            && !self.cluster.is_lent(id);
        if !unused {
            // Kept (as a copy for its owner, say), but maybe no longer used as a borrowed ref.
            if self.cluster.is_borrowed(id) {
                self.release_borrows(&[*id]);
            }
            return;
        }
        let foreign_copy = self.is_foreign(id.owner())
            && matches!(e.state, ObjState::Ready(Value::Stored { len, .. })
                if len as usize > IN_MESSAGE_MAX);
        // A copy a local reader still looks at stays known (its id may come
        // back, e.g. to rebuild it here, and the store cannot hold it twice).
        if foreign_copy && (may_cache || self.store.is_pinned(id)) {
            if let Some(e) = self.objects.get_mut(id) {
                e.cached = true;
                self.objects.cached.push_back(*id);
            }
            self.release_borrows(&[*id]);
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
                self.send_peer(peer, PeerMsg::Free { ids: vec![*id] });
            }
        }
        if let ObjState::Ready(Value::Stored { .. }) = e.state {
            if let Some((path, _)) = self.objects.unspill(id) {
                self.emit(Command::DeleteSpillFile { path });
            } else if let Err(err) = self.store.delete(id) {
                tracing::warn!("freeing object {id}: {err}");
            }
        }
        self.release_holds(&e.contains, None);
        self.release_lineage(id);
        if self.cluster.is_borrowed(id) {
            self.release_borrows(&[*id]);
        }
        if let Some(aid) = id.actor()
            && !self.is_foreign(id.owner())
        {
            // The last handle of an actor created here is gone.
            self.actor_out_of_scope(aid);
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

    /// Drop cached copies of other peers' objects (oldest first) until `len`
    /// bytes are free, before anything of this node's own is spilled.
    pub(crate) fn make_room(&mut self, len: u64) {
        // Each cached copy is looked at once (one still pinned goes to the back).
        let mut budget = self.objects.cached.len();
        while budget > 0 {
            budget -= 1;
            let stats = self.store.stats();
            if stats.capacity.saturating_sub(stats.used) >= len.saturating_add(64) {
                return;
            }
            let Some(id) = self.objects.cached.pop_front() else {
                return;
            };
            if self.objects.get(&id).is_some_and(|e| e.cached) {
                self.drop_copy(&id);
            }
        }
    }
}
