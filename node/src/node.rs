//! A running node: its tokio runtime, socket, store, fork server and the
//! in-process API the embedded driver calls.
//!
//! - `Node::start` maps the store, binds the socket, and asks the fork server
//!   for the initial workers; it returns before any worker is up;
//! - the embedded driver calls [`Node`] methods directly (no socket hop);
//! - workers and attached drivers go through [`crate::server`].

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use peer_objstore::{Arena, Store};
use serde_bytes::ByteBuf;
use tokio::io::AsyncWriteExt;
use tokio::sync::{Notify, mpsc};

use crate::config::NodeConfig;
use crate::error::NodeError;
use crate::ids::{ActorId, FnId, NodeId, ObjectId, WorkerId};
use crate::protocol::{ErrorInfo, Query, Reserved, TaskSpec, Value};
use crate::state::{LocalSignal, SpawnRequest, State, Target, WaitId};

/// State shared by the runtime's tasks and the embedded driver.
pub struct Shared {
    pub state: Mutex<State>,
    /// Notified when a control client asks the daemon to stop.
    pub stop: Notify,
}

/// What a client needs to know about a node.
#[derive(Debug, Clone)]
pub struct NodeInfo {
    pub node_id: NodeId,
    pub socket: PathBuf,
    pub arena_path: PathBuf,
    pub arena_size: u64,
    pub num_cpus: f64,
    pub resources: Vec<(String, f64)>,
}

/// A node running in this process.
pub struct Node {
    shared: Arc<Shared>,
    rt: Mutex<Option<tokio::runtime::Runtime>>,
    info: NodeInfo,
    forkserver_pid: Arc<Mutex<Option<u32>>>,
}

/// The socket of the `peer up` daemon of a state directory.
pub fn daemon_socket_path(state_dir: &Path) -> PathBuf {
    state_dir.join("daemon.sock")
}

fn private_dir(dir: &Path) -> Result<(), NodeError> {
    std::fs::create_dir_all(dir)
        .map_err(|e| NodeError::io(format!("creating {}", dir.display()), e))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| NodeError::io(format!("restricting {}", dir.display()), e))
}

/// Where this node's socket goes: the well-known path for the daemon, else a
/// per-process one in the run directory (or under /tmp when that path would
/// be too long for a Unix socket).
fn socket_path(config: &NodeConfig, run_dir: &Path, tag: &str) -> Result<PathBuf, NodeError> {
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
fn bind_private_socket(
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
fn sweep_stale(run_dir: &Path) {
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

impl Node {
    /// Start a node: store, socket, runtime and (in the background) its workers.
    pub fn start(config: NodeConfig) -> Result<Node, NodeError> {
        private_dir(&config.state_dir)?;
        let run_dir = config.state_dir.join("run");
        private_dir(&run_dir)?;
        sweep_stale(&run_dir);
        let pid = std::process::id();
        let tag = format!("{pid}-{:08x}", rand::random::<u32>());
        let size = config
            .object_store_memory
            .unwrap_or_else(peer_objstore::default_capacity);
        let arena = Arena::create(&format!("peer-{tag}"), size as usize, &config.state_dir)?;
        let arena_path = arena.path().to_path_buf();
        let arena_size = arena.len() as u64;
        let store = Store::new(arena);

        let socket = socket_path(&config, &run_dir, &tag)?;
        let std_listener = bind_private_socket(&socket, &config)?;

        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("peer-node")
            .enable_all()
            .build()
            .map_err(|e| NodeError::io("starting the node runtime", e))?;

        let (spawn_tx, spawn_rx) = mpsc::unbounded_channel();
        let (timer_tx, timer_rx) = mpsc::unbounded_channel();
        let node_id = NodeId::random();
        let info = NodeInfo {
            node_id,
            socket: socket.clone(),
            arena_path,
            arena_size,
            num_cpus: config.num_cpus,
            resources: config.resources.clone(),
        };
        let spawn_cfg = config.clone();
        // Workers learn the node's public id when they connect, which may be
        // before the cluster layer is up: read the identity first.
        let public_id = match &config.network {
            Some(_) => Some(
                peer_gossip::Identity::load_or_create(&config.state_dir)
                    .map_err(|e| NodeError::Rejected(e.to_string()))?
                    .peer_id(),
            ),
            None => None,
        };
        let mut state = State::new(node_id, config, store, spawn_tx, timer_tx);
        if let Some(peer) = public_id {
            state.public_id = Some(peer.to_string());
            state.owner_tag = crate::ids::OwnerTag::of_peer(&peer);
        }
        state.start_pool();
        let shared = Arc::new(Shared {
            state: Mutex::new(state),
            stop: Notify::new(),
        });
        let forkserver_pid = Arc::new(Mutex::new(None));
        {
            let _guard = rt.enter();
            let listener = tokio::net::UnixListener::from_std(std_listener)
                .map_err(|e| NodeError::io("registering the socket", e))?;
            rt.spawn(crate::server::accept_loop(listener, Arc::clone(&shared)));
            match start_forkserver(&spawn_cfg, &socket) {
                Ok(child) => {
                    *forkserver_pid.lock() = child.id();
                    rt.spawn(run_spawner(
                        child,
                        spawn_rx,
                        Arc::clone(&shared),
                        Arc::clone(&forkserver_pid),
                    ));
                }
                Err(e) => {
                    let why = format!(
                        "could not run {} -m peer._forkserver: {e}",
                        spawn_cfg.python.display()
                    );
                    shared.state.lock().spawner_failed(why);
                }
            }
            rt.spawn(run_timers(timer_rx, Arc::clone(&shared)));
        }
        if let Some(net) = &spawn_cfg.network {
            let cluster = rt.block_on(crate::cluster::start(
                net,
                &spawn_cfg.state_dir,
                Arc::clone(&shared),
            ));
            match cluster {
                Ok(c) => shared.state.lock().cluster = Some(c),
                Err(e) => {
                    let node = Node {
                        shared,
                        rt: Mutex::new(Some(rt)),
                        info,
                        forkserver_pid,
                    };
                    node.stop();
                    return Err(e);
                }
            }
        }
        tracing::info!(node = %node_id, socket = %socket.display(), "node started");
        Ok(Node {
            shared,
            rt: Mutex::new(Some(rt)),
            info,
            forkserver_pid,
        })
    }

    pub fn info(&self) -> &NodeInfo {
        &self.info
    }

    /// Cluster membership, when the node joined one.
    pub fn cluster(&self) -> Option<Arc<crate::cluster::Cluster>> {
        self.shared.state.lock().cluster.clone()
    }

    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// The store's memory, for in-process readers and writers.
    pub fn arena(&self) -> Arc<Arena> {
        self.shared.state.lock().store.shared_arena()
    }

    /// Block until a control client asks the node to stop.
    pub fn wait_for_stop(&self) {
        let handle = self.rt.lock().as_ref().map(|rt| rt.handle().clone());
        if let Some(rt) = handle {
            rt.block_on(async {
                tokio::select! {
                    _ = self.shared.stop.notified() => {}
                    _ = tokio::signal::ctrl_c() => {}
                    _ = async {
                        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                            Ok(mut s) => { s.recv().await; }
                            Err(_) => std::future::pending::<()>().await,
                        }
                    } => {}
                }
            });
        }
    }

    pub fn register_function(&self, id: FnId, blob: Vec<u8>) {
        self.shared
            .state
            .lock()
            .functions
            .entry(id)
            .or_insert_with(|| Arc::new(ByteBuf::from(blob)));
    }

    /// Submit a task (or create an actor).
    pub fn submit(&self, spec: TaskSpec) -> Result<(), NodeError> {
        self.shared
            .state
            .lock()
            .submit(spec, crate::state::Holder::Local)
            .map_err(NodeError::Rejected)
    }

    /// Wait for values; `interrupted` is polled every 100 ms and ends the wait
    /// early (returns None) when it says so. Stored values come pinned.
    pub fn get(
        &self,
        ids: &[ObjectId],
        timeout: Option<Duration>,
        interrupted: &mut dyn FnMut() -> bool,
    ) -> Option<Vec<Value>> {
        let sig = Arc::new(LocalSignal::default());
        let wid = {
            let mut st = self.shared.state.lock();
            if st.all_ready(ids) {
                return Some(st.collect_local(ids));
            }
            let n = ids.len();
            st.begin_wait(
                ids.to_vec(),
                n,
                true,
                Target::Local(sig.clone()),
                None,
                None,
            )
        };
        self.block_on_signal(&sig, timeout, interrupted);
        let mut st = self.shared.state.lock();
        st.waits.remove(&wid);
        st.all_ready(ids).then(|| st.collect_local(ids))
    }

    /// Indices of ready ids, in completion order, at most `num_returns`.
    pub fn wait(
        &self,
        ids: &[ObjectId],
        num_returns: usize,
        timeout: Option<Duration>,
        interrupted: &mut dyn FnMut() -> bool,
    ) -> Vec<u32> {
        let sig = Arc::new(LocalSignal::default());
        let need = num_returns.min(ids.len());
        let wid = self.shared.state.lock().begin_wait(
            ids.to_vec(),
            need,
            false,
            Target::Local(sig.clone()),
            None,
            None,
        );
        self.block_on_signal(&sig, timeout, interrupted);
        let mut st = self.shared.state.lock();
        let mut ready = st.waits.remove(&wid).map(|w| w.ready).unwrap_or_default();
        ready.truncate(need);
        ready
    }

    fn block_on_signal(
        &self,
        sig: &LocalSignal,
        timeout: Option<Duration>,
        interrupted: &mut dyn FnMut() -> bool,
    ) {
        let deadline = timeout.map(|t| Instant::now() + t);
        let mut done = sig.done.lock();
        while !*done {
            let slice = Instant::now() + Duration::from_millis(100);
            let until = deadline.map_or(slice, |d| d.min(slice));
            let _ = sig.cv.wait_until(&mut done, until);
            if *done {
                break;
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                break;
            }
            drop(done);
            let stop = interrupted();
            done = sig.done.lock();
            if stop {
                break;
            }
        }
    }

    /// Reserve store space for a `put` or large arguments (or learn that the
    /// object is already there).
    pub fn create_object(&self, id: ObjectId, len: u64) -> Result<Reserved, ErrorInfo> {
        self.shared
            .state
            .lock()
            .create_object(crate::state::Holder::Local, id, len)
    }

    pub fn seal(&self, id: ObjectId, contained: Vec<ObjectId>) {
        self.shared
            .state
            .lock()
            .seal_object(crate::state::Holder::Local, id, contained);
    }

    /// Give up a created object that was never sealed.
    pub fn abort(&self, id: ObjectId) {
        let _ = self.shared.state.lock().store.abort(id);
    }

    pub fn put_inline(&self, id: ObjectId, blob: Vec<u8>, contained: Vec<ObjectId>) {
        self.shared
            .state
            .lock()
            .put_inline(id, ByteBuf::from(blob), contained);
    }

    pub fn release(&self, ids: &[ObjectId]) {
        self.shared.state.lock().release_local(ids);
    }

    pub fn add_refs(&self, ids: &[ObjectId]) {
        self.shared
            .state
            .lock()
            .add_refs(crate::state::Holder::Local, ids);
    }

    pub fn dec_refs(&self, ids: &[ObjectId]) {
        self.shared
            .state
            .lock()
            .dec_refs(crate::state::Holder::Local, ids);
    }

    pub fn mark_escaped(&self, ids: &[ObjectId]) {
        self.shared.state.lock().mark_escaped(ids);
    }

    pub fn cancel(&self, id: ObjectId, force: bool) {
        self.shared.state.lock().cancel(id, force);
    }

    pub fn kill_actor(&self, id: ActorId, no_restart: bool) {
        self.shared.state.lock().kill_actor(id, no_restart);
    }

    /// The pickled handle of a live named actor, on this node or (asking the
    /// peers) on another.
    pub fn get_actor(&self, name: &str) -> Option<Vec<u8>> {
        let lookup = Arc::new(crate::cluster_state::LocalLookup::default());
        self.shared.state.lock().lookup_actor(
            name,
            crate::cluster_state::LookupTarget::Local(Arc::clone(&lookup)),
        );
        let mut answer = lookup.answer.lock();
        // Peers that do not answer are given up on by the lookup's own deadline.
        let deadline = Instant::now() + Duration::from_secs(10);
        while answer.is_none() {
            if lookup.cv.wait_until(&mut answer, deadline).timed_out() {
                return None;
            }
        }
        answer.take().flatten().map(|b| b.into_vec())
    }

    /// What the ids made by this node's clients start with.
    pub fn owner_tag(&self) -> crate::ids::OwnerTag {
        self.shared.state.lock().owner_tag
    }

    pub fn query(&self, q: Query) -> serde_json::Value {
        self.shared.state.lock().query(q)
    }

    /// Stop: tell workers to exit, stop the fork server, wait for every
    /// process we started, remove the socket and the arena file.
    pub fn shutdown(self) {
        self.stop();
    }

    /// Like [`Node::shutdown`], through a shared reference; the tables and
    /// the store mapping stay readable until the `Node` is dropped.
    pub fn stop(&self) {
        let Some(rt) = self.rt.lock().take() else {
            return;
        };
        let cluster = self.shared.state.lock().cluster.take();
        if let Some(c) = cluster {
            let _ = rt.block_on(async {
                tokio::time::timeout(Duration::from_secs(2), c.client.shutdown()).await
            });
        }
        let worker_pids: Vec<u32> = {
            let mut st = self.shared.state.lock();
            st.shutting_down = true;
            st.spawn_tx = None; // closes the fork server's stdin
            for c in st.conns.values() {
                c.outbox.send(&crate::protocol::NodeMsg::Exit);
                c.outbox.close();
            }
            st.workers.values().filter_map(|w| w.pid).collect()
        };
        // Stop the fork server at once, even mid-start-up (it then waits for its workers).
        if let Some(p) = *self.forkserver_pid.lock() {
            crate::sys::terminate_process(p);
        }
        // The spawner task reaps the fork server and clears its pid; the fork
        // server in turn exits only after all its workers have.
        let deadline = Instant::now() + Duration::from_secs(3);
        let forkserver = || *self.forkserver_pid.lock();
        loop {
            let workers_alive = worker_pids.iter().any(|p| crate::sys::process_alive(*p));
            if !workers_alive && forkserver().is_none() {
                break;
            }
            if Instant::now() >= deadline {
                tracing::warn!("workers did not exit in time; killing them");
                for p in &worker_pids {
                    crate::sys::kill_process(*p);
                }
                if let Some(p) = forkserver() {
                    crate::sys::kill_process(p);
                    crate::sys::reap(p);
                }
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        tracing::debug!(
            "processes gone after {:?}",
            Duration::from_secs(3)
                .saturating_sub(deadline.saturating_duration_since(Instant::now()))
        );
        let t = Instant::now();
        rt.shutdown_timeout(Duration::from_millis(500));
        tracing::debug!("runtime stopped in {:?}", t.elapsed());
        let _ = std::fs::remove_file(&self.info.socket);
        let spill_dir = self.shared.state.lock().spill_dir.clone();
        let _ = std::fs::remove_dir_all(spill_dir);
        if let Err(e) = self.shared.state.lock().store.arena().unlink() {
            tracing::debug!("removing the arena file: {e}");
        }
        tracing::info!(node = %self.info.node_id, "node stopped");
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Start the worker fork server (`python -m peer._forkserver`).
fn start_forkserver(config: &NodeConfig, socket: &Path) -> std::io::Result<tokio::process::Child> {
    let mut cmd = tokio::process::Command::new(&config.python);
    cmd.args(["-m", "peer._forkserver"])
        .env("PEER_SOCKET", socket)
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
async fn run_spawner(
    mut child: tokio::process::Child,
    mut rx: mpsc::UnboundedReceiver<SpawnRequest>,
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
                let Some(SpawnRequest { worker }) = req else { break };
                line.clear();
                line.extend_from_slice(worker_line(worker).as_bytes());
                if let Err(e) = stdin.write_all(&line).await {
                    if !shared.state.lock().shutting_down {
                        tracing::warn!("writing to the fork server: {e}");
                    }
                    break;
                }
            }
            status = child.wait() => {
                let why = match status {
                    Ok(s) => format!("the worker fork server exited ({s})"),
                    Err(e) => format!("waiting for the worker fork server: {e}"),
                };
                *pid_slot.lock() = None;
                shared.state.lock().spawner_failed(why);
                return;
            }
        }
    }
    drop(stdin);
    let _ = child.wait().await;
    *pid_slot.lock() = None;
}

fn worker_line(w: WorkerId) -> String {
    format!("{w}\n")
}

/// Expire get/wait deadlines of remote clients.
async fn run_timers(mut rx: mpsc::UnboundedReceiver<(Instant, WaitId)>, shared: Arc<Shared>) {
    let mut heap: BinaryHeap<Reverse<(Instant, WaitId)>> = BinaryHeap::new();
    loop {
        let next = heap.peek().map(|Reverse((t, _))| *t);
        tokio::select! {
            item = rx.recv() => match item {
                Some((t, w)) => heap.push(Reverse((t, w))),
                None => return,
            },
            _ = async {
                match next {
                    Some(t) => tokio::time::sleep_until(t.into()).await,
                    None => std::future::pending::<()>().await,
                }
            } => {
                let now = Instant::now();
                let mut st = shared.state.lock();
                while let Some(Reverse((t, w))) = heap.peek().copied() {
                    if t > now { break; }
                    heap.pop();
                    st.expire_wait(w);
                }
            }
        }
    }
}
