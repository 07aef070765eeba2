//! Worker processes: the fork server (`python -m peer._forkserver`), which
//! has imported the worker code already and forks one worker per line it
//! reads, and the task that feeds it the core's spawn requests.

use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;

use parking_lot::Mutex;
use peer_node_core::Event;
use peer_node_core::ids::WorkerId;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

use crate::config::NodeConfig;
use crate::engine::Shared;

/// Start the worker fork server.
pub fn start_forkserver(
    config: &NodeConfig,
    socket: &Path,
) -> std::io::Result<tokio::process::Child> {
    let mut cmd = tokio::process::Command::new(&config.python);
    cmd.args(["-m", "peer._forkserver"])
        .env("PEER_SOCKET", socket)
        // Where workers keep the runtime environments they set up.
        .env("PEER_STATE_DIR", &config.state_dir)
        .stdin(Stdio::piped())
        .kill_on_drop(false);
    if !config.python_path.is_empty() {
        cmd.env("PYTHONPATH", config.python_path.join(":"));
    }
    if let Some(cwd) = &config.cwd {
        cmd.current_dir(cwd);
    }
    cmd.spawn()
}

/// Feed spawn requests to the fork server; report if it dies.
pub async fn run_spawner(
    mut child: tokio::process::Child,
    mut rx: mpsc::UnboundedReceiver<WorkerId>,
    shared: Arc<Shared>,
    pid_slot: Arc<Mutex<Option<u32>>>,
) {
    let Some(mut stdin) = child.stdin.take() else {
        return;
    };
    let mut line = Vec::with_capacity(40);
    loop {
        tokio::select! {
            req = rx.recv() => {
                let Some(worker) = req else { break };
                line.clear();
                line.extend_from_slice(format!("{worker}\n").as_bytes());
                if let Err(e) = stdin.write_all(&line).await {
                    tracing::warn!("writing to the fork server: {e}");
                    break;
                }
            }
            status = child.wait() => {
                let why = match status {
                    Ok(s) => format!("the worker fork server exited ({s})"),
                    Err(e) => format!("waiting for the worker fork server: {e}"),
                };
                *pid_slot.lock() = None;
                shared.handle(Event::SpawnerFailed { why });
                return;
            }
        }
    }
    drop(stdin);
    let _ = child.wait().await;
    *pid_slot.lock() = None;
}
