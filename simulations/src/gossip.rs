//! How stale each peer's view is: peers publish their load every gossip period over a
//! gossipsub-like mesh, and a peer sees another's latest publication that has reached it.
//!
//! - each peer keeps its last [`RING`] publications (time, queue, busy slots), nothing per pair;
//! - whether and when publication `s` of peer `p` reached observer `o` is a pure function of
//!   `(seed, o, p, s)`: hop count from the mesh's distance distribution, one latency draw per
//!   hop, lost when all `fanout` copies that reach `o` are lost (probability `loss^fanout`);
//! - so a view costs O(peers · RING) memory, not O(peers²), and is still deterministic.

use peer_placement::{Load, Resources, View};
use rand::{RngCore, SeedableRng};

use crate::config::Gossip;
use crate::dist::{Dist, MS, Nanos};

/// Publications remembered per peer; older ones count as never received.
pub const RING: usize = 8;

#[derive(Debug, Clone, Copy, Default)]
struct Publication {
    time: Nanos,
    queue: u32,
    busy: u32,
}

/// Every peer's recent publications and the rules that say who has received which.
#[derive(Debug)]
pub struct GossipModel {
    period: Nanos,
    miss: f64,
    latency: Dist,
    /// `hop_cdf[h]`: probability that two distinct peers are at most `h + 1` hops apart.
    hop_cdf: Vec<f64>,
    seed: u64,
    ring: Vec<[Publication; RING]>,
    published: Vec<u32>,
    transmissions_per_publish: u64,
}

impl GossipModel {
    /// The gossip of `peers` peers with settings `gossip`, hops taking `latency` each.
    pub fn new(gossip: &Gossip, latency: Dist, peers: usize, seed: u64) -> Self {
        let d = u64::from(gossip.fanout);
        let others = peers.saturating_sub(1) as u64;
        Self {
            period: (gossip.period_ms * MS).round().max(1.0) as Nanos,
            miss: gossip.loss.powi(gossip.fanout.min(i32::MAX as u32) as i32),
            latency,
            hop_cdf: hop_cdf(gossip.fanout, others),
            seed,
            ring: vec![[Publication::default(); RING]; peers],
            published: vec![0; peers],
            // The publisher sends to its mesh peers; every other peer forwards its first copy to
            // its mesh peers but the sender.
            transmissions_per_publish: d + others * d.saturating_sub(1).max(1),
        }
    }

    /// Time between two publications of a peer.
    pub fn period(&self) -> Nanos {
        self.period
    }

    /// Records that `peer` published `queue` waiting tasks and `busy` busy slots at `now`.
    pub fn publish(&mut self, peer: u32, now: Nanos, queue: u32, busy: u32) {
        let p = peer as usize;
        let n = self.published[p];
        self.ring[p][n as usize % RING] = Publication {
            time: now,
            queue,
            busy,
        };
        self.published[p] = n + 1;
    }

    /// Messages one publication costs (flooded over the mesh).
    pub fn transmissions_per_publish(&self) -> u64 {
        self.transmissions_per_publish
    }

    /// What `observer` last heard from `peer` by `now`: (queue, busy slots), or `None` when no
    /// publication of it has arrived yet (or all remembered ones were lost).
    pub fn seen(&self, observer: u32, peer: u32, now: Nanos) -> Option<(u32, u32)> {
        let p = peer as usize;
        let n = self.published[p];
        let hops = self.hops(observer, peer);
        for s in (n.saturating_sub(RING as u32)..n).rev() {
            let publication = self.ring[p][s as usize % RING];
            if publication.time > now {
                continue;
            }
            let mut rng = SplitMix::seed_from_u64(mix(self.seed, observer, peer, s));
            if self.miss > 0.0 && unit(rng.next_u64()) < self.miss {
                continue;
            }
            let mut cursor = 0;
            let delay: Nanos = (0..hops)
                .map(|_| self.latency.sample(&mut rng, &mut cursor))
                .sum();
            if publication.time.saturating_add(delay) <= now {
                return Some((publication.queue, publication.busy));
            }
        }
        None
    }

    /// Mesh distance between two distinct peers (symmetric, fixed for the run).
    fn hops(&self, a: u32, b: u32) -> u32 {
        let (lo, hi) = if a < b { (a, b) } else { (b, a) };
        let u = unit(mix(self.seed ^ 0x9e37_79b9, lo, hi, 0));
        self.hop_cdf
            .iter()
            .position(|&c| u < c)
            .unwrap_or(self.hop_cdf.len()) as u32
            + 1
    }
}

/// Distance distribution in a random mesh of degree `d` seen from one peer: `d(d-1)^(h-1)`
/// peers at `h` hops, until all `others` are reached.
fn hop_cdf(d: u32, others: u64) -> Vec<f64> {
    let mut cdf = Vec::new();
    if others == 0 {
        return cdf;
    }
    let (mut reached, mut layer) = (0u64, u64::from(d));
    while reached < others {
        reached = reached.saturating_add(layer.max(1)).min(others);
        cdf.push(reached as f64 / others as f64);
        layer = layer.saturating_mul(u64::from(d.saturating_sub(1)).max(1));
    }
    cdf
}

/// The view a peer reads when it places work: its own load exactly, the others' as gossip last
/// told it.
#[derive(Debug)]
pub struct StaleView<'a> {
    pub gossip: &'a GossipModel,
    pub slots: &'a [u32],
    pub observer: u32,
    pub own: Load,
    pub now: Nanos,
}

impl View for StaleView<'_> {
    type Peer = u32;

    fn len(&self) -> usize {
        self.slots.len()
    }

    fn peer(&self, position: usize) -> u32 {
        position as u32
    }

    fn position(&self, peer: u32) -> Option<usize> {
        ((peer as usize) < self.slots.len()).then_some(peer as usize)
    }

    fn can_ever_fit(&self, position: usize, demand: &Resources) -> bool {
        Resources::cpus(self.slots[position]).fits(demand)
    }

    fn load(&self, position: usize) -> Load {
        if position as u32 == self.observer {
            return self.own;
        }
        let total = self.slots[position];
        let (queue, busy) = self
            .gossip
            .seen(self.observer, position as u32, self.now)
            .unwrap_or((0, 0));
        Load {
            queue_len: queue,
            free_cpu: f64::from(total.saturating_sub(busy)),
            total_cpu: f64::from(total),
        }
    }
}

/// Mixes a seed and three numbers into 64 well-spread bits (SplitMix64 finaliser).
pub fn mix(seed: u64, a: u32, b: u32, c: u32) -> u64 {
    let mut z = seed ^ (u64::from(a) << 32 | u64::from(b)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z ^= u64::from(c).wrapping_mul(0xc2b2_ae3d_27d4_eb4f);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A uniform float in [0, 1) from 64 random bits.
fn unit(bits: u64) -> f64 {
    (bits >> 11) as f64 / (1u64 << 53) as f64
}

/// SplitMix64: a tiny generator for the per-message draws derived from [`mix`].
#[derive(Debug, Clone)]
pub struct SplitMix(u64);

impl RngCore for SplitMix {
    fn next_u32(&mut self) -> u32 {
        (self.next_u64() >> 32) as u32
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn fill_bytes(&mut self, dst: &mut [u8]) {
        for chunk in dst.chunks_mut(8) {
            let bytes = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&bytes[..chunk.len()]);
        }
    }
}

impl SeedableRng for SplitMix {
    type Seed = [u8; 8];

    fn from_seed(seed: [u8; 8]) -> Self {
        Self(u64::from_le_bytes(seed))
    }

    fn seed_from_u64(state: u64) -> Self {
        Self(state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model(period_ms: f64, fanout: u32, loss: f64, peers: usize) -> GossipModel {
        let g = Gossip {
            period_ms,
            fanout,
            loss,
        };
        GossipModel::new(&g, Dist::Const(1.0), peers, 7)
    }

    #[test]
    fn distances_grow_like_log_of_peers() {
        let cdf = hop_cdf(6, 9_999);
        // 6, 36, 186, 936, 4,686, then everyone: six hops at most.
        assert_eq!(cdf.len(), 6);
        assert_eq!(*cdf.last().unwrap(), 1.0);
        assert!(cdf.windows(2).all(|w| w[0] <= w[1]));
        assert_eq!(
            hop_cdf(2, 10).len(),
            5,
            "a ring-like mesh reaches 2 more peers per hop"
        );
        assert!(hop_cdf(6, 0).is_empty());
    }

    #[test]
    fn a_publication_arrives_after_its_hops() {
        let mut g = model(200.0, 6, 0.0, 1000);
        let hops = g.hops(3, 4);
        assert_eq!(hops, g.hops(4, 3));
        g.publish(4, 0, 5, 2);
        let arrival = u64::from(hops) * 1_000_000;
        assert_eq!(g.seen(3, 4, arrival - 1), None);
        assert_eq!(g.seen(3, 4, arrival), Some((5, 2)));
        g.publish(4, 200_000_000, 0, 0);
        assert_eq!(
            g.seen(3, 4, 200_000_000),
            Some((5, 2)),
            "the newer one is still on its way"
        );
        assert_eq!(g.seen(3, 4, 200_000_000 + arrival), Some((0, 0)));
    }

    #[test]
    fn lost_publications_make_the_view_staler() {
        let mut g = model(200.0, 1, 0.5, 100);
        for s in 0..RING as u64 {
            g.publish(1, s * 1_000_000_000, s as u32, 0);
        }
        let now = 100_000_000_000;
        let seen: Vec<_> = (2..100)
            .filter_map(|o| g.seen(o, 1, now).map(|(q, _)| q))
            .collect();
        let newest = seen.iter().filter(|&&q| q == RING as u32 - 1).count();
        assert!(
            (30..70).contains(&newest),
            "about half get the newest: {newest} of {}",
            seen.len()
        );
    }

    #[test]
    fn gossip_cost_is_a_flood_over_the_mesh() {
        assert_eq!(
            model(200.0, 6, 0.0, 10_000).transmissions_per_publish(),
            6 + 9_999 * 5
        );
        assert_eq!(
            model(200.0, 1, 0.0, 10).transmissions_per_publish(),
            10,
            "a chain"
        );
    }
}
