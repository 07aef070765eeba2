//! Refs that cross peers (Ray's borrowers): which peers this node lent refs
//! to, which peers it borrowed refs from, and the messages that keep both
//! sides right when links drop or repeat messages.
//!
//! - Every message that carries refs to a peer (a task's arguments, refs
//!   nested in values or results, a named actor's handle) is a *lend*,
//!   numbered per receiving peer. The lender records the borrower for each
//!   ref the receiver does not own, before the message leaves.
//! - The borrower records its lender. Once nothing on it uses the ref any
//!   more (no handle, no task, no value holding it, nothing lent on), it sends
//!   the lender [`PeerMsg::Release`] with the highest lend number it had seen
//!   from it. The lender forgets the borrower only if it lent the ref no later
//!   than that, so a release that crossed a newer lend is ignored.
//! - A borrower that lends a ref on stays a borrower while its own borrowers
//!   hold it (Ray's "borrowers of borrowers", as a chain of lenders).
//! - Lost messages: after a link reset, and every [`ASK_PERIOD`], a lender
//!   asks each borrower which of its refs it still holds
//!   ([`PeerMsg::AskBorrows`]); the answer releases the rest. A lend older
//!   than the last answer (one repeated by a broken stream) is not counted.
//! - A borrower that is gone has dropped everything; a lender that is gone is
//!   replaced by the owner ([`PeerMsg::Borrowing`]).
//!
//! The owner frees an object (`local::objects`) only when no peer borrows it.

use std::time::{Duration, Instant};

use rustc_hash::FxHashMap;

use crate::core::Core;
use crate::ids::{ObjectId, OwnerTag, PeerId};
use crate::wire::local::TaskSpec;
use crate::wire::peer::PeerMsg;

/// How often a lender asks its borrowers what they still hold.
const ASK_PERIOD: Duration = Duration::from_secs(10);
/// Refs named in one ask.
const ASK_MAX: usize = 4096;

/// Refs lent to peers and borrowed from them.
#[derive(Debug, Default)]
pub(crate) struct Borrows {
    /// Per object: the peers it was lent to, each with the number of the
    /// last message that lent it (0: the peer said it borrows it).
    lent: FxHashMap<ObjectId, Vec<(PeerId, u64)>>,
    /// The number of the last lending message sent to each peer.
    last_lend: FxHashMap<PeerId, u64>,
    /// Per borrowed object: the peers that lent it to this node.
    lenders: FxHashMap<ObjectId, Vec<PeerId>>,
    /// The highest lend number received from (or answered to) each lender.
    seen: FxHashMap<PeerId, u64>,
    /// Refs in peer messages held back here (waiting for a function or a
    /// pull): they count as used.
    parked: FxHashMap<ObjectId, u32>,
    /// When the borrowers are asked next (None: nothing lent).
    next_ask: Option<Instant>,
}

impl Borrows {
    /// Whether a peer may hold a ref to `id` lent from here.
    pub(crate) fn is_lent(&self, id: &ObjectId) -> bool {
        self.lent.contains_key(id)
    }

    /// Whether this node borrowed `id` from a peer.
    pub(crate) fn is_borrowed(&self, id: &ObjectId) -> bool {
        self.lenders.contains_key(id)
    }

    /// The objects lent to peers, each with its borrowers.
    pub(crate) fn lent(&self) -> impl Iterator<Item = (&ObjectId, &[(PeerId, u64)])> {
        self.lent.iter().map(|(id, b)| (id, b.as_slice()))
    }

    /// Objects lent to peers (for `peer status` and the simulator).
    pub(crate) fn lent_count(&self) -> usize {
        self.lent.len()
    }

    /// Objects borrowed from peers.
    pub(crate) fn borrowed_count(&self) -> usize {
        self.lenders.len()
    }

    /// Refs held back in parked messages.
    pub(crate) fn is_parked(&self, id: &ObjectId) -> bool {
        self.parked.contains_key(id)
    }
}

/// The refs a peer message lends: its number and the refs.
pub(crate) fn lends_of(msg: &PeerMsg) -> Option<(u64, Vec<ObjectId>)> {
    match msg {
        PeerMsg::Task {
            spec,
            deps_contain,
            lend,
            ..
        } => Some((*lend, task_lends(spec, deps_contain))),
        PeerMsg::Objects { contains, lend, .. } => Some((
            *lend,
            contains.iter().flat_map(|(_, c)| c).copied().collect(),
        )),
        PeerMsg::NameFound { lend, lent, .. } => Some((*lend, lent.clone())),
        _ => None,
    }
}

/// The refs a task message lends: its arguments, the refs nested in them,
/// and the refs nested in the arguments' values.
pub(crate) fn task_lends(spec: &TaskSpec, deps_contain: &[Vec<ObjectId>]) -> Vec<ObjectId> {
    spec.deps
        .iter()
        .chain(&spec.contained)
        .chain(deps_contain.iter().flatten())
        .copied()
        .collect()
}

impl Core {
    /// Refs about to go to `to` in one message: `to` borrows those it does
    /// not own. Returns the message's lend number.
    pub(crate) fn lend(&mut self, to: PeerId, ids: &[ObjectId]) -> u64 {
        let b = &mut self.cluster.borrows;
        let n = b.last_lend.entry(to).or_insert(0);
        *n += 1;
        let n = *n;
        let theirs = OwnerTag::of_peer(&to);
        let mut any = false;
        for id in ids {
            if id.owner() == theirs
                || !(self.objects.contains(id) || self.cluster.borrows.is_borrowed(id))
            {
                continue;
            }
            let borrowers = self.cluster.borrows.lent.entry(*id).or_default();
            match borrowers.iter_mut().find(|(p, _)| *p == to) {
                Some((_, last)) => *last = n,
                None => borrowers.push((to, n)),
            }
            any = true;
        }
        if any {
            self.arm_ask();
        }
        n
    }

    /// A message from `from` lent refs (lend number `n`): note the lender of
    /// each one owned by another node, with an entry to count it. Returns the
    /// refs noted, to settle once the message is taken in. A lend already
    /// answered for (repeated by a broken stream) registers no lender: the
    /// lender forgot this node for it.
    pub(crate) fn take_lends(&mut self, from: PeerId, n: u64, ids: &[ObjectId]) -> Vec<ObjectId> {
        let b = &mut self.cluster.borrows;
        let seen = b.seen.entry(from).or_insert(0);
        let stale = n <= *seen;
        *seen = (*seen).max(n);
        let mut taken = Vec::new();
        for id in ids {
            if !self.is_foreign(id.owner()) || taken.contains(id) {
                continue;
            }
            // The refs get entries either way (whatever the message brings
            // holds them); those it does not are dropped when settled.
            self.note_foreign(*id);
            taken.push(*id);
            if stale {
                continue;
            }
            let lenders = self.cluster.borrows.lenders.entry(*id).or_default();
            if !lenders.contains(&from) {
                lenders.push(from);
            }
        }
        taken
    }

    /// Hold the refs a message parked here lends (they count as used).
    pub(crate) fn park_lends(&mut self, msg: &PeerMsg) {
        let Some((_, ids)) = lends_of(msg) else {
            return;
        };
        for id in ids {
            *self.cluster.borrows.parked.entry(id).or_default() += 1;
        }
    }

    /// A parked message goes on (or is dropped): its refs no longer count as
    /// parked. Returns them, to settle once whatever takes them over has.
    pub(crate) fn unpark_lends(&mut self, msg: &PeerMsg) -> Vec<ObjectId> {
        let Some((_, ids)) = lends_of(msg) else {
            return Vec::new();
        };
        let parked = &mut self.cluster.borrows.parked;
        for id in &ids {
            if let Some(n) = parked.get_mut(id) {
                *n -= 1;
                if *n == 0 {
                    parked.remove(id);
                }
            }
        }
        ids
    }

    /// Whether anything on this node uses borrowed `id` (so it stays borrowed).
    fn uses_borrowed(&self, id: &ObjectId) -> bool {
        self.cluster.borrows.is_lent(id)
            || self.cluster.borrows.is_parked(id)
            || self.objects.get(id).is_some_and(|e| {
                e.refs > 0
                    || e.holds > 0
                    || e.escaped
                    || !e.waiters.is_empty()
                    || !e.dependents.is_empty()
            })
    }

    /// Borrowed refs nothing here uses any more go back to their lenders.
    pub(crate) fn settle_borrows(&mut self, ids: &[ObjectId]) {
        // An entry made for a ref nothing took over goes (and gives it back).
        for id in ids {
            self.maybe_free(id);
        }
        self.release_borrows(ids);
    }

    /// Borrowed refs nothing here uses go back to their lenders (their
    /// entries, if any, stay: a copy kept for the owner, say).
    pub(crate) fn release_borrows(&mut self, ids: &[ObjectId]) {
        let mut back: FxHashMap<PeerId, Vec<ObjectId>> = FxHashMap::default();
        for id in ids {
            if !self.cluster.borrows.is_borrowed(id) || self.uses_borrowed(id) {
                continue;
            }
            for lender in self.cluster.borrows.lenders.remove(id).unwrap_or_default() {
                back.entry(lender).or_default().push(*id);
            }
        }
        for (lender, ids) in back {
            let seen = self.cluster.borrows.seen.get(&lender).copied().unwrap_or(0);
            self.send_peer(lender, PeerMsg::Release { ids, seen });
        }
    }

    /// A borrower dropped refs it had seen lends of up to `seen`.
    pub(super) fn refs_released(&mut self, from: PeerId, ids: &[ObjectId], seen: u64) {
        for id in ids {
            let Some(borrowers) = self.cluster.borrows.lent.get_mut(id) else {
                continue;
            };
            borrowers.retain(|(p, n)| *p != from || *n > seen);
            if borrowers.is_empty() {
                self.cluster.borrows.lent.remove(id);
                self.lent_ended(id);
            }
        }
    }

    /// No peer borrows `id` from here any more: free it, or give it back to
    /// its own lenders, if nothing here uses it.
    fn lent_ended(&mut self, id: &ObjectId) {
        if self.objects.contains(id) {
            self.maybe_free(id);
        } else {
            self.settle_borrows(&[*id]);
        }
    }

    /// A lender asks which of `ids` this node still holds, having lent up to
    /// `upto`: the rest are released (with `upto`, as every older lend has
    /// arrived by now or never will).
    pub(super) fn borrows_asked(&mut self, from: PeerId, ids: &[ObjectId], upto: u64) {
        let seen = self.cluster.borrows.seen.entry(from).or_insert(0);
        *seen = (*seen).max(upto);
        let mut released = Vec::new();
        for id in ids {
            let from_it = self
                .cluster
                .borrows
                .lenders
                .get(id)
                .is_some_and(|l| l.contains(&from));
            if from_it && self.uses_borrowed(id) {
                continue;
            }
            if let Some(l) = self.cluster.borrows.lenders.get_mut(id) {
                l.retain(|p| *p != from);
                if l.is_empty() {
                    self.cluster.borrows.lenders.remove(id);
                }
            }
            released.push(*id);
        }
        if !released.is_empty() {
            self.send_peer(
                from,
                PeerMsg::Release {
                    ids: released,
                    seen: upto,
                },
            );
        }
    }

    /// A peer whose lender is gone says it borrows `ids` from this node, their owner.
    pub(super) fn borrowing(&mut self, from: PeerId, ids: &[ObjectId]) {
        let mine: Vec<ObjectId> = ids
            .iter()
            .filter(|id| !self.is_foreign(id.owner()) && self.objects.contains(id))
            .copied()
            .collect();
        for id in mine {
            let borrowers = self.cluster.borrows.lent.entry(id).or_default();
            if !borrowers.iter().any(|(p, _)| *p == from) {
                borrowers.push((from, 0));
            }
        }
        self.arm_ask();
    }

    /// Ask `peer` which of the refs lent to it it still holds.
    pub(crate) fn ask_borrower(&mut self, peer: PeerId) {
        let ids: Vec<ObjectId> = self
            .cluster
            .borrows
            .lent
            .iter()
            .filter(|(_, b)| b.iter().any(|(p, _)| *p == peer))
            .map(|(id, _)| *id)
            .collect();
        let upto = self
            .cluster
            .borrows
            .last_lend
            .get(&peer)
            .copied()
            .unwrap_or(0);
        for chunk in ids.chunks(ASK_MAX) {
            self.send_peer(
                peer,
                PeerMsg::AskBorrows {
                    ids: chunk.to_vec(),
                    upto,
                },
            );
        }
    }

    pub(crate) fn arm_ask(&mut self) {
        if self.cluster.borrows.next_ask.is_none() {
            let at = self.now + ASK_PERIOD;
            self.cluster.borrows.next_ask = Some(at);
            self.arm_timer(at);
        }
    }

    /// Every [`ASK_PERIOD`]: ask each borrower what it still holds (a release
    /// may have been lost with a link nobody saw break), and tell each owner
    /// which copies this node keeps for it (a free may have been lost).
    pub(super) fn ask_borrowers_due(&mut self, now: Instant) {
        let Some(at) = self.cluster.borrows.next_ask else {
            return;
        };
        if now < at {
            return;
        }
        self.cluster.borrows.next_ask = None;
        let mut peers: Vec<PeerId> = self
            .cluster
            .borrows
            .lent
            .values()
            .flatten()
            .map(|(p, _)| *p)
            .collect();
        peers.sort();
        peers.dedup();
        for peer in &peers {
            self.ask_borrower(*peer);
        }
        let kept = self.objects.copies_kept();
        let mut by_owner: FxHashMap<PeerId, Vec<ObjectId>> = FxHashMap::default();
        for id in kept {
            if let Some(owner) = self.peer_of(id.owner()) {
                by_owner.entry(owner).or_default().push(id);
            }
        }
        let keeping = !by_owner.is_empty();
        for (owner, ids) in by_owner {
            self.send_peer(owner, PeerMsg::CopiesKept { ids });
        }
        if !peers.is_empty() || keeping {
            self.arm_ask();
        }
    }

    /// `peer` is gone: it dropped everything it borrowed from here, and what
    /// this node borrowed through it is borrowed from the owners instead.
    pub(super) fn borrows_peer_gone(&mut self, peer: PeerId) {
        let b = &mut self.cluster.borrows;
        // Lend numbers to it keep counting up (it may be back, the same run,
        // with what it has seen); its own numbering restarts with a new run.
        b.seen.remove(&peer);
        let mut ended = Vec::new();
        b.lent.retain(|id, borrowers| {
            borrowers.retain(|(p, _)| *p != peer);
            if borrowers.is_empty() {
                ended.push(*id);
                false
            } else {
                true
            }
        });
        let mut orphaned = Vec::new();
        b.lenders.retain(|id, lenders| {
            lenders.retain(|p| *p != peer);
            if lenders.is_empty() {
                orphaned.push(*id);
                false
            } else {
                true
            }
        });
        for id in &ended {
            self.lent_ended(id);
        }
        let gone_tag = OwnerTag::of_peer(&peer);
        let mut by_owner: FxHashMap<PeerId, Vec<ObjectId>> = FxHashMap::default();
        for id in orphaned {
            if id.owner() == gone_tag || !self.uses_borrowed(&id) {
                continue;
            }
            if let Some(owner) = self.peer_of(id.owner()) {
                self.cluster.borrows.lenders.insert(id, vec![owner]);
                by_owner.entry(owner).or_default().push(id);
            }
        }
        for (owner, ids) in by_owner {
            self.send_peer(owner, PeerMsg::Borrowing { ids });
        }
    }
}
