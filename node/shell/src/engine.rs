//! The core and the I/O that carries out its commands, behind one lock.
//!
//! - every task of the shell (a connection's reader, a peer link, a pull,
//!   the timers, the gossip tick) and the embedded driver's thread calls
//!   [`Engine::handle`] (or a `driver_*` method of the core, then
//!   [`Engine::run`]) under the lock;
//! - [`Engine::run`] drains the core's commands in order, still under the
//!   lock, so frames to one connection or peer keep their order; every
//!   command is a non-blocking hand-off: a write to a non-blocking socket or
//!   a connection's outbox, a message on an unbounded channel to a task, a
//!   signal to a waiting thread.

use std::io::Write;
use std::sync::Arc;
use std::time::Instant;

use parking_lot::{Condvar, Mutex};
use peer_node_core::ids::{ConnId, LookupId, ObjectId, PeerId, WaitId, WorkerId};
use peer_node_core::wire::local::Listing;
use peer_node_core::wire::peer::PeerMsg;
use peer_node_core::{Command, Core, Event};
use rustc_hash::{FxHashMap, FxHashSet};
use serde_bytes::ByteBuf;
use tokio::sync::{Notify, mpsc, oneshot};

use crate::cluster::partial_sends::PartialSends;
use crate::local::outbox::Outbox;

/// Most object announcements waiting for the next gossip tick (the gossip
/// layer bounds what it sends too).
pub const ANNOUNCE_QUEUE_MAX: usize = 8192;

/// A pull the core asked for: object, where in the arena, length, holders.
#[derive(Debug)]
pub struct PullJob {
    pub id: ObjectId,
    pub offset: u64,
    pub len: u64,
    pub sources: Vec<PeerId>,
    /// How many of `sources` (the first ones) hold whole copies.
    pub complete: usize,
}

/// Wakes an embedded driver thread blocked in `get`/`wait`.
#[derive(Default)]
pub struct LocalSignal {
    pub done: Mutex<bool>,
    pub cv: Condvar,
}

/// The embedded driver's side of a named-actor lookup: the handle (or None) once known.
#[derive(Default)]
pub struct LocalLookup {
    pub answer: Mutex<Option<Option<ByteBuf>>>,
    pub cv: Condvar,
}

/// Where the core's commands go.
#[derive(Default)]
pub struct Io {
    /// Outboxes of the local connections.
    pub conns: FxHashMap<ConnId, Arc<Outbox>>,
    /// Connections the core dropped (their readers stop at the next frame).
    pub dropped: FxHashSet<ConnId>,
    /// Worker processes to start (the spawner task feeds the fork server).
    pub spawn: Option<mpsc::UnboundedSender<WorkerId>>,
    /// Times to deliver `Event::Timer` at.
    pub timers: Option<mpsc::UnboundedSender<Instant>>,
    /// Messages to peers (None until the node joined its cluster).
    pub peers: Option<mpsc::UnboundedSender<(PeerId, PeerMsg)>>,
    /// Pulls to run (None until the node joined its cluster).
    pub pulls: Option<mpsc::UnboundedSender<PullJob>>,
    /// Large objects sealed here and not yet announced to the cluster.
    pub announce: Vec<(ObjectId, u64)>,
    /// Threads of the embedded driver waiting in `get`/`wait`.
    pub local_waits: FxHashMap<WaitId, Arc<LocalSignal>>,
    /// Named-actor lookups of the embedded driver.
    pub local_lookups: FxHashMap<LookupId, Arc<LocalLookup>>,
    /// Cluster-wide listings asked for in this process (the embedded
    /// driver, the dashboard): where each answer goes.
    pub local_gathers: FxHashMap<LookupId, oneshot::Sender<String>>,
    /// Peers' pull requests waiting for a chunk a pull here has not brought yet.
    pub arrivals: FxHashMap<ObjectId, Arc<Notify>>,
    /// Chunks being sent to peers straight out of a pull still in progress here, per object
    /// (`cluster::pull`): the pull reports its end only once none is left.
    pub partial_sends: PartialSends,
    /// Notified when `peer down` asks the daemon to stop.
    pub stop: Arc<Notify>,
}

/// The core with its I/O.
pub struct Engine {
    pub core: Core,
    pub io: Io,
}

/// What the shell's tasks share.
pub struct Shared {
    pub engine: Mutex<Engine>,
    pub stop: Arc<Notify>,
}

impl Shared {
    pub fn new(core: Core, io: Io) -> Arc<Shared> {
        let stop = Arc::clone(&io.stop);
        Arc::new(Shared {
            engine: Mutex::new(Engine { core, io }),
            stop,
        })
    }

    /// Handle one event now and carry out what follows.
    pub fn handle(&self, event: Event) {
        self.engine.lock().handle(event);
    }
}

impl Shared {
    /// Ask every peer (and this node) for a listing; the answer (JSON text)
    /// comes on the receiver within the core's gather timeout, or the
    /// sender is dropped when the node stops.
    pub fn gather(&self, what: Listing) -> oneshot::Receiver<String> {
        let (tx, rx) = oneshot::channel();
        let mut e = self.engine.lock();
        let id = e.core.driver_gather(what, Instant::now());
        e.io.local_gathers.insert(id, tx);
        e.run();
        rx
    }
}

impl Engine {
    /// Handle one event now and carry out what follows.
    pub fn handle(&mut self, event: Event) {
        self.core.handle(event, Instant::now());
        self.run();
    }

    /// Carry out every command the core has queued, in order.
    pub fn run(&mut self) {
        while let Some(c) = self.core.poll_command() {
            self.io.execute(c);
        }
    }
}

impl Io {
    fn execute(&mut self, c: Command) {
        match c {
            Command::Send { conn, msg, at_once } => {
                if let Some(out) = self.conns.get(&conn) {
                    if at_once {
                        out.send(&msg);
                    } else {
                        out.send_queued(&msg);
                    }
                }
            }
            Command::Close { conn } => {
                if let Some(out) = self.conns.get(&conn) {
                    out.close();
                }
            }
            Command::Disconnect { conn, why } => {
                tracing::warn!("closing connection {conn}: {why}");
                self.dropped.insert(conn);
            }
            Command::Stop => self.stop.notify_one(),
            Command::ToPeer { peer, msg } => match &self.peers {
                Some(tx) if tx.send((peer, msg)).is_ok() => {}
                _ => tracing::debug!(%peer, "peer links are stopped; a message is dropped"),
            },
            // The worker sets up its runtime environment itself, from its
            // first task (which carries it).
            Command::SpawnWorker { worker, env: _ } => {
                if let Some(tx) = &self.spawn {
                    let _ = tx.send(worker);
                }
            }
            Command::Kill { pid } => crate::sys::kill_process(pid),
            Command::Interrupt { pid } => crate::sys::interrupt_process(pid),
            Command::Pull {
                id,
                offset,
                len,
                sources,
                complete,
            } => {
                let job = PullJob {
                    id,
                    offset,
                    len,
                    sources,
                    complete,
                };
                if let Some(tx) = &self.pulls
                    && let Err(e) = tx.send(job)
                {
                    tracing::debug!("the node is stopping; pull of {} dropped", e.0.id);
                }
            }
            Command::Announce { id, len } => {
                if self.announce.len() < ANNOUNCE_QUEUE_MAX {
                    self.announce.push((id, len));
                }
            }
            Command::Timer { at } => {
                if let Some(tx) = &self.timers {
                    let _ = tx.send(at);
                }
            }
            Command::Print { stream, data } => {
                let _ = if stream == 2 {
                    std::io::stderr().write_all(&data)
                } else {
                    std::io::stdout().write_all(&data)
                };
            }
            Command::DeleteSpillFile { path } => {
                if let Err(e) = std::fs::remove_file(&path) {
                    tracing::debug!("removing spill file {}: {e}", path.display());
                }
            }
            Command::WaitDone { wait } => {
                if let Some(sig) = self.local_waits.get(&wait) {
                    *sig.done.lock() = true;
                    sig.cv.notify_all();
                }
            }
            Command::GatherDone { gather, answer } => {
                if let Some(tx) = self.local_gathers.remove(&gather) {
                    let _ = tx.send(answer);
                }
            }
            Command::LookupDone { lookup, handle } => {
                if let Some(l) = self.local_lookups.remove(&lookup) {
                    *l.answer.lock() = Some(handle);
                    l.cv.notify_all();
                }
            }
        }
    }
}
