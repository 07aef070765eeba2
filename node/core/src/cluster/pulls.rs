//! The object plane's bookkeeping: values larger than a message are pulled
//! in chunks from the peers that hold them, straight into this node's store
//! (the shell moves the bytes, `peer_node::cluster::pull`).
//!
//! - a pull reserves the object's space in the store first (evicting or
//!   spilling as a `put` would, or failing with the store's error), then
//!   asks the shell to fetch it ([`Command::Pull`]); every chunk that lands
//!   is reported ([`Event::PullChunk`](crate::Event::PullChunk)), so this
//!   node serves the chunks it has to peers pulling the same object;
//! - the object is sealed only when every chunk is in, and its owner told
//!   there is one more copy; everyone needing it here shares the one pull;
//! - a failed pull asks the owner again a little later (it may know other
//!   copies, or rebuild the object), or for an object owned here, rebuilds it.

use std::time::{Duration, Instant};

use rustc_hash::FxHashMap;

use crate::command::Command;
use crate::core::Core;
use crate::event::PullFailure;
use crate::history::SpanKind;
use crate::ids::{ConnId, ObjectId, PeerId};
use crate::local::objects::{Holder, ObjState};
use crate::local::tasks::TaskState;
use crate::wire::local::{ErrorInfo, ErrorKind, Reserved, Value};
use crate::wire::peer::{PeerMsg, PullRequest};

/// Bytes per chunk request.
pub const CHUNK: u64 = 4 * 1024 * 1024;
/// Times a node asks an object's owner again after pulling it failed, and the
/// pause before each (the owner needs a few seconds to notice a dead peer).
const REFETCH_TRIES: u8 = 30;
const REFETCH_PAUSE: Duration = Duration::from_millis(500);

/// A pull in progress: where the object goes and which chunks are in.
#[derive(Debug)]
struct Pulling {
    offset: u64,
    len: u64,
    done: Vec<bool>,
    since: Instant,
}

impl Pulling {
    fn new(offset: u64, len: u64, since: Instant) -> Self {
        let chunks = len.div_ceil(CHUNK).max(1) as usize;
        Self {
            offset,
            len,
            done: vec![false; chunks],
            since,
        }
    }

    /// Whether every chunk overlapping `offset..offset + len` is in.
    fn has(&self, offset: u64, len: u64) -> bool {
        let first = (offset / CHUNK) as usize;
        let last = ((offset + len).saturating_sub(1) / CHUNK) as usize;
        (first..=last).all(|c| self.done.get(c).copied().unwrap_or(false))
    }

    /// Bytes received so far.
    fn received(&self) -> u64 {
        let full = self.done.iter().filter(|d| **d).count() as u64 * CHUNK;
        full.min(self.len)
    }
}

/// What this node can serve of a pull request.
#[derive(Debug, PartialEq, Eq)]
pub enum PullSource {
    /// A sealed copy, pinned for the serving (release it with
    /// [`Core::driver_release`] once sent): where it is, and its length.
    Stored { offset: u64, len: u64 },
    /// A pull in progress that has every requested chunk: where the object is being written,
    /// and its length. Chunks reported in ([`Event::PullChunk`](crate::Event::PullChunk))
    /// are not written again, so their bytes can be sent straight from there; the shell must
    /// have finished sending them before it reports the pull's end
    /// ([`Event::PullDone`](crate::Event::PullDone)), after which the space may be freed.
    Partial { offset: u64, len: u64 },
    /// A pull in progress that does not have those chunks yet.
    NotYet,
    /// This node cannot serve them.
    Missing(String),
}

/// Pulls in progress, and what waits for them.
#[derive(Debug, Default)]
pub(crate) struct Pulls {
    active: FxHashMap<ObjectId, Pulling>,
    /// Fetches asked again after a pull failed, per object (bounded).
    refetches: FxHashMap<ObjectId, u8>,
    /// Objects to ask their owner for again, and when.
    refetch_at: Vec<(ObjectId, Instant)>,
    /// Holders a pull of an object failed with (told to its owner on the next fetch).
    failed_holders: FxHashMap<ObjectId, Vec<PeerId>>,
    /// Tasks received while one of their results was being pulled here, by that result.
    after_pull: FxHashMap<ObjectId, Vec<(PeerId, PeerMsg)>>,
    /// Clients' `Create`s of an object a pull is writing into the store
    /// (connection, request, length): answered when the pull ends.
    creates_after_pull: FxHashMap<ObjectId, Vec<(ConnId, u64, u64)>>,
}

impl Pulls {
    /// The holders a pull of `id` failed with, to tell its owner.
    pub(super) fn take_failed_holders(&mut self, id: &ObjectId) -> Vec<PeerId> {
        self.failed_holders.remove(id).unwrap_or_default()
    }

    /// Run a task message once the pull of `id` (one of its results) ends.
    pub(super) fn run_after_pull(&mut self, id: ObjectId, from: PeerId, msg: PeerMsg) {
        self.after_pull.entry(id).or_default().push((from, msg));
    }
}

impl super::Cluster {
    /// Whether `id` is being pulled into this node's store.
    pub(crate) fn is_pulling(&self, id: &ObjectId) -> bool {
        self.pulls.active.contains_key(id)
    }

    /// Answer a client's `Create` of `id` once its pull ends.
    pub(crate) fn create_after_pull(&mut self, id: ObjectId, conn: ConnId, req: u64, len: u64) {
        self.pulls
            .creates_after_pull
            .entry(id)
            .or_default()
            .push((conn, req, len));
    }

    /// The pulls in progress as (object, length, bytes received), for `peer status`.
    /// Pulls in flight: the object, its length, bytes received and when the pull began.
    pub(crate) fn pulls_in_progress(&self) -> Vec<(ObjectId, u64, u64, Instant)> {
        self.pulls
            .active
            .iter()
            .map(|(id, p)| (*id, p.len, p.received(), p.since))
            .collect()
    }
}

impl Core {
    /// Bring an object that is only on other peers into this node's store
    /// (once: later needs share the pull in flight).
    pub(crate) fn start_pull(&mut self, id: ObjectId) {
        if !self.cluster.is_member() || self.cluster.is_pulling(&id) || self.made_here_soon(&id) {
            return;
        }
        let Some(e) = self.objects.get(&id) else {
            return;
        };
        let Some(ew) = e.elsewhere.clone().filter(|_| e.is_elsewhere()) else {
            return;
        };
        let me = self.cluster.me();
        let sources: Vec<PeerId> = ew.holders().filter(|p| Some(*p) != me).collect();
        let complete = ew.copies.iter().filter(|p| Some(**p) != me).count();
        if sources.is_empty() {
            // Nobody else has it: as when every source failed (ask the owner
            // again later, or rebuild it when owned here).
            self.cluster
                .pulls
                .active
                .insert(id, Pulling::new(0, 0, self.now));
            return self.pull_finished(id, Err("no other peer holds a copy".into()));
        }
        let offset = match self.create_object(Holder::Local, id, ew.len) {
            Ok(Reserved::Write { offset }) => offset,
            Ok(Reserved::Present { offset, len }) => {
                // A copy is here already (a run of its task on this node made it).
                return self.object_ready(id, Value::Stored { offset, len });
            }
            Err(err) => return self.object_ready(id, Value::Error(err)),
        };
        self.cluster
            .pulls
            .active
            .insert(id, Pulling::new(offset, ew.len, self.now));
        self.emit(Command::Pull {
            id,
            offset,
            len: ew.len,
            sources,
            complete,
        });
    }

    /// Whether the task that makes `id` is about to run or running on this
    /// node (run again after its copies were lost): its result will be here
    /// without a pull.
    fn made_here_soon(&self, id: &ObjectId) -> bool {
        self.tasks.get(&id.task()).is_some_and(|t| {
            matches!(t.state, TaskState::Queued | TaskState::Running(_))
                && t.spec.return_ids().any(|r| r == *id)
        })
    }

    /// A chunk of a pull is in the store.
    pub(crate) fn pull_chunk(&mut self, id: ObjectId, chunk: usize) {
        if let Some(p) = self.cluster.pulls.active.get_mut(&id)
            && let Some(d) = p.done.get_mut(chunk)
        {
            *d = true;
        }
    }

    /// A pull ended: seal the object (and tell its owner there is a copy here), or fail it.
    pub(crate) fn pull_finished(&mut self, id: ObjectId, result: Result<(), PullFailure>) {
        let Some(p) = self.cluster.pulls.active.remove(&id) else {
            return;
        };
        self.stats.bytes_pulled += p.received();
        if p.len > 0 {
            self.note_span(SpanKind::Transfer, 0, p.since, p.len, result.is_ok());
        }
        self.pull_ended(id, result);
        // Writers of the same object waited for the pull: now it is there, or they write it.
        let creates = self
            .cluster
            .pulls
            .creates_after_pull
            .remove(&id)
            .unwrap_or_default();
        for (conn, req, len) in creates {
            if self.conns.contains(conn) {
                self.create_for_client(conn, req, id, len);
            }
        }
        // Tasks that would make this object again waited for the pull.
        let tasks = self
            .cluster
            .pulls
            .after_pull
            .remove(&id)
            .unwrap_or_default();
        for (from, msg) in tasks {
            self.on_task(from, msg, true);
        }
    }

    fn pull_ended(&mut self, id: ObjectId, result: Result<(), PullFailure>) {
        let wanted = self.objects.is_elsewhere(&id);
        match result {
            Ok(()) if wanted => {
                self.stats.objects_pulled += 1;
                self.cluster.pulls.refetches.remove(&id);
                self.seal_object(Holder::Local, id, Vec::new());
                if self.is_foreign(id.owner())
                    && let Some(owner) = self.peer_of(id.owner())
                {
                    self.send_peer(owner, PeerMsg::Located { id });
                }
            }
            Ok(()) => {
                // Nobody needs it any more.
                let _ = self.store.abort(id);
            }
            Err(PullFailure { why, bad }) => {
                let _ = self.store.abort(id);
                if !bad.is_empty() {
                    self.cluster.pulls.failed_holders.insert(id, bad.clone());
                }
                if !wanted {
                    return;
                }
                let foreign = self.is_foreign(id.owner());
                let tries = self.cluster.pulls.refetches.entry(id).or_insert(0);
                *tries += 1;
                let tries = *tries;
                let how = format!("pulling it from other peers failed: {why}");
                if foreign && tries <= REFETCH_TRIES {
                    // Its owner may not have noticed yet that those copies are gone: ask it
                    // again in a moment (it rebuilds the object, or names other copies).
                    if let Some(e) = self.objects.get_mut(&id) {
                        e.elsewhere = None;
                    }
                    let at = self.now + REFETCH_PAUSE;
                    self.cluster.pulls.refetch_at.push((id, at));
                    self.arm_timer(at);
                } else if !foreign {
                    // A holder that failed may still be there: its copy is not counted any more.
                    for p in &bad {
                        self.send_peer(*p, PeerMsg::Free { ids: vec![id] });
                    }
                    let me = self.cluster.me();
                    if let Some(e) = self.objects.get_mut(&id)
                        && let Some(ew) = e.elsewhere.as_mut()
                    {
                        ew.copies.retain(|p| !bad.contains(p));
                        ew.partial.retain(|p| !bad.contains(p));
                        if !bad.is_empty() && ew.copies.iter().any(|p| Some(*p) != me) {
                            // Other copies are left: try them.
                            return self.start_pull(id);
                        }
                    }
                    self.object_lost(id, &how);
                } else {
                    let err = ErrorInfo::new(
                        ErrorKind::ObjectLost,
                        format!("object {id} could not be brought here: {how}"),
                    );
                    self.object_ready(id, Value::Error(err));
                }
            }
        }
    }

    /// Time passed: ask owners again for objects whose pulls failed.
    pub(crate) fn refetch_due(&mut self, now: Instant) {
        if self.cluster.pulls.refetch_at.is_empty() {
            return;
        }
        let (due, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.cluster.pulls.refetch_at)
            .into_iter()
            .partition(|(_, at)| *at <= now);
        self.cluster.pulls.refetch_at = later;
        for (id, _) in due {
            if let Some(e) = self.objects.get_mut(&id)
                && e.is_pending()
                && e.elsewhere.is_none()
            {
                e.unfetched = true;
                self.fetch_foreign(id);
            }
        }
    }

    /// What this node can serve of a peer's pull request (`Stored` comes
    /// pinned: release it once sent).
    pub fn pull_source(&mut self, req: &PullRequest) -> PullSource {
        let id = req.id;
        if let Some(p) = self.cluster.pulls.active.get(&id) {
            if req.offset + req.len > p.len {
                return PullSource::Missing(format!("object {id} has only {} bytes", p.len));
            }
            if !p.has(req.offset, req.len) {
                return PullSource::NotYet;
            }
            return PullSource::Partial {
                offset: p.offset,
                len: p.len,
            };
        }
        match self.objects.get(&id).map(|e| &e.state) {
            Some(ObjState::Ready(Value::Stored { .. })) => {}
            // Wanted here and about to be pulled: the owner lists this node as
            // a puller as soon as it asks where the object is, which is before
            // its pull starts. Its chunks will come.
            Some(ObjState::Pending) => return PullSource::NotYet,
            _ => return PullSource::Missing(format!("no copy of object {id} here")),
        }
        match self.value_for(&id, Holder::Local) {
            Value::Stored { offset, len } => PullSource::Stored { offset, len },
            Value::Error(e) => PullSource::Missing(e.message),
            Value::Inline(_) => PullSource::Missing("not in the store".into()),
        }
    }
}
