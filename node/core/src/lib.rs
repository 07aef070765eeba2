//! The `peer` node's core: its state machine as sans-IO code, plus the wire
//! types it speaks. No sockets, no clock, no threads, no processes, no
//! files: events come in with the time they happened, commands go out, and
//! the object store is a trait the shell (`peer-node`) or the simulator
//! (`peer-node-sim`) provides.
//!
//! - [`Core`] (`core`): the state machine; [`Event`]s in
//!   ([`Core::handle`]), [`Command`]s out ([`Core::poll_command`]), and the
//!   `driver_*` calls of a driver embedded in the node's process;
//! - `local`: this node's own work (connections, objects, waits, tasks,
//!   scheduler, workers, actors);
//! - `cluster`: the other peers (membership, placement, tasks and objects
//!   crossing peers, pulls, remote actors, failure and lineage);
//! - [`wire`]: local and peer messages, frames, object blobs;
//! - [`ids`], [`resources`], [`store`] (the [`ObjectStore`] trait),
//!   [`config`], [`error`], `query` (status as JSON), [`history`] (what
//!   ran here: runs, failures, spans, worker output) and `listing` (this
//!   node's state as rows, gathered cluster-wide by `cluster::gather`).

#![forbid(unsafe_code)]

mod cluster;
pub mod command;
pub mod config;
mod core;
pub mod error;
pub mod event;
pub mod history;
pub mod ids;
mod invariants;
mod listing;
mod local;
mod query;
pub mod resources;
pub mod store;
pub mod wire;

#[cfg(test)]
mod tests;

pub use crate::cluster::GATHER_TIMEOUT;
pub use crate::cluster::placement::{BID_TIMEOUT, MAX_HOPS};
pub use crate::cluster::pulls::{CHUNK, PullSource};
pub use crate::command::Command;
pub use crate::config::CoreConfig;
pub use crate::core::{Core, Stats};
pub use crate::error::{ProtocolError, SubmitError};
pub use crate::event::{Event, NetworkView, PeerLink, PeerLoad, PeerView, PullFailure};
pub use crate::invariants::{ObjectsLeft, Violation, WorkLeft};
pub use crate::local::values::ANNOUNCE_MIN_BYTES;
pub use crate::local::waits::Awaited;
pub use crate::store::{Allocation, ObjectStore, Spilled, StoreError, StoreStats};
