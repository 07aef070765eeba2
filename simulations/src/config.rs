//! What one simulation run is: cluster, workload, network, gossip and policy settings.

use peer_placement::Strategy;

use crate::dist::Dist;
use crate::error::SimError;

/// The placement policies the simulator compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum Policy {
    /// One random peer per task, no probes.
    Random,
    /// Power of `d` choices on the stale gossip view, no probes.
    P2cView,
    /// Power of `d` choices with fresh bids (probes): the node's default.
    P2cBids,
    /// Batch sampling: `d·m` probes for a job's m tasks.
    Batch,
    /// Late binding: `d·m` reservations; a peer claims a task when a slot frees.
    LateBinding,
    /// A central scheduler that knows every queue and acts with zero delay (the ideal).
    Omniscient,
}

impl Policy {
    /// Every policy, in table order.
    pub const ALL: [Policy; 6] = [
        Policy::Random,
        Policy::P2cView,
        Policy::P2cBids,
        Policy::Batch,
        Policy::LateBinding,
        Policy::Omniscient,
    ];

    /// The name used on the command line and in result files.
    pub fn name(self) -> &'static str {
        match self {
            Policy::Random => "random",
            Policy::P2cView => "p2c-view",
            Policy::P2cBids => "p2c-bids",
            Policy::Batch => "batch",
            Policy::LateBinding => "late-binding",
            Policy::Omniscient => "omniscient",
        }
    }

    /// The node strategy this policy runs, or `None` for the central ideal (not a node policy).
    pub fn strategy(self) -> Option<Strategy> {
        match self {
            Policy::Random => Some(Strategy::Random),
            Policy::P2cView => Some(Strategy::ViewChoices),
            Policy::P2cBids => Some(Strategy::Bids),
            Policy::Batch => Some(Strategy::BatchBids),
            Policy::LateBinding => Some(Strategy::LateBinding),
            Policy::Omniscient => None,
        }
    }
}

/// How load information spreads: every peer publishes its load each `period_ms` over a gossipsub
/// mesh of degree `fanout`; each transmission is lost with probability `loss`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Gossip {
    pub period_ms: f64,
    pub fanout: u32,
    pub loss: f64,
}

impl Default for Gossip {
    fn default() -> Self {
        Self {
            period_ms: 200.0,
            fanout: 6,
            loss: 0.0,
        }
    }
}

/// One simulation run.
#[derive(Debug, Clone)]
pub struct SimConfig {
    pub peers: usize,
    /// Slots per peer, repeated over the peers (`[4]`: all have 4; `[2, 8]`: alternating).
    pub slots: Vec<u32>,
    /// Offered load: task arrival rate times mean duration over all slots.
    pub load: f64,
    /// Tasks in the whole run.
    pub tasks: u64,
    /// Tasks per job (m).
    pub tasks_per_job: u32,
    pub duration: Dist,
    /// Latency of one message (one hop).
    pub latency: Dist,
    pub gossip: Gossip,
    pub policy: Policy,
    /// Candidates per task (d).
    pub choices: usize,
    /// Run a task on its submitting peer when a slot is free there (the node's fast path).
    pub local_first: bool,
    /// Fraction of the jobs, the first to arrive, left out of the statistics (warm-up).
    pub warmup: f64,
    pub seed: u64,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            peers: 10_000,
            slots: vec![4],
            load: 0.9,
            tasks: 1_000_000,
            tasks_per_job: 10,
            duration: Dist::Exp { mean: 100.0 },
            latency: Dist::Const(1.0),
            gossip: Gossip::default(),
            policy: Policy::P2cBids,
            choices: 2,
            local_first: true,
            warmup: 0.1,
            seed: 1,
        }
    }
}

impl SimConfig {
    /// Checks that the run makes sense before it starts.
    pub fn validate(&self) -> Result<(), SimError> {
        let bad = |name, why: &str| {
            Err(SimError::BadSetting {
                name,
                why: why.into(),
            })
        };
        if self.peers == 0 || self.peers > u32::MAX as usize / 2 {
            return bad("peers", "must be between 1 and 2^31");
        }
        if self.slots.is_empty() || self.slots.contains(&0) {
            return bad("slots", "every peer needs at least one slot");
        }
        if !(self.load > 0.0 && self.load <= 2.0) {
            return bad("load", "must be in (0, 2]");
        }
        if self.tasks == 0 || self.tasks_per_job == 0 {
            return bad("tasks", "need at least one task and one task per job");
        }
        if self.tasks.div_ceil(u64::from(self.tasks_per_job)) > u64::from(u32::MAX) {
            return bad("tasks", "at most 2^32 jobs");
        }
        if self.duration.mean() <= 0.0 {
            return bad("duration", "the mean task duration must be positive");
        }
        if !(self.gossip.period_ms > 0.0 && self.gossip.period_ms.is_finite()) {
            return bad("gossip-period", "must be positive");
        }
        if self.gossip.fanout == 0 {
            return bad("gossip-fanout", "must be at least 1");
        }
        if !(0.0..1.0).contains(&self.gossip.loss) {
            return bad("gossip-loss", "must be in [0, 1)");
        }
        if self.choices == 0 {
            return bad("choices", "must be at least 1");
        }
        if !(0.0..1.0).contains(&self.warmup) {
            return bad("warmup", "must be in [0, 1)");
        }
        Ok(())
    }

    /// Slots of peer `i`.
    pub fn slots_of(&self, i: usize) -> u32 {
        self.slots[i % self.slots.len()]
    }

    /// Slots over all peers.
    pub fn total_slots(&self) -> u64 {
        (0..self.peers).map(|i| u64::from(self.slots_of(i))).sum()
    }

    /// Jobs per second that give the configured load.
    pub fn job_rate(&self) -> f64 {
        let task_rate = self.load * self.total_slots() as f64 / (self.duration.mean() / 1e3);
        task_rate / f64::from(self.tasks_per_job)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_the_rate_gives_the_load() {
        let c = SimConfig::default();
        c.validate().unwrap();
        // 40,000 slots busy 90% of the time with 100 ms tasks: 360,000 tasks/s in jobs of 10.
        assert!((c.job_rate() - 36_000.0).abs() < 1e-6);
    }

    #[test]
    fn bad_settings_are_named() {
        let c = SimConfig {
            slots: vec![4, 0],
            ..SimConfig::default()
        };
        assert!(c.validate().unwrap_err().to_string().contains("slots"));
        let c = SimConfig {
            gossip: Gossip {
                loss: 1.0,
                ..Gossip::default()
            },
            ..SimConfig::default()
        };
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("gossip-loss")
        );
    }

    #[test]
    fn heterogeneous_slots_repeat_over_peers() {
        let c = SimConfig {
            peers: 5,
            slots: vec![2, 8],
            ..SimConfig::default()
        };
        assert_eq!(
            (0..5).map(|i| c.slots_of(i)).collect::<Vec<_>>(),
            [2, 8, 2, 8, 2]
        );
        assert_eq!(c.total_slots(), 22);
    }
}
