//! The worker loop: receive a task, let Python run it, report the outcome.
//!
//! The loop itself is Rust; Python runs only the user's code and
//! (de)serialization, through the `executor` callable of `peer._worker`.

use std::path::PathBuf;
use std::sync::Arc;

use peer_node::NodeError;
use peer_node_core::ids::{ObjectId, WorkerId};
use peer_node_core::wire::local::{
    ErrorInfo, ErrorKind, Execution, Outcome, Role, TaskKind, args_object_id,
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
    let result = serve(py, &rt, &executor);
    runtime::uninstall();
    rt.node.close();
    result
}

fn serve(py: Python<'_>, rt: &Arc<Runtime>, executor: &Bound<'_, PyAny>) -> PyResult<()> {
    let Some(client) = &rt.client else {
        return Err(PyValueError::new_err("a worker needs a socket connection"));
    };
    while let Some(exec) = py.detach(|| client.next_execution()) {
        *rt.context.lock() = Context {
            task: Some(exec.task),
            actor: exec.actor,
            forward_output: exec.forward_output,
        };
        let task = exec.task;
        let name = exec.name.clone();
        let started = std::time::Instant::now();
        let (outcome, contained) = match run_one(py, rt, exec, executor) {
            Ok(o) => o,
            Err(e) => {
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
    }
    Ok(())
}

fn run_one(
    py: Python<'_>,
    rt: &Arc<Runtime>,
    exec: Execution,
    executor: &Bound<'_, PyAny>,
) -> PyResult<(Outcome, Vec<Vec<ObjectId>>)> {
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
    );
    let r = executor.call1(call_args)?;
    let r = r.cast::<PyTuple>()?;
    let status: u8 = r.get_item(0)?.extract()?;
    let payload = r.get_item(1)?;
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
