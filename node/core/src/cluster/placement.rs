//! Placing work on other peers: the node's side of the `peer-placement`
//! policy (the same code the simulator runs).
//!
//! A runnable task that fits into what is free here runs here (the fast path,
//! untouched in laptop mode). One that does not is queued for the next bid
//! round: a round takes the queued tasks with one demand (a burst becomes one
//! batch), samples `2·m` candidate peers from the gossip view (fewer when the
//! view is smaller; only peers that could ever fit the demand), asks each for
//! a bid, and spreads the batch over the bids and this node's own bid with
//! [`Placer::assign_batch`](peer_placement::Placer::assign_batch). Tasks that
//! fit nowhere known are parked (shown by `peer status`) until a peer that can
//! run them joins: they wait, they never bounce. A task received from a peer
//! is placed once more only when this node is badly backlogged, and at most
//! [`MAX_HOPS`] times in all.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use peer_placement::{
    Bid, Config, Load as PlacementLoad, PeerTable, Placer, Request, Strategy, View,
};
use rand::SeedableRng;
use rand::rngs::SmallRng;

use crate::core::Core;
use crate::event::PeerLoad;
use crate::ids::{PeerId, TaskId};
use crate::local::tasks::{TaskEntry, TaskState};
use crate::resources::Resources;
use crate::wire::local::TaskKind;
use crate::wire::peer::{BidLoad, PeerMsg};

/// How long a round waits for bids before deciding with those it has.
pub const BID_TIMEOUT: Duration = Duration::from_millis(500);
/// Most tasks placed in one round.
const MAX_BATCH: usize = 4096;
/// Placements a task may go through (so a received task is forwarded at most once).
pub const MAX_HOPS: u8 = 2;
/// A received task is placed again only when this node's queue is longer than
/// its sender expected by more than this many tasks per CPU (other work came in
/// since the bid).
const FORWARD_SLACK_PER_CPU: f64 = 2.0;

/// A bid round: tasks with one demand, the peers asked, the bids so far.
#[derive(Debug)]
struct Round {
    id: u64,
    tasks: Vec<TaskId>,
    demand: Resources,
    /// Peers that hold the batch's large inputs (preferred).
    holders: Vec<PeerId>,
    asked: Vec<PeerId>,
    /// `None` is this node.
    bids: Vec<Bid<Option<PeerId>>>,
    deadline: Instant,
}

/// The placement view and the tasks waiting to be placed.
#[derive(Debug)]
pub(crate) struct Placement {
    /// Other peers: capacity and load as last heard.
    view: PeerTable<PeerId>,
    placer: Placer,
    rng: SmallRng,
    /// Runnable tasks that do not fit here now, waiting for the next round.
    unplaced: VecDeque<TaskId>,
    /// Tasks no known peer (this one included) could ever run: they wait for one to join.
    parked: Vec<TaskId>,
    round: Option<Round>,
}

impl Placement {
    pub(super) fn new(rng: &mut SmallRng) -> Self {
        let config = Config {
            strategy: Strategy::BatchBids,
            choices: 2,
            local_first: true,
        };
        Self {
            view: PeerTable::new(),
            // Two choices is never zero: `new` cannot fail here.
            placer: Placer::new(config).unwrap_or_else(|e| unreachable!("{e}")),
            rng: SmallRng::from_rng(rng),
            unplaced: VecDeque::new(),
            parked: Vec::new(),
            round: None,
        }
    }

    /// A peer is gone: it leaves the view and the round in flight (true when
    /// every peer left in the round has bid, so it can be decided).
    pub(super) fn forget_peer(&mut self, peer: PeerId) -> bool {
        self.view.remove(peer);
        match self.round.as_mut() {
            Some(r) => {
                r.asked.retain(|p| *p != peer);
                r.bids.len() >= r.asked.len()
            }
            None => false,
        }
    }

    #[cfg(test)]
    pub(super) fn round_size(&self) -> Option<usize> {
        self.round.as_ref().map(|r| r.tasks.len())
    }

    /// The peers in the view.
    pub(super) fn peers(&self) -> Vec<PeerId> {
        self.view.entries().iter().map(|e| e.peer).collect()
    }

    /// Tasks waiting for a bid round, or in the round in flight.
    pub(crate) fn placing(&self) -> usize {
        self.unplaced.len() + self.round.as_ref().map_or(0, |r| r.tasks.len())
    }
}

/// A node resource set as the policy's type.
pub fn to_policy(r: &Resources) -> peer_placement::Resources {
    let mut out = peer_placement::Resources::none();
    for (name, amount) in r.to_map() {
        // Amounts were checked on submission (finite, non-negative).
        let _ = out.set(&name, amount);
    }
    out
}

impl Core {
    /// Whether other peers are there to place work on.
    pub(crate) fn placement_active(&self) -> bool {
        self.cluster.is_member() && !self.cluster.placement.view.is_empty()
    }

    /// Whether a runnable task that does not fit here now may go to another peer.
    pub(crate) fn may_leave(&self, t: &TaskEntry) -> bool {
        if t.stay_local || t.spec.kind == TaskKind::ActorMethod {
            return false;
        }
        match t.guest.as_deref() {
            None => true,
            Some(g) => {
                let slack = FORWARD_SLACK_PER_CPU * self.total.get("CPU").max(1.0);
                t.spec.kind == TaskKind::Normal
                    && g.hops < MAX_HOPS
                    && self.tasks.ready_len() as f64 > f64::from(g.expect_queue) + slack
            }
        }
    }

    /// What placement looks for to run a task: its resources, and for an actor
    /// that holds no CPU while it runs (Ray's default) one free CPU all the same,
    /// so actors spread over peers with room instead of piling up on a busy one.
    fn placement_demand(t: &TaskEntry) -> Resources {
        if t.spec.kind == TaskKind::ActorCreate && t.resources.get("CPU") == 0.0 {
            let mut pairs: Vec<(String, f64)> = t.resources.to_map().into_iter().collect();
            pairs.push(("CPU".into(), 1.0));
            Resources::from_pairs(pairs.iter().map(|(k, v)| (k.as_str(), *v)))
        } else {
            t.resources.clone()
        }
    }

    /// An actor without CPUs of its own on a node with no free CPU: placement
    /// looks for a peer with one (it still runs here when none has).
    pub(crate) fn wants_a_free_cpu(&self, t: &TaskEntry) -> bool {
        t.spec.kind == TaskKind::ActorCreate
            && t.resources.get("CPU") == 0.0
            && self.available.get("CPU") < 1.0
    }

    /// Queue a runnable task for the next bid round.
    pub(crate) fn await_placement(&mut self, tid: TaskId) {
        if let Some(t) = self.tasks.get_mut(&tid) {
            t.state = TaskState::Placing;
            self.cluster.placement.unplaced.push_back(tid);
        }
    }

    /// Placement chose this node: the task waits here for a slot.
    fn keep_here(&mut self, tid: TaskId) {
        if let Some(t) = self.tasks.get_mut(&tid)
            && t.state == TaskState::Placing
        {
            t.stay_local = true;
            t.state = TaskState::Queued;
            self.tasks.push_ready(tid);
        }
    }

    /// Start a bid round for the queued tasks unless one is in flight.
    pub(crate) fn start_round(&mut self) {
        let mut kept_here = false;
        while self.cluster.placement.round.is_none() {
            let Some((demand, batch)) = self.next_batch() else {
                break;
            };
            let policy_demand = to_policy(&demand);
            let holders = self.input_holders(&batch);
            let request = Request {
                demand: &policy_demand,
                holders: &holders,
                tasks: batch.len(),
                local: self.cluster.me(),
            };
            let mut positions = Vec::new();
            let p = &mut self.cluster.placement;
            p.placer
                .candidates(&p.view, &request, &mut p.rng, &mut positions);
            let asked: Vec<PeerId> = positions.iter().map(|&i| p.view.peer(i)).collect();
            if asked.is_empty() {
                if self.could_ever_fit_here(&demand) {
                    for tid in batch {
                        self.keep_here(tid);
                    }
                    kept_here = true;
                } else {
                    self.park(batch);
                }
                continue;
            }
            let id = self.cluster.next_req();
            let demand_pairs: Vec<(String, f64)> = demand.to_map().into_iter().collect();
            for &peer in &asked {
                self.send_peer(
                    peer,
                    PeerMsg::BidRequest {
                        round: id,
                        demand: demand_pairs.clone(),
                        tasks: batch.len() as u32,
                    },
                );
            }
            self.stats.placement_rounds += 1;
            let deadline = self.now + BID_TIMEOUT;
            self.cluster.placement.round = Some(Round {
                id,
                tasks: batch,
                demand,
                holders,
                asked,
                bids: Vec::new(),
                deadline,
            });
            self.arm_timer(deadline);
        }
        if kept_here {
            self.schedule();
        }
    }

    /// The queued tasks that share the first one's demand (a batch), still waiting.
    fn next_batch(&mut self) -> Option<(Resources, Vec<TaskId>)> {
        let mut demand: Option<Resources> = None;
        let mut batch = Vec::new();
        let mut rest = VecDeque::new();
        for tid in std::mem::take(&mut self.cluster.placement.unplaced) {
            let Some(t) = self.tasks.get(&tid) else {
                continue;
            };
            if t.state != TaskState::Placing {
                continue;
            }
            let wanted = Self::placement_demand(t);
            let d = demand.get_or_insert_with(|| wanted.clone());
            if *d == wanted && batch.len() < MAX_BATCH {
                batch.push(tid);
            } else {
                rest.push_back(tid);
            }
        }
        self.cluster.placement.unplaced = rest;
        Some((demand?, batch))
    }

    /// Peers holding the large arguments of `batch` (in other peers' stores).
    fn input_holders(&self, batch: &[TaskId]) -> Vec<PeerId> {
        let mut holders = Vec::new();
        for t in batch.iter().filter_map(|t| self.tasks.get(t)) {
            if !t.inputs_elsewhere {
                continue;
            }
            for d in &t.spec.deps {
                let copies = self.objects.get(d).and_then(|e| e.elsewhere.as_ref());
                for p in copies.into_iter().flat_map(|ew| ew.copies.iter()) {
                    if !holders.contains(p) {
                        holders.push(*p);
                    }
                }
            }
        }
        holders
    }

    /// Tasks that fit on no known peer: they wait for one to join, and
    /// their drivers hear of it (unless they could run on some node after
    /// all, and only look for a free CPU; see [`Core::placement_demand`]).
    fn park(&mut self, batch: Vec<TaskId>) {
        for tid in &batch {
            if self
                .tasks
                .get(tid)
                .is_some_and(|t| !self.fits_somewhere(&t.resources))
            {
                self.note_infeasible(*tid);
            }
        }
        self.cluster.placement.parked.extend(batch);
    }

    /// Whether this node or a peer in the view could ever run work that
    /// needs `demand` (has that much of each resource in all).
    pub(crate) fn fits_somewhere(&self, demand: &Resources) -> bool {
        if self.could_ever_fit_here(demand) {
            return true;
        }
        let d = to_policy(demand);
        let view = &self.cluster.placement.view;
        (0..view.len()).any(|i| view.can_ever_fit(i, &d))
    }

    /// This node's bid for tasks that need `demand`.
    pub(crate) fn bid_load(&self, demand: &Resources) -> BidLoad {
        BidLoad {
            queue_len: (self.tasks.ready_len() + self.cluster.placement.unplaced.len()) as u32,
            free_cpu: self.available.get("CPU").max(0.0),
            total_cpu: self.total.get("CPU"),
            fits_now: self.fits_here(demand),
        }
    }

    /// A peer answered a bid request.
    pub(crate) fn on_bid(&mut self, peer: PeerId, round: u64, load: BidLoad) {
        let Some(r) = self.cluster.placement.round.as_mut() else {
            return;
        };
        if r.id != round || !r.asked.contains(&peer) || r.bids.iter().any(|b| b.peer == Some(peer))
        {
            return;
        }
        r.bids.push(Bid {
            peer: Some(peer),
            load: PlacementLoad {
                queue_len: load.queue_len,
                free_cpu: load.free_cpu,
                total_cpu: load.total_cpu,
            },
            fits_now: load.fits_now,
        });
        if r.bids.len() == r.asked.len() {
            self.finish_round();
        }
    }

    /// Decide the round in flight with the bids it has, then start the next one.
    pub(crate) fn finish_round(&mut self) {
        let Some(r) = self.cluster.placement.round.take() else {
            return;
        };
        let mut bids = Vec::with_capacity(r.bids.len() + 1);
        // Ties go to the earlier bid: peers holding the inputs, then this node.
        let (near, far): (Vec<_>, Vec<_>) = r
            .bids
            .into_iter()
            .partition(|b| b.peer.is_some_and(|p| r.holders.contains(&p)));
        bids.extend(near);
        if self.could_ever_fit_here(&r.demand) {
            // First, so that ties keep the task here (no transfer at all).
            let own = self.bid_load(&r.demand);
            bids.push(Bid {
                peer: None,
                load: PlacementLoad {
                    queue_len: own.queue_len,
                    free_cpu: own.free_cpu,
                    total_cpu: own.total_cpu,
                },
                fits_now: own.fits_now,
            });
        }
        bids.extend(far);
        let tasks: Vec<TaskId> = r
            .tasks
            .into_iter()
            .filter(|t| {
                self.tasks
                    .get(t)
                    .is_some_and(|t| t.state == TaskState::Placing)
            })
            .collect();
        if bids.is_empty() {
            // Nobody answered and this node cannot run them: try again next round.
            self.cluster.placement.unplaced.extend(tasks);
        } else {
            let mut choice = Vec::with_capacity(tasks.len());
            self.cluster.placement.placer.assign_batch(
                &mut bids,
                tasks.len(),
                r.demand.get("CPU"),
                &mut choice,
            );
            for (tid, &b) in tasks.iter().zip(&choice) {
                match bids[b].peer {
                    None => self.keep_here(*tid),
                    Some(peer) => self.send_task(*tid, peer, bids[b].load.queue_len),
                }
            }
        }
        self.schedule();
    }

    /// Time passed: decide a round whose bids are late.
    pub(crate) fn expire_placement(&mut self, now: Instant) {
        if self
            .cluster
            .placement
            .round
            .as_ref()
            .is_some_and(|r| r.deadline <= now)
        {
            self.finish_round();
        }
    }

    /// A peer left: it is out of the view, and the round in flight is
    /// decided if only it had not bid.
    pub(crate) fn placement_forget(&mut self, peer: PeerId) {
        if self.cluster.placement.forget_peer(peer) {
            self.finish_round();
        }
    }

    /// Replace the view with what gossip says now; parked tasks get another
    /// chance when a peer that could run them is there.
    pub(crate) fn update_view(&mut self, peers: Vec<(PeerId, PeerLoad)>) {
        let me = self.cluster.me();
        let fresh: rustc_hash::FxHashSet<PeerId> = peers.iter().map(|(p, _)| *p).collect();
        let p = &mut self.cluster.placement;
        let stale: Vec<PeerId> = p
            .view
            .entries()
            .iter()
            .map(|e| e.peer)
            .filter(|p| !fresh.contains(p))
            .collect();
        for s in stale {
            p.view.remove(s);
        }
        let mut joined = false;
        for (peer, load) in peers {
            if Some(peer) == me {
                continue;
            }
            joined |= self.cluster.placement.view.get(peer).is_none();
            let mut capacity = peer_placement::Resources::none();
            let _ = capacity.set(peer_placement::CPU, load.cpus_total.max(0.0));
            for (name, total, _) in &load.resources {
                let _ = capacity.set(name, total.max(0.0));
            }
            self.cluster.membership.seen(peer);
            self.cluster.placement.view.upsert(
                peer,
                capacity,
                PlacementLoad {
                    queue_len: u32::try_from(load.queue_len).unwrap_or(u32::MAX),
                    free_cpu: load.cpus_free.max(0.0),
                    total_cpu: load.cpus_total.max(0.0),
                },
            );
        }
        if !self.cluster.placement.parked.is_empty() {
            let parked = std::mem::take(&mut self.cluster.placement.parked);
            let view = &self.cluster.placement.view;
            let (retry, keep): (Vec<TaskId>, Vec<TaskId>) = parked.into_iter().partition(|t| {
                self.tasks.get(t).is_some_and(|t| {
                    let demand = Self::placement_demand(t);
                    let d = to_policy(&demand);
                    self.could_ever_fit_here(&demand)
                        || (0..view.len()).any(|i| view.can_ever_fit(i, &d))
                })
            });
            self.cluster.placement.parked = keep
                .into_iter()
                .filter(|t| self.tasks.contains(t))
                .collect();
            if !retry.is_empty() {
                self.cluster.placement.unplaced.extend(retry);
                self.start_round();
            }
        }
        if joined && !self.tasks.ready_is_empty() {
            // Queued tasks that do not fit here may go to the peer that (re)joined.
            self.schedule();
        }
    }

    /// The tasks parked because no peer can run them, for `peer status`.
    pub(crate) fn parked_tasks(&self) -> Vec<(String, BTreeMap<String, f64>)> {
        self.cluster
            .placement
            .parked
            .iter()
            .filter_map(|t| self.tasks.get(t))
            .map(|t| (t.spec.name.clone(), t.resources.to_map()))
            .collect()
    }
}

impl super::Cluster {
    /// Whether tasks wait for a bid round.
    pub(crate) fn has_unplaced(&self) -> bool {
        !self.placement.unplaced.is_empty()
    }
}
