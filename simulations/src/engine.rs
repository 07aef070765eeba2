//! The simulation loop and the state of the cluster: peers with slots and queues, jobs in flight,
//! probe rounds, and what is measured.
//!
//! - `JobArrival` draws a job (origin peer, m durations) and hands it to placement (`place.rs`);
//! - placement sends tasks, probes or reservations as events that arrive after network latency;
//! - a peer runs queued tasks as slots free; with late binding it claims tasks from reservations;
//! - each finished job records its response time; the run ends when no event is left.

use std::collections::VecDeque;
use std::time::Instant;

use peer_placement::{Bid, Config as PlacerConfig, Load, Placer, Reservations, Resources};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::config::{Policy, SimConfig};
use crate::dist::{MS, Nanos};
use crate::error::SimError;
use crate::events::{Event, EventQueue, NO_TASK};
use crate::gossip::GossipModel;
use crate::omniscient::{ShortestQueue, key};
use crate::stats::{Collector, Report, Summary};

/// One peer: slots, the tasks waiting for them, and (late binding) the reservations waiting.
#[derive(Debug, Default)]
pub(crate) struct PeerState {
    pub(crate) running: u32,
    /// Slots held free while a late-binding claim is in flight.
    pub(crate) held: u32,
    pub(crate) queue: VecDeque<(u32, u32)>,
    pub(crate) reservations: VecDeque<u32>,
    /// Busy slot-nanoseconds inside the measured window, up to `since`.
    pub(crate) busy: u128,
    pub(crate) since: Nanos,
}

/// A job in flight.
#[derive(Debug, Default)]
pub(crate) struct Job {
    pub(crate) arrival: Nanos,
    pub(crate) origin: u32,
    pub(crate) unfinished: u32,
    pub(crate) measured: bool,
    pub(crate) durations: Vec<Nanos>,
    /// Late binding: tasks from `first_remote` on are handed out by claims.
    pub(crate) first_remote: u32,
    pub(crate) claims: Option<Reservations>,
    /// Late binding: reservations not yet answered (the job's slot is kept until they are).
    pub(crate) reservations_out: u32,
}

/// One probe round: bids for tasks `first..first + tasks` of `job`.
#[derive(Debug, Default)]
pub(crate) struct Round {
    pub(crate) job: u32,
    pub(crate) first: u32,
    pub(crate) tasks: u32,
    pub(crate) bids: Vec<Bid<u32>>,
}

/// Reusable storage: freed entries keep their allocations for the next use.
#[derive(Debug, Default)]
pub(crate) struct Slab<T> {
    items: Vec<T>,
    free: Vec<u32>,
}

impl<T: Default> Slab<T> {
    pub(crate) fn alloc(&mut self) -> u32 {
        self.free.pop().unwrap_or_else(|| {
            self.items.push(T::default());
            (self.items.len() - 1) as u32
        })
    }

    pub(crate) fn release(&mut self, id: u32) {
        self.free.push(id);
    }

    pub(crate) fn get(&mut self, id: u32) -> &mut T {
        &mut self.items[id as usize]
    }
}

/// A simulation in progress.
#[derive(Debug)]
pub struct Sim<'c> {
    pub(crate) cfg: &'c SimConfig,
    pub(crate) placer: Placer,
    pub(crate) now: Nanos,
    pub(crate) events: EventQueue,
    pub(crate) peers: Vec<PeerState>,
    pub(crate) slots: Vec<u32>,
    pub(crate) jobs: Slab<Job>,
    pub(crate) rounds: Slab<Round>,
    pub(crate) gossip: GossipModel,
    pub(crate) shortest: Option<ShortestQueue>,
    pub(crate) work_rng: SmallRng,
    pub(crate) net_rng: SmallRng,
    pub(crate) policy_rng: SmallRng,
    pub(crate) duration_cursor: usize,
    pub(crate) latency_cursor: usize,
    pub(crate) jobs_arrived: u32,
    pub(crate) jobs_total: u32,
    pub(crate) warmup_jobs: u32,
    pub(crate) candidates: Vec<usize>,
    pub(crate) assignment: Vec<usize>,
    pub(crate) demand: Resources,
    pub(crate) stats: Collector,
    /// Utilisation is measured from the first measured arrival to the last arrival.
    window: (Nanos, Nanos),
    measuring: bool,
    last_arrival: Nanos,
    processed: u64,
}

impl<'c> Sim<'c> {
    /// A cluster of idle peers ready to run `cfg`.
    pub fn new(cfg: &'c SimConfig) -> Result<Self, SimError> {
        cfg.validate()?;
        let strategy = cfg
            .policy
            .strategy()
            .unwrap_or(peer_placement::Strategy::Bids);
        let placer = Placer::new(PlacerConfig {
            strategy,
            choices: cfg.choices,
            local_first: cfg.local_first && !matches!(cfg.policy, Policy::Random),
        })
        .map_err(|e| SimError::BadSetting {
            name: "choices",
            why: e.to_string(),
        })?;
        let jobs_total = cfg.tasks.div_ceil(u64::from(cfg.tasks_per_job)) as u32;
        let slots: Vec<u32> = (0..cfg.peers).map(|i| cfg.slots_of(i)).collect();
        let shortest = (cfg.policy == Policy::Omniscient).then(|| {
            let mut q = ShortestQueue::new(cfg.peers);
            for (p, &s) in slots.iter().enumerate() {
                q.set(p as u32, key(0, 0, s));
            }
            q
        });
        Ok(Self {
            cfg,
            placer,
            now: 0,
            events: EventQueue::new(),
            peers: (0..cfg.peers).map(|_| PeerState::default()).collect(),
            slots,
            jobs: Slab::default(),
            rounds: Slab::default(),
            gossip: GossipModel::new(&cfg.gossip, cfg.latency.clone(), cfg.peers, cfg.seed),
            shortest,
            // Separate streams: every policy sees the same jobs for a given seed.
            work_rng: SmallRng::seed_from_u64(cfg.seed),
            net_rng: SmallRng::seed_from_u64(cfg.seed ^ 0x6e65_7477_6f72_6b00),
            policy_rng: SmallRng::seed_from_u64(cfg.seed ^ 0x706f_6c69_6379_0000),
            duration_cursor: 0,
            latency_cursor: 0,
            jobs_arrived: 0,
            jobs_total,
            warmup_jobs: (f64::from(jobs_total) * cfg.warmup) as u32,
            candidates: Vec::new(),
            assignment: Vec::new(),
            demand: Resources::cpus(1),
            stats: Collector::with_capacity(jobs_total as usize, cfg.tasks as usize),
            window: (0, 0),
            measuring: false,
            last_arrival: 0,
            processed: 0,
        })
    }

    /// Runs to the end and reports.
    pub fn run(mut self) -> Report {
        let started = Instant::now();
        self.events.push(0, Event::JobArrival);
        if self.cfg.policy == Policy::P2cView {
            let period = self.gossip.period();
            for p in 0..self.cfg.peers as u32 {
                let phase = self.net_rng.random_range(0..period);
                self.events.push(phase, Event::Publish { peer: p });
            }
        }
        while let Some((time, event)) = self.events.pop() {
            self.now = time;
            self.processed += 1;
            self.handle(event);
        }
        self.report(started.elapsed().as_secs_f64())
    }

    fn handle(&mut self, event: Event) {
        match event {
            Event::JobArrival => self.job_arrives(),
            Event::Publish { peer } => self.publish(peer),
            Event::TaskArrives { peer, job, task } => self.enqueue(peer, job, task),
            Event::TaskDone { peer, job } => self.task_done(peer, job),
            Event::Probe { peer, round, slot } => self.probe(peer, round, slot),
            Event::BidsIn { round } => self.bids_in(round),
            Event::Reservation { peer, job } => {
                self.peers[peer as usize].reservations.push_back(job);
                self.try_start(peer);
            }
            Event::Claim { peer, job } => self.claim(peer, job),
            Event::Claimed { peer, job, task } => self.claimed(peer, job, task),
        }
    }

    /// One message's latency.
    pub(crate) fn latency(&mut self) -> Nanos {
        self.cfg
            .latency
            .sample(&mut self.net_rng, &mut self.latency_cursor)
    }

    /// Load of `peer` as it would say in a bid or a publication.
    pub(crate) fn load_of(&self, peer: u32) -> Load {
        let p = &self.peers[peer as usize];
        let total = self.slots[peer as usize];
        Load {
            queue_len: (p.queue.len() + p.reservations.len()) as u32,
            free_cpu: f64::from(total - p.running - p.held),
            total_cpu: f64::from(total),
        }
    }

    fn job_arrives(&mut self) {
        let id = self.jobs.alloc();
        let m = self.cfg.tasks_per_job;
        let origin = self.work_rng.random_range(0..self.cfg.peers as u32);
        let measured = self.jobs_arrived >= self.warmup_jobs;
        if measured && !self.measuring && self.jobs_arrived + 1 < self.jobs_total {
            self.open_window();
        }
        let job = self.jobs.get(id);
        job.arrival = self.now;
        job.origin = origin;
        job.unfinished = m;
        job.measured = measured;
        job.claims = None;
        job.reservations_out = 0;
        job.durations.clear();
        for _ in 0..m {
            let d = self
                .cfg
                .duration
                .sample(&mut self.work_rng, &mut self.duration_cursor);
            self.jobs.get(id).durations.push(d);
        }
        self.jobs_arrived += 1;
        if self.jobs_arrived == self.jobs_total {
            self.close_window();
            self.last_arrival = self.now;
        }
        if self.jobs_arrived < self.jobs_total {
            let gap = -(1.0 - self.work_rng.random::<f64>()).ln() / self.cfg.job_rate();
            self.events
                .push(self.now + (gap * 1e9).round() as Nanos, Event::JobArrival);
        }
        self.place(id);
    }

    /// Starts measuring utilisation now.
    fn open_window(&mut self) {
        self.measuring = true;
        self.window.0 = self.now;
        for p in &mut self.peers {
            p.busy = 0;
            p.since = self.now;
        }
    }

    /// Stops measuring utilisation now.
    fn close_window(&mut self) {
        if !self.measuring {
            return;
        }
        for p in 0..self.peers.len() {
            self.account(p as u32);
        }
        self.measuring = false;
        self.window.1 = self.now;
    }

    /// Adds `peer`'s busy slot time since its last change (call before `running` changes).
    fn account(&mut self, peer: u32) {
        if self.measuring {
            let p = &mut self.peers[peer as usize];
            p.busy += u128::from(p.running) * u128::from(self.now - p.since);
            p.since = self.now;
        }
    }

    fn publish(&mut self, peer: u32) {
        let load = self.load_of(peer);
        let busy = self.slots[peer as usize] - load.free_cpu as u32;
        self.gossip.publish(peer, self.now, load.queue_len, busy);
        // Views matter only while jobs arrive (placement decides at arrival).
        if self.jobs_arrived < self.jobs_total {
            self.events
                .push(self.now + self.gossip.period(), Event::Publish { peer });
        }
    }

    /// Task `task` of `job` joins `peer`'s queue (and starts if a slot is free).
    pub(crate) fn enqueue(&mut self, peer: u32, job: u32, task: u32) {
        let p = &mut self.peers[peer as usize];
        p.queue.push_back((job, task));
        let depth = p.queue.len() as u32 + p.running;
        if self.jobs.get(job).measured {
            self.stats.max_queue = self.stats.max_queue.max(depth);
        }
        self.try_start(peer);
    }

    /// Starts what can start on `peer`: queued tasks first, then claims for reservations.
    fn try_start(&mut self, peer: u32) {
        let slots = self.slots[peer as usize];
        loop {
            let p = &mut self.peers[peer as usize];
            if p.running + p.held >= slots {
                break;
            }
            if let Some((job, task)) = p.queue.pop_front() {
                self.start(peer, job, task);
            } else if let Some(job) = p.reservations.pop_front() {
                // The claim travels to the job's submitting peer.
                p.held += 1;
                let at = self.now + self.latency();
                self.stats.messages.claims += 1;
                self.events.push(at, Event::Claim { peer, job });
            } else {
                break;
            }
        }
        self.update_shortest(peer);
    }

    /// Runs task `task` of `job` on a free slot of `peer`.
    fn start(&mut self, peer: u32, job: u32, task: u32) {
        let j = self.jobs.get(job);
        let duration = j.durations[task as usize];
        let (arrival, measured) = (j.arrival, j.measured);
        if measured {
            self.stats.task_started(self.now - arrival);
        }
        self.account(peer);
        self.peers[peer as usize].running += 1;
        self.events.push(
            self.now.saturating_add(duration),
            Event::TaskDone { peer, job },
        );
    }

    fn task_done(&mut self, peer: u32, job: u32) {
        self.account(peer);
        self.peers[peer as usize].running -= 1;
        let j = self.jobs.get(job);
        j.unfinished -= 1;
        if j.unfinished == 0 {
            let (arrival, measured) = (j.arrival, j.measured);
            if measured {
                self.stats.job_done(self.now - arrival);
            }
            self.maybe_release(job);
        }
        self.try_start(peer);
    }

    fn maybe_release(&mut self, job: u32) {
        let j = self.jobs.get(job);
        if j.unfinished == 0 && j.reservations_out == 0 {
            self.jobs.release(job);
        }
    }

    pub(crate) fn update_shortest(&mut self, peer: u32) {
        if let Some(q) = &mut self.shortest {
            let p = &self.peers[peer as usize];
            q.set(
                peer,
                key(p.queue.len(), p.running, self.slots[peer as usize]),
            );
        }
    }

    fn probe(&mut self, peer: u32, round: u32, slot: u32) {
        let load = self.load_of(peer);
        let fits_now = load.free_cpu >= self.demand.cpu();
        self.rounds.get(round).bids[slot as usize] = Bid {
            peer,
            load,
            fits_now,
        };
    }

    fn claim(&mut self, peer: u32, job: u32) {
        let j = self.jobs.get(job);
        let remote = j.durations.len() - j.first_remote as usize;
        let first = j.first_remote;
        let task = j
            .claims
            .as_mut()
            .and_then(|c| c.take(remote))
            .map_or(NO_TASK, |k| first + k as u32);
        self.stats.messages.claim_replies += 1;
        let at = self.now + self.latency();
        self.events.push(at, Event::Claimed { peer, job, task });
    }

    fn claimed(&mut self, peer: u32, job: u32, task: u32) {
        self.peers[peer as usize].held -= 1;
        self.jobs.get(job).reservations_out -= 1;
        if task != NO_TASK {
            self.start(peer, job, task);
        }
        self.maybe_release(job);
        self.try_start(peer);
    }

    fn report(self, wall_s: f64) -> Report {
        let cfg = self.cfg;
        let Collector {
            mut job_response_ms,
            mut task_wait_ms,
            messages,
            max_queue,
        } = self.stats;
        let makespan = self.now.max(1);
        let window = (self.window.1 - self.window.0).max(1) as f64;
        let mut utilisation: Vec<f32> = self
            .peers
            .iter()
            .zip(&self.slots)
            .map(|(p, &s)| (p.busy as f64 / (f64::from(s) * window)) as f32)
            .collect();
        let tasks = u64::from(self.jobs_total) * u64::from(cfg.tasks_per_job);
        // Gossip runs all the time: its cost per task is its rate over the task arrival rate.
        let arrivals = self.last_arrival.max(1) as f64;
        let publishes = cfg.peers as f64 * arrivals / self.gossip.period() as f64;
        let gossip = publishes * self.gossip.transmissions_per_publish() as f64;
        Report {
            policy: cfg.policy.name(),
            duration: cfg.duration.label(),
            load: cfg.load,
            peers: cfg.peers,
            tasks,
            measured_jobs: job_response_ms.len() as u64,
            gossip_period_ms: cfg.gossip.period_ms,
            job: Summary::of(&mut job_response_ms),
            wait: Summary::of(&mut task_wait_ms),
            messages_per_task: messages.total() as f64 / tasks as f64,
            gossip_per_task: gossip / tasks as f64,
            utilisation: Summary::of(&mut utilisation),
            max_queue,
            simulated_s: makespan as f64 / MS / 1e3,
            events: self.processed,
            wall_s,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Gossip;
    use crate::dist::Dist;

    /// The supermarket model: n single-slot servers, Poisson arrivals at rate λn, exponential
    /// service, each task joins the shorter of d = 2 queues seen fresh (zero latency).
    fn supermarket(policy: Policy, n: usize, load: f64, seed: u64) -> Report {
        let cfg = SimConfig {
            peers: n,
            slots: vec![1],
            load,
            tasks: 150_000,
            tasks_per_job: 1,
            duration: Dist::Exp { mean: 1.0 },
            latency: Dist::Const(0.0),
            policy,
            choices: 2,
            local_first: false,
            seed,
            ..SimConfig::default()
        };
        Sim::new(&cfg).unwrap().run()
    }

    #[test]
    fn two_fresh_choices_keep_the_longest_queue_near_log_log_n() {
        let (n, load) = (1000, 0.9f64);
        // Mitzenmacher: a fraction λ^((d^i - 1)/(d - 1)) of queues hold at least i tasks, so the
        // longest of n is about i* = log_d(1 + (d - 1) ln n / ln(1/λ)) = ln ln n / ln d + O(1).
        let d: f64 = 2.0;
        let i_star = (1.0 + (d - 1.0) * (n as f64).ln() / (1.0 / load).ln()).ln() / d.ln();
        let two = supermarket(Policy::P2cBids, n, load, 3).max_queue;
        let random = supermarket(Policy::Random, n, load, 3).max_queue;
        let band = (i_star.floor() - 1.0, i_star.ceil() + 2.0);
        assert!(
            f64::from(two) >= band.0 && f64::from(two) <= band.1,
            "d=2: longest queue {two}, expected within {band:?} (i* = {i_star:.2})"
        );
        assert!(
            random >= 4 * two,
            "random: longest queue {random}, d=2: {two}"
        );
    }

    #[test]
    fn the_same_seed_gives_the_same_run() {
        let cfg = SimConfig {
            peers: 200,
            tasks: 20_000,
            policy: Policy::P2cView,
            latency: Dist::Exp { mean: 1.0 },
            gossip: Gossip {
                loss: 0.3,
                fanout: 2,
                ..Gossip::default()
            },
            ..SimConfig::default()
        };
        let strip = |mut r: Report| {
            r.wall_s = 0.0;
            r
        };
        let a = strip(Sim::new(&cfg).unwrap().run());
        let b = strip(Sim::new(&cfg).unwrap().run());
        assert_eq!(a, b);
        let c = strip(Sim::new(&SimConfig { seed: 2, ..cfg }).unwrap().run());
        assert_ne!(a.job, c.job);
    }

    #[test]
    fn every_policy_finishes_every_job_on_mixed_peers() {
        for policy in Policy::ALL {
            let cfg = SimConfig {
                peers: 30,
                slots: vec![1, 3],
                tasks: 6_000,
                tasks_per_job: 5,
                load: 0.8,
                latency: Dist::Uniform { lo: 0.5, hi: 1.5 },
                duration: Dist::Pareto {
                    mean: 100.0,
                    shape: 1.5,
                },
                policy,
                ..SimConfig::default()
            };
            let sim = Sim::new(&cfg).unwrap();
            let measured = u64::from(sim.jobs_total - sim.warmup_jobs);
            let report = sim.run();
            assert_eq!(report.tasks, 6_000);
            assert_eq!(
                report.measured_jobs,
                measured,
                "{}: a job never finished",
                policy.name()
            );
            assert!(
                report.utilisation.mean > 0.6,
                "{}: {report:?}",
                policy.name()
            );
        }
    }
}
