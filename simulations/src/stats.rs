//! What a run measured: response and wait times, messages, utilisation; percentiles and the
//! CSV form of a [`Report`].

use crate::dist::{MS, Nanos};

/// Messages sent while placing work (gossip is counted apart, see [`Report`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Messages {
    pub probes: u64,
    pub bids: u64,
    pub tasks: u64,
    pub reservations: u64,
    pub claims: u64,
    pub claim_replies: u64,
}

impl Messages {
    /// All placement messages.
    pub fn total(&self) -> u64 {
        self.probes + self.bids + self.tasks + self.reservations + self.claims + self.claim_replies
    }
}

/// Raw measurements gathered while a run goes.
#[derive(Debug, Default)]
pub struct Collector {
    pub job_response_ms: Vec<f32>,
    pub task_wait_ms: Vec<f32>,
    pub messages: Messages,
    /// Longest queue (waiting plus running) any peer had when a measured task joined it.
    pub max_queue: u32,
}

impl Collector {
    /// A collector with room for `jobs` jobs and `tasks` tasks.
    pub fn with_capacity(jobs: usize, tasks: usize) -> Self {
        Self {
            job_response_ms: Vec::with_capacity(jobs),
            task_wait_ms: Vec::with_capacity(tasks),
            ..Self::default()
        }
    }

    pub fn job_done(&mut self, response: Nanos) {
        self.job_response_ms.push((response as f64 / MS) as f32);
    }

    pub fn task_started(&mut self, wait: Nanos) {
        self.task_wait_ms.push((wait as f64 / MS) as f32);
    }
}

/// Median, tail percentiles and mean of a sample.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Summary {
    pub mean: f64,
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
    pub max: f64,
}

impl Summary {
    /// Summarises `values` (reordering them); all zero when empty.
    pub fn of(values: &mut [f32]) -> Self {
        if values.is_empty() {
            return Self::default();
        }
        let mean = values.iter().map(|&v| f64::from(v)).sum::<f64>() / values.len() as f64;
        let mut at = |q: f64| {
            // Nearest rank: the smallest value with at least q of the sample at or below it.
            let rank = ((q * values.len() as f64).ceil() as usize).clamp(1, values.len()) - 1;
            let (_, v, _) = values.select_nth_unstable_by(rank, f32::total_cmp);
            f64::from(*v)
        };
        let (p50, p95, p99, max) = (at(0.5), at(0.95), at(0.99), at(1.0));
        Self {
            mean,
            p50,
            p95,
            p99,
            max,
        }
    }
}

/// Everything one run reports.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    pub policy: &'static str,
    pub duration: String,
    pub load: f64,
    pub peers: usize,
    pub tasks: u64,
    /// Jobs in the statistics (all but the warm-up).
    pub measured_jobs: u64,
    pub gossip_period_ms: f64,
    /// Job response time (arrival to last task done), milliseconds.
    pub job: Summary,
    /// Task wait (job arrival to task start), milliseconds.
    pub wait: Summary,
    /// Placement messages per task (probes, bids, task transfers, reservations, claims).
    pub messages_per_task: f64,
    /// Gossip messages per task (every load publication flooded over the mesh), over the time
    /// tasks arrive.
    pub gossip_per_task: f64,
    /// Per-peer utilisation: busy slot time over slot time, from the end of the warm-up to the
    /// last arrival.
    pub utilisation: Summary,
    pub max_queue: u32,
    pub simulated_s: f64,
    pub events: u64,
    pub wall_s: f64,
}

impl Report {
    /// Column names of [`Report::csv_row`].
    pub const CSV_HEADER: &'static str = "policy,duration,load,peers,tasks,measured_jobs,gossip_period_ms,\
        job_mean_ms,job_p50_ms,job_p95_ms,job_p99_ms,wait_mean_ms,wait_p50_ms,wait_p95_ms,\
        wait_p99_ms,messages_per_task,gossip_messages_per_task,util_mean,util_p50,util_p99,\
        util_max,max_queue,simulated_s,events,wall_s";

    /// One CSV line (no newline).
    pub fn csv_row(&self) -> String {
        let (j, w, u) = (&self.job, &self.wait, &self.utilisation);
        format!(
            "{},{},{},{},{},{},{},{:.3},{:.3},{:.3},{:.3},{:.3},{:.3},{:.3},{:.3},{:.3},{:.1},\
             {:.4},{:.4},{:.4},{:.4},{},{:.3},{},{:.3}",
            self.policy,
            self.duration,
            self.load,
            self.peers,
            self.tasks,
            self.measured_jobs,
            self.gossip_period_ms,
            j.mean,
            j.p50,
            j.p95,
            j.p99,
            w.mean,
            w.p50,
            w.p95,
            w.p99,
            self.messages_per_task,
            self.gossip_per_task,
            u.mean,
            u.p50,
            u.p99,
            u.max,
            self.max_queue,
            self.simulated_s,
            self.events,
            self.wall_s,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_nearest_rank() {
        let mut v: Vec<f32> = (1..=100).map(|i| i as f32).collect();
        let s = Summary::of(&mut v);
        assert_eq!((s.p50, s.p95, s.p99, s.max), (50.0, 95.0, 99.0, 100.0));
        assert_eq!(s.mean, 50.5);
        assert_eq!(Summary::of(&mut []), Summary::default());
    }

    #[test]
    fn csv_row_matches_header() {
        let r = Report {
            policy: "p2c-bids",
            duration: "exp".into(),
            load: 0.9,
            peers: 10,
            tasks: 100,
            measured_jobs: 9,
            gossip_period_ms: 200.0,
            job: Summary::default(),
            wait: Summary::default(),
            messages_per_task: 5.0,
            gossip_per_task: 1.0,
            utilisation: Summary::default(),
            max_queue: 3,
            simulated_s: 1.0,
            events: 10,
            wall_s: 0.1,
        };
        let header = Report::CSV_HEADER.split(',').count();
        assert_eq!(r.csv_row().split(',').count(), header);
    }
}
