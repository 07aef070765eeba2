//! One simulated cluster: N real cores, each with a store, simulated worker
//! processes and (on node 0) a driver, joined by the simulated network, with
//! faults drawn from the seed. Everything runs from one event queue in
//! simulated time, so a seed replays exactly.
//!
//! - [`World::new`] draws the nodes, the workload and the faults;
//! - [`World::run`] handles events in time order: each core's commands are
//!   carried out as the shell would (messages to processes and peers, worker
//!   spawns and kills, pulls, timers), and the core's invariants are checked
//!   after every event it handles;
//! - the run ends when the driver has every answer and the cluster settled,
//!   or fails (stuck, a broken invariant, a wrong answer, a leak).

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

use peer_node_core::ids::{ActorId, ConnId, LookupId, NodeId, ObjectId, PeerId};
use peer_node_core::store::ObjectStore;
use peer_node_core::store::memory::MemStore;
use peer_node_core::wire::local::{ClientMsg, Listing, NodeMsg, Query, TaskKind};
use peer_node_core::wire::peer::PeerMsg;
use peer_node_core::{Command, Core, CoreConfig, Event, GATHER_TIMEOUT, PeerView};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use rustc_hash::{FxHashMap, FxHashSet};

mod faults;
mod links;
mod pulls;

use faults::Fault;
use pulls::Pull;

use crate::check;
use crate::client::{Ctx, Driver, INTERRUPT, NEXT_STEP, Worker};
use crate::net::Net;
use crate::program::{NodeSpec, Script};
use crate::trace::{self, Trace};

/// How a run is set up.
#[derive(Debug, Clone)]
pub struct Options {
    /// Steps of the driver's script.
    pub steps: usize,
    /// Inject faults (cuts, kills, restarts, worker crashes) in some seeds.
    pub faults: bool,
    /// Keep a trace of the run.
    pub trace: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            steps: 60,
            faults: true,
            trace: false,
        }
    }
}

/// A run that went wrong: what, and (when traced) how.
#[derive(Debug, Clone)]
pub struct Failure {
    pub seed: u64,
    pub what: String,
    pub trace: Vec<String>,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "seed {} failed: {}", self.seed, self.what)?;
        if !self.trace.is_empty() {
            writeln!(f, "last {} lines of its trace:", self.trace.len())?;
            for l in &self.trace {
                writeln!(f, "  {l}")?;
            }
        }
        write!(
            f,
            "replay it with: cargo run --release -p peer-node-sim -- --seed {} --trace",
            self.seed
        )
    }
}

/// What a finished run did.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub nodes: usize,
    pub events: u64,
    pub sim_time: Duration,
    pub refs: usize,
    pub errors_allowed: usize,
    /// Cluster-wide listings asked of nodes and answered in time.
    pub gathers_answered: u64,
    /// Allowed answers by error kind (`None`: a value that could not be
    /// known), with what each error said.
    pub allowed: Vec<(Option<peer_node_core::wire::local::ErrorKind>, String)>,
    pub faults: Vec<String>,
    /// The trace, when the run kept one.
    pub trace: Vec<String>,
}

/// Something that happens at a time.
#[derive(Debug)]
enum Ev {
    Deliver {
        from: usize,
        to: usize,
        epoch: u64,
        to_inc: u64,
        msg: PeerMsg,
    },
    OpenAttempt {
        from: usize,
        to: usize,
        writer: u64,
    },
    Core {
        node: usize,
        inc: u64,
        event: Event,
    },
    ToNode {
        node: usize,
        inc: u64,
        conn: ConnId,
        msg: ClientMsg,
    },
    ToClient {
        node: usize,
        inc: u64,
        conn: ConnId,
        msg: NodeMsg,
    },
    Eof {
        node: usize,
        inc: u64,
        conn: ConnId,
    },
    Wake {
        node: usize,
        inc: u64,
        conn: ConnId,
        token: u64,
    },
    WorkerStart {
        node: usize,
        inc: u64,
        worker: peer_node_core::ids::WorkerId,
        env: Option<peer_node_core::ids::EnvKey>,
    },
    View,
    PullStep {
        node: usize,
        inc: u64,
        pull: u64,
    },
    Fault(Fault),
}

/// A simulated process connected to a node.
#[derive(Debug)]
enum Proc {
    Driver,
    Worker(Box<Worker>),
}

/// One node of the cluster.
struct Node {
    peer: PeerId,
    incarnation: u64,
    spec: NodeSpec,
    core: Option<Core>,
    store: MemStore,
    procs: FxHashMap<ConnId, Proc>,
    /// Last delivery times per connection, each way (sockets are in order).
    to_node_at: FxHashMap<ConnId, Duration>,
    to_client_at: FxHashMap<ConnId, Duration>,
    next_pid: u32,
    pulls: FxHashMap<u64, Pull>,
    next_pull: u64,
    /// The actor each actor worker hosts.
    actor_of: FxHashMap<ConnId, ActorId>,
}

/// The simulated cluster.
pub struct World {
    seed: u64,
    options: Options,
    rng: SmallRng,
    base: Instant,
    now: Duration,
    seq: u64,
    queue: BinaryHeap<Reverse<(Duration, u64)>>,
    events: FxHashMap<u64, Ev>,
    nodes: Vec<Node>,
    net: Net,
    peers: FxHashMap<PeerId, usize>,
    driver: Driver,
    driver_conn: Option<ConnId>,
    /// Refs whose handle the driver's node holds (its `AddRefs` arrived).
    held: FxHashSet<ObjectId>,
    /// Actors that may have lost their state (their host died or was seen gone).
    disturbed: FxHashSet<ActorId>,
    /// Faults injected so far.
    faults: Vec<String>,
    faults_end: Duration,
    trace: Option<Trace>,
    handled: u64,
    /// Cluster-wide listings asked of nodes (as the dashboard does), not answered yet.
    gathers: Vec<Gather>,
    gathers_answered: u64,
}

/// A listing from every peer that node `node` (run `inc`) was asked for at `at`.
#[derive(Debug, Clone, Copy)]
struct Gather {
    node: usize,
    inc: u64,
    id: LookupId,
    at: Duration,
}

/// A node is asked for a cluster-wide listing every this many events.
const GATHER_EVERY: u64 = 256;

/// Simulated time by which the driver must have every answer.
const STUCK_AFTER: Duration = Duration::from_secs(400);
/// Events a run may take (more: something loops without time passing).
const MAX_EVENTS: u64 = 2_000_000;
/// How long the cluster runs on once the driver is done, before the end checks.
const SETTLE: Duration = Duration::from_secs(15);
/// Each node's store: room for what a script keeps alive at once.
const STORE_BYTES: u64 = 1 << 30;
/// How often every node gets the gossip view.
const VIEW_EVERY: Duration = Duration::from_millis(250);

impl World {
    /// A cluster, its workload and its faults, all drawn from `seed`.
    pub fn new(seed: u64, options: Options) -> World {
        let mut rng = SmallRng::seed_from_u64(seed);
        let n = rng.random_range(3..=8);
        let script = Script::generate(&mut rng, n, options.steps);
        let specs = script.nodes.clone();
        let mut w = World {
            seed,
            trace: options.trace.then(|| Trace::new(3000)),
            options,
            rng,
            base: Instant::now(),
            now: Duration::ZERO,
            seq: 0,
            queue: BinaryHeap::new(),
            events: FxHashMap::default(),
            nodes: Vec::new(),
            net: Net::default(),
            peers: FxHashMap::default(),
            driver: Driver::new(script),
            driver_conn: None,
            held: FxHashSet::default(),
            disturbed: FxHashSet::default(),
            faults: Vec::new(),
            faults_end: Duration::ZERO,
            handled: 0,
            gathers: Vec::new(),
            gathers_answered: 0,
        };
        for spec in specs {
            let peer = PeerId::from_rng(&mut w.rng);
            w.peers.insert(peer, w.nodes.len());
            w.nodes.push(Node {
                peer,
                incarnation: 0,
                spec,
                core: None,
                store: MemStore::new(1),
                procs: FxHashMap::default(),
                to_node_at: FxHashMap::default(),
                to_client_at: FxHashMap::default(),
                next_pid: 100,
                pulls: FxHashMap::default(),
                next_pull: 1,
                actor_of: FxHashMap::default(),
            });
        }
        for i in 0..w.nodes.len() {
            w.start_node(i);
        }
        // The driver on node 0.
        let conn = w.core_mut(0).map(Core::open_conn);
        if let Some(conn) = conn {
            w.driver_conn = Some(conn);
            w.nodes[0].procs.insert(conn, Proc::Driver);
            let hello = w.driver.hello();
            w.send_to_node(0, conn, hello);
        }
        w.at(VIEW_EVERY, Ev::View);
        if w.options.faults && w.rng.random_bool(0.8) {
            w.draw_faults();
        }
        w
    }

    /// Run to the end: `Ok` with what happened, or the first thing that went wrong.
    pub fn run(mut self) -> Result<Report, Failure> {
        let mut done_at: Option<Duration> = None;
        while let Some(Reverse((t, seq))) = self.queue.pop() {
            let Some(ev) = self.events.remove(&seq) else {
                continue;
            };
            self.now = t;
            self.handled += 1;
            self.handle(ev)?;
            self.check_gathers()?;
            if self.driver.done && done_at.is_none() {
                done_at = Some(self.now.max(self.faults_end));
            }
            if let Some(d) = done_at
                && self.now >= d + SETTLE
            {
                break;
            }
            if self.handled > MAX_EVENTS {
                return self.fail(format!(
                    "the run never settles: {MAX_EVENTS} events by {:?}",
                    self.now
                ));
            }
            if done_at.is_none() && self.now > STUCK_AFTER {
                let waiting: Vec<String> = self
                    .driver
                    .waiting()
                    .into_iter()
                    .map(|r| self.driver.describe(r))
                    .collect();
                let now = self.instant();
                let tasks: Vec<String> = (0..self.nodes.len())
                    .filter_map(|n| {
                        let core = self.nodes[n].core.as_mut()?;
                        let status = core.driver_query(Query::Status, now);
                        Some(format!("n{n}: {}", status["tasks"]))
                    })
                    .collect();
                return self.fail(format!(
                    "stuck: after {STUCK_AFTER:?} (faults ended at {:?}) the driver still waits \
                     for {}; tasks: {}",
                    self.faults_end,
                    waiting.join(", "),
                    tasks.join("; ")
                ));
            }
        }
        self.final_checks()
    }

    fn fail<T>(&self, what: String) -> Result<T, Failure> {
        Err(Failure {
            seed: self.seed,
            what,
            trace: self
                .trace
                .as_ref()
                .map(|t| t.lines().cloned().collect())
                .unwrap_or_default(),
        })
    }

    fn note(&mut self, node: Option<usize>, what: impl FnOnce() -> String) {
        if let Some(t) = self.trace.as_mut() {
            t.push(self.now, node, what());
        }
    }

    fn at(&mut self, delay: Duration, ev: Ev) {
        self.at_time(self.now + delay, ev);
    }

    fn at_time(&mut self, t: Duration, ev: Ev) {
        self.seq += 1;
        self.events.insert(self.seq, ev);
        self.queue.push(Reverse((t.max(self.now), self.seq)));
    }

    fn instant(&self) -> Instant {
        self.base + self.now
    }

    fn core_mut(&mut self, n: usize) -> Option<&mut Core> {
        self.nodes[n].core.as_mut()
    }

    fn alive(&self, n: usize) -> bool {
        self.nodes[n].core.is_some()
    }

    fn micros(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_micros(self.rng.random_range(lo..hi))
    }

    // ---- nodes ----------------------------------------------------------------------------

    fn start_node(&mut self, n: usize) {
        let incarnation = self.rng.random();
        let seed = self.rng.random();
        let node = &mut self.nodes[n];
        node.incarnation = incarnation;
        node.store = MemStore::new(STORE_BYTES);
        node.procs.clear();
        node.to_node_at.clear();
        node.to_client_at.clear();
        node.pulls.clear();
        node.actor_of.clear();
        let config = CoreConfig {
            node_id: NodeId([n as u8; 16]),
            peer_id: Some(node.peer),
            incarnation,
            seed,
            num_cpus: node.spec.cpus,
            resources: node.spec.resources.clone(),
            gpu_ids: Vec::new(),
            gpu_memory: 0,
            daemon: false,
            store_path: format!("/sim/node{n}").into(),
            store_size: STORE_BYTES,
            pid: 1,
        };
        let mut core = Core::new(config, Box::new(node.store.clone()), self.base + self.now);
        core.start_pool();
        core.handle(
            Event::Joined {
                listen: vec![format!("/sim/{n}")],
                key_fingerprint: "sim".into(),
            },
            self.base + self.now,
        );
        node.core = Some(core);
        self.net.reset_writers_of(n);
        self.drain(n);
    }

    /// Hand node `n` an event happening now, carry out what follows, check it.
    fn core_event(&mut self, n: usize, event: Event) -> Result<(), Failure> {
        let now = self.instant();
        let Some(core) = self.core_mut(n) else {
            return Ok(());
        };
        core.handle(event, now);
        self.drain(n);
        self.check(n)
    }

    fn check(&mut self, n: usize) -> Result<(), Failure> {
        if let Some(core) = self.nodes[n].core.as_ref()
            && let Err(v) = core.check_invariants()
        {
            return self.fail(format!("node {n}: {v}"));
        }
        if n == 0
            && let Some(core) = self.nodes[0].core.as_ref()
            && let Some(id) = self.held.iter().find(|id| !core.knows_object(id))
        {
            let id = *id;
            return self.fail(format!(
                "node 0 freed object {} while the driver holds a handle of it",
                trace::obj(&id)
            ));
        }
        Ok(())
    }

    /// Now and then a node is asked for the state of every peer (a dashboard's
    /// overview); each such gather must be answered by its deadline, with this
    /// node's part first, whatever the network and the peers do meanwhile.
    fn check_gathers(&mut self) -> Result<(), Failure> {
        if self.handled.is_multiple_of(GATHER_EVERY) {
            let n = (self.handled / GATHER_EVERY) as usize % self.nodes.len();
            let (now, inc) = (self.instant(), self.nodes[n].incarnation);
            if let Some(core) = self.core_mut(n) {
                let id = core.driver_gather(Listing::Overview, now);
                self.gathers.push(Gather {
                    node: n,
                    inc,
                    id,
                    at: self.now,
                });
                self.drain(n);
            }
        }
        // A node that crashed or restarted took its gathers with it.
        let nodes = &self.nodes;
        self.gathers
            .retain(|g| nodes[g.node].core.is_some() && nodes[g.node].incarnation == g.inc);
        // The core's timer fires at the deadline; a little slack for the event order.
        let late = GATHER_TIMEOUT + Duration::from_millis(100);
        if let Some(g) = self.gathers.iter().find(|g| self.now > g.at + late) {
            return self.fail(format!(
                "node {} did not answer a cluster-wide listing asked at {:?} by {:?}",
                g.node, g.at, self.now
            ));
        }
        Ok(())
    }

    /// Node `n` answered a gather: it must be one it was asked for, and hold
    /// its own part first.
    fn gather_done(&mut self, n: usize, id: LookupId, answer: &str) {
        let inc = self.nodes[n].incarnation;
        let Some(i) = self
            .gathers
            .iter()
            .position(|g| g.node == n && g.inc == inc && g.id == id)
        else {
            self.driver
                .problems
                .push(format!("node {n} answered a gather nobody asked for"));
            return;
        };
        self.gathers.swap_remove(i);
        self.gathers_answered += 1;
        let me = self.core_mut(n).map(|c| c.node_name());
        let v: serde_json::Value = serde_json::from_str(answer).unwrap_or_default();
        if v["nodes"][0]["node"].as_str() != me.as_deref() {
            self.driver.problems.push(format!(
                "node {n}'s cluster-wide listing lacks its own part: {answer:.200}"
            ));
        }
    }

    /// Carry out the commands node `n`'s core queued.
    fn drain(&mut self, n: usize) {
        loop {
            let Some(c) = self.core_mut(n).and_then(Core::poll_command) else {
                return;
            };
            self.command(n, c);
        }
    }

    fn command(&mut self, n: usize, c: Command) {
        match c {
            Command::Send { conn, msg, .. } => self.send_to_client(n, conn, msg),
            Command::Close { conn } => {
                let at = self.nodes[n]
                    .to_client_at
                    .get(&conn)
                    .copied()
                    .unwrap_or(self.now);
                let inc = self.nodes[n].incarnation;
                self.at_time(at, Ev::Eof { node: n, inc, conn });
            }
            Command::Disconnect { conn, why } => {
                // The sim's processes keep the protocol: this is a bug.
                self.driver
                    .problems
                    .push(format!("node {n} dropped connection {conn}: {why}"));
                self.process_gone(n, conn);
            }
            Command::Stop | Command::Announce { .. } | Command::Print { .. } => {}
            Command::WaitDone { .. } | Command::LookupDone { .. } => {}
            Command::GatherDone { gather, answer } => self.gather_done(n, gather, &answer),
            Command::ToPeer { peer, msg } => self.send_peer(n, peer, msg),
            Command::SpawnWorker { worker, env } => {
                let d = self.micros(1_000, 60_000);
                let inc = self.nodes[n].incarnation;
                self.at(
                    d,
                    Ev::WorkerStart {
                        node: n,
                        inc,
                        worker,
                        env: env.map(|e| e.key),
                    },
                );
            }
            Command::Kill { pid } => {
                let conn = self.nodes[n].procs.iter().find_map(|(c, p)| match p {
                    Proc::Worker(w) if w.pid == pid => Some(*c),
                    _ => None,
                });
                if let Some(conn) = conn {
                    self.note(Some(n), || format!("kill worker pid {pid}"));
                    self.disturb_actor_of(n, conn);
                    self.process_gone(n, conn);
                }
            }
            Command::Interrupt { pid } => {
                let conn = self.nodes[n].procs.iter().find_map(|(c, p)| match p {
                    Proc::Worker(w) if w.pid == pid => Some(*c),
                    _ => None,
                });
                if let Some(conn) = conn {
                    // A signal: it may come before the cancel message is read.
                    let d = self.micros(0, 2_000);
                    let inc = self.nodes[n].incarnation;
                    self.at(
                        d,
                        Ev::Wake {
                            node: n,
                            inc,
                            conn,
                            token: INTERRUPT,
                        },
                    );
                }
            }
            Command::Pull {
                id,
                offset,
                len,
                sources,
                ..
            } => {
                let sources = sources
                    .iter()
                    .filter_map(|p| self.peers.get(p).copied())
                    .collect();
                let node = &mut self.nodes[n];
                let pull = node.next_pull;
                node.next_pull += 1;
                node.pulls.insert(
                    pull,
                    Pull {
                        id,
                        offset,
                        len,
                        sources,
                        strikes: FxHashMap::default(),
                        bad: Vec::new(),
                        failures: Vec::new(),
                        next: 0,
                        asked_at: self.now,
                    },
                );
                let inc = node.incarnation;
                let d = self.micros(100, 2_000);
                self.at(d, Ev::PullStep { node: n, inc, pull });
            }
            Command::Timer { at } => {
                let t = at.saturating_duration_since(self.base);
                let inc = self.nodes[n].incarnation;
                self.at_time(
                    t,
                    Ev::Core {
                        node: n,
                        inc,
                        event: Event::Timer,
                    },
                );
            }
            Command::DeleteSpillFile { path } => self.nodes[n].store.delete_spill_file(&path),
        }
    }

    // ---- processes --------------------------------------------------------------------------

    /// Deliver what `ev` makes on `conn`'s socket, one way or the other: a
    /// little later, and never before what was sent before it that way (a
    /// socket keeps order).
    fn on_socket(
        &mut self,
        n: usize,
        conn: ConnId,
        to_node: bool,
        ev: impl FnOnce(usize, u64) -> Ev,
    ) {
        let d = self.micros(5, 300);
        let node = &mut self.nodes[n];
        let last = if to_node {
            &mut node.to_node_at
        } else {
            &mut node.to_client_at
        };
        let at = (self.now + d).max(last.get(&conn).copied().unwrap_or_default());
        last.insert(conn, at);
        let inc = node.incarnation;
        self.at_time(at, ev(n, inc));
    }

    fn send_to_node(&mut self, n: usize, conn: ConnId, msg: ClientMsg) {
        self.on_socket(n, conn, true, |node, inc| Ev::ToNode {
            node,
            inc,
            conn,
            msg,
        });
    }

    fn send_to_client(&mut self, n: usize, conn: ConnId, msg: NodeMsg) {
        self.on_socket(n, conn, false, |node, inc| Ev::ToClient {
            node,
            inc,
            conn,
            msg,
        });
    }

    /// A process is gone: the node reads what it wrote, then its connection closes.
    fn process_gone(&mut self, n: usize, conn: ConnId) {
        self.nodes[n].procs.remove(&conn);
        let at = self.nodes[n]
            .to_node_at
            .get(&conn)
            .copied()
            .unwrap_or(self.now)
            .max(self.now)
            + Duration::from_micros(50);
        let inc = self.nodes[n].incarnation;
        self.at_time(
            at,
            Ev::Core {
                node: n,
                inc,
                event: Event::Closed { conn },
            },
        );
    }

    /// Run a process's reaction and carry out what it asked for.
    fn run_proc(
        &mut self,
        n: usize,
        conn: ConnId,
        f: impl FnOnce(&mut Proc, &mut Driver, &mut Ctx<'_>),
    ) {
        let Some(mut proc) = self.nodes[n].procs.remove(&conn) else {
            return;
        };
        let mut store = self.nodes[n].store.clone();
        let mut ctx = Ctx {
            now: self.now,
            rng: &mut self.rng,
            store: &mut store,
            out: Vec::new(),
            wake: Vec::new(),
            exit: false,
        };
        f(&mut proc, &mut self.driver, &mut ctx);
        let Ctx {
            out, wake, exit, ..
        } = ctx;
        if let Proc::Worker(w) = &proc
            && let Some((aid, _)) = w.actor
        {
            self.nodes[n].actor_of.insert(conn, aid);
        }
        self.nodes[n].procs.insert(conn, proc);
        for m in out {
            self.send_to_node(n, conn, m);
        }
        let inc = self.nodes[n].incarnation;
        for (d, token) in wake {
            self.at(
                d,
                Ev::Wake {
                    node: n,
                    inc,
                    conn,
                    token,
                },
            );
        }
        if exit {
            self.process_gone(n, conn);
        }
    }

    fn disturb_actor_of(&mut self, n: usize, conn: ConnId) {
        if let Some(a) = self.nodes[n].actor_of.get(&conn) {
            self.disturbed.insert(*a);
        }
    }

    fn disturb_actors_on(&mut self, n: usize) {
        let actors: Vec<ActorId> = self.nodes[n].actor_of.values().copied().collect();
        self.disturbed.extend(actors);
    }

    // ---- events -----------------------------------------------------------------------------

    fn handle(&mut self, ev: Ev) -> Result<(), Failure> {
        match ev {
            Ev::Deliver {
                from,
                to,
                epoch,
                to_inc,
                msg,
            } => {
                if !self.alive(to) || self.nodes[to].incarnation != to_inc {
                    return Ok(());
                }
                if self.net.link(from, to).broken.contains(&epoch) && self.rng.random_bool(0.5) {
                    self.note(Some(to), || {
                        format!("lost from n{from}: {}", trace::peer_msg(&msg))
                    });
                    return Ok(());
                }
                self.note(Some(to), || format!("<- n{from} {}", trace::peer_msg(&msg)));
                let peer = self.nodes[from].peer;
                self.core_event(to, Event::Peer { from: peer, msg })
            }
            Ev::OpenAttempt { from, to, writer } => self.open_attempt(from, to, writer),
            Ev::Core { node, inc, event } => {
                if self.nodes[node].incarnation != inc {
                    return Ok(());
                }
                self.note(Some(node), || event_name(&event));
                self.core_event(node, event)
            }
            Ev::ToNode {
                node,
                inc,
                conn,
                msg,
            } => {
                if self.nodes[node].incarnation != inc {
                    return Ok(());
                }
                if Some(conn) == self.driver_conn && node == 0 {
                    match &msg {
                        ClientMsg::AddRefs { ids } => self.held.extend(ids.iter().copied()),
                        ClientMsg::DecRefs { ids } => {
                            for id in ids {
                                self.held.remove(id);
                            }
                        }
                        _ => {}
                    }
                }
                self.note(Some(node), || {
                    format!("c{conn} -> {}", trace::client_msg(&msg))
                });
                self.core_event(node, Event::Client { conn, msg })
            }
            Ev::ToClient {
                node,
                inc,
                conn,
                msg,
            } => {
                if self.nodes[node].incarnation != inc {
                    return Ok(());
                }
                self.note(Some(node), || {
                    format!("c{conn} <- {}", trace::node_msg(&msg))
                });
                if let NodeMsg::Execute(e) = &msg
                    && e.kind == TaskKind::ActorCreate
                    && let Some(a) = e.actor
                {
                    self.nodes[node].actor_of.insert(conn, a);
                }
                if let (NodeMsg::Execute(e), Some(Proc::Worker(w))) =
                    (&msg, self.nodes[node].procs.get(&conn))
                    && e.kind == TaskKind::Normal
                    && e.runtime_env.as_ref().map(|e| e.key) != w.env
                {
                    return self.fail(format!(
                        "node {node} sent task {} of environment {:?} to a worker started for {:?}",
                        e.name,
                        e.runtime_env.as_ref().map(|e| e.key),
                        w.env
                    ));
                }
                self.run_proc(node, conn, |p, d, ctx| match p {
                    Proc::Driver => d.on_msg(msg, ctx),
                    Proc::Worker(w) => w.on_msg(msg, ctx),
                });
                Ok(())
            }
            Ev::Eof { node, inc, conn } => {
                if self.nodes[node].incarnation == inc && self.nodes[node].procs.contains_key(&conn)
                {
                    self.process_gone(node, conn);
                }
                Ok(())
            }
            Ev::Wake {
                node,
                inc,
                conn,
                token,
            } => {
                if self.nodes[node].incarnation != inc {
                    return Ok(());
                }
                self.run_proc(node, conn, |p, d, ctx| match p {
                    Proc::Driver if token == NEXT_STEP => d.on_wake(ctx),
                    Proc::Driver => {}
                    Proc::Worker(w) if token == INTERRUPT => w.on_interrupt(ctx),
                    Proc::Worker(w) => w.on_wake(ctx),
                });
                Ok(())
            }
            Ev::WorkerStart {
                node,
                inc,
                worker,
                env,
            } => {
                if self.nodes[node].incarnation != inc {
                    return Ok(());
                }
                let Some(conn) = self.core_mut(node).map(Core::open_conn) else {
                    return Ok(());
                };
                let pid = self.nodes[node].next_pid;
                self.nodes[node].next_pid += 1;
                let w = Worker::new(worker, pid, env);
                let hello = w.hello();
                self.nodes[node]
                    .procs
                    .insert(conn, Proc::Worker(Box::new(w)));
                self.send_to_node(node, conn, hello);
                Ok(())
            }
            Ev::View => {
                self.view()?;
                self.at(VIEW_EVERY, Ev::View);
                Ok(())
            }
            Ev::PullStep { node, inc, pull } => {
                if self.nodes[node].incarnation != inc {
                    return Ok(());
                }
                self.pull_step(node, pull)
            }
            Ev::Fault(f) => self.fault(f),
        }
    }

    /// Every live node gets the gossip view: the other live nodes and their loads.
    fn view(&mut self) -> Result<(), Failure> {
        let loads: Vec<Option<PeerView>> = self
            .nodes
            .iter()
            .map(|node| {
                node.core.as_ref().map(|c| PeerView {
                    peer: node.peer,
                    addresses: Vec::new(),
                    load: Some(c.load()),
                    objects: 0,
                    age: Duration::ZERO,
                    link: None,
                    rtt: None,
                })
            })
            .collect();
        for n in 0..self.nodes.len() {
            if !self.alive(n) {
                continue;
            }
            let peers = loads
                .iter()
                .enumerate()
                .filter(|(m, _)| *m != n)
                .filter_map(|(_, v)| v.clone())
                .collect();
            self.core_event(
                n,
                Event::View {
                    listen: Vec::new(),
                    peers,
                    network: Default::default(),
                },
            )?;
        }
        Ok(())
    }

    // ---- the end ----------------------------------------------------------------------------

    fn final_checks(self) -> Result<Report, Failure> {
        if let Some(p) = self.driver.problems.first() {
            return self.fail(p.clone());
        }
        let faulty = !self.faults.is_empty();
        let mut allowed = Vec::new();
        let verdicts = check::results(&self.driver, faulty, &self.disturbed);
        for v in &verdicts {
            match v {
                check::Verdict::Right => {}
                check::Verdict::Allowed(kind, message) => allowed.push((*kind, message.clone())),
                check::Verdict::Wrong(why) => return self.fail(why.clone()),
            }
        }
        for (n, node) in self.nodes.iter().enumerate() {
            let Some(core) = node.core.as_ref() else {
                continue;
            };
            let left = core.work_left();
            if left.busy_workers > 0 || left.waits > 0 || left.pulls > 0 {
                return self.fail(format!(
                    "node {n} still works {SETTLE:?} after the driver is done: {left:?}"
                ));
            }
            let (available, total) = core.resources();
            let mut held = available.clone();
            held.give(&core.actor_resources());
            if held != total {
                return self.fail(format!(
                    "node {n} leaks resources: available {:?} with actors holding {:?}, total {:?}",
                    available.to_map(),
                    core.actor_resources().to_map(),
                    total.to_map()
                ));
            }
            let left = core.objects_left();
            if !left.only_cached() {
                return self.fail(format!(
                    "node {n} still keeps objects {SETTLE:?} after every ref was dropped: {left:?}"
                ));
            }
            let pinned = node.store.stats().num_pinned;
            if pinned > 0 {
                return self.fail(format!(
                    "node {n} still has {pinned} objects pinned at the end"
                ));
            }
        }
        Ok(Report {
            nodes: self.nodes.len(),
            events: self.handled,
            sim_time: self.now,
            refs: self.driver.ids.len(),
            errors_allowed: allowed.len(),
            gathers_answered: self.gathers_answered,
            allowed,
            faults: self.faults.clone(),
            trace: self
                .trace
                .as_ref()
                .map(|t| t.lines().cloned().collect())
                .unwrap_or_default(),
        })
    }
}

fn event_name(e: &Event) -> String {
    match e {
        Event::Timer => "timer".into(),
        Event::Closed { conn } => format!("connection {conn} closed"),
        Event::PeerGone { peer, why } => format!("peer {} gone: {why}", short(peer)),
        Event::Incarnation { peer, incarnation } => {
            format!("peer {} is incarnation {incarnation:x}", short(peer))
        }
        Event::LinkReset { peer } => format!("link to {} reset", short(peer)),
        Event::Peer { msg, .. } => format!("to itself: {}", trace::peer_msg(msg)),
        other => format!("{other:?}").chars().take(80).collect(),
    }
}

fn short(p: &PeerId) -> String {
    let s = p.to_string();
    s[s.len().saturating_sub(6)..].to_string()
}
