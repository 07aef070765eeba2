//! The per-machine `peer` node: the tokio shell around the sans-IO core
//! (`peer-node-core`), and the `peer` command line.
//!
//! The core decides; the shell carries its commands out and feeds it events.
//!
//! - [`engine`]: the core and its I/O behind one lock; every command
//!   ([`Command`](peer_node_core::Command)) is carried out here;
//! - [`node`]: a node running in this process ([`Node`]: laptop mode, the
//!   `peer up` daemon); [`api`]: the node API ([`NodeApi`]), which [`Node`]
//!   and the socket [`Client`] both implement;
//! - `local`: this machine: the Unix-socket server and each connection's
//!   outbox, the client of a node's socket, the worker fork server, the
//!   shared-memory store, the node's files;
//! - [`cluster`]: other peers: joining through `peer-gossip`, the links
//!   that carry peer messages, pulls of objects between stores;
//! - [`gpus`]: the GPUs the node offers (NVML, `CUDA_VISIBLE_DEVICES`);
//! - [`dashboard`]: the page and read-only JSON any peer serves;
//!   [`timeline`]: Chrome trace events of what ran across the cluster;
//! - [`timers`], [`frames`] (async frame reading), [`config`], [`error`],
//!   [`sys`] (the few libc calls), [`cli`], [`runtime_envs`] (the runtime
//!   environments cached in the state directory, for `peer status`).

pub mod api;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod dashboard;
pub mod engine;
pub mod error;
pub mod frames;
pub mod gpus;
pub mod listing;
pub mod local;
pub mod node;
pub mod runtime_envs;
pub mod sys;
pub mod timeline;
pub mod timers;

pub use api::NodeApi;
pub use config::NodeConfig;
pub use error::NodeError;
pub use local::client::{Client, WorkerEvent};
pub use node::{Node, NodeInfo};
pub use peer_node_core as core;
