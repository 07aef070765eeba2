//! What the core is told when it starts.

use std::path::PathBuf;

use crate::ids::{NodeId, PeerId};

/// Settings of a node's core.
#[derive(Debug, Clone)]
pub struct CoreConfig {
    /// This node's own id (laptop mode: it makes the owner tag).
    pub node_id: NodeId,
    /// The node's peer id when it is a member of a cluster; None: a
    /// one-peer cluster that never talks to peers.
    pub peer_id: Option<PeerId>,
    /// This run of the node: a node restarted under the same peer id is a
    /// new incarnation, which holds none of the old one's tasks, objects or
    /// actors.
    pub incarnation: u64,
    /// Seeds every random choice the core makes (worker ids, placement).
    pub seed: u64,
    /// CPU slots.
    pub num_cpus: f64,
    /// Custom resources. A `GPU` amount here (without `gpu_ids`) stands for
    /// devices `0..n`.
    pub resources: Vec<(String, f64)>,
    /// The ids of this node's GPU devices, as `CUDA_VISIBLE_DEVICES` names
    /// them; when given they set the `GPU` total.
    pub gpu_ids: Vec<String>,
    /// Memory of those devices in all, in bytes (told to other peers).
    pub gpu_memory: u64,
    /// The node runs as the `peer up` daemon (only then may `peer down` stop it).
    pub daemon: bool,
    /// Where clients map the store from, and its size (told in Welcome).
    pub store_path: PathBuf,
    pub store_size: u64,
    /// The process hosting the node (named when the store is full of its pins).
    pub pid: u32,
}
