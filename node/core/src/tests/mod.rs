//! Tests of the node's core, driven the way the shell drives it: fake
//! connections whose messages are read back from the core's commands, every
//! client message through `Event::Client`, worker ids read from the spawn
//! commands, time moved by hand. The store is a [`MemStore`] the tests can
//! read and write like a worker would.

use std::time::{Duration, Instant};

use rustc_hash::FxHashMap;
use serde_bytes::ByteBuf;

use crate::command::Command;
use crate::config::CoreConfig;
use crate::core::Core;
use crate::event::Event;
use crate::ids::{ActorId, ConnId, FnId, NodeId, ObjectId, PeerId, TaskId, WaitId, WorkerId};
use crate::local::actors::ActorState;
use crate::local::tasks::TaskState;
use crate::store::memory::MemStore;
use crate::wire::local::{
    ActorOptions, ClientMsg, ErrorInfo, ErrorKind, Execution, NodeMsg, Outcome, Query, Reserved,
    Role, TaskKind, TaskSpec, Value,
};
use crate::wire::peer::PeerMsg;

/// Fake worker processes say they are pid 0: the core never asks to kill
/// pids of 1 or below, so killing an actor or force-cancelling a task never
/// signals a real process.
const FAKE_PID: u32 = 0;
const FN_BLOB: &[u8] = b"pickled function";
const CLASS_BLOB: &[u8] = b"pickled class";
/// The store of a test node.
const STORE_BYTES: u64 = 8 << 20;

/// What a connection's message did, as the shell sees it.
#[derive(Debug, PartialEq, Eq)]
enum After {
    Continue,
    /// The core dropped the connection (protocol violation), saying why.
    Close(String),
    /// A control client asked the daemon to stop.
    Shutdown,
}

/// A pull the core asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
struct PullCmd {
    id: ObjectId,
    offset: u64,
    len: u64,
    sources: Vec<PeerId>,
    complete: usize,
}

/// A node's core and what it asked its shell to do.
struct Harness {
    st: Core,
    store: MemStore,
    now: Instant,
    sent: FxHashMap<ConnId, Vec<NodeMsg>>,
    spawned: Vec<WorkerId>,
    /// The runtime environment each spawned worker is for.
    spawned_env: FxHashMap<WorkerId, Option<crate::ids::EnvKey>>,
    timers: Vec<Instant>,
    to_peers: Vec<(PeerId, PeerMsg)>,
    pulls: Vec<PullCmd>,
    kills: Vec<u32>,
    interrupts: Vec<u32>,
    closed: Vec<ConnId>,
    dropped: Vec<(ConnId, String)>,
    stops: usize,
    /// Gets and waits of the embedded driver signalled as over.
    waits_done: Vec<WaitId>,
    /// What the node printed in its own process (stream, text).
    prints: Vec<(u8, String)>,
    /// Cluster-wide listings of the embedded driver that were answered.
    gathers_done: Vec<(crate::ids::LookupId, String)>,
}

fn config(cpus: f64, peer_id: Option<PeerId>) -> CoreConfig {
    CoreConfig {
        node_id: NodeId::random(),
        peer_id,
        incarnation: rand::random(),
        seed: rand::random(),
        num_cpus: cpus,
        resources: Vec::new(),
        gpu_ids: Vec::new(),
        gpu_memory: 0,
        daemon: false,
        store_path: "/test/store".into(),
        store_size: STORE_BYTES,
        pid: 4242,
    }
}

impl Harness {
    fn new(cpus: f64) -> Self {
        Self::with_config(config(cpus, None))
    }

    fn with_config(config: CoreConfig) -> Self {
        let store = MemStore::new(STORE_BYTES);
        let now = Instant::now();
        let st = Core::new(config, Box::new(store.clone()), now);
        Self {
            st,
            store,
            now,
            sent: FxHashMap::default(),
            spawned: Vec::new(),
            spawned_env: FxHashMap::default(),
            timers: Vec::new(),
            to_peers: Vec::new(),
            pulls: Vec::new(),
            kills: Vec::new(),
            interrupts: Vec::new(),
            closed: Vec::new(),
            dropped: Vec::new(),
            stops: 0,
            waits_done: Vec::new(),
            prints: Vec::new(),
            gathers_done: Vec::new(),
        }
    }

    /// Makes this (fresh) node a member of a pretend cluster, as `peer up`
    /// would have started it; returns its peer id.
    fn join(&mut self) -> PeerId {
        let me = PeerId::from_rng(&mut rand::rng());
        let mut c = config(self.st.config.num_cpus, Some(me));
        c.resources = self.st.config.resources.clone();
        c.daemon = self.st.config.daemon;
        *self = Self::with_config(c);
        me
    }

    /// Carry out (record) what the core asked for so far, checking the
    /// core's invariants first.
    fn pump(&mut self) {
        if let Err(v) = self.st.check_invariants() {
            panic!("{v}");
        }
        while let Some(c) = self.st.poll_command() {
            match c {
                Command::Send { conn, msg, .. } => self.sent.entry(conn).or_default().push(msg),
                Command::Close { conn } => self.closed.push(conn),
                Command::Disconnect { conn, why } => self.dropped.push((conn, why.to_string())),
                Command::Stop => self.stops += 1,
                Command::ToPeer { peer, msg } => self.to_peers.push((peer, msg)),
                Command::SpawnWorker { worker, env } => {
                    self.spawned.push(worker);
                    self.spawned_env.insert(worker, env.map(|e| e.key));
                }
                Command::Kill { pid } => self.kills.push(pid),
                Command::Interrupt { pid } => self.interrupts.push(pid),
                Command::Pull {
                    id,
                    offset,
                    len,
                    sources,
                    complete,
                } => self.pulls.push(PullCmd {
                    id,
                    offset,
                    len,
                    sources,
                    complete,
                }),
                Command::Timer { at } => self.timers.push(at),
                Command::DeleteSpillFile { path } => self.store.delete_spill_file(&path),
                Command::WaitDone { wait } => self.waits_done.push(wait),
                Command::Print { stream, data } => self
                    .prints
                    .push((stream, String::from_utf8_lossy(&data).into_owned())),
                Command::GatherDone { gather, answer } => self.gathers_done.push((gather, answer)),
                Command::Announce { .. } | Command::LookupDone { .. } => {}
            }
        }
    }

    /// Hand the core an event happening now.
    fn event(&mut self, e: Event) {
        self.st.handle(e, self.now);
        self.pump();
    }

    /// Move the clock on by `d` and deliver the timer.
    fn advance(&mut self, d: Duration) {
        self.now += d;
        self.event(Event::Timer);
    }

    /// Move the clock on to `at` (if it is later) and deliver the timer.
    fn fire(&mut self, at: Instant) {
        self.now = self.now.max(at);
        self.event(Event::Timer);
    }

    /// Handle one client message; what the shell would do next.
    fn handle(&mut self, conn: ConnId, msg: ClientMsg) -> After {
        self.pump();
        let (dropped, stops) = (self.dropped.len(), self.stops);
        self.event(Event::Client { conn, msg });
        if let Some((_, why)) = self.dropped.get(dropped) {
            return After::Close(why.clone());
        }
        if self.stops > stops {
            return After::Shutdown;
        }
        After::Continue
    }

    /// Register handles of `ids` from `conn`. The real node knows every id
    /// before a handle of it exists (Submit registers return ids, put seals
    /// first); ids the tests make up stand for such objects, so register them
    /// as pending first, as Submit would.
    fn add_refs(&mut self, conn: ConnId, ids: Vec<ObjectId>) {
        for id in &ids {
            self.st.objects.entry(*id);
        }
        self.send(conn, ClientMsg::AddRefs { ids });
    }

    /// A new connection that has not said Hello yet.
    fn connect(&mut self) -> ConnId {
        self.st.open_conn()
    }

    /// Handle a message that must be accepted.
    fn send(&mut self, conn: ConnId, msg: ClientMsg) {
        assert_eq!(self.handle(conn, msg), After::Continue);
    }

    /// Everything the node sent `conn` since the last call.
    fn recv(&mut self, conn: ConnId) -> Vec<NodeMsg> {
        self.pump();
        self.sent.remove(&conn).unwrap_or_default()
    }

    /// Messages to peers since the last call.
    fn peer_msgs(&mut self) -> Vec<(PeerId, PeerMsg)> {
        self.pump();
        std::mem::take(&mut self.to_peers)
    }

    /// Pulls started since the last call.
    fn pulls(&mut self) -> Vec<PullCmd> {
        self.pump();
        std::mem::take(&mut self.pulls)
    }

    /// Times the core asked to be woken at, since the last call.
    fn timers(&mut self) -> Vec<Instant> {
        self.pump();
        std::mem::take(&mut self.timers)
    }

    /// Connect and say Hello; returns the connection and what followed the Welcome.
    fn hello(&mut self, role: Role) -> (ConnId, Vec<NodeMsg>) {
        let c = self.connect();
        self.send(
            c,
            ClientMsg::Hello {
                role,
                pid: FAKE_PID,
            },
        );
        let mut msgs = self.recv(c);
        assert!(
            matches!(msgs.first(), Some(NodeMsg::Welcome { .. })),
            "expected Welcome first, got {msgs:?}"
        );
        msgs.remove(0);
        (c, msgs)
    }

    fn driver(&mut self) -> ConnId {
        let (c, rest) = self.hello(Role::Driver);
        assert!(rest.is_empty());
        c
    }

    /// Worker processes the node asked the spawner for since the last call.
    fn spawned(&mut self) -> Vec<WorkerId> {
        self.pump();
        std::mem::take(&mut self.spawned)
    }

    /// Start the pool and connect every worker of it.
    fn pool(&mut self) -> Vec<(WorkerId, ConnId)> {
        self.st.start_pool();
        let ids = self.spawned();
        assert_eq!(ids.len(), self.st.config.num_cpus.ceil() as usize);
        ids.into_iter()
            .map(|w| {
                let (c, rest) = self.hello(Role::Worker(w));
                assert!(rest.is_empty(), "an idle worker got {rest:?}");
                (w, c)
            })
            .collect()
    }

    fn register(&mut self, conn: ConnId, blob: &[u8]) -> FnId {
        let id = FnId::random();
        self.send(
            conn,
            ClientMsg::RegisterFunction {
                id,
                blob: ByteBuf::from(blob.to_vec()),
            },
        );
        id
    }

    fn submit(&mut self, conn: ConnId, spec: &TaskSpec) {
        self.send(conn, ClientMsg::Submit(Box::new(spec.clone())));
    }

    fn done(&mut self, worker: ConnId, task: TaskId, outcome: Outcome, run_us: u64) {
        self.send(
            worker,
            ClientMsg::TaskDone {
                contained: vec![],
                task,
                outcome,
                run_us,
            },
        );
    }

    fn returns(&mut self, worker: ConnId, task: TaskId, value: Value) {
        self.done(worker, task, Outcome::Returns(vec![value]), 1000);
    }

    /// A get that must be answered at once.
    fn get_now(&mut self, conn: ConnId, ids: &[ObjectId]) -> Vec<Value> {
        self.send(
            conn,
            ClientMsg::Get {
                req: 4242,
                ids: ids.to_vec(),
                timeout_ms: None,
            },
        );
        match &self.recv(conn)[..] {
            [
                NodeMsg::Values {
                    req: 4242,
                    values: Some(v),
                },
            ] => v.clone(),
            other => panic!("expected an immediate answer, got {other:?}"),
        }
    }

    fn available_cpu(&self) -> f64 {
        self.st.available.get("CPU")
    }
}

fn executions(msgs: &[NodeMsg]) -> Vec<Execution> {
    msgs.iter()
        .filter_map(|m| match m {
            NodeMsg::Execute(e) => Some((**e).clone()),
            _ => None,
        })
        .collect()
}

/// The one message in `msgs`, which must be an Execute.
fn one_execution(msgs: &[NodeMsg]) -> Execution {
    match msgs {
        [NodeMsg::Execute(e)] => (**e).clone(),
        other => panic!("expected one Execute, got {other:?}"),
    }
}

fn inline(b: &[u8]) -> Value {
    Value::Inline(ByteBuf::from(b.to_vec()))
}

fn task(fn_id: FnId, deps: Vec<ObjectId>) -> TaskSpec {
    TaskSpec {
        contained: vec![],
        task: TaskId::random(),
        kind: TaskKind::Normal,
        fn_id,
        actor: None,
        method: String::new(),
        name: "f".into(),
        args: inline(b"args"),
        deps,
        num_returns: 1,
        resources: vec![("CPU".into(), 1.0)],
        max_retries: 0,
        retry_exceptions: false,
        actor_options: None,
        runtime_env: None,
    }
}

fn ret(spec: &TaskSpec) -> ObjectId {
    ObjectId::for_return(spec.task, 1)
}

fn actor_spec(class: FnId, name: Option<&str>, max_restarts: i32) -> TaskSpec {
    let actor = ActorId::random();
    TaskSpec {
        kind: TaskKind::ActorCreate,
        actor: Some(actor),
        name: "Counter.__init__".into(),
        actor_options: Some(ActorOptions {
            actor,
            name: name.map(str::to_string),
            class_name: "Counter".into(),
            max_restarts,
            handle_blob: ByteBuf::from(b"actor handle".to_vec()),
            detached: false,
        }),
        ..task(class, vec![])
    }
}

fn method(creation: &TaskSpec, name: &str, deps: Vec<ObjectId>) -> TaskSpec {
    TaskSpec {
        kind: TaskKind::ActorMethod,
        actor: creation.actor,
        method: name.into(),
        name: format!("Counter.{name}"),
        resources: Vec::new(),
        ..task(creation.fn_id, deps)
    }
}

/// Driver `d` asks for actor `create`.
fn create_actor(h: &mut Harness, d: ConnId, create: &TaskSpec) {
    h.send(
        d,
        ClientMsg::CreateActor {
            req: 5,
            spec: Box::new(create.clone()),
        },
    );
}

/// Create actor `create` from driver `d` and run its constructor: its
/// worker and the worker's connection.
fn started_actor(h: &mut Harness, d: ConnId, create: &TaskSpec) -> (WorkerId, ConnId) {
    create_actor(h, d, create);
    h.recv(d);
    let [aw] = h.spawned()[..] else {
        panic!("one worker for the actor")
    };
    let (ac, _) = h.hello(Role::Worker(aw));
    h.returns(ac, create.task, inline(b"None"));
    (aw, ac)
}

fn error_kind(v: &Value) -> Option<ErrorKind> {
    match v {
        Value::Error(e) => Some(e.kind),
        _ => None,
    }
}

fn is_ready(st: &Core, id: &ObjectId) -> bool {
    st.objects.is_ready(id)
}

mod actors;
mod borrows;
mod gather;
mod gets;
mod gpus;
mod infeasible;
mod object_plane;
mod objects;
mod placement;
mod reruns;
mod robustness;
mod runtime_envs;
mod scheduling;
mod tasks;

/// A peer id for a pretend peer.
fn peer() -> PeerId {
    PeerId::from_rng(&mut rand::rng())
}
