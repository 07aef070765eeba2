//! The per-machine `peer` node as a library: the local scheduler, the worker
//! pool, the owner tables (objects, tasks, actors) and the Unix-socket
//! protocol its local clients speak.
//!
//! - [`Node`] runs a node in this process (laptop mode, or the `peer up` daemon);
//! - [`Client`] talks to a node from another process (workers, attached drivers, the CLI);
//! - [`blob`] is the encoded form of objects, shared by both sides;
//! - across peers: `placement` (bid rounds over the `peer-placement` policy),
//!   `remote` (tasks, values and actors crossing peers), `links` (the streams),
//!   [`peer_msg`] (their wire format), `cluster_state` (what a node keeps about the others).

mod actors;
pub mod blob;
pub mod cli;
pub mod client;
pub mod cluster;
mod cluster_state;
pub mod codec;
pub mod config;
pub mod error;
mod failure;
mod handle;
pub mod ids;
mod links;
pub mod node;
mod objects;
mod outbox;
pub mod peer_msg;
mod placement;
pub mod protocol;
mod pull;
mod query;
mod remote;
pub mod resources;
mod server;
mod state;
#[cfg(test)]
mod state_tests;
pub mod sys;
mod tasks;
mod workers;

pub use client::Client;
pub use config::NodeConfig;
pub use error::NodeError;
pub use node::{Node, NodeInfo};
