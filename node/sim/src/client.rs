//! The processes that talk to a simulated node over its (simulated) socket:
//! workers that run the task language, and the driver that runs a script.
//!
//! Both speak the real local protocol (`ClientMsg` / `NodeMsg`) and follow
//! its rules as the Python client does: values over a message's size go
//! through the store (create, write, seal), stored values a reader gets are
//! released once read, handles are counted (`AddRefs`/`DecRefs`), a worker
//! blocked in `get` waits for its reply.

use std::collections::VecDeque;
use std::time::Duration;

use peer_node_core::ids::{ActorId, FnId, ObjectId, OwnerTag, TaskId, WorkerId};
use peer_node_core::store::ObjectStore;
use peer_node_core::store::memory::MemStore;
use peer_node_core::wire::local::{
    ActorOptions, ClientMsg, ErrorInfo, ErrorKind, Execution, INLINE_MAX, NodeMsg, Outcome,
    Reserved, Role, TaskKind, TaskSpec, Value, args_object_id,
};
use rand::Rng;
use rand::rngs::SmallRng;
use rustc_hash::FxHashMap;
use serde_bytes::ByteBuf;

use crate::program::{Expect, Op, Script, Step, Val, decode_args, encode_args};

/// What a process does in reply to something, for the world to carry out.
pub struct Ctx<'a> {
    pub now: Duration,
    pub rng: &'a mut SmallRng,
    pub store: &'a mut MemStore,
    /// Messages to the node, in order.
    pub out: Vec<ClientMsg>,
    /// Wake the process after this long (with this token).
    pub wake: Vec<(Duration, u64)>,
    /// The process ends (its connection closes).
    pub exit: bool,
}

/// A fresh id owned by `owner`, drawn from the simulation's rng.
pub fn task_id(owner: OwnerTag, rng: &mut SmallRng) -> TaskId {
    let mut b: [u8; 16] = rng.random();
    b[..8].copy_from_slice(&owner.0);
    TaskId(b)
}

/// The function id of an op (what the driver registers it under).
pub fn fn_id(op: Op) -> FnId {
    let mut b = [0u8; 16];
    let name = op.blob();
    b[..name.len().min(16)].copy_from_slice(&name[..name.len().min(16)]);
    FnId(b)
}

/// Read a value the node sent: inline, or from the store (then released).
fn read_value(v: &Value, id: ObjectId, ctx: &mut Ctx<'_>) -> Result<Val, ErrorInfo> {
    match v {
        Value::Inline(b) => Val::decode(b).map_err(|e| ErrorInfo::new(ErrorKind::Task, e)),
        Value::Stored { offset, len } => {
            let bytes = ctx.store.read(*offset, *len);
            ctx.out.push(ClientMsg::Release { ids: vec![id] });
            let bytes = bytes.map_err(|e| ErrorInfo::new(ErrorKind::StoreFull, e.to_string()))?;
            Val::decode(&bytes).map_err(|e| ErrorInfo::new(ErrorKind::Task, e))
        }
        Value::Error(e) => Err(e.clone()),
    }
}

/// A task a worker runs now, and where it is.
#[derive(Debug)]
enum Phase {
    /// Computing; done at the wake-up (with the task's decoded arguments).
    Computing(Result<Val, ErrorInfo>, Vec<i64>),
    /// A nested task waiting for its children (`Get` request `req`);
    /// `digests`: its arguments' part of the result.
    Children {
        req: u64,
        ids: Vec<ObjectId>,
        digests: i64,
    },
    /// Writing a large result: waiting for `Create` request `req`.
    Creating { req: u64, blob: Vec<u8> },
}

/// A simulated worker process.
#[derive(Debug)]
pub struct Worker {
    pub wid: WorkerId,
    pub pid: u32,
    owner: OwnerTag,
    queue: VecDeque<Execution>,
    running: Option<(Execution, Phase)>,
    functions: FxHashMap<FnId, Op>,
    /// The actor it hosts: its id and count.
    pub actor: Option<(ActorId, i64)>,
    next_req: u64,
    registered_add: bool,
}

impl Worker {
    pub fn new(wid: WorkerId, pid: u32) -> Self {
        Self {
            wid,
            pid,
            owner: OwnerTag::default(),
            queue: VecDeque::new(),
            running: None,
            functions: FxHashMap::default(),
            actor: None,
            next_req: 1,
            registered_add: false,
        }
    }

    pub fn hello(&self) -> ClientMsg {
        ClientMsg::Hello {
            role: Role::Worker(self.wid),
            pid: self.pid,
        }
    }

    /// A message from the node.
    pub fn on_msg(&mut self, msg: NodeMsg, ctx: &mut Ctx<'_>) {
        match msg {
            NodeMsg::Welcome { owner_tag, .. } => self.owner = owner_tag,
            NodeMsg::Execute(e) => {
                self.queue.push_back(*e);
                self.start_next(ctx);
            }
            NodeMsg::Revoke { tasks } => self.queue.retain(|e| !tasks.contains(&e.task)),
            NodeMsg::Exit => ctx.exit = true,
            NodeMsg::Values { req, values } => self.children_done(req, values, ctx),
            NodeMsg::Created { req, result } => self.created(req, result, ctx),
            NodeMsg::Output { .. }
            | NodeMsg::Ready { .. }
            | NodeMsg::ActorHandle { .. }
            | NodeMsg::Reply { .. } => {}
        }
    }

    /// The wake-up it asked for: the running task's computation is done.
    pub fn on_wake(&mut self, ctx: &mut Ctx<'_>) {
        let Some((exec, Phase::Computing(result, args))) = self.running.take() else {
            return;
        };
        match (exec.kind, result) {
            (TaskKind::Normal, Ok(Val::Int(digests))) if self.op(&exec) == Some(Op::Nested) => {
                self.submit_children(exec, &args, digests, ctx)
            }
            (_, Ok(v)) => self.finish(exec, Ok(v), ctx),
            (_, Err(e)) => self.finish(exec, Err(e), ctx),
        }
    }

    fn op(&self, exec: &Execution) -> Option<Op> {
        self.functions.get(&exec.fn_id).copied()
    }

    fn start_next(&mut self, ctx: &mut Ctx<'_>) {
        if self.running.is_some() {
            return;
        }
        let Some(exec) = self.queue.pop_front() else {
            return;
        };
        if let Some(b) = &exec.fn_blob
            && let Some(op) = Op::from_blob(b)
        {
            self.functions.insert(exec.fn_id, op);
        }
        let (result, args) = match self.compute(&exec, ctx) {
            Ok((v, args)) => (Ok(v), args),
            Err(e) => (Err(e), Vec::new()),
        };
        let run = Duration::from_micros(ctx.rng.random_range(50..20_000));
        self.running = Some((exec, Phase::Computing(result, args)));
        ctx.wake.push((run, 0));
    }

    /// The task's result (a nested task's here is only its own part), and
    /// its arguments.
    fn compute(
        &mut self,
        exec: &Execution,
        ctx: &mut Ctx<'_>,
    ) -> Result<(Val, Vec<i64>), ErrorInfo> {
        let args_bytes = match &exec.args {
            Value::Inline(b) => b.to_vec(),
            Value::Stored { offset, len } => {
                let bytes = ctx.store.read(*offset, *len);
                ctx.out.push(ClientMsg::Release {
                    ids: vec![args_object_id(exec.task)],
                });
                bytes.map_err(|e| ErrorInfo::new(ErrorKind::StoreFull, e.to_string()))?
            }
            Value::Error(e) => return Err(e.clone()),
        };
        let args = decode_args(&args_bytes[..args_bytes.len() - args_bytes.len() % 8]);
        let mut deps = Vec::new();
        let mut failed = None;
        for (id, v) in exec.dep_ids.iter().zip(&exec.deps) {
            match read_value(v, *id, ctx) {
                Ok(v) => deps.push(v),
                Err(e) => {
                    failed.get_or_insert(e);
                }
            }
        }
        if let Some(e) = failed {
            return Err(e);
        }
        let v = match exec.kind {
            TaskKind::ActorCreate => {
                let aid = exec.actor.unwrap_or(ActorId([0; 16]));
                self.actor = Some((aid, args.first().copied().unwrap_or(0)));
                Val::Int(0)
            }
            TaskKind::ActorMethod => {
                let Some((_, count)) = self.actor.as_mut() else {
                    return Err(ErrorInfo::new(ErrorKind::Task, "no actor in this worker"));
                };
                *count += args.first().copied().unwrap_or(0);
                Val::Int(*count)
            }
            TaskKind::Normal => {
                let op = self.op(exec).ok_or_else(|| {
                    ErrorInfo::new(ErrorKind::Task, "the worker never got the function")
                })?;
                if op == Op::Nested {
                    // The arguments' part; the children's comes later.
                    Val::Int(deps.iter().map(Val::digest).sum())
                } else {
                    op.apply(&args, &deps)
                        .map_err(|m| ErrorInfo::new(ErrorKind::Task, m))?
                }
            }
        };
        Ok((v, args))
    }

    fn submit_children(&mut self, exec: Execution, args: &[i64], digests: i64, ctx: &mut Ctx<'_>) {
        let (base, n) = (
            args.first().copied().unwrap_or(0),
            args.get(1).copied().unwrap_or(0),
        );
        let add = fn_id(Op::Add);
        if !self.registered_add {
            self.registered_add = true;
            ctx.out.push(ClientMsg::RegisterFunction {
                id: add,
                blob: ByteBuf::from(Op::Add.blob().to_vec()),
            });
        }
        let mut ids = Vec::new();
        for i in 0..n {
            let task = task_id(self.owner, ctx.rng);
            ids.push(ObjectId::for_return(task, 1));
            ctx.out.push(ClientMsg::Submit(Box::new(TaskSpec {
                task,
                kind: TaskKind::Normal,
                fn_id: add,
                actor: None,
                method: String::new(),
                name: "child".into(),
                args: Value::Inline(ByteBuf::from(encode_args(&[base + i]))),
                deps: Vec::new(),
                contained: Vec::new(),
                num_returns: 1,
                resources: vec![("CPU".into(), 1.0)],
                max_retries: 3,
                retry_exceptions: false,
                actor_options: None,
            })));
        }
        ctx.out.push(ClientMsg::AddRefs { ids: ids.clone() });
        let req = self.next_req;
        self.next_req += 1;
        ctx.out.push(ClientMsg::Get {
            req,
            ids: ids.clone(),
            timeout_ms: None,
        });
        self.running = Some((exec, Phase::Children { req, ids, digests }));
    }

    fn children_done(&mut self, req: u64, values: Option<Vec<Value>>, ctx: &mut Ctx<'_>) {
        let Some((exec, phase)) = self.running.take() else {
            return;
        };
        let Phase::Children {
            req: want,
            ids,
            digests,
        } = phase
        else {
            self.running = Some((exec, phase));
            return;
        };
        if want != req {
            self.running = Some((
                exec,
                Phase::Children {
                    req: want,
                    ids,
                    digests,
                },
            ));
            return;
        }
        let mut sum = digests;
        let mut failed = None;
        for (v, id) in values.unwrap_or_default().iter().zip(&ids) {
            match read_value(v, *id, ctx) {
                Ok(v) => sum = sum.wrapping_add(v.digest()),
                Err(e) => {
                    failed.get_or_insert(e);
                }
            }
        }
        // The children's handles go with the task.
        ctx.out.push(ClientMsg::DecRefs { ids });
        let result = match failed {
            Some(e) => Err(e),
            None => Ok(Val::Int(sum)),
        };
        self.finish(exec, result, ctx);
    }

    /// Report a task's outcome (a large value goes into the store first).
    fn finish(&mut self, exec: Execution, result: Result<Val, ErrorInfo>, ctx: &mut Ctx<'_>) {
        let outcome = match result {
            Err(e) => Outcome::Failed(e),
            Ok(_) if exec.num_returns == 0 => Outcome::Returns(Vec::new()),
            Ok(v) => {
                let blob = v.encode();
                if blob.len() > INLINE_MAX {
                    let req = self.next_req;
                    self.next_req += 1;
                    ctx.out.push(ClientMsg::Create {
                        req,
                        id: ObjectId::for_return(exec.task, 1),
                        len: blob.len() as u64,
                    });
                    self.running = Some((exec, Phase::Creating { req, blob }));
                    return;
                }
                Outcome::Returns(vec![Value::Inline(ByteBuf::from(blob))])
            }
        };
        self.report(exec, outcome, ctx);
    }

    fn created(&mut self, req: u64, result: Result<Reserved, ErrorInfo>, ctx: &mut Ctx<'_>) {
        let Some((exec, Phase::Creating { req: want, blob })) = self.running.take() else {
            return;
        };
        if want != req {
            self.running = Some((exec, Phase::Creating { req: want, blob }));
            return;
        }
        let outcome = match result {
            Ok(Reserved::Write { offset }) => match ctx.store.write(offset, &blob) {
                Ok(()) => Outcome::Returns(vec![Value::Stored {
                    offset,
                    len: blob.len() as u64,
                }]),
                Err(e) => Outcome::Failed(ErrorInfo::new(ErrorKind::StoreFull, e.to_string())),
            },
            Ok(Reserved::Present { offset, len }) => {
                Outcome::Returns(vec![Value::Stored { offset, len }])
            }
            Err(e) => Outcome::Failed(e),
        };
        self.report(exec, outcome, ctx);
    }

    fn report(&mut self, exec: Execution, outcome: Outcome, ctx: &mut Ctx<'_>) {
        ctx.out.push(ClientMsg::TaskDone {
            task: exec.task,
            outcome,
            run_us: 1000,
            contained: Vec::new(),
        });
        self.start_next(ctx);
    }
}

/// What the driver is waiting for from a request.
#[derive(Debug)]
enum Pending {
    /// A large `put` of ref `r`.
    Put { r: usize, blob: Vec<u8> },
    /// Large arguments of the task that makes ref `r`.
    Args {
        r: usize,
        spec: Box<TaskSpec>,
        blob: Vec<u8>,
    },
    /// The creation of actor `a`.
    Actor { a: usize },
    /// A get of ref `r`.
    Get { r: usize },
}

/// The driver: it runs a script on node 0 and collects every result.
#[derive(Debug)]
pub struct Driver {
    script: Script,
    next_step: usize,
    owner: OwnerTag,
    pub ids: Vec<Option<ObjectId>>,
    actors: Vec<Option<ActorId>>,
    pending: FxHashMap<u64, Pending>,
    next_req: u64,
    /// Each ref's answer, once it came.
    pub results: Vec<Option<Result<Val, ErrorInfo>>>,
    pub dropped: Vec<bool>,
    pub cancelled: Vec<bool>,
    /// The steps are done and every live ref was asked for.
    pub collecting: bool,
    /// Every answer came and every handle was let go.
    pub done: bool,
    /// What went wrong that no answer shows.
    pub problems: Vec<String>,
}

/// The wake-up token that runs the next script step.
pub const NEXT_STEP: u64 = 1;

impl Driver {
    pub fn new(script: Script) -> Self {
        let refs = script.expect.len();
        let actors = script.actors;
        Self {
            script,
            next_step: 0,
            owner: OwnerTag::default(),
            ids: vec![None; refs],
            actors: vec![None; actors],
            pending: FxHashMap::default(),
            next_req: 1,
            results: vec![None; refs],
            dropped: vec![false; refs],
            cancelled: vec![false; refs],
            collecting: false,
            done: false,
            problems: Vec::new(),
        }
    }

    pub fn hello(&self) -> ClientMsg {
        ClientMsg::Hello {
            role: Role::Driver,
            pid: 2,
        }
    }

    pub fn script(&self) -> &Script {
        &self.script
    }

    fn req(&mut self) -> u64 {
        self.next_req += 1;
        self.next_req
    }

    /// A message from the node.
    pub fn on_msg(&mut self, msg: NodeMsg, ctx: &mut Ctx<'_>) {
        match msg {
            NodeMsg::Welcome { owner_tag, .. } => {
                self.owner = owner_tag;
                for op in Op::TASKS.into_iter().chain([Op::Counter]) {
                    ctx.out.push(ClientMsg::RegisterFunction {
                        id: fn_id(op),
                        blob: ByteBuf::from(op.blob().to_vec()),
                    });
                }
                self.schedule_next(ctx);
            }
            NodeMsg::Created { req, result } => self.created(req, result, ctx),
            NodeMsg::Values { req, values } => {
                let Some(Pending::Get { r }) = self.pending.remove(&req) else {
                    return;
                };
                let id = self.ids[r].unwrap_or(ObjectId([0; 20]));
                let result = match values.as_deref() {
                    Some([v]) => read_value(v, id, ctx),
                    _ => Err(ErrorInfo::new(ErrorKind::Task, "a get without its value")),
                };
                self.results[r] = Some(result);
                self.maybe_done(ctx);
            }
            NodeMsg::Reply { req, result } => {
                if let Some(Pending::Actor { a }) = self.pending.remove(&req)
                    && let Err(e) = result
                {
                    self.problems
                        .push(format!("creating actor {a} was refused: {e}"));
                }
            }
            NodeMsg::Exit => ctx.exit = true,
            _ => {}
        }
    }

    fn schedule_next(&mut self, ctx: &mut Ctx<'_>) {
        if self.writing() {
            // Resumed when the store space comes (`created`).
            return;
        }
        match self.script.steps.get(self.next_step) {
            Some((at, _)) => ctx.wake.push((at.saturating_sub(ctx.now), NEXT_STEP)),
            None => self.collect(ctx),
        }
    }

    /// Whether a `put` or a submission waits for its store space (the
    /// Python call has not returned yet: nothing after it happens).
    fn writing(&self) -> bool {
        self.pending
            .values()
            .any(|p| matches!(p, Pending::Put { .. } | Pending::Args { .. }))
    }

    /// The wake-up it asked for: run every step that is due.
    pub fn on_wake(&mut self, ctx: &mut Ctx<'_>) {
        while let Some((at, step)) = self.script.steps.get(self.next_step).cloned() {
            if at > ctx.now || self.writing() {
                break;
            }
            self.next_step += 1;
            self.run(step, ctx);
        }
        self.schedule_next(ctx);
    }

    fn run(&mut self, step: Step, ctx: &mut Ctx<'_>) {
        match step {
            Step::Put { r, val } => {
                let id = ObjectId::for_return(task_id(self.owner, ctx.rng), 0);
                self.ids[r] = Some(id);
                let blob = val.encode();
                if blob.len() > INLINE_MAX {
                    let req = self.req();
                    ctx.out.push(ClientMsg::Create {
                        req,
                        id,
                        len: blob.len() as u64,
                    });
                    self.pending.insert(req, Pending::Put { r, blob });
                } else {
                    ctx.out.push(ClientMsg::PutInline {
                        id,
                        blob: ByteBuf::from(blob),
                        contained: Vec::new(),
                    });
                    ctx.out.push(ClientMsg::AddRefs { ids: vec![id] });
                }
            }
            Step::Submit { r, task } => {
                let tid = task_id(self.owner, ctx.rng);
                let deps: Vec<ObjectId> = task.deps.iter().filter_map(|d| self.ids[*d]).collect();
                let mut args = encode_args(&task.args);
                if args.len() < task.pad_args {
                    args.resize(task.pad_args, 0);
                }
                let spec = TaskSpec {
                    task: tid,
                    kind: TaskKind::Normal,
                    fn_id: fn_id(task.op),
                    actor: None,
                    method: String::new(),
                    name: task.op.name().into(),
                    args: Value::Inline(ByteBuf::new()),
                    deps,
                    contained: Vec::new(),
                    num_returns: 1,
                    resources: task.resources.clone(),
                    max_retries: task.max_retries,
                    retry_exceptions: false,
                    actor_options: None,
                };
                self.ids[r] = Some(ObjectId::for_return(tid, 1));
                if args.len() > INLINE_MAX {
                    let req = self.req();
                    ctx.out.push(ClientMsg::Create {
                        req,
                        id: args_object_id(tid),
                        len: args.len() as u64,
                    });
                    self.pending.insert(
                        req,
                        Pending::Args {
                            r,
                            spec: Box::new(spec),
                            blob: args,
                        },
                    );
                } else {
                    let spec = TaskSpec {
                        args: Value::Inline(ByteBuf::from(args)),
                        ..spec
                    };
                    self.submit(r, spec, ctx);
                }
            }
            Step::CreateActor {
                a,
                init,
                resources,
                max_restarts,
            } => {
                let tid = task_id(self.owner, ctx.rng);
                let mut b: [u8; 16] = ctx.rng.random();
                b[..8].copy_from_slice(&self.owner.0);
                let actor = ActorId(b);
                self.actors[a] = Some(actor);
                let req = self.req();
                let spec = TaskSpec {
                    task: tid,
                    kind: TaskKind::ActorCreate,
                    fn_id: fn_id(Op::Counter),
                    actor: Some(actor),
                    method: "__init__".into(),
                    name: "Counter.__init__".into(),
                    args: Value::Inline(ByteBuf::from(encode_args(&[init]))),
                    deps: Vec::new(),
                    contained: Vec::new(),
                    num_returns: 0,
                    resources,
                    max_retries: 0,
                    retry_exceptions: false,
                    actor_options: Some(ActorOptions {
                        actor,
                        name: None,
                        class_name: "Counter".into(),
                        max_restarts,
                        handle_blob: ByteBuf::from(actor.0.to_vec()),
                    }),
                };
                ctx.out.push(ClientMsg::CreateActor {
                    req,
                    spec: Box::new(spec),
                });
                self.pending.insert(req, Pending::Actor { a });
            }
            Step::Call { r, a, by } => {
                let Some(actor) = self.actors[a] else {
                    return;
                };
                let tid = task_id(self.owner, ctx.rng);
                let spec = TaskSpec {
                    task: tid,
                    kind: TaskKind::ActorMethod,
                    fn_id: FnId([0; 16]),
                    actor: Some(actor),
                    method: "incr".into(),
                    name: "Counter.incr".into(),
                    args: Value::Inline(ByteBuf::from(encode_args(&[by]))),
                    deps: Vec::new(),
                    contained: Vec::new(),
                    num_returns: 1,
                    resources: Vec::new(),
                    max_retries: 0,
                    retry_exceptions: false,
                    actor_options: None,
                };
                self.ids[r] = Some(ObjectId::for_return(tid, 1));
                self.submit(r, spec, ctx);
            }
            Step::Drop { r } => {
                if let Some(id) = self.ids[r] {
                    self.dropped[r] = true;
                    ctx.out.push(ClientMsg::DecRefs { ids: vec![id] });
                }
            }
            Step::Cancel { r, force } => {
                if let Some(id) = self.ids[r] {
                    self.cancelled[r] = true;
                    ctx.out.push(ClientMsg::Cancel { id, force });
                }
            }
            Step::KillActor { a, no_restart } => {
                if let Some(actor) = self.actors[a] {
                    ctx.out.push(ClientMsg::KillActor { actor, no_restart });
                }
            }
        }
    }

    fn submit(&mut self, r: usize, spec: TaskSpec, ctx: &mut Ctx<'_>) {
        let id = ObjectId::for_return(spec.task, 1);
        self.ids[r] = Some(id);
        ctx.out.push(ClientMsg::Submit(Box::new(spec)));
        ctx.out.push(ClientMsg::AddRefs { ids: vec![id] });
    }

    fn created(&mut self, req: u64, result: Result<Reserved, ErrorInfo>, ctx: &mut Ctx<'_>) {
        let Some(p) = self.pending.remove(&req) else {
            return;
        };
        let write = |blob: &[u8], ctx: &mut Ctx<'_>| match result {
            Ok(Reserved::Write { offset }) => ctx
                .store
                .write(offset, blob)
                .map(|()| blob.len() as u64)
                .map(|len| (offset, len))
                .map_err(|e| e.to_string()),
            Ok(Reserved::Present { offset, len }) => Ok((offset, len)),
            Err(e) => Err(e.message),
        };
        match p {
            Pending::Put { r, blob } => match write(&blob, ctx) {
                Ok(_) => {
                    let id = self.ids[r].unwrap_or(ObjectId([0; 20]));
                    ctx.out.push(ClientMsg::Seal {
                        id,
                        contained: Vec::new(),
                    });
                    ctx.out.push(ClientMsg::AddRefs { ids: vec![id] });
                }
                Err(e) => self.results[r] = Some(Err(ErrorInfo::new(ErrorKind::StoreFull, e))),
            },
            Pending::Args { r, spec, blob } => match write(&blob, ctx) {
                Ok((offset, len)) => {
                    let spec = TaskSpec {
                        args: Value::Stored { offset, len },
                        ..*spec
                    };
                    self.submit(r, spec, ctx);
                }
                Err(e) => self.results[r] = Some(Err(ErrorInfo::new(ErrorKind::StoreFull, e))),
            },
            Pending::Actor { .. } | Pending::Get { .. } => {}
        }
        // The call returned: the script goes on.
        self.on_wake(ctx);
    }

    /// Ask for every live ref's value (once every `put` and submission
    /// went out: as in Python, `put` and `f.remote()` return only then).
    fn collect(&mut self, ctx: &mut Ctx<'_>) {
        if self.collecting || self.writing() || self.next_step < self.script.steps.len() {
            return;
        }
        self.collecting = true;
        for r in 0..self.ids.len() {
            let Some(id) = self.ids[r] else { continue };
            if self.dropped[r] || self.results[r].is_some() {
                continue;
            }
            let req = self.req();
            ctx.out.push(ClientMsg::Get {
                req,
                ids: vec![id],
                timeout_ms: None,
            });
            self.pending.insert(req, Pending::Get { r });
        }
        self.maybe_done(ctx);
    }

    fn maybe_done(&mut self, ctx: &mut Ctx<'_>) {
        if !self.collecting
            || self.done
            || self
                .pending
                .values()
                .any(|p| matches!(p, Pending::Get { .. }))
        {
            return;
        }
        self.done = true;
        let held: Vec<ObjectId> = (0..self.ids.len())
            .filter(|r| !self.dropped[*r])
            .filter_map(|r| self.ids[r])
            .collect();
        ctx.out.push(ClientMsg::DecRefs { ids: held });
    }

    /// Refs asked for and not answered yet.
    pub fn waiting(&self) -> Vec<usize> {
        self.pending
            .values()
            .filter_map(|p| match p {
                Pending::Get { r } => Some(*r),
                _ => None,
            })
            .collect()
    }

    /// What ref `r` must come to.
    pub fn expect(&self, r: usize) -> &Expect {
        &self.script.expect[r]
    }

    /// Ref `r` in words: its index, object and what makes it.
    pub fn describe(&self, r: usize) -> String {
        let id = self.ids[r]
            .map(|i| crate::trace::obj(&i))
            .unwrap_or_default();
        let what = self
            .script
            .steps
            .iter()
            .find_map(|(_, s)| match s {
                Step::Put { r: x, .. } if *x == r => Some("put".to_string()),
                Step::Submit { r: x, task } if *x == r => {
                    Some(format!("{} of refs {:?}", task.op.name(), task.deps))
                }
                Step::Call { r: x, a, .. } if *x == r => Some(format!("call of actor {a}")),
                _ => None,
            })
            .unwrap_or_default();
        format!("ref {r} ({id}, {what})")
    }

    /// The id of actor `a`, once created.
    pub fn actor_id(&self, a: usize) -> Option<ActorId> {
        self.actors.get(a).copied().flatten()
    }
}
