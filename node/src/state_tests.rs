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
    ActorOptions, ClientMsg, ErrorInfo, ErrorKind, Execution, NodeMsg, Outcome, Query, Role,
    TaskKind, TaskSpec, Value,
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

#[test]
fn task_without_deps_runs_on_an_idle_worker_and_the_fn_blob_goes_once() {
    let mut h = Harness::new(1.0);
    let d = h.driver();
    let f = h.register(d, FN_BLOB);
    let [(w, wc)] = h.pool()[..] else {
        unreachable!()
    };
    assert_eq!(h.st.idle, vec![w]);

    let a = task(f, vec![]);
    h.submit(d, &a);
    let e = one_execution(&h.recv(wc));
    assert_eq!(e.task, a.task);
    assert_eq!(e.kind, TaskKind::Normal);
    assert_eq!(e.fn_blob.as_deref().map(|b| &b[..]), Some(FN_BLOB));
    assert_eq!(e.args, a.args);
    assert!(e.deps.is_empty() && e.dep_ids.is_empty());
    assert_eq!(e.num_returns, 1);
    assert_eq!(h.st.tasks[&a.task].state, TaskState::Running(w));
    assert_eq!(h.available_cpu(), 0.0);
    assert!(h.st.idle.is_empty());

    h.returns(wc, a.task, inline(b"one"));
    assert_eq!(h.available_cpu(), 1.0);
    assert_eq!(h.st.idle, vec![w]);
    assert!(h.st.tasks.is_empty());
    assert_eq!(h.get_now(d, &[ret(&a)]), vec![inline(b"one")]);

    let b = task(f, vec![]);
    h.submit(d, &b);
    let e = one_execution(&h.recv(wc));
    assert_eq!(e.task, b.task);
    assert_eq!(e.fn_blob, None, "the worker already has the function");
    assert_eq!(h.st.stats.tasks_submitted, 2);
    assert_eq!(h.st.stats.tasks_finished, 1);
    assert!(h.spawned().is_empty(), "no extra worker for a fitting pool");
}

#[test]
fn task_of_an_unregistered_function_fails_and_frees_its_worker() {
    let mut h = Harness::new(1.0);
    let d = h.driver();
    let [(w, wc)] = h.pool()[..] else {
        unreachable!()
    };
    let a = task(FnId::random(), vec![]);
    h.submit(d, &a);
    assert!(h.recv(wc).is_empty(), "nothing to run");
    let v = h.get_now(d, &[ret(&a)]);
    assert_eq!(error_kind(&v[0]), Some(ErrorKind::Task));
    assert_eq!(h.available_cpu(), 1.0);
    assert_eq!(h.st.idle, vec![w]);
}

#[test]
fn dependent_task_runs_after_its_dependency_with_its_value() {
    let mut h = Harness::new(2.0);
    let d = h.driver();
    let f = h.register(d, FN_BLOB);
    let workers = h.pool();
    let a = task(f, vec![]);
    let b = task(f, vec![ret(&a)]);
    h.submit(d, &a);
    h.submit(d, &b);

    let mut ran_a = None;
    for &(_, c) in &workers {
        for e in executions(&h.recv(c)) {
            assert_eq!(e.task, a.task, "b must wait for a");
            ran_a = Some(c);
        }
    }
    let ran_a = ran_a.expect("a was dispatched");
    assert_eq!(h.st.tasks[&b.task].state, TaskState::Waiting);
    assert_eq!(h.st.tasks[&b.task].missing, 1);
    assert_eq!(h.available_cpu(), 1.0, "a waiting task holds no CPU");

    h.returns(ran_a, a.task, inline(b"A"));
    let execs: Vec<Execution> = workers
        .iter()
        .flat_map(|&(_, c)| executions(&h.recv(c)))
        .collect();
    let [e] = &execs[..] else {
        panic!("expected b to run once, got {execs:?}")
    };
    assert_eq!(e.task, b.task);
    assert_eq!(e.dep_ids, vec![ret(&a)]);
    assert_eq!(e.deps, vec![inline(b"A")]);
    // b holds a's value while it runs.
    assert_eq!(h.st.objects[&ret(&a)].holds, 1);
}

#[test]
fn a_task_error_flows_to_dependents_without_running_them() {
    let mut h = Harness::new(1.0);
    let d = h.driver();
    let f = h.register(d, FN_BLOB);
    let [(w, wc)] = h.pool()[..] else {
        unreachable!()
    };
    let a = task(f, vec![]);
    let b = task(f, vec![ret(&a)]);
    let c = task(f, vec![ret(&b)]);
    for t in [&a, &b, &c] {
        h.submit(d, t);
    }
    assert_eq!(one_execution(&h.recv(wc)).task, a.task);

    let boom = ErrorInfo {
        kind: ErrorKind::Task,
        message: "ValueError: boom".into(),
        blob: Some(ByteBuf::from(b"pickled exception".to_vec())),
    };
    h.done(wc, a.task, Outcome::Failed(boom.clone()), 10);
    assert!(h.recv(wc).is_empty(), "neither b nor c may run");
    assert!(h.st.tasks.is_empty());
    assert_eq!(h.st.idle, vec![w]);
    assert_eq!(h.available_cpu(), 1.0);
    let vals = h.get_now(d, &[ret(&a), ret(&b), ret(&c)]);
    assert_eq!(vals, vec![Value::Error(boom.clone()); 3]);

    // A task submitted on an argument that already failed fails at once.
    let late = task(f, vec![ret(&a)]);
    h.submit(d, &late);
    assert!(h.recv(wc).is_empty());
    assert_eq!(h.get_now(d, &[ret(&late)]), vec![Value::Error(boom)]);
    // And one on an argument the node never heard of reads as lost.
    let orphan = task(f, vec![ObjectId::for_put()]);
    h.submit(d, &orphan);
    let v = h.get_now(d, &[ret(&orphan)]);
    assert_eq!(error_kind(&v[0]), Some(ErrorKind::ObjectLost));
}

#[test]
fn num_returns_names_each_return_and_a_wrong_count_is_an_error() {
    let mut h = Harness::new(1.0);
    let d = h.driver();
    let f = h.register(d, FN_BLOB);
    let [(_, wc)] = h.pool()[..] else {
        unreachable!()
    };
    let a = TaskSpec {
        num_returns: 3,
        ..task(f, vec![])
    };
    let ids: Vec<ObjectId> = a.return_ids().collect();
    assert_eq!(
        ids,
        (1..=3)
            .map(|i| ObjectId::for_return(a.task, i))
            .collect::<Vec<_>>()
    );
    assert!(ids.iter().all(|id| id.task() == a.task));
    h.submit(d, &a);
    assert!(ids.iter().all(|id| !is_ready(&h.st, id)));
    assert_eq!(one_execution(&h.recv(wc)).num_returns, 3);
    let vals = vec![inline(b"x"), inline(b"y"), inline(b"z")];
    h.done(wc, a.task, Outcome::Returns(vals.clone()), 10);
    assert_eq!(h.get_now(d, &ids), vals);

    let b = TaskSpec {
        num_returns: 2,
        ..task(f, vec![])
    };
    h.submit(d, &b);
    h.recv(wc);
    h.done(wc, b.task, Outcome::Returns(vec![inline(b"only one")]), 10);
    let bids: Vec<ObjectId> = b.return_ids().collect();
    for v in h.get_now(d, &bids) {
        let Value::Error(e) = v else {
            panic!("expected an error, got {v:?}")
        };
        assert_eq!(e.kind, ErrorKind::Task);
        assert!(e.message.contains("returned 1 values but num_returns is 2"));
    }
}

#[test]
fn get_is_answered_when_ready_and_expires_with_none() {
    let mut h = Harness::new(1.0);
    let d = h.driver();
    let f = h.register(d, FN_BLOB);
    let [(_, wc)] = h.pool()[..] else {
        unreachable!()
    };
    let a = task(f, vec![]);
    h.submit(d, &a);
    h.recv(wc);
    h.send(
        d,
        ClientMsg::Get {
            req: 7,
            ids: vec![ret(&a)],
            timeout_ms: None,
        },
    );
    assert!(h.recv(d).is_empty());
    assert!(
        h.timer_rx.try_recv().is_err(),
        "no deadline without timeout"
    );
    h.returns(wc, a.task, inline(b"A"));
    assert_eq!(
        h.recv(d),
        vec![NodeMsg::Values {
            req: 7,
            values: Some(vec![inline(b"A")])
        }]
    );
    assert!(h.st.waits.is_empty());

    let b = task(f, vec![]);
    h.submit(d, &b);
    h.recv(wc);
    let before = Instant::now();
    h.send(
        d,
        ClientMsg::Get {
            req: 8,
            ids: vec![ret(&a), ret(&b)],
            timeout_ms: Some(50),
        },
    );
    assert!(h.recv(d).is_empty());
    let (deadline, wait) = h.timer_rx.try_recv().expect("a deadline for the timer");
    assert!(deadline >= before + std::time::Duration::from_millis(50));
    h.st.expire_wait(wait);
    assert_eq!(
        h.recv(d),
        vec![NodeMsg::Values {
            req: 8,
            values: None
        }]
    );
    // Expiring twice, or the value arriving later, sends nothing more.
    h.st.expire_wait(wait);
    h.returns(wc, b.task, inline(b"B"));
    assert!(h.recv(d).is_empty());
    assert!(h.st.waits.is_empty());

    // A get with a timeout on ready objects is answered at once, with no timer.
    assert_eq!(
        h.get_now(d, &[ret(&b), ret(&a)]),
        vec![inline(b"B"), inline(b"A")]
    );
    assert!(h.timer_rx.try_recv().is_err());
}

#[test]
fn wait_returns_indices_in_completion_order_and_at_most_num_returns() {
    let mut h = Harness::new(3.0);
    let d = h.driver();
    let f = h.register(d, FN_BLOB);
    let workers = h.pool();
    let specs: Vec<TaskSpec> = (0..3).map(|_| task(f, vec![])).collect();
    let mut runs_on = rustc_hash::FxHashMap::default();
    for s in &specs {
        h.submit(d, s);
        for &(_, c) in &workers {
            for e in executions(&h.recv(c)) {
                runs_on.insert(e.task, c);
            }
        }
    }
    assert_eq!(runs_on.len(), 3);
    let ids: Vec<ObjectId> = specs.iter().map(ret).collect();
    h.send(
        d,
        ClientMsg::Wait {
            req: 1,
            ids: ids.clone(),
            num_returns: 2,
            timeout_ms: None,
        },
    );
    assert!(h.recv(d).is_empty());
    for i in [2, 0, 1] {
        let t = specs[i].task;
        h.returns(runs_on[&t], t, inline(&[i as u8]));
        if i == 2 {
            assert!(h.recv(d).is_empty(), "one of two is not enough");
        }
    }
    assert_eq!(
        h.recv(d),
        vec![NodeMsg::Ready {
            req: 1,
            indices: vec![2, 0]
        }]
    );

    let mut wait_now = |req, num_returns| {
        h.send(
            d,
            ClientMsg::Wait {
                req,
                ids: ids.clone(),
                num_returns,
                timeout_ms: Some(1000),
            },
        );
        h.recv(d)
    };
    assert_eq!(
        wait_now(2, 1),
        vec![NodeMsg::Ready {
            req: 2,
            indices: vec![0]
        }]
    );
    assert_eq!(
        wait_now(3, 10),
        vec![NodeMsg::Ready {
            req: 3,
            indices: vec![0, 1, 2]
        }]
    );

    // A wait that times out returns what was ready by then.
    let late = task(f, vec![]);
    h.submit(d, &late);
    h.send(
        d,
        ClientMsg::Wait {
            req: 4,
            ids: vec![ret(&late), ids[1]],
            num_returns: 2,
            timeout_ms: Some(5),
        },
    );
    assert!(h.recv(d).is_empty());
    let (_, wait) = h.timer_rx.try_recv().expect("deadline");
    h.st.expire_wait(wait);
    assert_eq!(
        h.recv(d),
        vec![NodeMsg::Ready {
            req: 4,
            indices: vec![1]
        }]
    );
}

#[test]
fn worker_death_retries_the_task_then_fails_it_as_crashed() {
    let mut h = Harness::new(1.0);
    let d = h.driver();
    let f = h.register(d, FN_BLOB);
    let [(_, w1c)] = h.pool()[..] else {
        unreachable!()
    };
    let a = TaskSpec {
        max_retries: 1,
        ..task(f, vec![])
    };
    h.submit(d, &a);
    assert_eq!(one_execution(&h.recv(w1c)).task, a.task);

    h.st.conn_closed(w1c);
    assert_eq!(h.st.stats.tasks_retried, 1);
    assert_eq!(h.st.stats.workers_died, 1);
    assert_eq!(h.st.ready, vec![a.task]);
    assert_eq!(h.st.tasks[&a.task].state, TaskState::Queued);
    assert_eq!(h.available_cpu(), 1.0);
    let [w2] = h.spawned()[..] else {
        panic!("the pool replaces its dead worker")
    };
    let (w2c, msgs) = h.hello(Role::Worker(w2));
    let e = one_execution(&msgs);
    assert_eq!(e.task, a.task);
    assert!(e.fn_blob.is_some(), "a new worker needs the function");

    h.st.conn_closed(w2c);
    assert!(h.st.tasks.is_empty());
    assert_eq!(h.st.stats.tasks_retried, 1);
    let v = h.get_now(d, &[ret(&a)]);
    let Value::Error(err) = &v[0] else {
        panic!("expected an error, got {v:?}")
    };
    assert_eq!(err.kind, ErrorKind::WorkerCrashed);
    assert!(err.message.contains("after 1 retries"));
    assert_eq!(h.available_cpu(), 1.0);
    assert_eq!(h.spawned().len(), 1, "replaced again");

    // max_retries -1 retries forever.
    let forever = TaskSpec {
        max_retries: -1,
        ..task(f, vec![])
    };
    h.submit(d, &forever);
    for round in 0..5 {
        let w = h.st.workers.keys().copied().next().expect("a worker");
        let (wc, msgs) = h.hello(Role::Worker(w));
        assert_eq!(one_execution(&msgs).task, forever.task, "round {round}");
        h.st.conn_closed(wc);
        assert_eq!(h.st.ready, vec![forever.task]);
        assert_eq!(h.spawned().len(), 1);
    }
    assert_eq!(h.st.stats.tasks_retried, 6);
}

#[test]
fn a_worker_blocked_in_get_lends_its_cpu_and_takes_it_back() {
    let mut h = Harness::new(1.0);
    let d = h.driver();
    let f = h.register(d, FN_BLOB);
    let [(w1, w1c)] = h.pool()[..] else {
        unreachable!()
    };
    let outer = task(f, vec![]);
    let inner = task(f, vec![]);
    h.submit(d, &outer);
    h.recv(w1c);
    h.submit(d, &inner);
    assert_eq!(h.st.ready, vec![inner.task], "no CPU for the inner task");
    assert!(h.spawned().is_empty(), "the pool is at its size");
    assert_eq!(h.available_cpu(), 0.0);

    // The outer task gets the inner one's result: it blocks and lends its CPU.
    h.send(
        w1c,
        ClientMsg::Get {
            req: 1,
            ids: vec![ret(&inner)],
            timeout_ms: None,
        },
    );
    assert_eq!(h.st.workers[&w1].blocked, 1);
    assert_eq!(h.available_cpu(), 1.0);
    let [w2] = h.spawned()[..] else {
        panic!("a blocked worker allows one more")
    };
    let (w2c, msgs) = h.hello(Role::Worker(w2));
    assert_eq!(one_execution(&msgs).task, inner.task);
    assert_eq!(h.available_cpu(), 0.0);

    h.send(
        d,
        ClientMsg::Query {
            req: 3,
            query: Query::AvailableResources,
        },
    );
    let [
        NodeMsg::Reply {
            req: 3,
            result: Ok(json),
        },
    ] = &h.recv(d)[..]
    else {
        panic!("expected a reply")
    };
    let json: serde_json::Value = serde_json::from_str(json).expect("json");
    assert_eq!(json["CPU"], 0.0);

    h.returns(w2c, inner.task, inline(b"inner"));
    assert_eq!(
        h.recv(w1c),
        vec![NodeMsg::Values {
            req: 1,
            values: Some(vec![inline(b"inner")])
        }]
    );
    assert_eq!(h.st.workers[&w1].blocked, 0);
    assert_eq!(h.available_cpu(), 0.0, "the outer task has its CPU again");
    assert_eq!(h.st.idle, vec![w2]);
    h.returns(w1c, outer.task, inline(b"outer"));
    assert_eq!(h.available_cpu(), 1.0);
}

#[test]
fn nested_gets_lend_the_cpu_once_and_a_timeout_takes_it_back() {
    let mut h = Harness::new(1.0);
    let d = h.driver();
    let f = h.register(d, FN_BLOB);
    let [(w, wc)] = h.pool()[..] else {
        unreachable!()
    };
    let a = task(f, vec![]);
    h.submit(d, &a);
    h.recv(wc);
    let pending = ObjectId::for_put();
    h.add_refs(d, vec![pending]);
    for req in 1..=2 {
        h.send(
            wc,
            ClientMsg::Wait {
                req,
                ids: vec![pending],
                num_returns: 1,
                timeout_ms: Some(10),
            },
        );
    }
    assert_eq!(h.st.workers[&w].blocked, 2);
    assert_eq!(h.available_cpu(), 1.0);
    let (_, first) = h.timer_rx.try_recv().expect("deadline");
    h.st.expire_wait(first);
    assert_eq!(h.st.workers[&w].blocked, 1);
    assert_eq!(h.available_cpu(), 1.0, "still blocked in the other wait");
    h.send(
        d,
        ClientMsg::PutInline {
            contained: vec![],
            id: pending,
            blob: ByteBuf::from(b"v".to_vec()),
        },
    );
    assert_eq!(h.st.workers[&w].blocked, 0);
    assert_eq!(h.available_cpu(), 0.0);
    assert_eq!(
        h.recv(wc),
        vec![
            NodeMsg::Ready {
                req: 1,
                indices: vec![]
            },
            NodeMsg::Ready {
                req: 2,
                indices: vec![0]
            }
        ]
    );
}

#[test]
fn inline_objects_are_freed_with_their_last_handle_and_not_before() {
    let mut h = Harness::new(1.0);
    let d = h.driver();
    let put = |h: &mut Harness, id: ObjectId| {
        h.send(
            d,
            ClientMsg::PutInline {
                contained: vec![],
                id,
                blob: ByteBuf::from(b"v".to_vec()),
            },
        );
    };

    // Two handles: freed with the second DecRefs.
    let p = ObjectId::for_put();
    h.add_refs(d, vec![p, p]);
    put(&mut h, p);
    h.send(d, ClientMsg::DecRefs { ids: vec![p] });
    assert!(is_ready(&h.st, &p));
    h.send(d, ClientMsg::DecRefs { ids: vec![p] });
    assert!(!h.st.objects.contains_key(&p));
    // A later get reads it as lost.
    assert_eq!(
        error_kind(&h.get_now(d, &[p])[0]),
        Some(ErrorKind::ObjectLost)
    );

    // A value that arrives before its first handle is kept.
    let q = ObjectId::for_put();
    put(&mut h, q);
    assert!(is_ready(&h.st, &q));

    // A pending object is not freed when its handles go; it is when its value comes.
    let r = ObjectId::for_put();
    h.add_refs(d, vec![r]);
    h.send(d, ClientMsg::DecRefs { ids: vec![r] });
    assert!(h.st.objects.contains_key(&r));
    put(&mut h, r);
    assert!(!h.st.objects.contains_key(&r));

    // A serialized ref keeps its object.
    let e = ObjectId::for_put();
    h.add_refs(d, vec![e]);
    put(&mut h, e);
    h.send(d, ClientMsg::Escaped { ids: vec![e] });
    h.send(d, ClientMsg::DecRefs { ids: vec![e] });
    assert!(is_ready(&h.st, &e));
}

#[test]
fn task_arguments_are_held_until_the_task_is_over() {
    let mut h = Harness::new(1.0);
    let d = h.driver();
    let f = h.register(d, FN_BLOB);
    let [(_, wc)] = h.pool()[..] else {
        unreachable!()
    };
    let blocker = task(f, vec![]);
    h.submit(d, &blocker);
    h.recv(wc);

    let arg = ObjectId::for_put();
    h.add_refs(d, vec![arg]);
    h.send(
        d,
        ClientMsg::PutInline {
            contained: vec![],
            id: arg,
            blob: ByteBuf::from(b"arg".to_vec()),
        },
    );
    h.add_refs(d, vec![ret(&blocker)]);
    let user = task(f, vec![arg, arg]);
    h.submit(d, &user);
    assert_eq!(h.st.objects[&arg].holds, 2);
    h.send(d, ClientMsg::DecRefs { ids: vec![arg] });
    assert!(is_ready(&h.st, &arg), "held by a queued task");

    h.returns(wc, blocker.task, inline(b"b"));
    let e = one_execution(&h.recv(wc));
    assert_eq!(e.deps, vec![inline(b"arg"), inline(b"arg")]);
    assert!(is_ready(&h.st, &arg), "held by a running task");
    // The task's own return gets a handle, then the task ends.
    h.add_refs(d, vec![ret(&user)]);
    h.returns(wc, user.task, inline(b"u"));
    assert!(!h.st.objects.contains_key(&arg));
    assert!(is_ready(&h.st, &ret(&user)));
    h.send(
        d,
        ClientMsg::DecRefs {
            ids: vec![ret(&user), ret(&blocker)],
        },
    );
    assert!(h.st.objects.is_empty());
}

#[test]
fn stored_objects_are_pinned_per_value_sent_and_freed_after_the_last_release() {
    let mut h = Harness::new(1.0);
    let d = h.driver();
    let empty = h.st.store.stats();
    assert_eq!(empty.used, 0);

    let s = ObjectId::for_put();
    h.send(
        d,
        ClientMsg::Create {
            req: 1,
            id: s,
            len: 1000,
        },
    );
    let [
        NodeMsg::Created {
            req: 1,
            result: Ok(offset),
        },
    ] = h.recv(d)[..]
    else {
        panic!("expected Created")
    };
    assert!(h.st.conns[&d].unsealed.contains(&s));
    assert_eq!(h.st.store.stats().num_objects, 1);
    assert_eq!(h.st.store.stats().pinned_bytes, 0);
    h.add_refs(d, vec![s]);
    h.send(
        d,
        ClientMsg::Seal {
            id: s,
            contained: vec![],
        },
    );
    assert!(h.st.conns[&d].unsealed.is_empty());
    let stored = Value::Stored { offset, len: 1000 };
    assert_eq!(h.get_now(d, &[s]), vec![stored.clone()]);
    assert_eq!(h.get_now(d, &[s]), vec![stored]);
    assert_eq!(h.st.conns[&d].pins[&s], 2);
    let stats = h.st.store.stats();
    assert_eq!(stats.num_pinned, 1);
    assert!(stats.pinned_bytes >= 1000);

    h.send(d, ClientMsg::Release { ids: vec![s] });
    assert_eq!(h.st.conns[&d].pins[&s], 1);
    assert_eq!(h.st.store.stats().num_pinned, 1);
    // The last handle goes while the client still reads it: the store keeps it.
    h.send(d, ClientMsg::DecRefs { ids: vec![s] });
    assert!(!h.st.objects.contains_key(&s));
    assert_eq!(h.st.store.stats().num_objects, 1);
    assert!(!h.st.store.contains(&s), "hidden from new readers");
    h.send(d, ClientMsg::Release { ids: vec![s] });
    assert!(!h.st.conns[&d].pins.contains_key(&s));
    assert_eq!(h.st.store.stats(), empty);
    // Releasing what it does not hold changes nothing.
    h.send(d, ClientMsg::Release { ids: vec![s] });
    assert_eq!(h.st.store.stats(), empty);

    // A closing connection gives back its pins and aborts what it never sealed.
    let t = ObjectId::for_put();
    h.send(
        d,
        ClientMsg::Create {
            req: 2,
            id: t,
            len: 64,
        },
    );
    h.recv(d);
    h.add_refs(d, vec![t]);
    h.send(
        d,
        ClientMsg::Seal {
            id: t,
            contained: vec![],
        },
    );
    let d2 = h.driver();
    h.get_now(d2, &[t]);
    h.get_now(d2, &[t]);
    h.send(
        d2,
        ClientMsg::Create {
            req: 3,
            id: ObjectId::for_put(),
            len: 4096,
        },
    );
    assert_eq!(h.st.store.stats().num_objects, 2);
    assert_eq!(h.st.store.stats().num_pinned, 1);
    h.st.conn_closed(d2);
    assert_eq!(h.st.store.stats().num_pinned, 0);
    assert_eq!(h.st.store.stats().num_objects, 1);
    h.send(d, ClientMsg::DecRefs { ids: vec![t] });
    assert_eq!(h.st.store.stats(), empty);

    // Too large for the store: an error, not a crash.
    h.send(
        d,
        ClientMsg::Create {
            req: 4,
            id: ObjectId::for_put(),
            len: 1 << 40,
        },
    );
    let [
        NodeMsg::Created {
            req: 4,
            result: Err(ref err),
        },
    ] = h.recv(d)[..]
    else {
        panic!("expected an error")
    };
    assert_eq!(err.kind, ErrorKind::StoreFull);
}

#[test]
fn stored_returns_are_sealed_and_pinned_for_the_tasks_that_read_them() {
    let mut h = Harness::new(1.0);
    let d = h.driver();
    let f = h.register(d, FN_BLOB);
    let [(_, wc)] = h.pool()[..] else {
        unreachable!()
    };
    let a = task(f, vec![]);
    let b = task(f, vec![ret(&a)]);
    h.submit(d, &a);
    h.submit(d, &b);
    h.add_refs(d, vec![ret(&a)]);
    h.recv(wc);
    // The worker writes a's large return into the store itself.
    h.send(
        wc,
        ClientMsg::Create {
            req: 1,
            id: ret(&a),
            len: 200_000,
        },
    );
    let [
        NodeMsg::Created {
            result: Ok(offset), ..
        },
    ] = h.recv(wc)[..]
    else {
        panic!("expected Created")
    };
    let stored = Value::Stored {
        offset,
        len: 200_000,
    };
    h.returns(wc, a.task, stored.clone());
    assert!(h.st.conns[&wc].unsealed.is_empty());
    assert!(h.st.store.contains(&ret(&a)));
    let e = one_execution(&h.recv(wc));
    assert_eq!(e.task, b.task);
    assert_eq!(e.deps, vec![stored]);
    assert_eq!(h.st.conns[&wc].pins[&ret(&a)], 1);
    h.returns(wc, b.task, inline(b"b"));
    h.send(d, ClientMsg::DecRefs { ids: vec![ret(&a)] });
    assert!(!h.st.objects.contains_key(&ret(&a)));
    assert_eq!(
        h.st.store.stats().num_objects,
        1,
        "the worker still reads it"
    );
    h.send(wc, ClientMsg::Release { ids: vec![ret(&a)] });
    assert_eq!(h.st.store.stats().num_objects, 0);
    assert_eq!(h.st.store.stats().used, 0);

    // A task that fails after creating its return in the store gives the space back.
    let c = task(f, vec![]);
    h.submit(d, &c);
    h.recv(wc);
    h.send(
        wc,
        ClientMsg::Create {
            req: 2,
            id: ret(&c),
            len: 500,
        },
    );
    h.recv(wc);
    h.done(
        wc,
        c.task,
        Outcome::Failed(ErrorInfo::new(ErrorKind::Task, "late failure")),
        10,
    );
    assert_eq!(h.st.store.stats().used, 0);
}

#[test]
fn actor_methods_run_in_submission_order_pipelined_and_a_waiting_one_holds_back_the_rest() {
    let mut h = Harness::new(2.0);
    let d = h.driver();
    let class = h.register(d, CLASS_BLOB);
    let create = actor_spec(class, None, 0);
    let aid = create.actor.expect("actor id");
    h.send(
        d,
        ClientMsg::CreateActor {
            req: 5,
            spec: Box::new(create.clone()),
        },
    );
    assert_eq!(
        h.recv(d),
        vec![NodeMsg::Reply {
            req: 5,
            result: Ok(String::new())
        }]
    );
    assert_eq!(h.st.actors[&aid].state, ActorState::Creating);
    assert_eq!(h.available_cpu(), 1.0, "the actor holds its CPU");
    let [aw] = h.spawned()[..] else {
        panic!("one worker for the actor")
    };

    let m: Vec<TaskSpec> = (0..3)
        .map(|i| method(&create, &format!("m{i}"), vec![]))
        .collect();
    for s in &m {
        h.submit(d, s);
    }
    let (ac, msgs) = h.hello(Role::Worker(aw));
    let e = one_execution(&msgs);
    assert_eq!(e.kind, TaskKind::ActorCreate);
    assert_eq!(e.task, create.task);
    assert_eq!(e.fn_blob.as_deref().map(|b| &b[..]), Some(CLASS_BLOB));

    h.returns(ac, create.task, inline(b"None"));
    assert_eq!(h.st.actors[&aid].state, ActorState::Alive);
    let execs = executions(&h.recv(ac));
    assert_eq!(
        execs.iter().map(|e| e.task).collect::<Vec<_>>(),
        m.iter().map(|s| s.task).collect::<Vec<_>>(),
        "all three, in order, without waiting for each other"
    );
    assert!(
        execs.iter().all(|e| e.kind == TaskKind::ActorMethod
            && e.fn_blob.is_none()
            && e.actor == Some(aid))
    );
    assert_eq!(execs[1].method, "m1");
    assert_eq!(h.st.actors[&aid].inflight.len(), 3);
    for s in &m {
        h.returns(ac, s.task, inline(s.method.as_bytes()));
    }
    assert!(h.st.actors[&aid].inflight.is_empty());
    assert_eq!(h.get_now(d, &[ret(&m[2])]), vec![inline(b"m2")]);

    // A method waiting for an argument holds back the calls behind it.
    let p = ObjectId::for_put();
    h.add_refs(d, vec![p]);
    let waiting = method(&create, "needs_p", vec![p]);
    let behind = method(&create, "behind", vec![]);
    h.submit(d, &waiting);
    h.submit(d, &behind);
    assert!(h.recv(ac).is_empty());
    assert_eq!(h.st.actors[&aid].queue.len(), 2);
    h.send(
        d,
        ClientMsg::PutInline {
            contained: vec![],
            id: p,
            blob: ByteBuf::from(b"p".to_vec()),
        },
    );
    let execs = executions(&h.recv(ac));
    assert_eq!(
        execs.iter().map(|e| e.task).collect::<Vec<_>>(),
        vec![waiting.task, behind.task]
    );
    assert_eq!(execs[0].deps, vec![inline(b"p")]);
    assert_eq!(h.available_cpu(), 1.0, "methods take no CPU of their own");
}

#[test]
fn actor_death_fails_inflight_calls_and_restarts_while_allowed() {
    let mut h = Harness::new(1.0);
    let d = h.driver();
    let class = h.register(d, CLASS_BLOB);
    let create = actor_spec(class, Some("survivor"), 1);
    let aid = create.actor.expect("actor id");
    h.send(
        d,
        ClientMsg::CreateActor {
            req: 1,
            spec: Box::new(create.clone()),
        },
    );
    h.recv(d);
    let [aw] = h.spawned()[..] else {
        panic!("one actor worker")
    };
    let (ac, _) = h.hello(Role::Worker(aw));
    h.returns(ac, create.task, inline(b"None"));
    assert_eq!(h.available_cpu(), 0.0);

    let m1 = method(&create, "m1", vec![]);
    let m2 = method(&create, "m2", vec![]);
    let p = ObjectId::for_put();
    h.add_refs(d, vec![p]);
    let m3 = method(&create, "m3", vec![p]);
    for s in [&m1, &m2, &m3] {
        h.submit(d, s);
    }
    assert_eq!(executions(&h.recv(ac)).len(), 2);

    h.st.conn_closed(ac);
    for s in [&m1, &m2] {
        let v = h.get_now(d, &[ret(s)]);
        assert_eq!(error_kind(&v[0]), Some(ErrorKind::ActorDied));
    }
    assert!(!is_ready(&h.st, &ret(&m3)), "m3 was never sent: it waits");
    let a = &h.st.actors[&aid];
    assert_eq!(a.state, ActorState::Creating, "restarting");
    assert_eq!(a.restarts_left, 0);
    assert_eq!(a.queue.len(), 1);
    assert_eq!(h.available_cpu(), 0.0, "the restarted actor holds the CPU");
    let [aw2] = h.spawned()[..] else {
        panic!("a new worker for the restart")
    };
    let (ac2, msgs) = h.hello(Role::Worker(aw2));
    let e = one_execution(&msgs);
    assert_eq!(e.task, create.task);
    assert!(e.fn_blob.is_some());
    h.returns(ac2, create.task, inline(b"None"));
    assert_eq!(h.st.actors[&aid].state, ActorState::Alive);
    h.send(
        d,
        ClientMsg::GetActor {
            req: 2,
            name: "survivor".into(),
        },
    );
    assert!(matches!(
        &h.recv(d)[..],
        [NodeMsg::ActorHandle {
            req: 2,
            blob: Some(_)
        }]
    ));

    // No restarts left: the actor is dead, and so is every call still queued.
    h.st.conn_closed(ac2);
    assert!(matches!(
        h.st.actors[&aid].state,
        ActorState::Dead(ErrorInfo {
            kind: ErrorKind::ActorDied,
            ..
        })
    ));
    let v = h.get_now(d, &[ret(&m3)]);
    assert_eq!(error_kind(&v[0]), Some(ErrorKind::ActorDied));
    assert!(h.spawned().is_empty());
    assert_eq!(h.available_cpu(), 1.0);
    assert!(!h.st.named_actors.contains_key("survivor"));
    let late = method(&create, "late", vec![]);
    h.submit(d, &late);
    let v = h.get_now(d, &[ret(&late)]);
    assert_eq!(error_kind(&v[0]), Some(ErrorKind::ActorDied));
    assert!(h.st.tasks.is_empty());
}

#[test]
fn named_actors_are_found_by_name_and_names_are_unique_while_alive() {
    let mut h = Harness::new(2.0);
    let d = h.driver();
    let class = h.register(d, CLASS_BLOB);
    let first = actor_spec(class, Some("counter"), 0);
    h.send(
        d,
        ClientMsg::CreateActor {
            req: 1,
            spec: Box::new(first.clone()),
        },
    );
    assert_eq!(
        h.recv(d),
        vec![NodeMsg::Reply {
            req: 1,
            result: Ok(String::new())
        }]
    );
    let lookup = |h: &mut Harness, name: &str| {
        h.send(
            d,
            ClientMsg::GetActor {
                req: 9,
                name: name.into(),
            },
        );
        match &h.recv(d)[..] {
            [NodeMsg::ActorHandle { req: 9, blob }] => blob.clone(),
            other => panic!("expected an ActorHandle, got {other:?}"),
        }
    };
    assert_eq!(
        lookup(&mut h, "counter").as_deref().map(|b| &b[..]),
        Some(&b"actor handle"[..])
    );
    assert_eq!(lookup(&mut h, "nobody"), None);

    let second = actor_spec(class, Some("counter"), 0);
    h.send(
        d,
        ClientMsg::CreateActor {
            req: 2,
            spec: Box::new(second.clone()),
        },
    );
    let [
        NodeMsg::Reply {
            req: 2,
            result: Err(msg),
        },
    ] = &h.recv(d)[..]
    else {
        panic!("a taken name is an error")
    };
    assert!(msg.contains("already exists"));
    assert!(!h.st.actors.contains_key(&second.actor.expect("id")));
    assert!(!h.st.tasks.contains_key(&second.task));
    assert_eq!(h.spawned().len(), 1, "only the first actor got a worker");

    let aid = first.actor.expect("id");
    h.send(
        d,
        ClientMsg::KillActor {
            actor: aid,
            no_restart: true,
        },
    );
    assert!(matches!(h.st.actors[&aid].state, ActorState::Dead(_)));
    assert_eq!(lookup(&mut h, "counter"), None);
    assert_eq!(h.available_cpu(), 2.0);
    // The creation task never ran: it fails with the actor.
    let v = h.get_now(d, &[ret(&first)]);
    assert_eq!(error_kind(&v[0]), Some(ErrorKind::ActorDied));

    // The name is free again.
    let third = actor_spec(class, Some("counter"), 0);
    h.send(
        d,
        ClientMsg::CreateActor {
            req: 3,
            spec: Box::new(third.clone()),
        },
    );
    assert!(matches!(
        &h.recv(d)[..],
        [NodeMsg::Reply {
            req: 3,
            result: Ok(_)
        }]
    ));
    assert!(lookup(&mut h, "counter").is_some());
}

#[test]
fn cancel_fails_queued_and_waiting_tasks_and_marks_running_ones() {
    let mut h = Harness::new(1.0);
    let d = h.driver();
    let f = h.register(d, FN_BLOB);
    let [(_, wc)] = h.pool()[..] else {
        unreachable!()
    };
    let running = task(f, vec![]);
    let queued = task(f, vec![]);
    let p = ObjectId::for_put();
    h.add_refs(d, vec![p]);
    let waiting = task(f, vec![p]);
    for t in [&running, &queued, &waiting] {
        h.submit(d, t);
    }
    h.recv(wc);
    assert_eq!(h.st.ready, vec![queued.task]);
    assert_eq!(h.st.objects[&p].holds, 1);

    for t in [&queued, &waiting] {
        h.send(
            d,
            ClientMsg::Cancel {
                id: ret(t),
                force: false,
            },
        );
        let v = h.get_now(d, &[ret(t)]);
        assert_eq!(error_kind(&v[0]), Some(ErrorKind::Cancelled));
    }
    assert!(h.st.ready.is_empty());
    assert_eq!(h.st.objects[&p].holds, 0);
    assert!(h.st.objects[&p].dependents.is_empty());

    h.send(
        d,
        ClientMsg::Cancel {
            id: ret(&running),
            force: false,
        },
    );
    assert!(h.st.tasks[&running.task].cancelled);
    h.returns(wc, running.task, inline(b"too late"));
    let v = h.get_now(d, &[ret(&running)]);
    assert_eq!(error_kind(&v[0]), Some(ErrorKind::Cancelled));
    assert!(h.st.tasks.is_empty());
    assert_eq!(h.available_cpu(), 1.0);
    // Cancelling what is over, or unknown, does nothing.
    h.send(
        d,
        ClientMsg::Cancel {
            id: ret(&running),
            force: true,
        },
    );
    h.send(
        d,
        ClientMsg::Cancel {
            id: ObjectId::for_put(),
            force: true,
        },
    );
    assert!(h.recv(wc).is_empty());
}

/// Run three tasks of `f` one after the other, each reported at `run_us`.
fn teach_run_time(h: &mut Harness, d: ConnId, wc: ConnId, f: FnId, run_us: u64) {
    for _ in 0..3 {
        let t = task(f, vec![]);
        h.submit(d, &t);
        assert_eq!(one_execution(&h.recv(wc)).task, t.task);
        h.done(wc, t.task, Outcome::Returns(vec![inline(b"r")]), run_us);
    }
}

#[test]
fn short_tasks_are_pipelined_to_busy_workers_and_revoked_when_they_block() {
    let mut h = Harness::new(1.0);
    let d = h.driver();
    let f = h.register(d, FN_BLOB);
    let [(w1, w1c)] = h.pool()[..] else {
        unreachable!()
    };
    teach_run_time(&mut h, d, w1c, f, 50);
    assert_eq!(h.st.fn_run_us[&f].1, 3);
    assert!(h.st.fn_run_us[&f].0 < 200.0);

    let t: Vec<TaskSpec> = (0..4).map(|_| task(f, vec![])).collect();
    for s in &t[..3] {
        h.submit(d, s);
    }
    let sent: Vec<TaskId> = executions(&h.recv(w1c)).iter().map(|e| e.task).collect();
    assert_eq!(sent, vec![t[0].task, t[1].task, t[2].task]);
    assert!(h.st.ready.is_empty());
    assert_eq!(h.st.workers[&w1].queued.len(), 2);
    assert_eq!(h.available_cpu(), 0.0, "queued tasks hold nothing extra");
    assert!(h.spawned().is_empty());

    // The first finishes: the next queued one inherits its slot.
    h.done(w1c, t[0].task, Outcome::Returns(vec![inline(b"0")]), 50);
    assert_eq!(h.st.workers[&w1].busy, Some(t[1].task));
    assert!(h.st.idle.is_empty());
    assert_eq!(h.available_cpu(), 0.0);
    h.submit(d, &t[3]);
    assert_eq!(one_execution(&h.recv(w1c)).task, t[3].task);

    // The running one blocks in get: the queued ones come back.
    let p = ObjectId::for_put();
    h.add_refs(d, vec![p]);
    h.send(
        w1c,
        ClientMsg::Get {
            req: 1,
            ids: vec![p],
            timeout_ms: None,
        },
    );
    assert_eq!(
        h.recv(w1c),
        vec![NodeMsg::Revoke {
            tasks: vec![t[2].task, t[3].task]
        }]
    );
    assert_eq!(h.st.ready, vec![t[2].task, t[3].task]);
    assert!(h.st.workers[&w1].queued.is_empty());
    assert!(
        [&t[2], &t[3]]
            .iter()
            .all(|s| h.st.tasks[&s.task].state == TaskState::Queued)
    );
    assert_eq!(h.available_cpu(), 1.0);
    let [w2] = h.spawned()[..] else {
        panic!("a worker to replace the blocked one")
    };
    let (w2c, msgs) = h.hello(Role::Worker(w2));
    let execs: Vec<TaskId> = executions(&msgs).iter().map(|e| e.task).collect();
    assert_eq!(execs, vec![t[2].task, t[3].task], "run and pipelined there");

    // The get returns: the blocked task takes its CPU again, for a while oversubscribed.
    h.send(
        d,
        ClientMsg::PutInline {
            contained: vec![],
            id: p,
            blob: ByteBuf::from(b"p".to_vec()),
        },
    );
    assert!(matches!(&h.recv(w1c)[..], [NodeMsg::Values { req: 1, .. }]));
    assert_eq!(h.available_cpu(), -1.0);
    h.returns(w1c, t[1].task, inline(b"1"));
    h.returns(w2c, t[2].task, inline(b"2"));
    h.returns(w2c, t[3].task, inline(b"3"));
    assert_eq!(h.available_cpu(), 1.0);
    assert!(h.st.tasks.is_empty());
}

#[test]
fn pipelining_depth_follows_the_function_run_time() {
    let mut h = Harness::new(1.0);
    let d = h.driver();
    let medium = h.register(d, FN_BLOB);
    let unknown = h.register(d, b"another function");
    let [(w, wc)] = h.pool()[..] else {
        unreachable!()
    };
    teach_run_time(&mut h, d, wc, medium, 500);

    // Under 1 ms: one task queued behind the running one.
    let t: Vec<TaskSpec> = (0..3).map(|_| task(medium, vec![])).collect();
    for s in &t {
        h.submit(d, s);
    }
    assert_eq!(executions(&h.recv(wc)).len(), 2);
    assert_eq!(h.st.ready, vec![t[2].task]);
    for s in &t {
        h.returns(wc, s.task, inline(b"r"));
    }
    h.recv(wc);
    assert_eq!(h.st.idle, vec![w]);

    // A function never timed is never queued behind anything.
    let u: Vec<TaskSpec> = (0..2).map(|_| task(unknown, vec![])).collect();
    for s in &u {
        h.submit(d, s);
    }
    assert_eq!(executions(&h.recv(wc)).len(), 1);
    assert_eq!(h.st.ready, vec![u[1].task]);
}

#[test]
fn protocol_violations_close_the_connection() {
    let mut h = Harness::new(1.0);
    let closes = |a: After| matches!(a, After::Close(_));

    let c = h.connect();
    let a =
        h.st.handle(c, ClientMsg::Submit(Box::new(task(FnId::random(), vec![]))));
    assert!(
        matches!(&a, After::Close(m) if m.contains("expected Hello")),
        "{a:?}"
    );
    assert!(h.st.tasks.is_empty());

    let d = h.driver();
    assert!(closes(h.st.handle(
        d,
        ClientMsg::TaskDone {
            contained: vec![],
            task: TaskId::random(),
            outcome: Outcome::Returns(vec![]),
            run_us: 1,
        }
    )));
    assert_eq!(
        h.st.handle(
            d,
            ClientMsg::Hello {
                role: Role::Driver,
                pid: FAKE_PID
            }
        ),
        After::Close("second Hello".into())
    );
    assert!(closes(h.st.handle(d, ClientMsg::Shutdown)));

    let c = h.connect();
    assert!(closes(h.st.handle(
        c,
        ClientMsg::Hello {
            role: Role::Worker(WorkerId::random()),
            pid: FAKE_PID
        }
    )));
    let [(w, _)] = h.pool()[..] else {
        unreachable!()
    };
    let c = h.connect();
    assert!(closes(h.st.handle(
        c,
        ClientMsg::Hello {
            role: Role::Worker(w),
            pid: FAKE_PID
        }
    )));

    let (ctl, _) = h.hello(Role::Control);
    assert!(closes(h.st.handle(
        ctl,
        ClientMsg::AddRefs {
            ids: vec![ObjectId::for_put()]
        }
    )));
    h.send(
        ctl,
        ClientMsg::Query {
            req: 1,
            query: Query::Status,
        },
    );
    assert!(matches!(
        &h.recv(ctl)[..],
        [NodeMsg::Reply {
            req: 1,
            result: Ok(_)
        }]
    ));
    assert!(closes(h.st.handle(ctl, ClientMsg::Shutdown)));
    h.st.config.daemon = true;
    assert_eq!(h.st.handle(ctl, ClientMsg::Shutdown), After::Shutdown);
    assert!(closes(h.st.handle(d, ClientMsg::Shutdown)));
}

/// Messages of every kind, to mutate.
fn sample_messages() -> Vec<ClientMsg> {
    let spec = task(FnId::random(), vec![ObjectId::for_put()]);
    let class = FnId::random();
    let create = actor_spec(class, Some("a"), 2);
    let id = ObjectId::for_put();
    vec![
        ClientMsg::Hello {
            role: Role::Worker(WorkerId::random()),
            pid: 12,
        },
        ClientMsg::RegisterFunction {
            id: FnId::random(),
            blob: ByteBuf::from(vec![1, 2, 3]),
        },
        ClientMsg::Submit(Box::new(spec.clone())),
        ClientMsg::Submit(Box::new(method(&create, "m", vec![id]))),
        ClientMsg::CreateActor {
            req: 1,
            spec: Box::new(create),
        },
        ClientMsg::Get {
            req: 2,
            ids: vec![id, id],
            timeout_ms: Some(5),
        },
        ClientMsg::Wait {
            req: 3,
            ids: vec![id],
            num_returns: 1,
            timeout_ms: None,
        },
        ClientMsg::Create {
            req: 4,
            id,
            len: 64,
        },
        ClientMsg::Seal {
            id,
            contained: vec![],
        },
        ClientMsg::PutInline {
            contained: vec![],
            id,
            blob: ByteBuf::from(vec![9; 10]),
        },
        ClientMsg::Release { ids: vec![id] },
        ClientMsg::AddRefs { ids: vec![id] },
        ClientMsg::DecRefs { ids: vec![id] },
        ClientMsg::Escaped { ids: vec![id] },
        ClientMsg::TaskDone {
            contained: vec![],
            task: spec.task,
            outcome: Outcome::Failed(ErrorInfo::new(ErrorKind::Task, "x")),
            run_us: 3,
        },
        ClientMsg::Cancel { id, force: false },
        ClientMsg::KillActor {
            actor: ActorId::random(),
            no_restart: true,
        },
        ClientMsg::GetActor {
            req: 5,
            name: "a".into(),
        },
        ClientMsg::Query {
            req: 6,
            query: Query::Nodes,
        },
        ClientMsg::Shutdown,
    ]
}

/// `msg`'s encoding with one to three random byte edits, flips, cuts or additions.
fn mutate(rng: &mut StdRng, msg: &ClientMsg) -> Vec<u8> {
    let mut bytes = postcard::to_stdvec(msg).expect("encode");
    for _ in 0..rng.random_range(1..4) {
        match rng.random_range(0..3) {
            0 => {
                let i = rng.random_range(0..bytes.len());
                bytes[i] = rng.random();
            }
            1 => bytes.truncate(rng.random_range(0..bytes.len())),
            _ => bytes.push(rng.random()),
        }
        if bytes.is_empty() {
            break;
        }
    }
    bytes
}

#[test]
fn decoding_random_and_mutated_bytes_never_panics() {
    let mut rng = StdRng::seed_from_u64(0x5eed);
    let mut decoded = 0;
    for _ in 0..4000 {
        let len = rng.random_range(0..96);
        let bytes: Vec<u8> = (0..len).map(|_| rng.random()).collect();
        decoded += usize::from(codec::decode::<ClientMsg>(&bytes).is_ok());
    }
    let samples = sample_messages();
    for _ in 0..4000 {
        let pick = rng.random_range(0..samples.len());
        let bytes = mutate(&mut rng, &samples[pick]);
        decoded += usize::from(codec::decode::<ClientMsg>(&bytes).is_ok());
    }
    // Some inputs are valid messages, most are not; none may panic.
    assert!(decoded > 0 && decoded < 8000, "decoded {decoded}");
    for msg in &samples {
        let bytes = postcard::to_stdvec(msg).expect("encode");
        assert_eq!(&codec::decode::<ClientMsg>(&bytes).expect("decode"), msg);
    }
}

#[test]
fn mangled_but_decodable_messages_never_panic_the_state() {
    let mut rng = StdRng::seed_from_u64(0xfeed);
    let mut h = Harness::new(2.0);
    let d = h.driver();
    h.register(d, FN_BLOB);
    let mut conns: Vec<ConnId> = vec![d];
    conns.extend(h.pool().into_iter().map(|(_, c)| c));
    let samples = sample_messages();
    let mut handled = 0;
    let mut closed = 0;
    for _ in 0..3000 {
        let pick = rng.random_range(0..samples.len());
        let bytes = mutate(&mut rng, &samples[pick]);
        let Ok(msg) = codec::decode::<ClientMsg>(&bytes) else {
            continue;
        };
        if matches!(msg, ClientMsg::Hello { .. }) {
            continue;
        }
        let slot = rng.random_range(0..conns.len());
        let conn = conns[slot];
        handled += 1;
        if let After::Continue = h.st.handle(conn, msg) {
            decode_frames(&h.st.conns[&conn].outbox.take_queued());
        } else {
            // As the server does: the connection goes, a new client comes.
            closed += 1;
            h.st.conn_closed(conn);
            conns[slot] = h.driver();
        }
        for w in h.spawned() {
            let (c, _) = h.hello(Role::Worker(w));
            conns.push(c);
        }
    }
    assert!(handled > 500, "only {handled} messages got through");
    assert!(closed > 0 && closed < handled);
    // The node still answers.
    let d2 = h.driver();
    let id = ObjectId::for_put();
    h.send(
        d2,
        ClientMsg::PutInline {
            contained: vec![],
            id,
            blob: ByteBuf::from(b"still here".to_vec()),
        },
    );
    assert_eq!(h.get_now(d2, &[id]), vec![inline(b"still here")]);
}
