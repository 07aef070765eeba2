//! What a peer says about its load: the gossiped [`Load`] and the fresh [`Bid`] it answers a probe with.

use std::cmp::Ordering;

use crate::resources::Resources;

/// A peer's load as it publishes it (over gossip, or inside a bid).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Load {
    /// Tasks accepted but not started yet.
    pub queue_len: u32,
    /// CPUs free right now.
    pub free_cpu: f64,
    /// CPUs in all.
    pub total_cpu: f64,
}

impl Load {
    /// Work per CPU that a new task would wait behind: tasks queued plus CPUs busy, over CPUs.
    /// Lower is better; below 1 means a CPU is free now.
    pub fn backlog(&self) -> f64 {
        let busy = (self.total_cpu - self.free_cpu).max(0.0);
        (f64::from(self.queue_len) + busy) / self.total_cpu.max(f64::MIN_POSITIVE)
    }

    /// The same load after one more task needing `cpu` CPUs was sent to this peer.
    pub fn with_one_more(mut self, cpu: f64) -> Self {
        if self.free_cpu + 1e-9 >= cpu {
            self.free_cpu = (self.free_cpu - cpu).max(0.0);
        } else {
            self.queue_len = self.queue_len.saturating_add(1);
        }
        self
    }

    /// Orders two loads for placement: the smaller backlog first, then more free CPUs.
    pub fn cmp_for_placement(&self, other: &Load) -> Ordering {
        self.backlog()
            .total_cmp(&other.backlog())
            .then(other.free_cpu.total_cmp(&self.free_cpu))
    }
}

/// A probed peer's answer: its load now and whether the task would start at once.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bid<P> {
    pub peer: P,
    pub load: Load,
    /// The task's whole demand (CPUs and custom resources) fits into what is free now.
    pub fits_now: bool,
}

impl<P> Bid<P> {
    /// The bid a peer with `load` and `free` resources makes for a task that needs `demand`.
    pub fn new(peer: P, load: Load, free: &Resources, demand: &Resources) -> Self {
        Self {
            peer,
            load,
            fits_now: free.fits(demand),
        }
    }

    /// Orders two bids: one that fits now wins, then the smaller backlog, then more free CPUs.
    pub fn cmp_for_placement(&self, other: &Bid<P>) -> Ordering {
        other
            .fits_now
            .cmp(&self.fits_now)
            .then(self.load.cmp_for_placement(&other.load))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(queue_len: u32, free_cpu: f64, total_cpu: f64) -> Load {
        Load {
            queue_len,
            free_cpu,
            total_cpu,
        }
    }

    #[test]
    fn backlog_counts_queue_and_busy_cpus_per_cpu() {
        assert_eq!(load(0, 4.0, 4.0).backlog(), 0.0);
        assert_eq!(load(0, 1.0, 4.0).backlog(), 0.75);
        assert_eq!(load(4, 0.0, 4.0).backlog(), 2.0);
        assert!(
            load(3, 0.0, 0.0).backlog().is_finite(),
            "no division by zero"
        );
    }

    #[test]
    fn bigger_peer_with_same_queue_is_preferred() {
        let small = load(2, 0.0, 2.0);
        let big = load(2, 0.0, 8.0);
        assert_eq!(big.cmp_for_placement(&small), Ordering::Less);
    }

    #[test]
    fn one_more_task_uses_a_free_cpu_before_queueing() {
        let l = load(0, 1.0, 2.0).with_one_more(1.0);
        assert_eq!((l.queue_len, l.free_cpu), (0, 0.0));
        let l = l.with_one_more(1.0);
        assert_eq!((l.queue_len, l.free_cpu), (1, 0.0));
    }

    #[test]
    fn a_bid_that_fits_now_beats_a_shorter_queue() {
        let fits = Bid {
            peer: 1,
            load: load(5, 1.0, 8.0),
            fits_now: true,
        };
        let short = Bid {
            peer: 2,
            load: load(0, 0.0, 1.0),
            fits_now: false,
        };
        assert_eq!(fits.cmp_for_placement(&short), Ordering::Less);
    }

    #[test]
    fn bid_fits_now_checks_custom_resources() {
        let free = Resources::cpus(2);
        let gpu_task = Resources::cpus(1).with("GPU", 1.0).unwrap();
        let bid = Bid::new(7, load(0, 2.0, 2.0), &free, &gpu_task);
        assert!(!bid.fits_now);
    }
}
