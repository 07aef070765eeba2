//! Gets and waits: who waits for which objects, how many must be ready, and
//! where the answer goes (a local connection, the embedded driver, or a
//! peer that asked for values), with their deadlines.
//!
//! - a `wait` is answered once `need` of its objects have values here (an
//!   error is a value like any other); objects on other peers are pulled
//!   first, as Ray's `wait(fetch_local=True)` does. With `fetch_local=False`
//!   ([`Awaited::Anywhere`]) an object counts as soon as a copy exists on any
//!   peer, and nothing is pulled;
//! - a `get` of a local process (a connection or the embedded driver) is
//!   answered once every object has its value, or as soon as one of them is
//!   an error: Ray's `get` raises the first error it sees without waiting for
//!   the rest, so a task that hangs cannot hide another one's failure. The
//!   answer is then that one error alone (see [`Core::get_answer`]);
//! - a peer's get (values it moves on, never raises) waits for every value;
//! - a get or wait that ends before all its objects are ready takes its
//!   entries off their `waiters`, so values that come later wake nothing.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Instant;

use rustc_hash::FxHashMap;

use crate::command::Command;
use crate::core::Core;
use crate::history::SpanKind;
use crate::ids::{ConnId, ObjectId, PeerId, WaitId, WorkerId};
use crate::local::objects::{Holder, ObjState};
use crate::local::values::lost_error;
use crate::wire::local::{ErrorInfo, NodeMsg, Value};

/// What a get or wait waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Awaited {
    /// A get: every value, here (or the first error).
    Values,
    /// A wait (`fetch_local=True`, Ray's default): values here; objects
    /// on other peers are pulled.
    Here,
    /// A wait with `fetch_local=False`: values anywhere in the cluster;
    /// nothing is pulled.
    Anywhere,
}

impl Awaited {
    /// What a wait with Ray's `fetch_local` waits for.
    pub fn of_wait(fetch_local: bool) -> Self {
        if fetch_local {
            Awaited::Here
        } else {
            Awaited::Anywhere
        }
    }
}

/// Where the answer to a get/wait goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Target {
    /// The embedded driver: told with [`Command::WaitDone`]; it collects the
    /// values itself.
    Local,
    /// A local client's request.
    Conn { conn: ConnId, req: u64 },
    /// Another node: the owner of a guest task's results, or a peer that
    /// fetched an object. `free_after`: the values were only kept for it.
    Peer { peer: PeerId, free_after: bool },
}

/// A get or wait that is not satisfied yet.
#[derive(Debug)]
pub(crate) struct PendingWait {
    pub(crate) ids: Vec<ObjectId>,
    /// Indices of `ids` that are ready, in completion order.
    pub(crate) ready: Vec<u32>,
    /// How many ready indices complete it (all of them for a get).
    pub(crate) need: usize,
    pub(crate) is_get: bool,
    /// An object with a copy on another peer counts as ready (a peer's wait,
    /// which moves values on, or [`Awaited::Anywhere`]).
    pub(crate) located_is_ready: bool,
    pub(crate) target: Target,
    /// A task worker that gave its CPU back while it waits.
    pub(crate) blocked_worker: Option<WorkerId>,
    /// A get that fails fast saw one of its objects fail: it has its answer.
    pub(crate) failed: bool,
    /// When it began (a get's span on the timeline).
    pub(crate) since: Instant,
}

impl PendingWait {
    /// Whether an error among its objects answers it at once: a get of a
    /// local process raises its first error, as Ray's does. A peer's get
    /// moves values and waits for all of them; a wait counts errors as ready.
    fn fails_fast(&self) -> bool {
        self.is_get && !matches!(self.target, Target::Peer { .. })
    }

    /// Whether it has its answer: enough objects ready, or one failed.
    fn is_answered(&self) -> bool {
        self.failed || self.ready.len() >= self.need
    }
}

/// The pending gets and waits.
#[derive(Debug)]
pub(crate) struct Waits {
    pending: FxHashMap<WaitId, PendingWait>,
    next: WaitId,
    /// Deadlines of gets/waits with a timeout, earliest first.
    deadlines: BinaryHeap<Reverse<(Instant, WaitId)>>,
}

impl Default for Waits {
    fn default() -> Self {
        Self {
            pending: FxHashMap::default(),
            next: 1,
            deadlines: BinaryHeap::new(),
        }
    }
}

impl Waits {
    pub(crate) fn get(&self, id: &WaitId) -> Option<&PendingWait> {
        self.pending.get(id)
    }

    pub(crate) fn remove(&mut self, id: &WaitId) -> Option<PendingWait> {
        self.pending.remove(id)
    }

    /// Drop the waits `gone` picks; returns the ids they waited for.
    pub(crate) fn forget(&mut self, gone: impl Fn(&PendingWait) -> bool) -> Vec<ObjectId> {
        let mut ids = Vec::new();
        self.pending.retain(|_, w| {
            let g = gone(w);
            if g {
                ids.extend_from_slice(&w.ids);
            }
            !g
        });
        ids
    }

    pub(crate) fn values(&self) -> impl Iterator<Item = &PendingWait> {
        self.pending.values()
    }

    pub(crate) fn count(&self) -> usize {
        self.pending.len()
    }
}

#[cfg(test)]
impl Waits {
    pub(crate) fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }
}

impl Core {
    /// Start a get (needs all ids) or a wait (needs `need` of them).
    pub(crate) fn begin_wait(
        &mut self,
        ids: Vec<ObjectId>,
        need: usize,
        awaited: Awaited,
        target: Target,
        blocked_worker: Option<WorkerId>,
        deadline: Option<Instant>,
    ) -> WaitId {
        let wid = self.waits.next;
        self.waits.next += 1;
        let for_a_peer = matches!(target, Target::Peer { .. });
        let anywhere = awaited == Awaited::Anywhere;
        if self.cluster.is_member() {
            for id in &ids {
                self.fetch_foreign(*id);
                if !for_a_peer && !anywhere && self.objects.is_elsewhere(id) {
                    self.start_pull(*id);
                }
            }
        }
        let mut ready = Vec::new();
        let mut any_failed = false;
        for (i, id) in ids.iter().enumerate() {
            match self.objects.get_mut(id) {
                Some(e) if e.is_pending() && !(anywhere && e.is_elsewhere()) => {
                    e.waiters.push((wid, i as u32))
                }
                e => {
                    // Unknown objects read as lost: an error too.
                    any_failed |= e.is_none_or(|e| e.is_error());
                    ready.push(i as u32);
                }
            }
        }
        let mut w = PendingWait {
            ids,
            ready,
            need,
            is_get: awaited == Awaited::Values,
            located_is_ready: for_a_peer || anywhere,
            target,
            blocked_worker: None,
            failed: false,
            since: self.now,
        };
        w.failed = any_failed && w.fails_fast();
        let done = w.is_answered();
        self.waits.pending.insert(wid, w);
        if done {
            self.complete_wait(wid);
        } else {
            if let Some(w) = blocked_worker {
                self.block_worker(w);
                if let Some(pw) = self.waits.pending.get_mut(&wid) {
                    pw.blocked_worker = Some(w);
                }
            }
            if let Some(d) = deadline {
                self.waits.deadlines.push(Reverse((d, wid)));
                self.arm_timer(d);
            }
        }
        wid
    }

    /// Item `idx` of wait `wid` is ready (an object got its value, or for a
    /// peer's wait, a place to be pulled from).
    /// A get that fails fast is answered by the first item that is an error.
    pub(crate) fn wait_item_ready(&mut self, wid: WaitId, idx: u32) {
        let Some(w) = self.waits.pending.get_mut(&wid) else {
            return;
        };
        // The embedded driver's answered waits stay until it collects them.
        let answered_before = w.is_answered();
        w.ready.push(idx);
        if answered_before {
            return;
        }
        if w.fails_fast() {
            let id = w.ids.get(idx as usize);
            w.failed = id.is_some_and(|id| self.objects.get(id).is_none_or(|e| e.is_error()));
        }
        if w.is_answered() {
            self.complete_wait(wid);
        }
    }

    /// Answer a finished get/wait. Waits of the embedded driver are only
    /// signalled: the waiting thread collects and removes them itself.
    pub(crate) fn complete_wait(&mut self, wid: WaitId) {
        if let Some(PendingWait {
            target: Target::Local,
            is_get,
            since,
            ids,
            ..
        }) = self.waits.pending.get(&wid)
        {
            if *is_get {
                let (since, n) = (*since, ids.len() as u64);
                self.note_span(SpanKind::Get, 0, since, n, true);
            }
            self.emit(Command::WaitDone { wait: wid });
            return;
        }
        let Some(w) = self.waits.pending.remove(&wid) else {
            return;
        };
        self.unregister_waiter(wid, &w);
        if let (true, Target::Conn { conn, .. }) = (w.is_get, w.target) {
            let pid = self.conns.pid(conn);
            self.note_span(SpanKind::Get, pid, w.since, w.ids.len() as u64, !w.failed);
        }
        match w.target {
            Target::Peer { peer, free_after } => {
                self.send_values_to_peer(peer, &w.ids, free_after);
                return;
            }
            Target::Conn { conn, req } => {
                let msg = if w.is_get {
                    NodeMsg::Values {
                        req,
                        values: Some(self.get_answer(&w.ids, Holder::Conn(conn))),
                    }
                } else {
                    let mut indices = w.ready;
                    indices.truncate(w.need);
                    NodeMsg::Ready { req, indices }
                };
                self.send_to(conn, msg);
            }
            Target::Local => {}
        }
        if let Some(worker) = w.blocked_worker {
            self.unblock_worker(worker);
        }
    }

    /// Gets/waits whose deadline passed answer with what they have.
    pub(crate) fn expire_waits(&mut self) {
        while let Some(&Reverse((at, wid))) = self.waits.deadlines.peek() {
            if at > self.now {
                break;
            }
            self.waits.deadlines.pop();
            self.expire_wait(wid);
        }
    }

    fn expire_wait(&mut self, wid: WaitId) {
        let Some(w) = self.waits.pending.remove(&wid) else {
            return;
        };
        self.unregister_waiter(wid, &w);
        if let Target::Conn { conn, req } = w.target {
            let msg = if w.is_get {
                NodeMsg::Values { req, values: None }
            } else {
                NodeMsg::Ready {
                    req,
                    indices: w.ready,
                }
            };
            self.send_to(conn, msg);
        }
        if let Some(worker) = w.blocked_worker {
            self.unblock_worker(worker);
        }
    }

    /// A wait that ends (answered, expired or given up) leaves the objects it
    /// still waited for: their `waiters` lose its entries, and those nothing
    /// else uses may go (a foreign ref fetched only for it, say).
    pub(crate) fn unregister_waiter(&mut self, wid: WaitId, w: &PendingWait) {
        if w.ready.len() >= w.ids.len() {
            return;
        }
        for id in &w.ids {
            let Some(e) = self.objects.get_mut(id) else {
                continue;
            };
            let before = e.waiters.len();
            e.waiters.retain(|(x, _)| *x != wid);
            if e.waiters.len() < before {
                self.maybe_free(id);
            }
        }
    }

    /// Whether every id has a value (or is unknown, which reads as lost).
    pub(crate) fn all_ready(&self, ids: &[ObjectId]) -> bool {
        ids.iter().all(|id| {
            self.objects
                .get(id)
                .is_none_or(|e| matches!(e.state, ObjState::Ready(_)))
        })
    }

    /// The error of the first of `ids` (in their order) that failed; an
    /// unknown id reads as lost.
    pub(crate) fn first_failure(&self, ids: &[ObjectId]) -> Option<ErrorInfo> {
        ids.iter()
            .find_map(|id| match self.objects.get(id).map(|e| &e.state) {
                None => Some(lost_error(id)),
                Some(ObjState::Ready(Value::Error(err))) => Some(err.clone()),
                Some(_) => None,
            })
    }

    /// The answer to a get of `ids` that is over: the error of its first
    /// failed object alone (a get raises it; the other values are not read
    /// and nothing is pinned), or else every value, stored ones pinned for
    /// `holder`.
    pub(crate) fn get_answer(&mut self, ids: &[ObjectId], holder: Holder) -> Vec<Value> {
        if let Some(err) = self.first_failure(ids) {
            return vec![Value::Error(err)];
        }
        ids.iter().map(|id| self.value_for(id, holder)).collect()
    }

    /// The embedded driver's get of `ids`, if it is over: one failed, or
    /// every one has its value (see [`Core::get_answer`]).
    pub(crate) fn local_get_answer(&mut self, ids: &[ObjectId]) -> Option<Vec<Value>> {
        let over = self.first_failure(ids).is_some() || self.all_ready(ids);
        over.then(|| self.get_answer(ids, Holder::Local))
    }
}
