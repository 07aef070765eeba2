//! Gets and waits: who waits for which objects, how many must be ready, and
//! where the answer goes (a local connection, the embedded driver, or a
//! peer that asked for values), with their deadlines.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Instant;

use rustc_hash::FxHashMap;

use crate::command::Command;
use crate::core::Core;
use crate::ids::{ConnId, ObjectId, PeerId, WaitId, WorkerId};
use crate::local::objects::{Holder, ObjState};
use crate::wire::local::{NodeMsg, Value};

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
    pub(crate) target: Target,
    /// A task worker that gave its CPU back while it waits.
    pub(crate) blocked_worker: Option<WorkerId>,
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

    /// Drop the waits whose answers would go to `target`s matching `gone`.
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
    /// Start a get (`is_get`, needs all ids) or a wait (needs `need` of them).
    pub(crate) fn begin_wait(
        &mut self,
        ids: Vec<ObjectId>,
        need: usize,
        is_get: bool,
        target: Target,
        blocked_worker: Option<WorkerId>,
        deadline: Option<Instant>,
    ) -> WaitId {
        let wid = self.waits.next;
        self.waits.next += 1;
        if self.cluster.is_member() {
            let for_a_peer = matches!(target, Target::Peer { .. });
            for id in &ids {
                self.fetch_foreign(*id);
                if !for_a_peer && self.objects.is_elsewhere(id) {
                    self.start_pull(*id);
                }
            }
        }
        let mut ready = Vec::new();
        for (i, id) in ids.iter().enumerate() {
            match self.objects.get_mut(id) {
                Some(e) if e.is_pending() => e.waiters.push((wid, i as u32)),
                _ => ready.push(i as u32),
            }
        }
        let done = ready.len() >= need;
        self.waits.pending.insert(
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
    pub(crate) fn wait_item_ready(&mut self, wid: WaitId, idx: u32) {
        if let Some(w) = self.waits.pending.get_mut(&wid) {
            w.ready.push(idx);
            if w.ready.len() == w.need {
                self.complete_wait(wid);
            }
        }
    }

    /// Answer a finished get/wait. Waits of the embedded driver are only
    /// signalled: the waiting thread collects and removes them itself.
    pub(crate) fn complete_wait(&mut self, wid: WaitId) {
        if let Some(PendingWait {
            target: Target::Local,
            ..
        }) = self.waits.pending.get(&wid)
        {
            self.emit(Command::WaitDone { wait: wid });
            return;
        }
        let Some(w) = self.waits.pending.remove(&wid) else {
            return;
        };
        match w.target {
            Target::Peer { peer, free_after } => {
                self.send_values_to_peer(peer, &w.ids, free_after);
                return;
            }
            Target::Conn { conn, req } => {
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

    /// Whether every id has a value (or is unknown, which reads as lost).
    pub(crate) fn all_ready(&self, ids: &[ObjectId]) -> bool {
        ids.iter().all(|id| {
            self.objects
                .get(id)
                .is_none_or(|e| matches!(e.state, ObjState::Ready(_)))
        })
    }

    /// Values for the embedded driver (pinned for it).
    pub(crate) fn collect_local(&mut self, ids: &[ObjectId]) -> Vec<Value> {
        ids.iter()
            .map(|id| self.value_for(id, Holder::Local))
            .collect()
    }
}
