//! The functions of `peer._native` (see `python/peer/_native.pyi`).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use peer_node::Client;
use peer_node::api::Patience;
use peer_node::config::NodeConfig;
use peer_node::local::socket::daemon_socket_path;
use peer_node::{Node, NodeApi, NodeError};
use peer_node_core::ids::{ActorId, EnvKey, FnId, ObjectId, TaskId};
use peer_node_core::wire::local::{
    ActorOptions, Listing, Query, Role, RuntimeEnv, TaskKind, TaskSpec, Value, args_object_id,
};
use peer_objstore::Arena;
use pyo3::exceptions::{PyConnectionError, PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList};
use serde_bytes::ByteBuf;

use crate::errors::node_err;
use crate::object_ref::ObjectRefBase;
use crate::runtime::{self, Runtime, RuntimeInfo};
use crate::values::{self, encode_value, raw_buffers, value_to_py};

fn info_dict<'py>(py: Python<'py>, info: &RuntimeInfo) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("node_id", &info.node_id)?;
    d.set_item("socket", &info.socket)?;
    d.set_item("arena_path", &info.arena_path)?;
    d.set_item("arena_size", info.arena_size)?;
    d.set_item("num_cpus", info.num_cpus)?;
    let res = PyDict::new(py);
    for (k, v) in &info.resources {
        res.set_item(k, v)?;
    }
    d.set_item("resources", res)?;
    Ok(d)
}

fn json_to_py(py: Python<'_>, v: &serde_json::Value) -> PyResult<Py<PyAny>> {
    Ok(py
        .import("json")?
        .call_method1("loads", (v.to_string(),))?
        .unbind())
}

fn ids_from(list: &Bound<'_, PyAny>) -> PyResult<Vec<ObjectId>> {
    list.try_iter()?
        .map(|b| {
            let b = b?;
            let bytes = b
                .cast::<PyBytes>()
                .map_err(|_| PyValueError::new_err("object ids are bytes"))?;
            ObjectRefBase::parse_id(bytes.as_bytes())
        })
        .collect()
}

/// Ids of the refs nested in a serialized value (None: none).
pub fn contained_ids(list: Option<&Bound<'_, PyAny>>) -> PyResult<Vec<ObjectId>> {
    list.map_or_else(|| Ok(Vec::new()), ids_from)
}

fn id16<T>(b: &[u8], what: &str, make: impl Fn([u8; 16]) -> T) -> PyResult<T> {
    let a: [u8; 16] = b
        .try_into()
        .map_err(|_| PyValueError::new_err(format!("a {what} id has 16 bytes, got {}", b.len())))?;
    Ok(make(a))
}

fn timeout_of(t: Option<f64>) -> PyResult<Option<Duration>> {
    match t {
        None => Ok(None),
        Some(s) if s.is_finite() && s >= 0.0 => Ok(Some(Duration::from_secs_f64(s))),
        Some(s) if s.is_infinite() && s > 0.0 => Ok(None),
        Some(s) => Err(PyValueError::new_err(format!(
            "timeout must be a non-negative number of seconds, got {s}"
        ))),
    }
}

fn resource_pairs(num_cpus: f64, resources: &Bound<'_, PyDict>) -> PyResult<Vec<(String, f64)>> {
    let mut out = Vec::with_capacity(1 + resources.len());
    if num_cpus != 0.0 {
        out.push(("CPU".to_string(), num_cpus));
    }
    for (k, v) in resources.iter() {
        let k: String = k.extract()?;
        let v: f64 = v.extract()?;
        if !v.is_finite() || v < 0.0 {
            return Err(PyValueError::new_err(format!(
                "resource {k} must be a non-negative number, got {v}"
            )));
        }
        out.push((k, v));
    }
    Ok(out)
}

/// Poll for Ctrl-C while the GIL is released; remember the exception.
fn signal_checker(err: &mut Option<PyErr>) -> impl FnMut() -> bool + '_ {
    move || {
        Python::attach(|py| match py.check_signals() {
            Ok(()) => false,
            Err(e) => {
                *err = Some(e);
                true
            }
        })
    }
}

#[pyfunction]
#[pyo3(signature = (*, num_cpus, resources, object_store_memory, state_dir, python, python_path, cwd, network=None, num_gpus=None, dashboard=None))]
#[allow(clippy::too_many_arguments)]
pub fn init_embedded<'py>(
    py: Python<'py>,
    num_cpus: f64,
    resources: &Bound<'py, PyDict>,
    object_store_memory: Option<u64>,
    state_dir: PathBuf,
    python: PathBuf,
    python_path: Vec<String>,
    cwd: PathBuf,
    network: Option<&Bound<'py, PyDict>>,
    num_gpus: Option<u32>,
    dashboard: Option<String>,
) -> PyResult<Bound<'py, PyDict>> {
    if runtime::current_opt().is_some() {
        return Err(PyRuntimeError::new_err(
            "peer is already initialized in this process",
        ));
    }
    peer_node::cli::init_logging("warn");
    if !num_cpus.is_finite() || num_cpus < 0.0 {
        return Err(PyValueError::new_err(format!(
            "num_cpus must be >= 0, got {num_cpus}"
        )));
    }
    let mut config = NodeConfig::new(state_dir);
    config.num_cpus = num_cpus;
    config.resources = resource_pairs(0.0, resources)?;
    config.num_gpus = num_gpus;
    config.object_store_memory = object_store_memory;
    config.python = python;
    config.python_path = python_path;
    config.cwd = Some(cwd);
    if let Some(addr) = dashboard {
        config.dashboard = Some(addr.parse().map_err(|e| {
            PyValueError::new_err(format!(
                "dashboard address {addr:?} is not HOST:PORT with a numeric IP address: {e}"
            ))
        })?);
    }
    if let Some(net) = network {
        let get = |k: &str| net.get_item(k).ok().flatten();
        config.network = Some(peer_node::cluster::NetworkConfig {
            listen: get("listen")
                .map(|v| v.extract())
                .transpose()?
                .unwrap_or_default(),
            bootstrap: get("bootstrap")
                .map(|v| v.extract())
                .transpose()?
                .unwrap_or_default(),
            key: get("key").map(|v| v.extract()).transpose()?.flatten(),
            mdns: get("mdns")
                .map(|v| v.extract())
                .transpose()?
                .unwrap_or(true),
            relay_pull_rate: peer_node::cluster::RELAY_PULL_RATE,
            relay: true,
            direct_port: 0,
        });
    }
    let node = py.detach(|| Node::start(config)).map_err(node_err)?;
    let cluster = node.cluster();
    let ni = node.info().clone();
    let info = RuntimeInfo {
        node_id: cluster
            .as_ref()
            .map_or_else(|| ni.node_id.to_string(), |c| c.peer_id.to_string()),
        socket: ni.socket.to_string_lossy().into_owned(),
        arena_path: ni.arena_path.to_string_lossy().into_owned(),
        arena_size: ni.arena_size,
        num_cpus: ni.num_cpus,
        resources: ni.resources,
        owner_tag: node.owner_tag(),
    };
    let arena = node.arena();
    let dashboard = node.dashboard();
    let rt = Arc::new(Runtime::embedded(Arc::new(node), arena, info));
    let d = info_dict(py, &rt.info)?;
    if let Some(dash) = dashboard {
        d.set_item("dashboard_url", dash.url)?;
    }
    if let Some(c) = cluster {
        d.set_item("peer_id", c.peer_id.to_string())?;
        let listen: Vec<String> = c.listen_addrs().iter().map(|a| a.to_string()).collect();
        d.set_item("listen", listen)?;
        d.set_item("key_fingerprint", &c.key_fingerprint)?;
    }
    runtime::install(rt);
    Ok(d)
}

/// Connect to a node's socket and map its store.
pub fn connect_runtime(socket: &std::path::Path, role: Role) -> Result<Runtime, NodeError> {
    let client = Arc::new(Client::connect(socket, role)?);
    if role == Role::Driver {
        // Refs a driver drops free their objects even while it waits on something else.
        client.flush_in_background(std::time::Duration::from_millis(100));
    }
    let w = client.welcome().clone();
    let arena = Arena::open(std::path::Path::new(&w.arena_path))?;
    let (num_cpus, resources) = match role {
        Role::Worker(_) => (0.0, Vec::new()),
        _ => {
            let total = NodeApi::query(&*client, Query::ClusterResources)?;
            let mut cpus = 0.0;
            let mut res = Vec::new();
            if let Some(m) = total.as_object() {
                for (k, v) in m {
                    let v = v.as_f64().unwrap_or(0.0);
                    if k == "CPU" {
                        cpus = v;
                    } else {
                        res.push((k.clone(), v));
                    }
                }
            }
            (cpus, res)
        }
    };
    let info = RuntimeInfo {
        node_id: w.node_id.clone(),
        socket: socket.to_string_lossy().into_owned(),
        arena_path: w.arena_path.clone(),
        arena_size: w.arena_size,
        num_cpus,
        resources,
        owner_tag: w.owner_tag,
    };
    let worker_id = match role {
        Role::Worker(w) => Some(w),
        _ => None,
    };
    Ok(Runtime::connected(client, Arc::new(arena), info, worker_id))
}

#[pyfunction]
pub fn attach<'py>(py: Python<'py>, socket_path: PathBuf) -> PyResult<Bound<'py, PyDict>> {
    if runtime::current_opt().is_some() {
        return Err(PyRuntimeError::new_err(
            "peer is already initialized in this process",
        ));
    }
    let rt = py
        .detach(|| connect_runtime(&socket_path, Role::Driver))
        .map_err(|e| PyConnectionError::new_err(e.to_string()))?;
    let rt = Arc::new(rt);
    let d = info_dict(py, &rt.info)?;
    runtime::install(rt);
    Ok(d)
}

#[pyfunction]
pub fn daemon_socket(state_dir: PathBuf) -> Option<String> {
    let p = daemon_socket_path(&state_dir);
    if p.exists() && std::os::unix::net::UnixStream::connect(&p).is_ok() {
        Some(p.to_string_lossy().into_owned())
    } else {
        None
    }
}

#[pyfunction]
pub fn shutdown(py: Python<'_>) {
    if let Some(rt) = runtime::uninstall() {
        py.detach(|| rt.node.close());
    }
}

#[pyfunction]
pub fn is_initialized() -> bool {
    runtime::current_opt().is_some()
}

#[pyfunction]
pub fn register_function(fn_id: &[u8], blob: Vec<u8>) -> PyResult<()> {
    let rt = runtime::current()?;
    let id = id16(fn_id, "function", FnId)?;
    rt.node.register_function(id, blob).map_err(node_err)
}

/// A normalised runtime environment, made once per environment and passed
/// with every task submitted in it: the key workers are matched by, what a
/// worker applies, and the objects (packages) its tasks hold.
#[pyclass(name = "RuntimeEnv", module = "peer._native", frozen)]
pub struct RuntimeEnvHandle {
    env: Arc<RuntimeEnv>,
    packages: Vec<ObjectId>,
}

#[pymethods]
impl RuntimeEnvHandle {
    #[new]
    fn new(key: &[u8], setup: String, packages: &Bound<'_, PyAny>) -> PyResult<Self> {
        Ok(Self {
            env: Arc::new(RuntimeEnv {
                key: id16(key, "runtime_env", EnvKey)?,
                setup,
            }),
            packages: ids_from(packages)?,
        })
    }
}

/// Encode arguments and build a task spec.
#[allow(clippy::too_many_arguments)]
fn build_spec(
    py: Python<'_>,
    rt: &Runtime,
    kind: TaskKind,
    fn_id: FnId,
    actor: Option<ActorId>,
    method: String,
    name: String,
    args_pickle: &[u8],
    args_buffers: &Bound<'_, PyAny>,
    deps: &Bound<'_, PyAny>,
    num_returns: u32,
    resources: Vec<(String, f64)>,
    max_retries: i32,
    retry_exceptions: bool,
    contained: Option<&Bound<'_, PyAny>>,
    runtime_env: Option<&RuntimeEnvHandle>,
) -> PyResult<TaskSpec> {
    let task = TaskId::owned_by(rt.info.owner_tag);
    let bufs = raw_buffers(args_buffers)?;
    let args = encode_value(py, rt, args_object_id(task), args_pickle, &bufs)?;
    let mut contained = contained_ids(contained)?;
    if let Some(env) = runtime_env {
        // The task holds its environment's packages like refs in its arguments.
        contained.extend_from_slice(&env.packages);
    }
    Ok(TaskSpec {
        task,
        kind,
        fn_id,
        actor,
        method,
        name,
        args,
        deps: ids_from(deps)?,
        contained,
        num_returns,
        resources,
        max_retries,
        retry_exceptions,
        actor_options: None,
        runtime_env: runtime_env.map(|e| Arc::clone(&e.env)),
    })
}

fn return_ids<'py>(py: Python<'py>, spec: &TaskSpec) -> Bound<'py, PyList> {
    let ids: Vec<Bound<'py, PyBytes>> = spec
        .return_ids()
        .map(|id| PyBytes::new(py, &id.0))
        .collect();
    PyList::new(py, ids).unwrap_or_else(|_| PyList::empty(py))
}

fn submit_spec(rt: &Runtime, spec: TaskSpec) -> PyResult<()> {
    rt.node.submit(spec).map_err(node_err)
}

#[pyfunction]
#[pyo3(signature = (fn_id, args_pickle, args_buffers, deps, *, num_returns, num_cpus, resources, max_retries, retry_exceptions, name, contained=None, runtime_env=None))]
#[allow(clippy::too_many_arguments)]
pub fn submit_task<'py>(
    py: Python<'py>,
    fn_id: &[u8],
    args_pickle: &[u8],
    args_buffers: &Bound<'py, PyAny>,
    deps: &Bound<'py, PyAny>,
    num_returns: u32,
    num_cpus: f64,
    resources: &Bound<'py, PyDict>,
    max_retries: i32,
    retry_exceptions: bool,
    name: String,
    contained: Option<&Bound<'py, PyAny>>,
    runtime_env: Option<PyRef<'py, RuntimeEnvHandle>>,
) -> PyResult<Bound<'py, PyList>> {
    let rt = runtime::current()?;
    let spec = build_spec(
        py,
        &rt,
        TaskKind::Normal,
        id16(fn_id, "function", FnId)?,
        None,
        String::new(),
        name,
        args_pickle,
        args_buffers,
        deps,
        num_returns,
        resource_pairs(num_cpus, resources)?,
        max_retries,
        retry_exceptions,
        contained,
        runtime_env.as_deref(),
    )?;
    let ids = return_ids(py, &spec);
    submit_spec(&rt, spec)?;
    Ok(ids)
}

#[pyfunction]
#[pyo3(signature = (class_id, args_pickle, args_buffers, deps, *, num_cpus, resources, max_restarts, name, class_name, handle_blob, contained=None, detached=false, runtime_env=None))]
#[allow(clippy::too_many_arguments)]
pub fn create_actor<'py>(
    py: Python<'py>,
    class_id: &[u8],
    args_pickle: &[u8],
    args_buffers: &Bound<'py, PyAny>,
    deps: &Bound<'py, PyAny>,
    num_cpus: f64,
    resources: &Bound<'py, PyDict>,
    max_restarts: i32,
    name: Option<String>,
    class_name: String,
    handle_blob: Vec<u8>,
    contained: Option<&Bound<'py, PyAny>>,
    detached: bool,
    runtime_env: Option<PyRef<'py, RuntimeEnvHandle>>,
) -> PyResult<Bound<'py, PyBytes>> {
    let rt = runtime::current()?;
    let actor = ActorId::owned_by(rt.info.owner_tag);
    let mut spec = build_spec(
        py,
        &rt,
        TaskKind::ActorCreate,
        id16(class_id, "class", FnId)?,
        Some(actor),
        "__init__".into(),
        format!("{class_name}.__init__"),
        args_pickle,
        args_buffers,
        deps,
        0,
        resource_pairs(num_cpus, resources)?,
        0,
        false,
        contained,
        runtime_env.as_deref(),
    )?;
    // The stored handle is the actor id followed by the Python handle blob.
    let mut stored = actor.0.to_vec();
    stored.extend_from_slice(&handle_blob);
    spec.actor_options = Some(ActorOptions {
        actor,
        name,
        class_name,
        max_restarts,
        handle_blob: ByteBuf::from(stored),
        detached,
    });
    submit_spec(&rt, spec)?;
    Ok(PyBytes::new(py, &actor.0))
}

#[pyfunction]
#[pyo3(signature = (actor_id, method, args_pickle, args_buffers, deps, *, num_returns, name, contained=None, max_retries=0))]
#[allow(clippy::too_many_arguments)]
pub fn submit_actor_task<'py>(
    py: Python<'py>,
    actor_id: &[u8],
    method: String,
    args_pickle: &[u8],
    args_buffers: &Bound<'py, PyAny>,
    deps: &Bound<'py, PyAny>,
    num_returns: u32,
    name: String,
    contained: Option<&Bound<'py, PyAny>>,
    max_retries: i32,
) -> PyResult<Bound<'py, PyList>> {
    let rt = runtime::current()?;
    let spec = build_spec(
        py,
        &rt,
        TaskKind::ActorMethod,
        FnId([0; 16]),
        Some(id16(actor_id, "actor", ActorId)?),
        method,
        name,
        args_pickle,
        args_buffers,
        deps,
        num_returns,
        Vec::new(),
        max_retries,
        false,
        contained,
        None,
    )?;
    let ids = return_ids(py, &spec);
    submit_spec(&rt, spec)?;
    Ok(ids)
}

/// `(actor_id, handle_blob)` of a live named actor, or None.
#[pyfunction]
pub fn get_actor<'py>(
    py: Python<'py>,
    name: &str,
) -> PyResult<Option<(Bound<'py, PyBytes>, Bound<'py, PyBytes>)>> {
    let rt = runtime::current()?;
    let stored = py.detach(|| rt.node.get_actor(name)).map_err(node_err)?;
    Ok(stored
        .filter(|b| b.len() >= 16)
        .map(|b| (PyBytes::new(py, &b[..16]), PyBytes::new(py, &b[16..]))))
}

#[pyfunction]
pub fn kill_actor(actor_id: &[u8], no_restart: bool) -> PyResult<()> {
    let rt = runtime::current()?;
    rt.node
        .kill_actor(id16(actor_id, "actor", ActorId)?, no_restart)
        .map_err(node_err)
}

#[pyfunction]
#[pyo3(signature = (object_id, force, recursive=true))]
pub fn cancel(object_id: &[u8], force: bool, recursive: bool) -> PyResult<()> {
    let rt = runtime::current()?;
    rt.node
        .cancel(ObjectRefBase::parse_id(object_id)?, force, recursive)
        .map_err(node_err)
}

#[pyfunction]
#[pyo3(signature = (pickle, buffers, contained=None))]
pub fn put<'py>(
    py: Python<'py>,
    pickle: &[u8],
    buffers: &Bound<'py, PyAny>,
    contained: Option<&Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyBytes>> {
    let rt = runtime::current()?;
    let id = ObjectId::for_put_by(rt.info.owner_tag);
    let contained = contained_ids(contained)?;
    let bufs = raw_buffers(buffers)?;
    match encode_value(py, &rt, id, pickle, &bufs)? {
        Value::Inline(b) => rt
            .node
            .put_inline(id, b.into_vec(), contained)
            .map_err(node_err)?,
        Value::Stored { .. } => rt.node.seal(id, contained).map_err(node_err)?,
        Value::Error(_) => unreachable!("encode_value never makes errors"),
    }
    Ok(PyBytes::new(py, &id.0))
}

#[pyfunction]
#[pyo3(signature = (ids, timeout))]
pub fn get<'py>(
    py: Python<'py>,
    ids: &Bound<'py, PyAny>,
    timeout: Option<f64>,
) -> PyResult<Option<Bound<'py, PyList>>> {
    let rt = runtime::current()?;
    let ids = ids_from(ids)?;
    let timeout = timeout_of(timeout)?;
    let mut sig_err = None;
    let values = {
        let mut check = signal_checker(&mut sig_err);
        py.detach(|| {
            let patience = Patience {
                timeout,
                interrupted: &mut check,
            };
            rt.node.get(&ids, patience)
        })
    };
    if let Some(e) = sig_err {
        return Err(e);
    }
    let Some(values) = values.map_err(node_err)? else {
        return Ok(None);
    };
    let out = PyList::empty(py);
    for (id, v) in ids.iter().zip(values) {
        out.append(value_to_py(py, &rt, *id, v)?)?;
    }
    Ok(Some(out))
}

#[pyfunction]
#[pyo3(signature = (ids, num_returns, timeout, fetch_local))]
pub fn wait(
    py: Python<'_>,
    ids: &Bound<'_, PyAny>,
    num_returns: usize,
    timeout: Option<f64>,
    fetch_local: bool,
) -> PyResult<Vec<u32>> {
    let rt = runtime::current()?;
    let ids = ids_from(ids)?;
    let timeout = timeout_of(timeout)?;
    let mut sig_err = None;
    let ready = {
        let mut check = signal_checker(&mut sig_err);
        py.detach(|| {
            let patience = Patience {
                timeout,
                interrupted: &mut check,
            };
            rt.node.wait(&ids, num_returns, fetch_local, patience)
        })
    };
    if let Some(e) = sig_err {
        return Err(e);
    }
    ready.map_err(node_err)
}

#[pyfunction]
pub fn decode<'py>(
    py: Python<'py>,
    value: &Bound<'py, PyAny>,
) -> PyResult<(Bound<'py, PyAny>, Bound<'py, PyList>)> {
    values::decode(py, value)
}

/// Drop one handle of `object_id` that the node counted on this process's
/// behalf (a named actor lookup's answer), once a Python object holds its own.
#[pyfunction]
pub fn release_ref(object_id: &[u8]) -> PyResult<()> {
    if let Some(rt) = runtime::current_opt() {
        rt.node.dec_refs(&[ObjectRefBase::parse_id(object_id)?]);
    }
    Ok(())
}

#[pyfunction]
pub fn ref_escaped(object_id: &[u8]) -> PyResult<()> {
    if let Some(rt) = runtime::current_opt() {
        rt.node.mark_escaped(&[ObjectRefBase::parse_id(object_id)?]);
    }
    Ok(())
}

fn query(py: Python<'_>, q: Query) -> PyResult<Py<PyAny>> {
    let rt = runtime::current()?;
    let v = py.detach(|| rt.node.query(q)).map_err(node_err)?;
    json_to_py(py, &v)
}

#[pyfunction]
pub fn nodes(py: Python<'_>) -> PyResult<Py<PyAny>> {
    query(py, Query::Nodes)
}

#[pyfunction]
pub fn cluster_resources(py: Python<'_>) -> PyResult<Py<PyAny>> {
    query(py, Query::ClusterResources)
}

#[pyfunction]
pub fn available_resources(py: Python<'_>) -> PyResult<Py<PyAny>> {
    query(py, Query::AvailableResources)
}

#[pyfunction]
pub fn status(py: Python<'_>) -> PyResult<Py<PyAny>> {
    query(py, Query::Status)
}

/// The rows of `peer list <what>` from every peer, as `{"nodes": [...], "missing": [...]}`.
#[pyfunction]
pub fn cluster_list(py: Python<'_>, what: &str) -> PyResult<Py<PyAny>> {
    let listing = Listing::from_name(what)
        .ok_or_else(|| PyValueError::new_err(format!("cannot list {what:?}")))?;
    query(py, Query::Cluster(listing))
}

/// Chrome trace events of what ran on every peer (`peer.timeline()`).
#[pyfunction]
pub fn timeline(py: Python<'_>) -> PyResult<Py<PyAny>> {
    let rt = runtime::current()?;
    let gathered = py
        .detach(|| rt.node.query(Query::Cluster(Listing::Timeline)))
        .map_err(node_err)?;
    json_to_py(py, &peer_node::timeline::chrome_trace(&gathered))
}

#[pyfunction]
pub fn runtime_context<'py>(py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
    let rt = runtime::current()?;
    let ctx = *rt.context.lock();
    let d = PyDict::new(py);
    d.set_item("node_id", &rt.info.node_id)?;
    d.set_item("worker_id", rt.worker_id.map(|w| w.to_string()))?;
    d.set_item("task_id", ctx.task.map(|t| t.to_string()))?;
    d.set_item("actor_id", ctx.actor.map(|a| a.to_string()))?;
    Ok(d)
}

/// The `peer` command line, for the Python console script.
#[pyfunction]
pub fn cli_main(
    py: Python<'_>,
    argv: Vec<String>,
    python: String,
    python_path: Vec<String>,
) -> i32 {
    use clap::Parser;
    let mut cli = match peer_node::cli::Cli::try_parse_from(&argv) {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return e.exit_code();
        }
    };
    if let peer_node::cli::Command::Up { python: p, .. } = &mut cli.command
        && std::env::var_os("PEER_PYTHON").is_none()
        && p.as_os_str() == "python3"
    {
        *p = PathBuf::from(python);
    }
    match py.detach(|| peer_node::cli::run(cli, python_path)) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("peer: {e:#}");
            1
        }
    }
}
