//! The node's files: its private state and run directories, its Unix socket
//! (readable by its owner only), and what dead nodes left behind.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::config::NodeConfig;
use crate::error::NodeError;

/// The socket of the `peer up` daemon of a state directory.
pub fn daemon_socket_path(state_dir: &Path) -> PathBuf {
    state_dir.join("daemon.sock")
}

pub(crate) fn private_dir(dir: &Path) -> Result<(), NodeError> {
    std::fs::create_dir_all(dir)
        .map_err(|e| NodeError::io(format!("creating {}", dir.display()), e))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| NodeError::io(format!("restricting {}", dir.display()), e))
}

/// Where this node's socket goes: the well-known path for the daemon, else a
/// per-process one in the run directory (or under /tmp when that path would
/// be too long for a Unix socket).
pub(crate) fn socket_path(
    config: &NodeConfig,
    run_dir: &Path,
    tag: &str,
) -> Result<PathBuf, NodeError> {
    if config.daemon {
        return Ok(daemon_socket_path(&config.state_dir));
    }
    let p = run_dir.join(format!("node-{tag}.sock"));
    if p.as_os_str().len() < 100 {
        return Ok(p);
    }
    let dir = std::env::temp_dir().join(format!("peer-{}", crate::sys::uid()));
    private_dir(&dir)?;
    Ok(dir.join(format!("node-{tag}.sock")))
}

/// Bind the node's socket, readable by its owner only (refusing to start a
/// second daemon on a live one; a stale socket file is replaced).
pub(crate) fn bind_private_socket(
    socket: &Path,
    config: &NodeConfig,
) -> Result<std::os::unix::net::UnixListener, NodeError> {
    if config.daemon && socket.exists() {
        if std::os::unix::net::UnixStream::connect(socket).is_ok() {
            return Err(NodeError::Rejected(format!(
                "a peer daemon already runs for {} (socket {}); stop it with `peer down`",
                config.state_dir.display(),
                socket.display()
            )));
        }
        let _ = std::fs::remove_file(socket);
    }
    let listener = std::os::unix::net::UnixListener::bind(socket)
        .map_err(|e| NodeError::io(format!("binding {}", socket.display()), e))?;
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| NodeError::io(format!("restricting {}", socket.display()), e))?;
    listener
        .set_nonblocking(true)
        .map_err(|e| NodeError::io("socket set_nonblocking", e))?;
    Ok(listener)
}

/// Remove arena files and sockets left by node processes that no longer run.
pub(crate) fn sweep_stale(run_dir: &Path) {
    let sweep = |dir: &Path, prefix: &str| {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(rest) = name.strip_prefix(prefix) else {
                continue;
            };
            let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
                continue;
            };
            if !crate::sys::process_alive(pid) {
                tracing::info!("removing {} left by a node that died", e.path().display());
                let _ = std::fs::remove_file(e.path());
            }
        }
    };
    sweep(Path::new("/dev/shm"), "peer-");
    sweep(run_dir, "node-");
}
