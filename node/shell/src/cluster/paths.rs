//! Which peers this node reaches only through a relay, and the bandwidth cap on pulls that have
//! to go that way.
//!
//! - The tick (`cluster::tick`) refreshes the set of relayed peers from the gossip view a few
//!   times a second.
//! - A pull ([`pull`](super::pull)) asks [`Paths::prefer_direct`] to drop its relayed holders
//!   when a holder with a direct path exists; when only relayed holders remain, it asks
//!   [`Paths::throttle`] before each chunk, which spaces the chunks of all such pulls so they
//!   stay under [`NetworkConfig::relay_pull_rate`](super::NetworkConfig) together: a relay is a
//!   member doing the others a favour, and control messages share its link.
//! - The counters show in `peer status` (`network.relayed_pulls`, `relayed_pull_bytes`), with
//!   the bytes pulled and served over direct connections (`direct_pull_bytes`,
//!   `direct_served_bytes`; see [`direct`](super::direct)).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use peer_gossip::PeerId;
use rustc_hash::FxHashSet;
use tokio::time::Instant;

/// What the pulls of this node know about the paths to their sources.
#[derive(Debug)]
pub struct Paths {
    relayed: Mutex<FxHashSet<PeerId>>,
    /// Bytes per second for all pulls over relays together.
    rate: u64,
    /// When the relayed byte budget is next free.
    next_free: Mutex<Option<Instant>>,
    pulls_now: AtomicU64,
    pulled_bytes: AtomicU64,
    direct_pulled: AtomicU64,
    direct_served: AtomicU64,
}

/// Marks a pull as going over a relay while it lives.
pub struct RelayedPull<'a>(&'a Paths);

impl Drop for RelayedPull<'_> {
    fn drop(&mut self) {
        self.0.pulls_now.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Paths {
    /// `rate`: bytes per second for pulls over relays (at least 1).
    pub fn new(rate: u64) -> Self {
        Self {
            relayed: Mutex::new(FxHashSet::default()),
            rate: rate.max(1),
            next_free: Mutex::new(None),
            pulls_now: AtomicU64::new(0),
            pulled_bytes: AtomicU64::new(0),
            direct_pulled: AtomicU64::new(0),
            direct_served: AtomicU64::new(0),
        }
    }

    /// The peers whose best connection is relayed, as of the latest view.
    pub fn set_relayed(&self, peers: impl IntoIterator<Item = PeerId>) {
        *self.relayed.lock() = peers.into_iter().collect();
    }

    pub fn is_relayed(&self, peer: &PeerId) -> bool {
        self.relayed.lock().contains(peer)
    }

    /// Drops the relayed holders from `sources` when some holder has a direct path (or none is
    /// connected yet); returns whether what is left goes over relays only.
    pub fn prefer_direct(&self, sources: &mut Vec<PeerId>) -> bool {
        let relayed = self.relayed.lock();
        if sources.iter().all(|p| relayed.contains(p)) {
            return !sources.is_empty();
        }
        sources.retain(|p| !relayed.contains(p));
        false
    }

    /// Counts a pull that goes over relays until the guard is dropped.
    pub fn relayed_pull(&self) -> RelayedPull<'_> {
        self.pulls_now.fetch_add(1, Ordering::Relaxed);
        RelayedPull(self)
    }

    /// Waits until `bytes` more fit under the cap for relayed pulls.
    pub async fn throttle(&self, bytes: u64) {
        let cost = Duration::from_secs_f64(bytes as f64 / self.rate as f64);
        let start = {
            let mut next = self.next_free.lock();
            let now = Instant::now();
            let start = next.map_or(now, |n| n.max(now));
            *next = Some(start + cost);
            start
        };
        self.pulled_bytes.fetch_add(bytes, Ordering::Relaxed);
        tokio::time::sleep_until(start).await;
    }

    /// Counts bytes pulled over a direct connection.
    pub fn count_direct_pulled(&self, bytes: u64) {
        self.direct_pulled.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Counts bytes served over a direct connection.
    pub fn count_direct_served(&self, bytes: u64) {
        self.direct_served.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Bytes pulled, and served, over direct connections since start.
    pub fn direct_counters(&self) -> (u64, u64) {
        (
            self.direct_pulled.load(Ordering::Relaxed),
            self.direct_served.load(Ordering::Relaxed),
        )
    }

    /// Pulls over relays now, and bytes pulled over relays since start.
    pub fn counters(&self) -> (u64, u64) {
        (
            self.pulls_now.load(Ordering::Relaxed),
            self.pulled_bytes.load(Ordering::Relaxed),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn direct_holders_win_and_relayed_ones_are_the_last_resort() {
        let paths = Paths::new(1 << 20);
        let (a, b) = (PeerId::random(), PeerId::random());
        paths.set_relayed([b]);
        let mut both = vec![a, b];
        assert!(!paths.prefer_direct(&mut both));
        assert_eq!(both, vec![a]);
        let mut only_relayed = vec![b];
        assert!(paths.prefer_direct(&mut only_relayed));
        assert_eq!(only_relayed, vec![b]);
    }

    #[tokio::test]
    async fn relayed_pulls_share_one_rate() {
        let paths = Paths::new(10_000_000);
        let start = Instant::now();
        for _ in 0..3 {
            paths.throttle(500_000).await;
        }
        // The third half-megabyte may start once 100 ms of budget were spent.
        let took = start.elapsed();
        assert!(took >= Duration::from_millis(99), "{took:?}");
        assert!(took < Duration::from_secs(2), "{took:?}");
        assert_eq!(paths.counters(), (0, 1_500_000));
        let guard = paths.relayed_pull();
        assert_eq!(paths.counters().0, 1);
        drop(guard);
        assert_eq!(paths.counters().0, 0);
    }
}
