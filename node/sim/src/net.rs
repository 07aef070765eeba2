//! The simulated network between nodes, modelled on what the node's links
//! really do (`peer_node::cluster::links`):
//!
//! - each node sends to each peer over one stream of its own, so messages
//!   from `a` to `b` arrive in order while that stream lives; different
//!   streams (other pairs, or a new stream after a break) overtake each other;
//! - a cut breaks both streams of a pair: a message in flight is delivered or
//!   lost, and the one being written may be written again on the next stream
//!   (a duplicate); the writer keeps trying to open a new stream, and gives
//!   the peer up as gone after [`OPEN_TIMEOUT`];
//! - every new stream starts with both ends learning the other's
//!   incarnation, and a writer that had a stream before reports a link reset.

use std::time::Duration;

use peer_node_core::wire::peer::PeerMsg;
use rustc_hash::{FxHashMap, FxHashSet};

/// How long a writer tries to open a stream before it gives the peer up.
pub const OPEN_TIMEOUT: Duration = Duration::from_secs(10);

/// One direction of a pair of nodes: the writer's stream from `a` to `b`.
#[derive(Debug, Default)]
pub struct Link {
    /// The stream generation messages travel on (0: never opened).
    pub epoch: u64,
    /// A stream is open now.
    pub open: bool,
    /// Epochs that broke (their messages in flight may be lost).
    pub broken: FxHashSet<u64>,
    /// No message of the open stream arrives before this.
    pub last_at: Duration,
    /// Messages waiting for a stream.
    pub queued: Vec<PeerMsg>,
    /// The writer tries to open a stream since then.
    pub opening_since: Option<Duration>,
    /// The writer's generation (a writer that gave up is replaced by a fresh one).
    pub writer: u64,
    /// The current writer opened a stream before (a new one is a reset).
    pub had_stream: bool,
    /// The last message written on the open stream (what a break may repeat).
    pub last_sent: Option<PeerMsg>,
}

/// Links between every pair of nodes, and the pairs cut now.
#[derive(Debug, Default)]
pub struct Net {
    links: FxHashMap<(usize, usize), Link>,
    cuts: FxHashSet<(usize, usize)>,
}

fn pair(a: usize, b: usize) -> (usize, usize) {
    (a.min(b), a.max(b))
}

impl Net {
    pub fn link(&mut self, from: usize, to: usize) -> &mut Link {
        self.links.entry((from, to)).or_default()
    }

    pub fn is_cut(&self, a: usize, b: usize) -> bool {
        self.cuts.contains(&pair(a, b))
    }

    pub fn cut(&mut self, a: usize, b: usize) {
        self.cuts.insert(pair(a, b));
    }

    pub fn heal(&mut self, a: usize, b: usize) {
        self.cuts.remove(&pair(a, b));
    }

    pub fn heal_all(&mut self) {
        self.cuts.clear();
    }

    pub fn cut_pairs(&self) -> Vec<(usize, usize)> {
        let mut v: Vec<_> = self.cuts.iter().copied().collect();
        v.sort();
        v
    }

    /// Every link from or to `node`.
    pub fn links_of(&self, node: usize) -> Vec<(usize, usize)> {
        let mut v: Vec<_> = self
            .links
            .keys()
            .filter(|(a, b)| *a == node || *b == node)
            .copied()
            .collect();
        v.sort();
        v
    }

    /// A node restarted: its own writers start afresh.
    pub fn reset_writers_of(&mut self, node: usize) {
        for ((a, _), l) in self.links.iter_mut() {
            if *a == node {
                let epoch = l.epoch;
                *l = Link {
                    epoch,
                    writer: l.writer + 1,
                    ..Link::default()
                };
            }
        }
    }
}
