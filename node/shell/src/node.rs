//! A running node: its tokio runtime, socket, store, fork server and the
//! in-process API the embedded driver calls.
//!
//! - `Node::start` maps the store, binds the socket, and asks the fork server
//!   for the initial workers; it returns before any worker is up;
//! - the embedded driver calls [`Node`]'s [`NodeApi`] directly (no socket
//!   hop): each call is one step of the core under the engine's lock;
//! - workers and attached drivers go through [`crate::local::server`].

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use peer_node_core::ids::{ActorId, FnId, NodeId, ObjectId, OwnerTag};
use peer_node_core::wire::local::{ErrorInfo, Query, Reserved, TaskSpec, Value};
use peer_node_core::{Awaited, Core, CoreConfig, Event};
use peer_objstore::Arena;
use tokio::sync::{Notify, mpsc};

use crate::api::{NodeApi, Patience};
use crate::cluster::Cluster;
use crate::config::NodeConfig;
use crate::dashboard::Dashboard;
use crate::engine::{Io, LocalLookup, LocalSignal, Shared};
use crate::error::{NodeError, NodeResult};
use crate::gpus::GpuInventory;
use crate::local::socket::{bind_private_socket, private_dir, socket_path, sweep_stale};
use crate::local::spawner::{run_spawner, start_forkserver};
use crate::local::store::ShmStore;

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
    arena: Arc<Arena>,
    spill_dir: PathBuf,
    cluster: Mutex<Option<Arc<Cluster>>>,
    forkserver_pid: Arc<Mutex<Option<u32>>>,
    dashboard: Mutex<Option<Dashboard>>,
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
        tracing::info!(
            "reserving {} MiB of shared memory for the object store",
            size >> 20
        );
        let arena = Arena::create(&format!("peer-{tag}"), size as usize, &config.state_dir)?;
        let arena_path = arena.path().to_path_buf();
        let arena_size = arena.len() as u64;
        let node_id = NodeId::random();
        let spill_dir = config.state_dir.join("spill").join(format!("{node_id}"));
        let store = ShmStore::new(arena, spill_dir.clone());
        let shared_arena = store.arena();

        let socket = socket_path(&config, &run_dir, &tag)?;
        let std_listener = bind_private_socket(&socket, &config)?;

        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("peer-node")
            .enable_all()
            .build()
            .map_err(|e| NodeError::io("starting the node runtime", e))?;

        let (gpus, resources) = offered_resources(&config);
        if !gpus.ids.is_empty() {
            tracing::info!(
                "GPUs: {} ({}), {} MiB",
                gpus.ids.join(","),
                gpus.model.as_deref().unwrap_or("model unknown"),
                gpus.memory >> 20
            );
        }
        let info = NodeInfo {
            node_id,
            socket: socket.clone(),
            arena_path: arena_path.clone(),
            arena_size,
            num_cpus: config.num_cpus,
            resources: resources.clone(),
        };
        // Workers learn the node's public id when they connect, which may be
        // before the cluster layer is up: read the identity first.
        let peer_id = match &config.network {
            Some(_) => Some(crate::cluster::peer_id_of(
                &peer_gossip::Identity::load_or_create(&config.state_dir)
                    .map_err(|e| NodeError::Rejected(e.to_string()))?
                    .peer_id(),
            )),
            None => None,
        };
        let core_config = CoreConfig {
            node_id,
            peer_id,
            incarnation: rand::random(),
            seed: rand::random(),
            num_cpus: config.num_cpus,
            resources,
            gpu_ids: gpus.ids,
            gpu_memory: gpus.memory,
            daemon: config.daemon,
            store_path: arena_path,
            store_size: arena_size,
            pid,
        };
        let mut core = Core::new(core_config, Box::new(store), Instant::now());
        let since_epoch = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        core.set_wall_clock(Instant::now(), since_epoch.as_micros() as u64);
        core.set_observing(config.dashboard.is_some());
        core.start_pool();
        let (spawn_tx, spawn_rx) = mpsc::unbounded_channel();
        let (timer_tx, timer_rx) = mpsc::unbounded_channel();
        let io = Io {
            spawn: Some(spawn_tx),
            timers: Some(timer_tx),
            stop: Arc::new(Notify::new()),
            ..Io::default()
        };
        let shared = Shared::new(core, io);
        let forkserver_pid = Arc::new(Mutex::new(None));
        let node = Node {
            shared: Arc::clone(&shared),
            rt: Mutex::new(None),
            info,
            arena: shared_arena,
            spill_dir,
            cluster: Mutex::new(None),
            forkserver_pid: Arc::clone(&forkserver_pid),
            dashboard: Mutex::new(None),
        };
        {
            let _guard = rt.enter();
            let listener = tokio::net::UnixListener::from_std(std_listener)
                .map_err(|e| NodeError::io("registering the socket", e))?;
            rt.spawn(crate::local::server::accept_loop(
                listener,
                Arc::clone(&shared),
            ));
            tracing::info!(
                "starting the worker fork server ({})",
                config.python.display()
            );
            match start_forkserver(&config, &socket) {
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
                        config.python.display()
                    );
                    shared.handle(Event::SpawnerFailed { why });
                }
            }
            rt.spawn(crate::timers::run_timers(timer_rx, Arc::clone(&shared)));
        }
        // The initial pool's spawn requests go out now that the spawner runs.
        shared.engine.lock().run();
        if let Some(net) = &config.network {
            tracing::info!(
                "joining the cluster (listening on {})",
                net.listen.join(", ")
            );
            let cluster = rt.block_on(crate::cluster::start(
                net,
                &config.state_dir,
                Arc::clone(&shared),
                Arc::clone(&node.arena),
            ));
            *node.rt.lock() = Some(rt);
            match cluster {
                Ok(c) => *node.cluster.lock() = Some(c),
                Err(e) => {
                    node.stop();
                    return Err(e);
                }
            }
        } else {
            *node.rt.lock() = Some(rt);
        }
        if let Some(addr) = config.dashboard {
            let key = node.cluster().map(|c| c.key_hex.clone());
            let started = match node.rt.lock().as_ref() {
                Some(rt) => {
                    let _guard = rt.enter();
                    crate::dashboard::start(Arc::clone(&shared), addr, key.as_deref())
                }
                None => Err(NodeError::Rejected("the node runtime is gone".into())),
            };
            match started {
                Ok(d) => *node.dashboard.lock() = Some(d),
                Err(e) => {
                    node.stop();
                    return Err(e);
                }
            }
        }
        tracing::info!(node = %node_id, socket = %socket.display(), "node started");
        Ok(node)
    }

    /// The dashboard this node serves, if any.
    pub fn dashboard(&self) -> Option<Dashboard> {
        self.dashboard.lock().clone()
    }

    pub fn info(&self) -> &NodeInfo {
        &self.info
    }

    /// Cluster membership, when the node joined one.
    pub fn cluster(&self) -> Option<Arc<Cluster>> {
        self.cluster.lock().clone()
    }

    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// The store's memory, for in-process readers and writers.
    pub fn arena(&self) -> Arc<Arena> {
        Arc::clone(&self.arena)
    }

    /// What the ids made by this node's clients start with.
    pub fn owner_tag(&self) -> OwnerTag {
        self.shared.engine.lock().core.owner_tag()
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

    /// Give up a created object that was never sealed.
    pub fn abort(&self, id: ObjectId) {
        self.shared.engine.lock().core.driver_abort(id);
    }

    fn block_on_signal(&self, sig: &LocalSignal, p: Patience<'_>) {
        let deadline = p.timeout.map(|t| Instant::now() + t);
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
            let stop = (p.interrupted)();
            done = sig.done.lock();
            if stop {
                break;
            }
        }
    }

    /// Start a get/wait of the embedded driver; its signal is set when it completes.
    fn begin_local_wait(
        &self,
        ids: &[ObjectId],
        need: usize,
        awaited: Awaited,
    ) -> (u64, Arc<LocalSignal>) {
        let sig = Arc::new(LocalSignal::default());
        let mut e = self.shared.engine.lock();
        let wid = e
            .core
            .driver_begin_wait(ids.to_vec(), need, awaited, Instant::now());
        e.io.local_waits.insert(wid, Arc::clone(&sig));
        e.run();
        (wid, sig)
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
        let cluster = self.cluster.lock().take();
        if let Some(c) = cluster {
            let _ = rt.block_on(async {
                tokio::time::timeout(Duration::from_secs(2), c.client.shutdown()).await
            });
        }
        let worker_pids: Vec<u32> = {
            let mut e = self.shared.engine.lock();
            e.core.begin_shutdown();
            e.io.spawn = None; // closes the fork server's stdin
            e.run();
            e.core.worker_pids()
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
        let t = Instant::now();
        rt.shutdown_timeout(Duration::from_millis(500));
        tracing::debug!("runtime stopped in {:?}", t.elapsed());
        let _ = std::fs::remove_file(&self.info.socket);
        let _ = std::fs::remove_dir_all(&self.spill_dir);
        if let Err(e) = self.arena.unlink() {
            tracing::debug!("removing the arena file: {e}");
        }
        tracing::info!(node = %self.info.node_id, "node stopped");
    }
}

impl NodeApi for Node {
    fn register_function(&self, id: FnId, blob: Vec<u8>) -> NodeResult<()> {
        self.shared
            .engine
            .lock()
            .core
            .driver_register_function(id, blob);
        Ok(())
    }

    fn submit(&self, spec: TaskSpec) -> NodeResult<()> {
        let mut e = self.shared.engine.lock();
        let r = e.core.driver_submit(spec, Instant::now());
        e.run();
        r.map_err(|e| NodeError::Rejected(e.to_string()))
    }

    fn get(&self, ids: &[ObjectId], p: Patience<'_>) -> NodeResult<Option<Vec<Value>>> {
        {
            let mut e = self.shared.engine.lock();
            if let Some(values) = e.core.driver_values(ids) {
                e.run();
                return Ok(Some(values));
            }
        }
        let (wid, sig) = self.begin_local_wait(ids, ids.len(), Awaited::Values);
        self.block_on_signal(&sig, p);
        let mut e = self.shared.engine.lock();
        e.io.local_waits.remove(&wid);
        e.core.driver_end_wait(wid);
        let values = e.core.driver_values(ids);
        e.run();
        Ok(values)
    }

    fn wait(
        &self,
        ids: &[ObjectId],
        num_returns: usize,
        fetch_local: bool,
        p: Patience<'_>,
    ) -> NodeResult<Vec<u32>> {
        let need = num_returns.min(ids.len());
        let (wid, sig) = self.begin_local_wait(ids, need, Awaited::of_wait(fetch_local));
        self.block_on_signal(&sig, p);
        let mut e = self.shared.engine.lock();
        e.io.local_waits.remove(&wid);
        let mut ready = e.core.driver_end_wait(wid);
        // Ending it may free objects only it used.
        e.run();
        ready.truncate(need);
        Ok(ready)
    }

    fn create_object(&self, id: ObjectId, len: u64) -> NodeResult<Result<Reserved, ErrorInfo>> {
        let mut e = self.shared.engine.lock();
        let r = e.core.driver_create(id, len, Instant::now());
        e.run();
        Ok(r)
    }

    fn seal(&self, id: ObjectId, contained: Vec<ObjectId>) -> NodeResult<()> {
        let mut e = self.shared.engine.lock();
        e.core.driver_seal(id, contained, Instant::now());
        e.run();
        Ok(())
    }

    fn put_inline(&self, id: ObjectId, blob: Vec<u8>, contained: Vec<ObjectId>) -> NodeResult<()> {
        let mut e = self.shared.engine.lock();
        e.core
            .driver_put_inline(id, blob, contained, Instant::now());
        e.run();
        Ok(())
    }

    fn release(&self, ids: &[ObjectId]) {
        let mut e = self.shared.engine.lock();
        e.core.driver_release(ids);
        e.run();
    }

    fn add_refs(&self, ids: &[ObjectId]) {
        let mut e = self.shared.engine.lock();
        e.core.driver_add_refs(ids, Instant::now());
        e.run();
    }

    fn dec_refs(&self, ids: &[ObjectId]) {
        let mut e = self.shared.engine.lock();
        e.core.driver_dec_refs(ids, Instant::now());
        e.run();
    }

    fn mark_escaped(&self, ids: &[ObjectId]) {
        self.shared.engine.lock().core.driver_mark_escaped(ids);
    }

    fn cancel(&self, id: ObjectId, force: bool, recursive: bool) -> NodeResult<()> {
        let mut e = self.shared.engine.lock();
        e.core.driver_cancel(id, force, recursive, Instant::now());
        e.run();
        Ok(())
    }

    fn kill_actor(&self, id: ActorId, no_restart: bool) -> NodeResult<()> {
        let mut e = self.shared.engine.lock();
        e.core.driver_kill_actor(id, no_restart, Instant::now());
        e.run();
        Ok(())
    }

    fn get_actor(&self, name: &str) -> NodeResult<Option<Vec<u8>>> {
        let lookup = Arc::new(LocalLookup::default());
        let id = {
            let mut e = self.shared.engine.lock();
            let id = e.core.driver_lookup_actor(name, Instant::now());
            e.io.local_lookups.insert(id, Arc::clone(&lookup));
            e.run();
            id
        };
        let mut answer = lookup.answer.lock();
        // Peers that do not answer are given up on by the lookup's own deadline.
        let deadline = Instant::now() + Duration::from_secs(10);
        while answer.is_none() {
            if lookup.cv.wait_until(&mut answer, deadline).timed_out() {
                drop(answer);
                self.shared.engine.lock().io.local_lookups.remove(&id);
                return Ok(None);
            }
        }
        Ok(answer.take().flatten().map(|b| b.into_vec()))
    }

    fn query(&self, q: Query) -> NodeResult<serde_json::Value> {
        let Query::Cluster(what) = q else {
            return Ok(self
                .shared
                .engine
                .lock()
                .core
                .driver_query(q, Instant::now()));
        };
        // The core answers by its gather deadline; the node stopping drops the sender.
        let answer = self
            .shared
            .gather(what)
            .blocking_recv()
            .map_err(|_| NodeError::Rejected("the node stopped".into()))?;
        serde_json::from_str(&answer)
            .map_err(|e| NodeError::Rejected(format!("a cluster listing that is not JSON: {e}")))
    }

    fn close(&self) {
        self.stop();
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The node's resources: the configured ones plus its GPUs and their model.
/// A `GPU` amount among the configured resources counts as `num_gpus`.
fn offered_resources(config: &NodeConfig) -> (GpuInventory, Vec<(String, f64)>) {
    let gpu_amount = config
        .resources
        .iter()
        .find(|(k, _)| k == "GPU")
        .map(|(_, v)| v.max(0.0).floor() as u32);
    let gpus = GpuInventory::detect(config.num_gpus.or(gpu_amount));
    let mut resources: Vec<(String, f64)> = config
        .resources
        .iter()
        .filter(|(k, _)| k != "GPU")
        .cloned()
        .collect();
    for (name, amount) in gpus.resources() {
        if !resources.iter().any(|(k, _)| *k == name) {
            resources.push((name, amount));
        }
    }
    (gpus, resources)
}
