//! [`Core`]: one node's state machine. Events come in with the time they
//! happened; commands go out, in order, for the shell to carry out.
//!
//! - [`Core::handle`] takes an [`Event`] (a client frame, a peer message, a
//!   timer, a pull ending, …) and [`Core::poll_command`] hands out what to do
//!   about it; nothing here blocks, sleeps, reads a clock or touches a socket,
//!   a process or a file;
//! - the embedded driver (the Python process hosting the node) calls the
//!   `driver_*` methods, which answer at once;
//! - the tables live in sub-structs owned by the modules of `local` (this
//!   node's work) and `cluster` (the other peers); each keeps its own fields
//!   private and its invariants in its methods.

use std::collections::VecDeque;
use std::time::Instant;

use rand::SeedableRng;
use rand::rngs::SmallRng;

use crate::cluster::Cluster;
use crate::command::Command;
use crate::config::CoreConfig;
use crate::event::Event;
use crate::history::History;
use crate::ids::{ConnId, NodeId, OwnerTag, PeerId};
use crate::local::actors::Actors;
use crate::local::conns::Conns;
use crate::local::gpus::{GPU, GpuDevices};
use crate::local::infeasible::Infeasible;
use crate::local::objects::Objects;
use crate::local::tasks::Tasks;
use crate::local::waits::Waits;
use crate::local::workers::Workers;
use crate::resources::Resources;
use crate::store::ObjectStore;
use crate::wire::local::NodeMsg;
use crate::wire::peer::PeerMsg;

/// Counters shown by `peer status`.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct Stats {
    pub tasks_submitted: u64,
    pub tasks_finished: u64,
    pub tasks_retried: u64,
    pub workers_started: u64,
    pub workers_died: u64,
    pub bad_frames: u64,
    /// Tasks this node placed on other peers.
    pub tasks_sent: u64,
    /// Tasks other peers placed here.
    pub tasks_received: u64,
    /// Tasks received from a peer and placed once more.
    pub tasks_forwarded: u64,
    /// Placement rounds (one bid request per candidate each).
    pub placement_rounds: u64,
    /// Objects pulled into this store from other peers, and their bytes.
    pub objects_pulled: u64,
    pub bytes_pulled: u64,
    /// Bytes of objects this node served to pulling peers.
    pub bytes_served: u64,
    /// Objects owned here rebuilt from lineage after their copies were lost.
    pub objects_rebuilt: u64,
    /// Actors restarted because their peer died.
    pub actors_restarted: u64,
}

/// A node's state machine.
pub struct Core {
    pub(crate) config: CoreConfig,
    pub(crate) store: Box<dyn ObjectStore + Send>,
    /// Whose ids this node makes: its own tag.
    pub(crate) owner_tag: OwnerTag,
    /// Resources of this node, and what is not held by running work.
    pub(crate) total: Resources,
    pub(crate) available: Resources,
    /// Which GPU devices running work holds (their count is `GPU` above).
    pub(crate) gpus: GpuDevices,
    pub(crate) objects: Objects,
    pub(crate) tasks: Tasks,
    pub(crate) workers: Workers,
    pub(crate) conns: Conns,
    pub(crate) actors: Actors,
    pub(crate) waits: Waits,
    /// Tasks no node could run, and which drivers were told.
    pub(crate) infeasible: Infeasible,
    /// The other peers: placement, work and objects crossing peers, failures.
    pub(crate) cluster: Cluster,
    pub(crate) stats: Stats,
    /// What ran here, for the dashboard, `peer list` and the timeline.
    pub(crate) history: History,
    pub(crate) shutting_down: bool,
    pub(crate) rng: SmallRng,
    /// When the event being handled happened.
    pub(crate) now: Instant,
    commands: VecDeque<Command>,
}

impl Core {
    /// A node's core with nothing running yet (see [`Core::start_pool`]).
    pub fn new(config: CoreConfig, store: Box<dyn ObjectStore + Send>, now: Instant) -> Core {
        let gpus = GpuDevices::new(gpu_ids(&config));
        let mut pairs: Vec<(&str, f64)> = vec![("CPU", config.num_cpus)];
        pairs.extend(
            config
                .resources
                .iter()
                .filter(|(k, _)| k != GPU)
                .map(|(k, v)| (k.as_str(), *v)),
        );
        pairs.push((GPU, gpus.len() as f64));
        let total = Resources::from_pairs(pairs);
        let owner_tag = match &config.peer_id {
            Some(peer) => OwnerTag::of_peer(peer),
            None => OwnerTag::of_node(&config.node_id),
        };
        let mut rng = SmallRng::seed_from_u64(config.seed);
        let cluster = Cluster::new(config.peer_id, config.incarnation, &mut rng);
        Core {
            store,
            owner_tag,
            available: total.clone(),
            total,
            gpus,
            objects: Objects::default(),
            tasks: Tasks::default(),
            workers: Workers::default(),
            conns: Conns::default(),
            actors: Actors::default(),
            waits: Waits::default(),
            infeasible: Infeasible::new(now),
            cluster,
            stats: Stats::default(),
            history: History::new(now),
            shutting_down: false,
            rng,
            now,
            commands: VecDeque::new(),
            config,
        }
    }

    /// Handle one event that happened at `now`.
    pub fn handle(&mut self, event: Event, now: Instant) {
        self.now = now;
        match event {
            Event::Client { conn, msg } => self.handle_client(conn, msg),
            Event::Closed { conn } => self.conn_closed(conn),
            Event::BadFrame => self.stats.bad_frames += 1,
            Event::Peer { from, msg } => self.handle_peer(from, msg),
            Event::Incarnation { peer, incarnation } => self.peer_incarnation(peer, incarnation),
            Event::LinkReset { peer } => self.link_reset(peer, true),
            Event::PeerGone { peer, why } => self.peer_gone(peer, &why),
            Event::Joined {
                listen,
                key_fingerprint,
            } => self.joined(listen, key_fingerprint),
            Event::View {
                listen,
                peers,
                network,
            } => self.view_refreshed(listen, peers, network),
            Event::Timer => self.timers_due(),
            Event::PullChunk { id, chunk } => self.pull_chunk(id, chunk),
            Event::PullDone { id, result } => self.pull_finished(id, result),
            Event::Served { bytes } => self.stats.bytes_served += bytes,
            Event::SpawnerFailed { why } => self.spawner_failed(why),
        }
    }

    /// The next thing for the shell to do, in order.
    pub fn poll_command(&mut self) -> Option<Command> {
        self.commands.pop_front()
    }

    /// Whether commands are waiting (the shell drains them after every call).
    pub fn has_commands(&self) -> bool {
        !self.commands.is_empty()
    }

    /// Number a new local connection; its frames come in as [`Event::Client`].
    pub fn open_conn(&mut self) -> ConnId {
        self.conns.open()
    }

    /// Deadlines that passed: gets and waits, infeasible tasks' grace, bid
    /// rounds, lookups, refetches, audits.
    fn timers_due(&mut self) {
        self.expire_waits();
        self.report_infeasible_due();
        self.kill_lingering_actors();
        self.cluster_deadlines();
    }

    /// Queue a command for the shell.
    pub(crate) fn emit(&mut self, c: Command) {
        self.commands.push_back(c);
    }

    /// Ask to be woken at `at`.
    pub(crate) fn arm_timer(&mut self, at: Instant) {
        self.emit(Command::Timer { at });
    }

    /// Send a message to a local connection, if it is still there.
    pub(crate) fn send_to(&mut self, conn: ConnId, msg: NodeMsg) {
        if self.conns.contains(conn) {
            self.emit(Command::Send {
                conn,
                msg,
                at_once: true,
            });
        }
    }

    /// Queue a message for a peer (dropped in laptop mode, where there are none).
    pub(crate) fn send_peer(&mut self, peer: PeerId, msg: PeerMsg) {
        if self.cluster.is_member() {
            self.emit(Command::ToPeer { peer, msg });
        } else {
            tracing::debug!(%peer, "not in a cluster; a {} message is dropped", msg.name());
        }
    }

    /// This node's id as others see it: the peer id in a cluster.
    pub fn node_name(&self) -> String {
        match &self.config.peer_id {
            Some(p) => p.to_string(),
            None => self.config.node_id.to_string(),
        }
    }

    /// What the ids made by this node's clients start with.
    pub fn owner_tag(&self) -> OwnerTag {
        self.owner_tag
    }

    /// This node's own id.
    pub fn node_id(&self) -> NodeId {
        self.config.node_id
    }

    /// The counters `peer status` shows.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }
}

impl std::fmt::Debug for Core {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Core")
            .field("node", &self.node_name())
            .field("tasks", &self.tasks.len())
            .field("objects", &self.objects.len())
            .finish_non_exhaustive()
    }
}

/// The node's GPU device ids: as configured, else `0..n` for a `GPU`
/// amount among its resources (whole devices only).
fn gpu_ids(config: &CoreConfig) -> Vec<String> {
    if !config.gpu_ids.is_empty() {
        return config.gpu_ids.clone();
    }
    let n: f64 = config
        .resources
        .iter()
        .filter(|(k, _)| k == GPU)
        .map(|(_, v)| *v)
        .sum();
    let n = if n.is_finite() && n > 0.0 {
        n.floor() as usize
    } else {
        0
    };
    (0..n).map(|i| i.to_string()).collect()
}
