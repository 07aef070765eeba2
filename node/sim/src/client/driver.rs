//! The simulated driver: runs a script against node 0 (puts, submissions,
//! actors, cancels, kills, dropped handles) as a Python driver would, then
//! asks for every live ref's value and lets every handle go.

use peer_node_core::ids::{ActorId, FnId, ObjectId, OwnerTag};
use peer_node_core::store::ObjectStore;
use peer_node_core::wire::local::{
    ActorOptions, ClientMsg, ErrorInfo, ErrorKind, INLINE_MAX, NodeMsg, Reserved, Role, TaskKind,
    TaskSpec, Value, args_object_id,
};
use rand::Rng;
use rustc_hash::FxHashMap;
use serde_bytes::ByteBuf;

use super::{Ctx, fn_id, read_value, task_id};
use crate::program::{Expect, Op, Script, Step, Val, encode_args};

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
    /// Actors whose handle it dropped.
    dropped_actors: Vec<bool>,
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
            dropped_actors: vec![false; actors],
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
                // Refs and actor handles nested in the arguments: their ids
                // follow the integers, and the task holds them.
                let contained: Vec<ObjectId> = task
                    .nested
                    .iter()
                    .filter_map(|d| self.ids[*d])
                    .chain(
                        task.nested_actors
                            .iter()
                            .filter_map(|a| self.actors[*a])
                            .map(ObjectId::for_actor),
                    )
                    .collect();
                if task.op == Op::Relay {
                    args = encode_args(&[
                        task.args.first().copied().unwrap_or(0),
                        contained.len() as i64,
                    ]);
                    for c in &contained {
                        args.extend_from_slice(&c.0);
                    }
                }
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
                    contained,
                    num_returns: 1,
                    resources: task.resources.clone(),
                    max_retries: task.max_retries,
                    retry_exceptions: false,
                    actor_options: None,
                    runtime_env: task.env.map(sim_env),
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
                        detached: false,
                    }),
                    runtime_env: None,
                };
                ctx.out.push(ClientMsg::CreateActor {
                    req,
                    spec: Box::new(spec),
                });
                // The handle, as Python's holds it: a ref to the actor's object.
                ctx.out.push(ClientMsg::AddRefs {
                    ids: vec![ObjectId::for_actor(actor)],
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
                    runtime_env: None,
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
            Step::DropActor { a } => {
                if let Some(actor) = self.actors[a] {
                    self.dropped_actors[a] = true;
                    ctx.out.push(ClientMsg::DecRefs {
                        ids: vec![ObjectId::for_actor(actor)],
                    });
                }
            }
            Step::Cancel { r, force } => {
                if let Some(id) = self.ids[r] {
                    self.cancelled[r] = true;
                    ctx.out.push(ClientMsg::Cancel {
                        id,
                        force,
                        recursive: true,
                    });
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
        // Every ref and every actor handle goes: the actors end too.
        let held: Vec<ObjectId> = (0..self.ids.len())
            .filter(|r| !self.dropped[*r])
            .filter_map(|r| self.ids[r])
            .chain(
                self.actors
                    .iter()
                    .flatten()
                    .map(|a| ObjectId::for_actor(*a)),
            )
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

/// Runtime environment `n` of the simulation (workers are matched by its key).
pub fn sim_env(n: u8) -> std::sync::Arc<peer_node_core::wire::local::RuntimeEnv> {
    std::sync::Arc::new(peer_node_core::wire::local::RuntimeEnv {
        key: peer_node_core::ids::EnvKey([n; 16]),
        setup: format!("{{\"sim\": {n}}}"),
    })
}
