//! The simulated workers' task language, and the workload a driver runs.
//!
//! Functions are pure over integers and byte blobs, so every task's result
//! has one right answer (its serial result) however often and wherever it
//! runs; actors are counters, whose calls must see their submission order.
//!
//! - [`Val`]: a value, and its encoding as an object blob (a large blob is
//!   written into the store and, across peers, pulled);
//! - [`Op`]: what a task does ([`Op::apply`]), named by its function blob;
//! - [`Script`]: a workload drawn from a seed: puts, tasks over earlier
//!   results, nested submits, actors and their calls, cancels and dropped
//!   refs, each with its expected outcome.

use std::time::Duration;

use peer_node_core::wire::local::ErrorKind;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

/// A value of the task language.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Val {
    Int(i64),
    /// `len` bytes made from `seed` (see [`Val::encode`]).
    Bytes {
        len: u64,
        seed: u64,
    },
}

const TAG_INT: u8 = b'I';
const TAG_BYTES: u8 = b'B';
const BYTES_HEADER: usize = 17;

impl Val {
    /// What tasks that consume this value compute with.
    pub fn digest(&self) -> i64 {
        match *self {
            Val::Int(v) => v,
            Val::Bytes { len, seed } => len as i64 + (seed % 997) as i64,
        }
    }

    /// The object blob of this value: a tag, then the integer or the bytes
    /// (a header, then content that depends on the seed at every position).
    pub fn encode(&self) -> Vec<u8> {
        match *self {
            Val::Int(v) => {
                let mut b = vec![TAG_INT];
                b.extend_from_slice(&v.to_le_bytes());
                b
            }
            Val::Bytes { len, seed } => {
                let total = (len as usize).max(BYTES_HEADER);
                let mut b = vec![0u8; total];
                b[0] = TAG_BYTES;
                b[1..9].copy_from_slice(&len.to_le_bytes());
                b[9..17].copy_from_slice(&seed.to_le_bytes());
                for (i, x) in b[BYTES_HEADER..].iter_mut().enumerate() {
                    *x = content_byte(seed, i);
                }
                b
            }
        }
    }

    /// Read a value back from its blob, checking sampled content bytes.
    pub fn decode(b: &[u8]) -> Result<Val, String> {
        match b.first() {
            Some(&TAG_INT) if b.len() == 9 => {
                let mut v = [0u8; 8];
                v.copy_from_slice(&b[1..9]);
                Ok(Val::Int(i64::from_le_bytes(v)))
            }
            Some(&TAG_BYTES) if b.len() >= BYTES_HEADER => {
                let mut l = [0u8; 8];
                l.copy_from_slice(&b[1..9]);
                let mut s = [0u8; 8];
                s.copy_from_slice(&b[9..17]);
                let (len, seed) = (u64::from_le_bytes(l), u64::from_le_bytes(s));
                if b.len() != (len as usize).max(BYTES_HEADER) {
                    return Err(format!("a {len}-byte value came as {} bytes", b.len()));
                }
                let body = &b[BYTES_HEADER..];
                let step = (body.len() / 64).max(1);
                let last = body.len().saturating_sub(1);
                for i in (0..body.len()).step_by(step).chain(std::iter::once(last)) {
                    if let Some(&x) = body.get(i)
                        && x != content_byte(seed, i)
                    {
                        return Err(format!("byte {i} of a {len}-byte value is wrong"));
                    }
                }
                Ok(Val::Bytes { len, seed })
            }
            _ => Err(format!("not a value blob ({} bytes)", b.len())),
        }
    }
}

fn content_byte(seed: u64, i: usize) -> u8 {
    let x = seed
        .wrapping_add(i as u64)
        .wrapping_mul(0x9e37_79b9_7f4a_7c15);
    (x >> 56) as u8
}

/// What a task does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `args[0]` plus the digests of the arguments.
    Add,
    /// `args[0]` bytes made from `args[1]` and the arguments' digests.
    Make,
    /// `args[0]` plus three times the arguments' digests.
    Digest,
    /// Submits `args[1]` child `Add` tasks (`args[0] + i` each), waits for
    /// them, and returns their sum plus the arguments' digests.
    Nested,
    /// Raises.
    Fail,
    /// Holds refs nested in its arguments (after `args[0]` and their count
    /// `args[1]` come their ids, 20 bytes each): reads the values of those
    /// that are objects, returns `args[0]` plus the digests of its arguments
    /// and of those values, and its result holds the nested refs (as a
    /// Python task returning them inside a list would).
    Relay,
    /// The actor class: a counter starting at `args[0]`.
    Counter,
}

impl Op {
    pub const TASKS: [Op; 6] = [
        Op::Add,
        Op::Make,
        Op::Digest,
        Op::Nested,
        Op::Fail,
        Op::Relay,
    ];

    /// The function blob that names the op.
    pub fn blob(self) -> &'static [u8] {
        match self {
            Op::Add => b"op:add",
            Op::Make => b"op:make",
            Op::Digest => b"op:digest",
            Op::Nested => b"op:nested",
            Op::Fail => b"op:fail",
            Op::Relay => b"op:relay",
            Op::Counter => b"class:counter",
        }
    }

    pub fn from_blob(b: &[u8]) -> Option<Op> {
        Op::TASKS
            .into_iter()
            .chain([Op::Counter])
            .find(|op| op.blob() == b)
    }

    pub fn name(self) -> &'static str {
        match self {
            Op::Add => "add",
            Op::Make => "make",
            Op::Digest => "digest",
            Op::Nested => "nested",
            Op::Fail => "fail",
            Op::Relay => "relay",
            Op::Counter => "Counter",
        }
    }

    /// The result of a task that is not `Nested` (whose children a worker
    /// runs as tasks of their own); `Err` for `Fail`.
    pub fn apply(self, args: &[i64], deps: &[Val]) -> Result<Val, String> {
        let digests: i64 = deps.iter().map(Val::digest).fold(0, i64::wrapping_add);
        let arg = |i: usize| args.get(i).copied().unwrap_or(0);
        match self {
            Op::Add => Ok(Val::Int(arg(0).wrapping_add(digests))),
            Op::Make => Ok(Val::Bytes {
                len: arg(0) as u64,
                seed: (arg(1) ^ digests) as u64,
            }),
            Op::Digest => Ok(Val::Int(arg(0).wrapping_add(digests.wrapping_mul(3)))),
            Op::Nested => {
                let children: i64 = (0..arg(1)).map(|i| arg(0) + i).sum();
                Ok(Val::Int(children.wrapping_add(digests)))
            }
            Op::Fail => Err("the task raised on purpose".into()),
            // `deps` here are its arguments and then its nested values.
            Op::Relay => Ok(Val::Int(arg(0).wrapping_add(digests))),
            Op::Counter => Ok(Val::Int(arg(0))),
        }
    }
}

/// Encode task arguments (integers).
pub fn encode_args(args: &[i64]) -> Vec<u8> {
    args.iter().flat_map(|a| a.to_le_bytes()).collect()
}

/// Decode task arguments.
pub fn decode_args(b: &[u8]) -> Vec<i64> {
    b.chunks_exact(8)
        .map(|c| {
            let mut a = [0u8; 8];
            a.copy_from_slice(c);
            i64::from_le_bytes(a)
        })
        .collect()
}

/// What a ref the driver holds must come to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expect {
    /// Exactly this value (or, once faults were injected, a documented error).
    Value(Val),
    /// A task error of one of these kinds.
    Error(Vec<ErrorKind>),
    /// An actor call's count: exact while its actor never lost its host.
    Count(i64),
}

/// One resource set a simulated node offers.
#[derive(Debug, Clone)]
pub struct NodeSpec {
    pub cpus: f64,
    /// Custom resources (`GPU`), which only some nodes have.
    pub resources: Vec<(String, f64)>,
}

/// A task the driver submits.
#[derive(Debug, Clone)]
pub struct TaskPlan {
    pub op: Op,
    pub args: Vec<i64>,
    /// Earlier refs (indices into the script's refs) it takes as arguments.
    pub deps: Vec<usize>,
    /// Earlier refs nested in its arguments (`Relay`), and actors whose
    /// handles are nested there.
    pub nested: Vec<usize>,
    pub nested_actors: Vec<usize>,
    /// Pad the arguments to this many bytes (large ones go through the store).
    pub pad_args: usize,
    pub resources: Vec<(String, f64)>,
    pub max_retries: i32,
    /// The runtime environment it runs in (one of two), if any: workers
    /// serve one environment each.
    pub env: Option<u8>,
}

/// One thing the driver does.
#[derive(Debug, Clone)]
pub enum Step {
    /// `put` a value (ref `r`).
    Put { r: usize, val: Val },
    /// Submit a task whose result is ref `r`.
    Submit { r: usize, task: TaskPlan },
    /// Create actor `a`.
    CreateActor {
        a: usize,
        init: i64,
        resources: Vec<(String, f64)>,
        max_restarts: i32,
    },
    /// Call `incr(by)` on actor `a`; its result is ref `r`.
    Call { r: usize, a: usize, by: i64 },
    /// Drop the driver's handle of ref `r` (it is never read).
    Drop { r: usize },
    /// Drop the driver's handle of actor `a` (it is never called again): it
    /// ends once its calls are done and no task or value holds a handle.
    DropActor { a: usize },
    /// Cancel the task that makes ref `r` (`force`: kill its worker).
    Cancel { r: usize, force: bool },
    /// `kill(actor)`: it restarts (fresh) while `max_restarts` allows,
    /// unless `no_restart`.
    KillActor { a: usize, no_restart: bool },
}

/// A workload: the nodes, and what the driver on node 0 does when.
#[derive(Debug, Clone)]
pub struct Script {
    pub nodes: Vec<NodeSpec>,
    pub steps: Vec<(Duration, Step)>,
    /// What each ref must come to, by index.
    pub expect: Vec<Expect>,
    /// Which actor each call ref belongs to.
    pub call_actor: Vec<Option<usize>>,
    pub actors: usize,
    /// Actors the script kills (their counts are not certain from then on).
    pub killed: Vec<bool>,
    /// Actors whose handle the driver dropped.
    pub dropped_actors: Vec<bool>,
}

/// Sizes of large values: over a message (pulled across peers), some over a chunk.
const LARGE: [u64; 4] = [1_500_000, 2_200_000, 4_500_000, 9_000_000];

impl Script {
    /// Draw a workload for `nodes` nodes.
    pub fn generate(rng: &mut SmallRng, nodes: usize, steps: usize) -> Script {
        // GPU counts and shares come from a stream of their own, so that
        // every other draw (and what each regression seed exercises) is as
        // it was before nodes had more than one device.
        let mut gpu_rng = SmallRng::seed_from_u64(rng.clone().random::<u64>() ^ 0x6770_7573);
        let specs: Vec<NodeSpec> = (0..nodes)
            .map(|i| NodeSpec {
                cpus: if rng.random_bool(0.5) { 1.0 } else { 2.0 },
                resources: if i > 0 && rng.random_bool(0.4) {
                    vec![(
                        "GPU".into(),
                        if gpu_rng.random_bool(0.5) { 1.0 } else { 2.0 },
                    )]
                } else {
                    Vec::new()
                },
            })
            .collect();
        let any_gpu = specs.iter().any(|s| !s.resources.is_empty());
        let mut s = Script {
            nodes: specs,
            steps: Vec::new(),
            expect: Vec::new(),
            call_actor: Vec::new(),
            actors: 0,
            killed: Vec::new(),
            dropped_actors: Vec::new(),
        };
        let mut counters: Vec<i64> = Vec::new();
        // Each actor's restarts left, and whether it is dead for good.
        let mut restarts: Vec<i32> = Vec::new();
        let mut dead: Vec<bool> = Vec::new();
        // Each ref's value, or the kinds of error it may be.
        let mut values: Vec<Result<Val, Vec<ErrorKind>>> = Vec::new();
        let mut live: Vec<usize> = Vec::new();
        let mut t = Duration::ZERO;
        for _ in 0..steps {
            t += Duration::from_millis(rng.random_range(0..40));
            let roll = rng.random_range(0..100);
            let step = if roll < 12 || live.is_empty() {
                let val = if rng.random_bool(0.2) {
                    Val::Bytes {
                        len: LARGE[rng.random_range(0..LARGE.len())],
                        seed: rng.random(),
                    }
                } else {
                    Val::Int(rng.random_range(-1000..1000))
                };
                let r = s.push_ref(Expect::Value(val), None);
                values.push(Ok(val));
                live.push(r);
                Step::Put { r, val }
            } else if roll < 70 {
                let op = match rng.random_range(0..23) {
                    0..=7 => Op::Add,
                    8..=10 => Op::Make,
                    11..=15 => Op::Digest,
                    16..=18 => Op::Nested,
                    19..=21 => Op::Relay,
                    _ => Op::Fail,
                };
                let ndeps = rng.random_range(0..=3.min(live.len()));
                let deps: Vec<usize> = (0..ndeps)
                    .map(|_| live[rng.random_range(0..live.len())])
                    .collect();
                let (nested, nested_actors) = if op == Op::Relay {
                    let n = rng.random_range(1..=3.min(live.len()));
                    let nested: Vec<usize> = (0..n)
                        .map(|_| live[rng.random_range(0..live.len())])
                        .collect();
                    let held: Vec<usize> = (0..s.actors)
                        .filter(|a| !s.dropped_actors[*a] && rng.random_bool(0.3))
                        .collect();
                    (nested, held)
                } else {
                    (Vec::new(), Vec::new())
                };
                let args = match op {
                    Op::Make => vec![
                        LARGE[rng.random_range(0..LARGE.len())] as i64,
                        rng.random_range(0..1 << 30),
                    ],
                    Op::Nested => vec![rng.random_range(0..100), rng.random_range(1..4)],
                    _ => vec![rng.random_range(-100..100)],
                };
                let mut resources = vec![("CPU".to_string(), 1.0)];
                // (Not a `Relay`: it blocks in `get`, which gives back only its CPU,
                // so holding the one GPU it may wait for a task that needs that GPU.)
                if any_gpu && op != Op::Relay && rng.random_bool(0.2) {
                    let share = if gpu_rng.random_bool(0.5) { 1.0 } else { 0.5 };
                    resources.push(("GPU".into(), share));
                }
                let task = TaskPlan {
                    op,
                    args: args.clone(),
                    deps: deps.clone(),
                    nested: nested.clone(),
                    nested_actors,
                    pad_args: if rng.random_bool(0.05) { 150_000 } else { 0 },
                    resources,
                    max_retries: if rng.random_bool(0.1) { 0 } else { 3 },
                    // (From the number of refs so far, not the rng: the seeds' other
                    // choices stay what they were.)
                    env: match s.expect.len() % 6 {
                        1 => Some(1),
                        2 => Some(2),
                        _ => None,
                    },
                };
                let mut inputs = Vec::new();
                let mut input_errors: Vec<ErrorKind> = Vec::new();
                for d in deps.iter().chain(&nested) {
                    match &values[*d] {
                        Ok(v) => inputs.push(*v),
                        Err(kinds) => input_errors.extend(kinds),
                    }
                }
                let (expect, val) = if input_errors.is_empty() {
                    match op.apply(&args, &inputs) {
                        Ok(v) => (Expect::Value(v), Ok(v)),
                        Err(_) => (
                            Expect::Error(vec![ErrorKind::Task]),
                            Err(vec![ErrorKind::Task]),
                        ),
                    }
                } else {
                    // An input is an error: so is this result (one of theirs).
                    (Expect::Error(input_errors.clone()), Err(input_errors))
                };
                let r = s.push_ref(expect, None);
                values.push(val);
                live.push(r);
                Step::Submit { r, task }
            } else if roll < 76 {
                let a = s.actors;
                s.actors += 1;
                let init = rng.random_range(0..50);
                counters.push(init);
                let max_restarts = if rng.random_bool(0.5) { 2 } else { 0 };
                restarts.push(max_restarts);
                dead.push(false);
                s.killed.push(false);
                s.dropped_actors.push(false);
                // Actors hold nothing while they live (Ray's default: placement
                // looks for a free CPU), so tasks never wait for them to end.
                let resources = Vec::new();
                Step::CreateActor {
                    a,
                    init,
                    resources,
                    max_restarts,
                }
            } else if roll < 89 && (0..s.actors).any(|a| !s.dropped_actors[a]) {
                let held: Vec<usize> = (0..s.actors).filter(|a| !s.dropped_actors[*a]).collect();
                let a = held[rng.random_range(0..held.len())];
                if rng.random_bool(0.05) {
                    s.dropped_actors[a] = true;
                    s.steps.push((t, Step::DropActor { a }));
                    continue;
                }
                let by = rng.random_range(1..10);
                counters[a] += by;
                let r = if dead[a] {
                    let died = vec![ErrorKind::ActorDied];
                    let r = s.push_ref(Expect::Error(died.clone()), Some(a));
                    values.push(Err(died));
                    r
                } else {
                    let r = s.push_ref(Expect::Count(counters[a]), Some(a));
                    values.push(Ok(Val::Int(counters[a])));
                    r
                };
                live.push(r);
                Step::Call { r, a, by }
            } else if roll < 90 && (0..s.actors).any(|a| !s.dropped_actors[a]) {
                let held: Vec<usize> = (0..s.actors).filter(|a| !s.dropped_actors[*a]).collect();
                let a = held[rng.random_range(0..held.len())];
                let no_restart = rng.random_bool(0.5);
                s.killed[a] = true;
                if no_restart || restarts[a] == 0 {
                    dead[a] = true;
                } else {
                    restarts[a] -= 1;
                }
                Step::KillActor { a, no_restart }
            } else if roll < 95 {
                let i = rng.random_range(0..live.len());
                let r = live.swap_remove(i);
                Step::Drop { r }
            } else {
                let r = live[rng.random_range(0..live.len())];
                if !matches!(s.expect[r], Expect::Value(_)) || s.call_actor[r].is_some() {
                    continue;
                }
                // Cancelled in time, or not: either answer is right. Tasks
                // that take it as an input may fail with it too.
                Step::Cancel {
                    r,
                    force: rng.random_bool(0.3),
                }
            };
            s.steps.push((t, step));
        }
        s
    }

    fn push_ref(&mut self, e: Expect, actor: Option<usize>) -> usize {
        self.expect.push(e);
        self.call_actor.push(actor);
        self.expect.len() - 1
    }
}
