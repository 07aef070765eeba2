//! Tests of the node's state machine ([`State`]), driven the way the socket
//! server drives it: fake connections whose outboxes are read back and
//! decoded, every client message through [`State::handle`], worker ids read
//! from the spawn channel, get/wait deadlines from the timer channel.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use peer_objstore::{Arena, Store};
use rand::{Rng, SeedableRng, rngs::StdRng};
use serde_bytes::ByteBuf;
use tokio::sync::mpsc;

use crate::codec;
use crate::config::NodeConfig;
use crate::handle::After;
use crate::ids::{ActorId, FnId, NodeId, ObjectId, TaskId, WorkerId};
use crate::outbox::Outbox;
use crate::protocol::{
    ActorOptions, ClientMsg, ErrorInfo, ErrorKind, Execution, NodeMsg, Outcome, Query, Reserved,
    Role, TaskKind, TaskSpec, Value,
};
use crate::state::{ActorState, Conn, ConnId, ObjState, SpawnRequest, State, TaskState, WaitId};

/// Fake worker processes say they are pid 0: `kill_process` ignores pids <= 1,
/// so killing an actor or force-cancelling a task never signals a real process.
const FAKE_PID: u32 = 0;
const FN_BLOB: &[u8] = b"pickled function";
const CLASS_BLOB: &[u8] = b"pickled class";

/// A node's state with the ends of its spawn and timer channels.
struct Harness {
    st: State,
    spawn_rx: mpsc::UnboundedReceiver<SpawnRequest>,
    timer_rx: mpsc::UnboundedReceiver<(Instant, WaitId)>,
    /// Dropped after `st`, whose arena unlinks its file on drop.
    _dir: tempfile::TempDir,
}

fn unique_arena_name() -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "peer-node-state-test-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

impl Harness {
    /// Register handles of `ids` from `conn`. The real node knows every id
    /// before a handle of it exists (Submit registers return ids, put seals
    /// first); ids the tests make up stand for such objects, so register them
    /// as pending first, as Submit would.
    fn add_refs(&mut self, conn: ConnId, ids: Vec<ObjectId>) {
        for id in &ids {
            self.st
                .objects
                .entry(*id)
                .or_insert_with(crate::state::ObjectEntry::pending);
        }
        self.send(conn, ClientMsg::AddRefs { ids });
    }

    fn new(cpus: f64) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut config = NodeConfig::new(dir.path().to_path_buf());
        config.num_cpus = cpus;
        let arena = Arena::create(&unique_arena_name(), 8 << 20, dir.path()).expect("arena");
        let (spawn_tx, spawn_rx) = mpsc::unbounded_channel();
        let (timer_tx, timer_rx) = mpsc::unbounded_channel();
        let st = State::new(
            NodeId::random(),
            config,
            Store::new(arena),
            spawn_tx,
            timer_tx,
        );
        Self {
            st,
            spawn_rx,
            timer_rx,
            _dir: dir,
        }
    }

    /// A new connection that has not said Hello yet.
    fn connect(&mut self) -> ConnId {
        let id = self.st.next_conn;
        self.st.next_conn += 1;
        self.st.conns.insert(
            id,
            Conn {
                outbox: Arc::new(Outbox::new(None)),
                role: None,
                pid: 0,
                pins: Default::default(),
                unsealed: Default::default(),
                refs: Default::default(),
            },
        );
        id
    }

    /// Handle a message that must be accepted.
    fn send(&mut self, conn: ConnId, msg: ClientMsg) {
        assert_eq!(self.st.handle(conn, msg), After::Continue);
    }

    /// Everything the node queued for `conn` since the last call.
    fn recv(&self, conn: ConnId) -> Vec<NodeMsg> {
        let bytes = self.st.conns[&conn].outbox.take_queued();
        decode_frames(&bytes)
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
        let mut out = Vec::new();
        while let Ok(r) = self.spawn_rx.try_recv() {
            out.push(r.worker);
        }
        out
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

fn decode_frames(mut bytes: &[u8]) -> Vec<NodeMsg> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let (header, rest) = bytes.split_at(4);
        let len = codec::check_len(header.try_into().expect("4 bytes")).expect("frame length");
        out.push(codec::decode(&rest[..len]).expect("a NodeMsg"));
        bytes = &rest[len..];
    }
    out
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

fn error_kind(v: &Value) -> Option<ErrorKind> {
    match v {
        Value::Error(e) => Some(e.kind),
        _ => None,
    }
}

fn is_ready(st: &State, id: &ObjectId) -> bool {
    st.objects
        .get(id)
        .is_some_and(|e| matches!(e.state, ObjState::Ready(_)))
}

/// Makes `h` a member of a pretend cluster: returns what it sends to peers
/// and the pulls it starts.
fn join_cluster(
    h: &mut Harness,
) -> (
    mpsc::UnboundedReceiver<(peer_gossip::PeerId, crate::peer_msg::PeerMsg)>,
    mpsc::UnboundedReceiver<crate::pull::PullJob>,
) {
    let (tx, rx) = mpsc::unbounded_channel();
    let (jobs_tx, jobs_rx) = mpsc::unbounded_channel();
    h.st.remote.out = Some(tx);
    h.st.remote.pull_jobs = Some(jobs_tx);
    let me = peer_gossip::PeerId::random();
    h.st.remote.me = Some(me);
    h.st.owner_tag = crate::ids::OwnerTag::of_peer(&me);
    (rx, jobs_rx)
}

/// Everything queued on `rx` now.
fn drain<T>(rx: &mut mpsc::UnboundedReceiver<T>) -> Vec<T> {
    std::iter::from_fn(|| rx.try_recv().ok()).collect()
}

mod actors;
mod object_plane;
mod objects;
mod placement;
mod reruns;
mod robustness;
mod scheduling;
mod tasks;
