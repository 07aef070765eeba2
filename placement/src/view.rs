//! A peer's local picture of the others: the [`View`] trait the policy reads, and [`PeerTable`],
//! a plain in-memory view the node can keep up to date from gossip.

use std::collections::HashMap;
use std::hash::Hash;

use crate::load::Load;
use crate::resources::Resources;

/// The local, possibly stale, view of other peers, indexed by position `0..len()`.
///
/// Positions make uniform sampling O(1); they are only meaningful within one decision (a view may
/// reorder itself between decisions).
pub trait View {
    /// How a peer is named (a libp2p `PeerId` in the node, an index in the simulator).
    type Peer: Copy + Eq;

    /// Number of peers in the view.
    fn len(&self) -> usize;

    /// Whether the view holds no peers.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The peer at `position` (`position < len()`).
    fn peer(&self, position: usize) -> Self::Peer;

    /// Where `peer` is in the view, if it is there.
    fn position(&self, peer: Self::Peer) -> Option<usize>;

    /// Whether `demand` fits into the peer's total capacity (so it could ever run the task).
    fn can_ever_fit(&self, position: usize, demand: &Resources) -> bool;

    /// The peer's load as this view last heard it.
    fn load(&self, position: usize) -> Load;
}

/// One peer as a [`PeerTable`] knows it.
#[derive(Debug, Clone, PartialEq)]
pub struct PeerEntry<P> {
    pub peer: P,
    /// Everything the peer has (CPUs and custom resources), busy or not.
    pub capacity: Resources,
    pub load: Load,
}

/// A view kept in memory: a vector for sampling plus a map from peer to position.
#[derive(Debug, Clone, Default)]
pub struct PeerTable<P> {
    entries: Vec<PeerEntry<P>>,
    positions: HashMap<P, usize>,
}

impl<P: Copy + Eq + Hash> PeerTable<P> {
    /// An empty view.
    pub fn new() -> Self {
        Self {
            entries: Vec::new(),
            positions: HashMap::new(),
        }
    }

    /// Records what `peer` last said about itself (adds it if new).
    pub fn upsert(&mut self, peer: P, capacity: Resources, load: Load) {
        let entry = PeerEntry {
            peer,
            capacity,
            load,
        };
        match self.positions.get(&peer) {
            Some(&i) => self.entries[i] = entry,
            None => {
                self.positions.insert(peer, self.entries.len());
                self.entries.push(entry);
            }
        }
    }

    /// Forgets `peer` (it left, or stopped being heard from); returns what was known of it.
    pub fn remove(&mut self, peer: P) -> Option<PeerEntry<P>> {
        let i = self.positions.remove(&peer)?;
        let gone = self.entries.swap_remove(i);
        if let Some(moved) = self.entries.get(i) {
            self.positions.insert(moved.peer, i);
        }
        Some(gone)
    }

    /// What the view holds for `peer`.
    pub fn get(&self, peer: P) -> Option<&PeerEntry<P>> {
        self.positions.get(&peer).map(|&i| &self.entries[i])
    }

    /// Every known peer, in position order.
    pub fn entries(&self) -> &[PeerEntry<P>] {
        &self.entries
    }
}

impl<P: Copy + Eq + Hash> View for PeerTable<P> {
    type Peer = P;

    fn len(&self) -> usize {
        self.entries.len()
    }

    fn peer(&self, position: usize) -> P {
        self.entries[position].peer
    }

    fn position(&self, peer: P) -> Option<usize> {
        self.positions.get(&peer).copied()
    }

    fn can_ever_fit(&self, position: usize, demand: &Resources) -> bool {
        self.entries[position].capacity.fits(demand)
    }

    fn load(&self, position: usize) -> Load {
        self.entries[position].load
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn idle(cpus: u32) -> Load {
        Load {
            queue_len: 0,
            free_cpu: f64::from(cpus),
            total_cpu: f64::from(cpus),
        }
    }

    #[test]
    fn upsert_replaces_and_remove_keeps_positions_consistent() {
        let mut t = PeerTable::new();
        for p in 0..4u32 {
            t.upsert(p, Resources::cpus(2), idle(2));
        }
        t.upsert(1, Resources::cpus(8), idle(8));
        assert_eq!(t.len(), 4);
        assert_eq!(t.get(1).unwrap().capacity, Resources::cpus(8));
        assert_eq!(t.remove(0).unwrap().peer, 0);
        assert!(t.remove(0).is_none());
        for p in 1..4u32 {
            let i = t.position(p).unwrap();
            assert_eq!(t.peer(i), p);
        }
    }

    #[test]
    fn can_ever_fit_reads_capacity_not_free_cpus() {
        let mut t = PeerTable::new();
        t.upsert(
            "a",
            Resources::cpus(4),
            Load {
                queue_len: 9,
                free_cpu: 0.0,
                total_cpu: 4.0,
            },
        );
        assert!(t.can_ever_fit(0, &Resources::cpus(4)));
        assert!(!t.can_ever_fit(0, &Resources::cpus(5)));
    }
}
