//! `peer._native`: the thin pyo3 layer over the Rust node.
//!
//! The core crates know nothing of Python; this crate maps their API to the
//! functions listed in `python/peer/_native.pyi`. Pickling, `ObjectRef`
//! wrapping and exception classes live in the pure-Python package.
//!
//! - `api`: the functions of `peer._native`;
//! - `runtime`: this process's node (embedded, or reached through a socket)
//!   behind the shared node API;
//! - `values`: Python values into inline blobs or the store, and back;
//! - `object_ref`: `ObjectRefBase`, the live handle of an object id;
//! - `worker`: the worker loop (receive a task, let Python run it, report);
//! - `errors`: native exceptions and the mapping from node errors;
//! - `buffer`: raw memory across the boundary (the crate's only `unsafe`).

mod api;
mod buffer;
mod errors;
mod object_ref;
mod runtime;
mod values;
mod worker;

use pyo3::prelude::*;

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("VALUE_INLINE", values::VALUE_INLINE)?;
    m.add("VALUE_STORED", values::VALUE_STORED)?;
    m.add("VALUE_ERROR", values::VALUE_ERROR)?;
    m.add("TASK_NORMAL", worker::TASK_NORMAL)?;
    m.add("TASK_ACTOR_CREATE", worker::TASK_ACTOR_CREATE)?;
    m.add("TASK_ACTOR_METHOD", worker::TASK_ACTOR_METHOD)?;
    m.add("DEFERRED", worker::DEFERRED)?;
    m.add("EXIT", worker::EXIT)?;
    m.add("CANCELLED", worker::CANCELLED)?;
    m.add("FAILED_FINAL", worker::FAILED_FINAL)?;
    use peer_node_core::wire::local::ErrorKind as K;
    m.add("ERR_TASK", K::Task.as_str())?;
    m.add("ERR_WORKER_CRASHED", K::WorkerCrashed.as_str())?;
    m.add("ERR_ACTOR_DIED", K::ActorDied.as_str())?;
    m.add("ERR_STORE_FULL", K::StoreFull.as_str())?;
    m.add("ERR_CANCELLED", K::Cancelled.as_str())?;
    m.add("ERR_OBJECT_LOST", K::ObjectLost.as_str())?;
    m.add("ERR_OWNER_DIED", K::OwnerDied.as_str())?;
    m.add("ERR_ACTOR_UNAVAILABLE", K::ActorUnavailable.as_str())?;
    m.add("INLINE_MAX", peer_node_core::wire::local::INLINE_MAX)?;
    m.add("PeerNativeError", py.get_type::<errors::PeerNativeError>())?;
    m.add(
        "NativeStoreFullError",
        py.get_type::<errors::NativeStoreFullError>(),
    )?;
    m.add(
        "NativeNotInitializedError",
        py.get_type::<errors::NativeNotInitializedError>(),
    )?;
    m.add_class::<buffer::PinnedBuffer>()?;
    m.add_class::<errors::ErrorInfo>()?;
    m.add_class::<object_ref::ObjectRefBase>()?;
    m.add_class::<api::RuntimeEnvHandle>()?;
    m.add_function(wrap_pyfunction!(api::init_embedded, m)?)?;
    m.add_function(wrap_pyfunction!(api::attach, m)?)?;
    m.add_function(wrap_pyfunction!(api::daemon_socket, m)?)?;
    m.add_function(wrap_pyfunction!(api::shutdown, m)?)?;
    m.add_function(wrap_pyfunction!(api::is_initialized, m)?)?;
    m.add_function(wrap_pyfunction!(api::register_function, m)?)?;
    m.add_function(wrap_pyfunction!(api::submit_task, m)?)?;
    m.add_function(wrap_pyfunction!(api::create_actor, m)?)?;
    m.add_function(wrap_pyfunction!(api::submit_actor_task, m)?)?;
    m.add_function(wrap_pyfunction!(api::get_actor, m)?)?;
    m.add_function(wrap_pyfunction!(api::kill_actor, m)?)?;
    m.add_function(wrap_pyfunction!(api::cancel, m)?)?;
    m.add_function(wrap_pyfunction!(api::put, m)?)?;
    m.add_function(wrap_pyfunction!(api::get, m)?)?;
    m.add_function(wrap_pyfunction!(api::wait, m)?)?;
    m.add_function(wrap_pyfunction!(api::decode, m)?)?;
    m.add_function(wrap_pyfunction!(api::ref_escaped, m)?)?;
    m.add_function(wrap_pyfunction!(api::release_ref, m)?)?;
    m.add_function(wrap_pyfunction!(api::nodes, m)?)?;
    m.add_function(wrap_pyfunction!(api::cluster_resources, m)?)?;
    m.add_function(wrap_pyfunction!(api::available_resources, m)?)?;
    m.add_function(wrap_pyfunction!(api::status, m)?)?;
    m.add_function(wrap_pyfunction!(api::cluster_list, m)?)?;
    m.add_function(wrap_pyfunction!(api::timeline, m)?)?;
    m.add_function(wrap_pyfunction!(api::runtime_context, m)?)?;
    m.add_function(wrap_pyfunction!(api::cli_main, m)?)?;
    m.add_function(wrap_pyfunction!(worker::worker_main, m)?)?;
    m.add_function(wrap_pyfunction!(worker::emit_output, m)?)?;
    m.add_function(wrap_pyfunction!(worker::task_finished, m)?)?;
    m.add_function(wrap_pyfunction!(worker::actor_exit, m)?)?;
    m.add_function(wrap_pyfunction!(worker::take_cancel, m)?)?;
    m.add_function(wrap_pyfunction!(worker::retire_after_task, m)?)?;
    Ok(())
}
