//! Placement of an arriving job, by the node's own policy (`peer-placement`) or by the
//! omniscient ideal: local fast path, then tasks, probes or reservations sent over the network.

use peer_placement::{Request, Reservations, Resources, Strategy};

use crate::engine::Sim;
use crate::events::Event;
use crate::gossip::StaleView;

impl Sim<'_> {
    /// Places every task of `job`, which has just arrived at its origin peer.
    pub(crate) fn place(&mut self, job: u32) {
        let j = self.jobs.get(job);
        let (origin, m) = (j.origin, j.durations.len() as u32);
        if self.shortest.is_some() {
            for task in 0..m {
                let best = self.shortest.as_ref().map_or(origin, |q| q.best());
                self.enqueue(best, job, task);
            }
            return;
        }
        // The fast path: tasks run where they were submitted while slots are free there.
        let mut first = 0;
        while first < m {
            let free = self.load_of(origin).free_cpu as u32;
            if !self
                .placer
                .run_here(&Resources::cpus(free), &self.demand, true)
            {
                break;
            }
            self.enqueue(origin, job, first);
            first += 1;
        }
        if first == m {
            return;
        }
        match self.placer.config().strategy {
            Strategy::Random | Strategy::ViewChoices => {
                (first..m).for_each(|task| self.send_by_view(job, origin, task));
            }
            Strategy::Bids => (first..m).for_each(|task| self.probe_round(job, origin, task, 1)),
            Strategy::BatchBids => self.probe_round(job, origin, first, m - first),
            Strategy::LateBinding => self.reserve(job, origin, first, m - first),
        }
    }

    /// The view of `origin` at this moment (its own load exact, others' as gossip told it).
    fn view_of(&self, origin: u32) -> StaleView<'_> {
        StaleView {
            gossip: &self.gossip,
            slots: &self.slots,
            observer: origin,
            own: self.load_of(origin),
            now: self.now,
        }
    }

    /// Draws candidates for `tasks` tasks into `self.candidates`.
    fn draw_candidates(&mut self, origin: u32, tasks: u32) {
        let view = StaleView {
            gossip: &self.gossip,
            slots: &self.slots,
            observer: origin,
            own: self.load_of(origin),
            now: self.now,
        };
        let request = Request {
            demand: &self.demand,
            holders: &[],
            tasks: tasks as usize,
            local: Some(origin),
        };
        self.placer
            .candidates(&view, &request, &mut self.policy_rng, &mut self.candidates);
    }

    /// Random or choices-on-the-view: decide now, send the task.
    fn send_by_view(&mut self, job: u32, origin: u32, task: u32) {
        self.draw_candidates(origin, 1);
        let target = self
            .placer
            .pick_by_view(&self.view_of(origin), &self.candidates);
        self.send_task(job, origin, task, target.map(|i| i as u32));
    }

    /// Sends a task to `target`, or keeps it at `origin` when no other peer can take it.
    fn send_task(&mut self, job: u32, origin: u32, task: u32, target: Option<u32>) {
        match target {
            Some(peer) if peer != origin => {
                self.stats.messages.tasks += 1;
                let at = self.now + self.latency();
                self.events.push(at, Event::TaskArrives { peer, job, task });
            }
            _ => self.enqueue(origin, job, task),
        }
    }

    /// Probes candidates for tasks `first..first + tasks`; the decision comes with the last bid.
    fn probe_round(&mut self, job: u32, origin: u32, first: u32, tasks: u32) {
        self.draw_candidates(origin, tasks);
        if self.candidates.is_empty() {
            (first..first + tasks).for_each(|task| self.enqueue(origin, job, task));
            return;
        }
        let round = self.rounds.alloc();
        let r = self.rounds.get(round);
        r.job = job;
        r.first = first;
        r.tasks = tasks;
        r.bids.clear();
        let mut last_bid = self.now;
        for slot in 0..self.candidates.len() {
            let peer = self.candidates[slot] as u32;
            let there = self.now + self.latency();
            let back = there + self.latency();
            last_bid = last_bid.max(back);
            let placeholder = peer_placement::Bid {
                peer,
                load: self.load_of(peer),
                fits_now: false,
            };
            self.rounds.get(round).bids.push(placeholder);
            self.events.push(
                there,
                Event::Probe {
                    peer,
                    round,
                    slot: slot as u32,
                },
            );
        }
        let n = self.candidates.len() as u64;
        self.stats.messages.probes += n;
        self.stats.messages.bids += n;
        self.events.push(last_bid, Event::BidsIn { round });
    }

    /// Every bid of `round` is in: send its tasks to the chosen peers.
    pub(crate) fn bids_in(&mut self, round: u32) {
        let r = self.rounds.get(round);
        let (job, first, tasks) = (r.job, r.first, r.tasks);
        let mut bids = std::mem::take(&mut r.bids);
        let origin = self.jobs.get(job).origin;
        if tasks == 1 {
            let best = self.placer.pick_bid(&bids).map(|i| bids[i].peer);
            self.send_task(job, origin, first, best);
        } else {
            let mut assignment = std::mem::take(&mut self.assignment);
            self.placer.assign_batch(
                &mut bids,
                tasks as usize,
                self.demand.cpu(),
                &mut assignment,
            );
            for (k, &b) in assignment.iter().enumerate() {
                self.send_task(job, origin, first + k as u32, Some(bids[b].peer));
            }
            self.assignment = assignment;
        }
        self.rounds.get(round).bids = bids;
        self.rounds.release(round);
    }

    /// Late binding: reservations for tasks `first..first + tasks` go to the candidates (at least
    /// one per task, so that every task is claimed).
    fn reserve(&mut self, job: u32, origin: u32, first: u32, tasks: u32) {
        self.draw_candidates(origin, tasks);
        if self.candidates.is_empty() {
            (first..first + tasks).for_each(|task| self.enqueue(origin, job, task));
            return;
        }
        let drawn = self.candidates.len();
        let count = drawn.max(tasks as usize);
        let j = self.jobs.get(job);
        j.first_remote = first;
        j.claims = Some(Reservations::new(tasks as usize));
        j.reservations_out = count as u32;
        for k in 0..count {
            let peer = self.candidates[k % drawn] as u32;
            let at = self.now + self.latency();
            self.events.push(at, Event::Reservation { peer, job });
        }
        self.stats.messages.reservations += count as u64;
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use peer_placement::Placer;

    use crate::config::{Policy, SimConfig};
    use crate::engine::Sim;

    #[test]
    fn the_simulator_runs_the_nodes_own_placement_code() {
        // 1. The policy this binary was compiled from is the crate in placement/, the one
        //    the node builds on — a path dependency, not a copy or a published version.
        let here = Path::new(env!("CARGO_MANIFEST_DIR"));
        let node_policy = here.join("../placement").canonicalize().unwrap();
        let linked = Path::new(peer_placement::SOURCE_DIR)
            .canonicalize()
            .unwrap();
        assert_eq!(linked, node_policy);

        // 2. Every node strategy is driven by a `peer_placement::Placer` (a type check).
        for policy in Policy::ALL.into_iter().filter(|p| p.strategy().is_some()) {
            let cfg = SimConfig {
                peers: 4,
                tasks: 10,
                policy,
                ..SimConfig::default()
            };
            let sim = Sim::new(&cfg).unwrap();
            let placer: &Placer = &sim.placer;
            assert_eq!(Some(placer.config().strategy), policy.strategy());
        }

        // 3. No simulator source defines the policy's decisions itself.
        let decisions = [
            "sample_candidates",
            "pick_bid",
            "pick_by_view",
            "assign_batch",
            "run_here",
            "backlog",
            "cmp_for_placement",
            "with_one_more",
        ];
        for entry in std::fs::read_dir(here.join("src")).unwrap() {
            let path = entry.unwrap().path();
            let text = std::fs::read_to_string(&path).unwrap();
            for name in decisions {
                let definition = format!("fn {name}");
                assert!(
                    !text.contains(&definition),
                    "{} copies `{definition}`",
                    path.display()
                );
            }
        }
    }
}
