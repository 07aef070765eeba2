//! The ideal central scheduler's index: which peer has the least work per slot, in O(log n)
//! per change (a segment tree of argmins).

/// Keeps every peer's key (work per slot) and finds the smallest at once; ties go to the lowest
/// peer index.
#[derive(Debug)]
pub struct ShortestQueue {
    leaves: usize,
    keys: Vec<f64>,
    /// `tree[i]`: index of the peer with the smallest key below node `i` (root at 1).
    tree: Vec<u32>,
}

impl ShortestQueue {
    /// `peers` peers, all with key 0.
    pub fn new(peers: usize) -> Self {
        let leaves = peers.next_power_of_two();
        let mut keys = vec![f64::INFINITY; leaves];
        keys[..peers].fill(0.0);
        let mut tree = vec![0u32; 2 * leaves];
        for i in 0..leaves {
            tree[leaves + i] = i as u32;
        }
        let mut s = Self { leaves, keys, tree };
        for node in (1..leaves).rev() {
            s.tree[node] = s.better(s.tree[2 * node], s.tree[2 * node + 1]);
        }
        s
    }

    fn better(&self, a: u32, b: u32) -> u32 {
        if self.keys[b as usize] < self.keys[a as usize] {
            b
        } else {
            a
        }
    }

    /// Sets `peer`'s key.
    pub fn set(&mut self, peer: u32, key: f64) {
        self.keys[peer as usize] = key;
        let mut node = (self.leaves + peer as usize) / 2;
        while node >= 1 {
            self.tree[node] = self.better(self.tree[2 * node], self.tree[2 * node + 1]);
            node /= 2;
        }
    }

    /// The peer with the smallest key.
    pub fn best(&self) -> u32 {
        self.tree[1]
    }
}

/// The key of a peer with `queued` waiting and `running` running tasks on `slots` slots: where a
/// new task would stand, per slot. Below or at 1 exactly when a slot is free.
pub fn key(queued: usize, running: u32, slots: u32) -> f64 {
    (queued as f64 + f64::from(running) + 1.0) / f64::from(slots)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_least_loaded_peer_after_changes() {
        let mut q = ShortestQueue::new(5);
        assert_eq!(q.best(), 0);
        for p in 0..5 {
            q.set(p, key(3, 4, 4));
        }
        q.set(3, key(0, 2, 4));
        assert_eq!(q.best(), 3);
        q.set(3, key(9, 4, 4));
        q.set(1, key(1, 4, 4));
        assert_eq!(q.best(), 1);
    }

    #[test]
    fn a_free_slot_beats_any_queue() {
        assert!(key(0, 3, 4) <= 1.0);
        assert!(key(0, 1, 1) > 1.0);
        assert!(
            key(0, 4, 8) < key(0, 1, 2),
            "the emptier peer (per slot) first"
        );
    }
}
