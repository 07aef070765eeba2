//! The worker loop: receive a task, let Python run it, report the outcome.
//!
//! The loop itself is Rust; Python runs only the user's code and
//! (de)serialization, through the `executor` callable of `peer._worker`.
//! A concurrent actor's calls (threaded or async) are handed on by the
//! executor, which says so with [`DEFERRED`]; each reports its outcome later,
//! from its own thread, through [`task_finished`], while this loop goes on
//! receiving calls.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use peer_node::{Client, NodeError, WorkerEvent};
use peer_node_core::ids::{ObjectId, TaskId, WorkerId};
use peer_node_core::wire::local::{
    ClientMsg, ErrorInfo, ErrorKind, Execution, Outcome, Role, TaskKind, args_object_id,
};
use pyo3::exceptions::{PyConnectionError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyTuple};

use crate::api::{connect_runtime, contained_ids};
use crate::errors::NativeStoreFullError;
use crate::runtime::{self, Context, Runtime};
use crate::values::{encode_value, raw_buffers, value_to_py};

pub const TASK_NORMAL: u8 = 0;
pub const TASK_ACTOR_CREATE: u8 = 1;
pub const TASK_ACTOR_METHOD: u8 = 2;

/// What the executor returns for a call it runs later (a concurrent actor's):
/// its outcome comes through [`task_finished`].
pub const DEFERRED: u8 = 2;

/// What the executor returns for a call cancelled before it ran (or an async
/// actor's call cancelled while it ran): `(CANCELLED, message)`.
pub const CANCELLED: u8 = 4;

/// What the executor returns when a task raised an exception its
/// `retry_exceptions` list does not name: `(FAILED_FINAL, (message, blob))`,
/// reported as failed for good (no retry).
pub const FAILED_FINAL: u8 = 5;

/// Set by [`retire_after_task`]: this worker exits once it reported its task.
static RETIRING: AtomicBool = AtomicBool::new(false);

/// What the executor returns when the actor exits on purpose
/// (`exit_actor()`): `(EXIT, reason)`; the node fails its calls saying why.
pub const EXIT: u8 = 3;

fn parse_worker_id(hex: &str) -> PyResult<WorkerId> {
    let bad = || PyValueError::new_err(format!("bad worker id {hex:?}"));
    if hex.len() != 32 {
        return Err(bad());
    }
    let mut b = [0u8; 16];
    for (i, byte) in b.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
    }
    Ok(WorkerId(b))
}

/// A task's printed lines: sent to the node when its driver is another
/// process (returns True), else left to the caller to write to its terminal.
#[pyfunction]
pub fn emit_output(py: Python<'_>, stream: u8, data: &[u8]) -> bool {
    let Some(rt) = runtime::current_opt() else {
        return false;
    };
    let ctx = *rt.context.lock();
    let (Some(task), true, Some(client)) = (ctx.task, ctx.forward_output, &rt.client) else {
        return false;
    };
    let data = data.to_vec();
    py.detach(|| client.output(task, stream, data)).is_ok()
}

#[pyfunction]
pub fn worker_main(
    py: Python<'_>,
    socket_path: PathBuf,
    worker_id: &str,
    executor: Bound<'_, PyAny>,
    canceller: Bound<'_, PyAny>,
) -> PyResult<()> {
    let wid = parse_worker_id(worker_id)?;
    let rt = match py.detach(|| connect_runtime(&socket_path, Role::Worker(wid))) {
        Ok(rt) => rt,
        // The node is stopping and told this new worker to go.
        Err(NodeError::ShutDown) => return Ok(()),
        Err(e) => return Err(PyConnectionError::new_err(e.to_string())),
    };
    let rt = Arc::new(rt);
    runtime::install(Arc::clone(&rt));
    let result = serve(py, &rt, &executor, &canceller);
    runtime::uninstall();
    rt.node.close();
    result
}

fn serve(
    py: Python<'_>,
    rt: &Arc<Runtime>,
    executor: &Bound<'_, PyAny>,
    canceller: &Bound<'_, PyAny>,
) -> PyResult<()> {
    let Some(client) = &rt.client else {
        return Err(PyValueError::new_err("a worker needs a socket connection"));
    };
    while let Some(event) = py.detach(|| client.next_event()) {
        let exec = match event {
            WorkerEvent::Execute(exec) => *exec,
            WorkerEvent::Cancel(task) => {
                canceller.call1((PyBytes::new(py, &task.0),))?;
                continue;
            }
        };
        *rt.context.lock() = Context {
            task: Some(exec.task),
            actor: exec.actor,
            forward_output: exec.forward_output,
        };
        let task = exec.task;
        let name = exec.name.clone();
        let started = std::time::Instant::now();
        let interruptible = exec.kind == TaskKind::Normal;
        if interruptible {
            client.set_running(Some(task));
        }
        let ran = run_one(py, rt, exec, executor);
        if interruptible {
            client.set_running(None);
        }
        let (outcome, contained) = match ran {
            // Runs on in a thread or on the actor's event loop; this task
            // stays the context (for output) until the next call comes.
            Ok(Ran::Deferred) => continue,
            Ok(Ran::Exit(reason)) => {
                // Calls already sent here are not run: the node fails them.
                return leave(py, client, ClientMsg::ActorExit { reason });
            }
            Ok(Ran::Done(outcome, contained)) => (outcome, contained),
            Err(e) => failed(py, &name, &e),
        };
        {
            let mut ctx = rt.context.lock();
            ctx.task = None;
        }
        let run_us = started.elapsed().as_micros() as u64;
        if let Err(e) = py.detach(|| client.task_done(task, outcome, run_us, contained)) {
            tracing::debug!("reporting a task outcome failed: {e}");
            break;
        }
        if RETIRING.load(Ordering::Relaxed) {
            // `max_calls` reached: tasks sent here since are the node's to
            // give to others.
            return leave(py, client, ClientMsg::Retire);
        }
    }
    Ok(())
}

/// Say why this worker stops taking tasks, then run nothing more until the
/// node's word to exit (which it answers with) ends the loop.
fn leave(py: Python<'_>, client: &Client, why: ClientMsg) -> PyResult<()> {
    py.detach(|| client.send(&why))
        .map_err(|e| PyConnectionError::new_err(e.to_string()))?;
    while py.detach(|| client.next_event()).is_some() {}
    Ok(())
}

/// The task running now is this worker's last (its function's `max_calls`
/// is reached): once it is reported, the worker exits.
#[pyfunction]
pub fn retire_after_task() {
    RETIRING.store(true, Ordering::Relaxed);
}

/// The outcome of a task whose result could not be turned into values.
fn failed(py: Python<'_>, name: &str, e: &PyErr) -> (Outcome, Vec<Vec<ObjectId>>) {
    let kind = if e.is_instance_of::<NativeStoreFullError>(py) {
        ErrorKind::StoreFull
    } else {
        ErrorKind::Task
    };
    (
        Outcome::Failed(ErrorInfo::new(kind, format!("task {name}: {e}"))),
        Vec::new(),
    )
}

/// From the interrupt signal's handler: whether the node cancelled `task_id`
/// (the task this worker runs), waiting up to `wait_s` seconds for its word.
#[pyfunction]
pub fn take_cancel(py: Python<'_>, task_id: &[u8], wait_s: f64) -> PyResult<bool> {
    let Some(client) = runtime::current_opt().and_then(|rt| rt.client.clone()) else {
        return Ok(false);
    };
    let task = task_id_of(task_id)?;
    let wait = std::time::Duration::from_secs_f64(wait_s.clamp(0.0, 10.0));
    Ok(py.detach(|| client.take_cancel(task, wait)))
}

fn task_id_of(b: &[u8]) -> PyResult<TaskId> {
    Ok(TaskId(b.try_into().map_err(|_| {
        PyValueError::new_err("a task id has 16 bytes")
    })?))
}

/// The actor of this worker exits on purpose (`exit_actor()` in a call of
/// a concurrent actor): the node fails its calls with `reason` and tells
/// this worker to exit.
#[pyfunction]
pub fn actor_exit(py: Python<'_>, reason: String) -> PyResult<()> {
    let rt = runtime::current()?;
    let Some(client) = rt.client.clone() else {
        return Err(PyValueError::new_err(
            "only an actor's worker exits its actor",
        ));
    };
    py.detach(|| client.send(&ClientMsg::ActorExit { reason }))
        .map_err(|e| PyConnectionError::new_err(e.to_string()))
}

/// What running one execution came to.
enum Ran {
    Done(Outcome, Vec<Vec<ObjectId>>),
    /// A concurrent actor's call: reported later through [`task_finished`].
    Deferred,
    /// The actor exits on purpose, saying why.
    Exit(String),
}

/// A deferred call (see [`DEFERRED`]) finished: `result` is what the
/// executor would have returned, `(0, returns)` or `(1, (message, blob))`.
/// Sent at once: the receiving loop may be waiting for the next call.
#[pyfunction]
pub fn task_finished(
    py: Python<'_>,
    task_id: &[u8],
    name: &str,
    result: &Bound<'_, PyTuple>,
    run_us: u64,
) -> PyResult<()> {
    let rt = runtime::current()?;
    let Some(client) = rt.client.clone() else {
        return Err(PyValueError::new_err("only a worker reports tasks"));
    };
    let task = task_id_of(task_id)?;
    let (outcome, contained) =
        outcome_of(py, &rt, task, result).unwrap_or_else(|e| failed(py, name, &e));
    let msg = ClientMsg::TaskDone {
        task,
        outcome,
        run_us,
        contained,
    };
    py.detach(|| client.send(&msg))
        .map_err(|e| PyConnectionError::new_err(e.to_string()))
}

fn run_one(
    py: Python<'_>,
    rt: &Arc<Runtime>,
    exec: Execution,
    executor: &Bound<'_, PyAny>,
) -> PyResult<Ran> {
    let task = exec.task;
    let args = value_to_py(py, rt, args_object_id(task), exec.args)?;
    let deps = PyList::empty(py);
    for (id, v) in exec.dep_ids.iter().zip(exec.deps) {
        deps.append(value_to_py(py, rt, *id, v)?)?;
    }
    let kind = match exec.kind {
        TaskKind::Normal => TASK_NORMAL,
        TaskKind::ActorCreate => TASK_ACTOR_CREATE,
        TaskKind::ActorMethod => TASK_ACTOR_METHOD,
    };
    let fn_blob = exec.fn_blob.map(|b| PyBytes::new(py, &b));
    let runtime_env = exec
        .runtime_env
        .as_ref()
        .map(|e| (PyBytes::new(py, &e.key.0), e.setup.as_str()));
    let call_args = (
        kind,
        PyBytes::new(py, &task.0),
        PyBytes::new(py, &exec.fn_id.0),
        fn_blob,
        exec.method,
        exec.name,
        args,
        deps,
        exec.num_returns,
        exec.gpu_ids,
        runtime_env,
    );
    let r = executor.call1(call_args)?;
    let r = r.cast::<PyTuple>()?;
    let status: u8 = r.get_item(0)?.extract()?;
    match status {
        DEFERRED => Ok(Ran::Deferred),
        EXIT => Ok(Ran::Exit(r.get_item(1)?.extract()?)),
        _ => outcome_of(py, rt, task, r).map(|(o, c)| Ran::Done(o, c)),
    }
}

/// The outcome an executor's `(status, payload)` says: the task's values
/// (written to the store or inline), or its error.
fn outcome_of(
    py: Python<'_>,
    rt: &Arc<Runtime>,
    task: TaskId,
    r: &Bound<'_, PyTuple>,
) -> PyResult<(Outcome, Vec<Vec<ObjectId>>)> {
    let status: u8 = r.get_item(0)?.extract()?;
    let payload = r.get_item(1)?;
    if status == FAILED_FINAL {
        let (message, blob): (String, Option<Vec<u8>>) = payload.extract()?;
        return Ok((
            Outcome::FailedFinal(ErrorInfo {
                kind: ErrorKind::Task,
                message,
                blob: blob.map(serde_bytes::ByteBuf::from),
            }),
            Vec::new(),
        ));
    }
    if status == CANCELLED {
        let message: String = payload.extract()?;
        return Ok((
            Outcome::Failed(ErrorInfo::new(ErrorKind::Cancelled, message)),
            Vec::new(),
        ));
    }
    if status != 0 {
        let (message, blob): (String, Option<Vec<u8>>) = payload.extract()?;
        return Ok((
            Outcome::Failed(ErrorInfo {
                kind: ErrorKind::Task,
                message,
                blob: blob.map(serde_bytes::ByteBuf::from),
            }),
            Vec::new(),
        ));
    }
    let mut values = Vec::new();
    let mut contained = Vec::new();
    for (i, item) in payload.try_iter()?.enumerate() {
        let item = item?;
        let item = item.cast::<PyTuple>()?;
        let pickle = item.get_item(0)?;
        let pickle = crate::buffer::RawBuf::get(&pickle)?;
        let bufs = raw_buffers(&item.get_item(1)?)?;
        let id = ObjectId::for_return(task, i as u32 + 1);
        values.push(encode_value(py, rt, id, pickle.as_slice(), &bufs)?);
        let nested = match item.get_item(2) {
            Ok(list) => contained_ids(Some(&list))?,
            Err(_) => Vec::new(),
        };
        contained.push(nested);
    }
    Ok((Outcome::Returns(values), contained))
}
