//! A simulated worker process: runs the task language's ops, nested tasks
//! (submitting children and blocking in `get`), and counter actors; large
//! results go into the store before they are reported.

use std::collections::VecDeque;
use std::time::Duration;

use peer_node_core::ids::{ActorId, EnvKey, FnId, ObjectId, OwnerTag, TaskId, WorkerId};
use peer_node_core::store::ObjectStore;
use peer_node_core::wire::local::{
    ClientMsg, ErrorInfo, ErrorKind, Execution, INLINE_MAX, NodeMsg, Outcome, Reserved, Role,
    TaskKind, TaskSpec, Value, args_object_id,
};
use rand::Rng;
use rustc_hash::FxHashMap;
use serde_bytes::ByteBuf;

use super::{Ctx, fn_id, read_value, task_id};
use crate::program::{Op, Val, decode_args, encode_args};

/// The wake-up token of the node's interrupt signal (see [`Worker::on_interrupt`]).
pub const INTERRUPT: u64 = 2;

/// A task a worker runs now, and where it is.
#[derive(Debug)]
enum Phase {
    /// Computing; done at the wake-up (with the task's decoded arguments).
    Computing(Result<Val, ErrorInfo>, Vec<i64>),
    /// A nested task waiting for its children (`Get` request `req`);
    /// `digests`: its arguments' part of the result. A `Relay` waits for its
    /// nested refs' values the same way; `held`: the refs it holds (the
    /// nested ones, actor handles too), which its result keeps.
    Children {
        req: u64,
        ids: Vec<ObjectId>,
        digests: i64,
        held: Vec<ObjectId>,
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
    /// The refs nested in the running `Relay`'s arguments.
    nested: Vec<ObjectId>,
    /// Cancels of the running task, for the interrupt signal to find.
    cancels: Vec<TaskId>,
    /// It said `Retire`: it waits for the node's word to exit.
    retiring: bool,
    /// The runtime environment it was started for.
    pub env: Option<EnvKey>,
}

/// How often a task worker retires after a task (as `max_calls` makes it).
const RETIRE_CHANCE: f64 = 0.03;

impl Worker {
    pub fn new(wid: WorkerId, pid: u32, env: Option<EnvKey>) -> Self {
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
            nested: Vec::new(),
            cancels: Vec::new(),
            retiring: false,
            env,
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
            NodeMsg::Execute(_) if self.retiring => {}
            NodeMsg::Execute(e) => {
                self.queue.push_back(*e);
                self.start_next(ctx);
            }
            NodeMsg::Revoke { tasks } => self.queue.retain(|e| !tasks.contains(&e.task)),
            NodeMsg::Cancel { task } => self.cancelled(task, ctx),
            NodeMsg::Exit => ctx.exit = true,
            NodeMsg::Values { req, values } => self.children_done(req, values, ctx),
            NodeMsg::Created { req, result } => self.created(req, result, ctx),
            NodeMsg::Output { .. }
            | NodeMsg::Ready { .. }
            | NodeMsg::ActorHandle { .. }
            | NodeMsg::Reply { .. } => {}
        }
    }

    /// The node cancelled `task`: not started yet, it is skipped (reported
    /// cancelled, as the Python worker does); running, the interrupt signal
    /// that follows ends it.
    fn cancelled(&mut self, task: TaskId, ctx: &mut Ctx<'_>) {
        if let Some(at) = self.queue.iter().position(|e| e.task == task) {
            let exec = self.queue.remove(at).expect("found");
            let err = ErrorInfo::new(ErrorKind::Cancelled, "cancelled before it started");
            return self.finish(exec, Err(err), ctx);
        }
        if self.running.as_ref().is_some_and(|(e, _)| e.task == task) {
            self.cancels.push(task);
        }
    }

    /// The node's interrupt signal: a running task it cancelled raises
    /// `KeyboardInterrupt` (computing or blocked in `get`); a stale one is
    /// ignored. Actor calls are never interrupted.
    pub fn on_interrupt(&mut self, ctx: &mut Ctx<'_>) {
        let Some((exec, phase)) = self.running.take() else {
            return;
        };
        let interrupt = exec.kind == TaskKind::Normal
            && !matches!(phase, Phase::Creating { .. })
            && self.cancels.contains(&exec.task);
        self.cancels.clear();
        if !interrupt {
            self.running = Some((exec, phase));
            return;
        }
        let err = ErrorInfo::new(ErrorKind::Task, "KeyboardInterrupt");
        self.finish(exec, Err(err), ctx);
        // The handles it held go as the exception unwinds.
        if let Phase::Children { held, .. } = phase {
            ctx.out.push(ClientMsg::DecRefs { ids: held });
        }
    }

    /// The wake-up it asked for: the running task's computation is done.
    pub fn on_wake(&mut self, ctx: &mut Ctx<'_>) {
        let Some((exec, phase)) = self.running.take() else {
            return;
        };
        // A wake-up left over from a task interrupted while computing may
        // come while the next one waits: it stays as it is.
        let Phase::Computing(result, args) = phase else {
            self.running = Some((exec, phase));
            return;
        };
        match (exec.kind, result) {
            (TaskKind::Normal, Ok(Val::Int(digests))) if self.op(&exec) == Some(Op::Nested) => {
                self.submit_children(exec, &args, digests, ctx)
            }
            (TaskKind::Normal, Ok(Val::Int(digests))) if self.op(&exec) == Some(Op::Relay) => {
                self.read_nested(exec, digests, ctx)
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
                } else if op == Op::Relay {
                    self.nested = nested_ids(&args_bytes);
                    // The arguments' part; the nested values' comes later.
                    let own: i64 = deps.iter().map(Val::digest).fold(0, i64::wrapping_add);
                    Val::Int(own.wrapping_add(args.first().copied().unwrap_or(0)))
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
                runtime_env: None,
            })));
        }
        ctx.out.push(ClientMsg::AddRefs { ids: ids.clone() });
        let held = ids.clone();
        self.wait_for_values(exec, ids, digests, held, ctx);
    }

    /// A `Relay`: take handles of the refs nested in its arguments (as
    /// unpickling them would), and read the values of those that are objects.
    fn read_nested(&mut self, exec: Execution, digests: i64, ctx: &mut Ctx<'_>) {
        let held = std::mem::take(&mut self.nested);
        let ids: Vec<ObjectId> = held
            .iter()
            .filter(|id| id.actor().is_none())
            .copied()
            .collect();
        ctx.out.push(ClientMsg::AddRefs { ids: held.clone() });
        self.wait_for_values(exec, ids, digests, held, ctx);
    }

    /// Block the running task in a `get` of `ids` (holding `held`).
    fn wait_for_values(
        &mut self,
        exec: Execution,
        ids: Vec<ObjectId>,
        digests: i64,
        held: Vec<ObjectId>,
        ctx: &mut Ctx<'_>,
    ) {
        let req = self.next_req;
        self.next_req += 1;
        ctx.out.push(ClientMsg::Get {
            req,
            ids: ids.clone(),
            timeout_ms: None,
        });
        self.running = Some((
            exec,
            Phase::Children {
                req,
                ids,
                digests,
                held,
            },
        ));
    }

    fn children_done(&mut self, req: u64, values: Option<Vec<Value>>, ctx: &mut Ctx<'_>) {
        let Some((exec, phase)) = self.running.take() else {
            return;
        };
        let Phase::Children {
            req: want,
            ids,
            digests,
            held,
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
                    held,
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
        let result = match failed {
            Some(e) => Err(e),
            None => Ok(Val::Int(sum)),
        };
        if self.op(&exec) == Some(Op::Relay) && result.is_ok() {
            // Its result holds the nested refs; its own handles go once it is reported.
            self.finish_holding(exec, result, held.clone(), ctx);
        } else {
            self.finish(exec, result, ctx);
        }
        // The handles go with the task.
        ctx.out.push(ClientMsg::DecRefs { ids: held });
    }

    /// Report a task's outcome (a large value goes into the store first).
    fn finish(&mut self, exec: Execution, result: Result<Val, ErrorInfo>, ctx: &mut Ctx<'_>) {
        self.finish_holding(exec, result, Vec::new(), ctx);
    }

    /// Report a task's outcome whose value holds the refs `contained`.
    fn finish_holding(
        &mut self,
        exec: Execution,
        result: Result<Val, ErrorInfo>,
        contained: Vec<ObjectId>,
        ctx: &mut Ctx<'_>,
    ) {
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
        let contained = match &outcome {
            Outcome::Returns(v) if !v.is_empty() => vec![contained],
            _ => Vec::new(),
        };
        self.report(exec, outcome, contained, ctx);
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
        self.report(exec, outcome, Vec::new(), ctx);
    }

    fn report(
        &mut self,
        exec: Execution,
        outcome: Outcome,
        contained: Vec<Vec<ObjectId>>,
        ctx: &mut Ctx<'_>,
    ) {
        let outcome = match outcome {
            // Some failures are not retried (an exception a `retry_exceptions`
            // list does not name).
            Outcome::Failed(e) if e.kind == ErrorKind::Task && ctx.rng.random_bool(0.3) => {
                Outcome::FailedFinal(e)
            }
            o => o,
        };
        ctx.out.push(ClientMsg::TaskDone {
            task: exec.task,
            outcome,
            run_us: 1000,
            contained,
        });
        if exec.kind == TaskKind::Normal && ctx.rng.random_bool(RETIRE_CHANCE) {
            // `max_calls` reached: the tasks sent here since are the node's
            // to give to others; this worker runs nothing more.
            ctx.out.push(ClientMsg::Retire);
            self.retiring = true;
            self.queue.clear();
            return;
        }
        self.start_next(ctx);
    }
}

/// The ids a `Relay`'s arguments carry after its two integers.
fn nested_ids(args: &[u8]) -> Vec<ObjectId> {
    let n = decode_args(args.get(8..16).unwrap_or_default())
        .first()
        .copied()
        .unwrap_or(0)
        .max(0) as usize;
    args.get(16..)
        .unwrap_or_default()
        .chunks_exact(20)
        .take(n)
        .filter_map(ObjectId::from_slice)
        .collect()
}
