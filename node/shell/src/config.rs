//! How a node is started: sizes, paths and the Python that runs workers.

use std::path::PathBuf;

/// Settings of one node.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// CPU slots (default: the machine's cores).
    pub num_cpus: f64,
    /// Custom resources. (GPUs are found, or counted by `num_gpus`; a `GPU`
    /// amount here is taken as `num_gpus`.)
    pub resources: Vec<(String, f64)>,
    /// How many GPUs to offer (None: the NVIDIA devices NVML finds, limited
    /// by `CUDA_VISIBLE_DEVICES`).
    pub num_gpus: Option<u32>,
    /// Bytes of shared memory for the store (None: a share of RAM).
    pub object_store_memory: Option<u64>,
    /// Where the node keeps its socket, logs and spill files.
    pub state_dir: PathBuf,
    /// The Python interpreter that runs workers.
    pub python: PathBuf,
    /// `sys.path` of the driver, handed to workers as `PYTHONPATH`.
    pub python_path: Vec<String>,
    /// Working directory of the workers.
    pub cwd: Option<PathBuf>,
    /// Run as the `peer up` daemon (socket at a well-known path in the state dir).
    pub daemon: bool,
    /// Join a multi-peer cluster; None: a one-peer cluster with no network port.
    pub network: Option<crate::cluster::NetworkConfig>,
    /// Serve the dashboard on this address (None: no dashboard, and nothing
    /// collected for it).
    pub dashboard: Option<std::net::SocketAddr>,
}

impl NodeConfig {
    /// Defaults for a state directory.
    pub fn new(state_dir: PathBuf) -> Self {
        Self {
            num_cpus: std::thread::available_parallelism()
                .map(|n| n.get() as f64)
                .unwrap_or(1.0),
            resources: Vec::new(),
            num_gpus: None,
            object_store_memory: None,
            state_dir,
            python: PathBuf::from("python3"),
            python_path: Vec::new(),
            cwd: None,
            daemon: false,
            network: None,
            dashboard: None,
        }
    }
}

/// The default state directory: `$PEER_STATE_DIR`, else `~/.peer`.
pub fn default_state_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("PEER_STATE_DIR") {
        return PathBuf::from(d);
    }
    let home = std::env::var_os("HOME").map_or_else(std::env::temp_dir, PathBuf::from);
    home.join(".peer")
}
