//! The placement decisions: run here or not, whom to contact, and which peer gets the task.
//!
//! - a task arrives: [`Placer::run_here`] (the fast path: a free slot that fits and the inputs
//!   are local) or else [`Placer::candidates`] (whom to probe, or to pick among);
//! - [`Strategy::Random`] and [`Strategy::ViewChoices`] decide at once from the view with
//!   [`Placer::pick_by_view`];
//! - [`Strategy::Bids`] waits for the candidates' bids and calls [`Placer::pick_bid`];
//!   [`Strategy::BatchBids`] probes `choices·m` peers for m tasks and calls
//!   [`Placer::assign_batch`];
//! - [`Strategy::LateBinding`] sends reservations to the candidates; each reserved peer asks for
//!   a task when a slot frees and [`Reservations::take`] says whether one is left.

use rand::Rng;

use crate::error::PlacementError;
use crate::load::Bid;
use crate::resources::Resources;
use crate::sample::sample_candidates;
use crate::view::View;

/// How a peer places the work it cannot run itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    /// One random peer that fits; no probes.
    Random,
    /// `choices` random peers; the least loaded according to the (possibly stale) view wins.
    ViewChoices,
    /// `choices` random peers are asked for a bid; the best bid wins (the node's default).
    Bids,
    /// For a batch of m tasks, `choices·m` peers are probed and the tasks go to the best bids
    /// (Sparrow's batch sampling).
    BatchBids,
    /// For a batch of m tasks, `choices·m` peers get a reservation; a peer asks for a task when a
    /// slot frees there and the first m to ask get one (Sparrow's late binding).
    LateBinding,
}

/// Settings of a [`Placer`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    pub strategy: Strategy,
    /// Candidates per task (d): 2 is the power of two choices.
    pub choices: usize,
    /// Run a task here when a slot that fits is free and its inputs are here.
    pub local_first: bool,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            strategy: Strategy::Bids,
            choices: 2,
            local_first: true,
        }
    }
}

/// What a peer wants placed: one task, or a batch of `tasks` tasks with the same needs.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a, P> {
    /// Resources each task needs.
    pub demand: &'a Resources,
    /// Peers that already hold the tasks' large inputs (preferred as candidates).
    pub holders: &'a [P],
    /// Number of tasks (1 unless the strategy places batches).
    pub tasks: usize,
    /// The local peer, never a candidate of its own request.
    pub local: Option<P>,
}

/// The placement policy: pure decisions, deterministic for a given random number generator.
#[derive(Debug, Clone)]
pub struct Placer {
    config: Config,
}

impl Placer {
    /// A placer with `config`; fails when it asks for zero choices.
    pub fn new(config: Config) -> Result<Self, PlacementError> {
        if config.choices == 0 {
            return Err(PlacementError::NoChoices(config.choices));
        }
        Ok(Self { config })
    }

    /// The settings this placer runs with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The fast path: whether a task needing `demand` runs on this peer, given what is free here
    /// and whether its large inputs are here.
    pub fn run_here(&self, free_here: &Resources, demand: &Resources, inputs_here: bool) -> bool {
        self.config.local_first && inputs_here && free_here.fits(demand)
    }

    /// How many peers a request for `tasks` tasks contacts (or picks among).
    pub fn sample_size(&self, tasks: usize) -> usize {
        match self.config.strategy {
            Strategy::Random => 1,
            Strategy::ViewChoices | Strategy::Bids => self.config.choices,
            Strategy::BatchBids | Strategy::LateBinding => self.config.choices * tasks.max(1),
        }
    }

    /// Fills `out` with the view positions of the peers to probe (or pick among) for `request`.
    /// Empty means the task fits nowhere in the view: it has to wait, not bounce.
    pub fn candidates<V: View, R: Rng + ?Sized>(
        &self,
        view: &V,
        request: &Request<'_, V::Peer>,
        rng: &mut R,
        out: &mut Vec<usize>,
    ) {
        let count = self.sample_size(request.tasks);
        sample_candidates(
            view,
            request.demand,
            request.holders,
            request.local,
            count,
            rng,
            out,
        );
    }

    /// Picks among `candidates` by the view alone: the least backlog wins, ties go to the earlier
    /// candidate (holders of large inputs come first). Returns a position in the view.
    pub fn pick_by_view<V: View>(&self, view: &V, candidates: &[usize]) -> Option<usize> {
        // `min_by` keeps the first of equal minima.
        candidates
            .iter()
            .copied()
            .min_by(|&a, &b| view.load(a).cmp_for_placement(&view.load(b)))
    }

    /// Picks the best of `bids` (one that fits now, then the least backlog, ties to the earlier
    /// bid); returns its index in `bids`.
    pub fn pick_bid<P>(&self, bids: &[Bid<P>]) -> Option<usize> {
        (0..bids.len()).min_by(|&a, &b| bids[a].cmp_for_placement(&bids[b]))
    }

    /// Spreads `tasks` tasks needing `cpu` CPUs each over `bids`: each task in turn goes to the
    /// best bid, which is then updated as if the task had arrived there. Pushes one bid index per
    /// task to `out` (cleared first); pushes nothing when `bids` is empty.
    pub fn assign_batch<P>(
        &self,
        bids: &mut [Bid<P>],
        tasks: usize,
        cpu: f64,
        out: &mut Vec<usize>,
    ) {
        out.clear();
        for _ in 0..tasks {
            let Some(best) = self.pick_bid(bids) else {
                return;
            };
            let bid = &mut bids[best];
            bid.load = bid.load.with_one_more(cpu);
            bid.fits_now = bid.fits_now && bid.load.free_cpu + 1e-9 >= cpu;
            out.push(best);
        }
    }
}

/// The submitting side of late binding for one batch: how many tasks are still unclaimed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reservations {
    unclaimed: usize,
}

impl Reservations {
    /// A batch of `tasks` tasks, all unclaimed.
    pub fn new(tasks: usize) -> Self {
        Self { unclaimed: tasks }
    }

    /// A reserved peer asks for a task: the index of the task it gets (in submission order), or
    /// `None` when all were claimed already (the peer drops the reservation).
    pub fn take(&mut self, total: usize) -> Option<usize> {
        if self.unclaimed == 0 {
            return None;
        }
        self.unclaimed -= 1;
        Some(total - self.unclaimed - 1)
    }

    /// Tasks nobody has claimed yet.
    pub fn unclaimed(&self) -> usize {
        self.unclaimed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::Load;
    use crate::view::PeerTable;
    use rand::SeedableRng;
    use rand::rngs::SmallRng;

    fn load(queue_len: u32, free_cpu: f64) -> Load {
        Load {
            queue_len,
            free_cpu,
            total_cpu: 4.0,
        }
    }

    fn placer(strategy: Strategy) -> Placer {
        Placer::new(Config {
            strategy,
            ..Config::default()
        })
        .unwrap()
    }

    #[test]
    fn zero_choices_is_an_error() {
        let bad = Config {
            choices: 0,
            ..Config::default()
        };
        assert_eq!(Placer::new(bad).unwrap_err(), PlacementError::NoChoices(0));
    }

    #[test]
    fn fast_path_needs_a_free_slot_and_local_inputs() {
        let p = placer(Strategy::Bids);
        let one = Resources::cpus(1);
        assert!(p.run_here(&Resources::cpus(1), &one, true));
        assert!(!p.run_here(&Resources::none(), &one, true));
        assert!(!p.run_here(&Resources::cpus(1), &one, false));
        let off = Placer::new(Config {
            local_first: false,
            ..Config::default()
        })
        .unwrap();
        assert!(!off.run_here(&Resources::cpus(1), &one, true));
    }

    #[test]
    fn with_a_fresh_view_two_choices_pick_the_less_loaded() {
        let mut t = PeerTable::new();
        t.upsert("busy", Resources::cpus(4), load(7, 0.0));
        t.upsert("idle", Resources::cpus(4), load(0, 3.0));
        let p = placer(Strategy::ViewChoices);
        let mut rng = SmallRng::seed_from_u64(5);
        let mut out = Vec::new();
        let one = Resources::cpus(1);
        let request = Request {
            demand: &one,
            holders: &[],
            tasks: 1,
            local: None,
        };
        for _ in 0..20 {
            p.candidates(&t, &request, &mut rng, &mut out);
            assert_eq!(out.len(), 2);
            assert_eq!(t.peer(p.pick_by_view(&t, &out).unwrap()), "idle");
        }
    }

    #[test]
    fn the_less_loaded_bid_wins_and_fitting_now_wins_first() {
        let p = placer(Strategy::Bids);
        let bids = [
            Bid {
                peer: 'a',
                load: load(3, 0.0),
                fits_now: false,
            },
            Bid {
                peer: 'b',
                load: load(1, 0.0),
                fits_now: false,
            },
        ];
        assert_eq!(p.pick_bid(&bids), Some(1));
        let bids = [
            Bid {
                peer: 'a',
                load: load(0, 0.0),
                fits_now: false,
            },
            Bid {
                peer: 'b',
                load: load(9, 1.0),
                fits_now: true,
            },
        ];
        assert_eq!(p.pick_bid(&bids), Some(1));
        let tie = [bids[0], bids[0]];
        assert_eq!(p.pick_bid(&tie), Some(0), "ties go to the earlier bid");
        assert_eq!(p.pick_bid::<char>(&[]), None);
    }

    #[test]
    fn a_resource_only_one_peer_has_sends_the_task_there() {
        let mut t = PeerTable::new();
        for peer in 0..50u32 {
            t.upsert(peer, Resources::cpus(4), load(0, 4.0));
        }
        t.upsert(
            31,
            Resources::cpus(4).with("GPU", 2.0).unwrap(),
            load(5, 0.0),
        );
        let gpu = Resources::cpus(1).with("GPU", 1.0).unwrap();
        let p = placer(Strategy::Bids);
        let mut rng = SmallRng::seed_from_u64(6);
        let mut out = Vec::new();
        let request = Request {
            demand: &gpu,
            holders: &[],
            tasks: 1,
            local: Some(0),
        };
        p.candidates(&t, &request, &mut rng, &mut out);
        assert_eq!(out.iter().map(|&i| t.peer(i)).collect::<Vec<_>>(), [31]);
        let big = Resources::cpus(64);
        let request = Request {
            demand: &big,
            holders: &[],
            tasks: 1,
            local: Some(0),
        };
        p.candidates(&t, &request, &mut rng, &mut out);
        assert!(
            out.is_empty(),
            "fits nowhere: the caller keeps the task waiting"
        );
    }

    #[test]
    fn batch_sampling_probes_d_times_m_and_spreads_the_batch() {
        let p = placer(Strategy::BatchBids);
        assert_eq!(p.sample_size(5), 10);
        let mut bids = [
            Bid {
                peer: 0,
                load: load(2, 0.0),
                fits_now: false,
            },
            Bid {
                peer: 1,
                load: load(0, 2.0),
                fits_now: true,
            },
            Bid {
                peer: 2,
                load: load(0, 1.0),
                fits_now: true,
            },
            Bid {
                peer: 3,
                load: load(9, 0.0),
                fits_now: false,
            },
        ];
        let mut out = Vec::new();
        p.assign_batch(&mut bids, 5, 1.0, &mut out);
        // Three free CPUs first (two on peer 1, one on peer 2), then the shortest backlogs.
        assert_eq!(&out[..3], &[1, 1, 2]);
        assert_eq!(out.len(), 5);
        assert!(!out.contains(&3), "the longest queue gets nothing");
        assert_eq!(bids[1].load.free_cpu, 0.0);
        assert!(!bids[1].fits_now);
    }

    #[test]
    fn per_task_strategies_sample_per_task() {
        assert_eq!(placer(Strategy::Random).sample_size(10), 1);
        assert_eq!(placer(Strategy::Bids).sample_size(10), 2);
        assert_eq!(placer(Strategy::LateBinding).sample_size(10), 20);
    }

    #[test]
    fn late_binding_hands_out_each_task_once() {
        let mut r = Reservations::new(3);
        assert_eq!(
            [r.take(3), r.take(3), r.take(3), r.take(3)],
            [Some(0), Some(1), Some(2), None]
        );
        assert_eq!(r.unclaimed(), 0);
    }
}
