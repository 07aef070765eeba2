//! A blocking client of a node's Unix socket, used by workers and by drivers
//! attached to a `peer up` daemon.
//!
//! - any thread may send; small bookkeeping messages (handle counts, pin
//!   releases) are batched and go out with the next real message (a
//!   driver's also every 100 ms: [`Client::flush_in_background`]);
//! - replies are matched to requests by number; whichever thread needs a
//!   message reads for everyone (leader/follower), so a worker needs no extra
//!   thread and a multi-threaded driver no lock held across a wait.

use std::collections::VecDeque;
use std::io::{ErrorKind as IoKind, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};
use rustc_hash::FxHashMap;
use serde_bytes::ByteBuf;

use peer_node_core::ids::{ActorId, FnId, ObjectId, OwnerTag, TaskId};
use peer_node_core::wire::codec::{self, FrameError};
use peer_node_core::wire::local::{
    ClientMsg, ErrorInfo, Execution, NodeMsg, Outcome, Query, Reserved, Role, TaskSpec, Value,
};

use crate::api::{NodeApi, Patience};
use crate::error::{NodeError, NodeResult};

/// How often a blocked reader wakes to let the caller check for Ctrl-C.
const POLL: Duration = Duration::from_millis(100);
/// Batched bookkeeping is flushed once it grows past this many ids.
const LAZY_LIMIT: usize = 4096;

#[derive(Default)]
struct Lazy {
    /// Whole frames held back (task outcomes while more tasks are queued here).
    frames: Vec<u8>,
    add: Vec<ObjectId>,
    release: Vec<ObjectId>,
    dec: Vec<ObjectId>,
    escaped: Vec<ObjectId>,
}

impl Lazy {
    fn len(&self) -> usize {
        self.frames.len() / 64
            + self.add.len()
            + self.release.len()
            + self.dec.len()
            + self.escaped.len()
    }

    /// Append as frames: everything but handle releases, then `then` (the
    /// message being sent), then the releases. Additions and held-back
    /// outcomes (which may name refs a value keeps alive) thus reach the node
    /// before any release, so a count never dips to zero early; a release
    /// arriving late only keeps an object a moment longer.
    fn drain_around(&mut self, out: &mut Vec<u8>, then: Option<&ClientMsg>) {
        if !self.add.is_empty() {
            codec::encode_into(
                &ClientMsg::AddRefs {
                    ids: std::mem::take(&mut self.add),
                },
                out,
            );
        }
        if !self.escaped.is_empty() {
            let ids = std::mem::take(&mut self.escaped);
            codec::encode_into(&ClientMsg::Escaped { ids }, out);
        }
        if !self.release.is_empty() {
            let ids = std::mem::take(&mut self.release);
            codec::encode_into(&ClientMsg::Release { ids }, out);
        }
        out.append(&mut self.frames);
        if let Some(msg) = then {
            codec::encode_into(msg, out);
        }
        if !self.dec.is_empty() {
            codec::encode_into(
                &ClientMsg::DecRefs {
                    ids: std::mem::take(&mut self.dec),
                },
                out,
            );
        }
    }
}

struct Writer {
    stream: UnixStream,
    lazy: Lazy,
    buf: Vec<u8>,
}

#[derive(Default)]
struct Inbox {
    replies: FxHashMap<u64, NodeMsg>,
    executions: VecDeque<Execution>,
    /// Someone is reading the socket.
    reading: bool,
    /// Why the connection is over.
    closed: Option<String>,
    exit_requested: bool,
    /// Tasks the node cancelled, not yet taken (oldest first).
    cancels: VecDeque<TaskId>,
    /// The task this worker runs on its main thread (see [`Client::set_running`]).
    running: Option<TaskId>,
}

/// Most cancels a worker keeps untaken (those of tasks that ended already
/// are never taken; the oldest go).
const MAX_CANCELS_KEPT: usize = 4096;

/// What a worker is told next.
#[derive(Debug)]
pub enum WorkerEvent {
    Execute(Box<Execution>),
    /// A task sent here earlier is cancelled (see [`NodeMsg::Cancel`]).
    Cancel(TaskId),
}

/// Connection state of the reading side: bytes read but not yet framed.
struct ReadSide {
    stream: UnixStream,
    /// Bytes read and not yet framed.
    buf: Vec<u8>,
    /// Where `read` writes: allocated and zeroed once, not on every read.
    chunk: Box<[u8]>,
}

/// The most one read takes from the socket.
const READ_CHUNK: usize = 64 * 1024;

/// The welcome a node sent.
#[derive(Debug, Clone)]
pub struct Welcome {
    pub node_id: String,
    /// What ids made by this client start with (its node owns them).
    pub owner_tag: OwnerTag,
    pub arena_path: String,
    pub arena_size: u64,
}

/// A connection to a node.
pub struct Client {
    writer: Mutex<Writer>,
    read_side: Mutex<ReadSide>,
    inbox: Mutex<Inbox>,
    cv: Condvar,
    next_req: AtomicU64,
    welcome: Welcome,
}

impl Client {
    /// Connect and introduce ourselves.
    pub fn connect(socket: &Path, role: Role) -> Result<Client, NodeError> {
        let stream = UnixStream::connect(socket)
            .map_err(|e| NodeError::io(format!("connecting to {}", socket.display()), e))?;
        let read_stream = stream
            .try_clone()
            .map_err(|e| NodeError::io("cloning the socket", e))?;
        read_stream
            .set_read_timeout(Some(POLL))
            .map_err(|e| NodeError::io("setting a read timeout", e))?;
        let mut client = Client {
            writer: Mutex::new(Writer {
                stream,
                lazy: Lazy::default(),
                buf: Vec::new(),
            }),
            read_side: Mutex::new(ReadSide {
                stream: read_stream,
                buf: Vec::new(),
                chunk: vec![0; READ_CHUNK].into_boxed_slice(),
            }),
            inbox: Mutex::new(Inbox::default()),
            cv: Condvar::new(),
            next_req: AtomicU64::new(1),
            welcome: Welcome {
                node_id: String::new(),
                owner_tag: OwnerTag::default(),
                arena_path: String::new(),
                arena_size: 0,
            },
        };
        client.send(&ClientMsg::Hello {
            role,
            pid: std::process::id(),
        })?;
        let deadline = Instant::now() + Duration::from_secs(10);
        let welcome = client.read_until(
            |inbox| {
                inbox
                    .replies
                    .remove(&0)
                    .or_else(|| inbox.exit_requested.then_some(NodeMsg::Exit))
            },
            Some(deadline),
            &mut || false,
        )?;
        match welcome {
            Some(NodeMsg::Welcome {
                node_id,
                owner_tag,
                arena_path,
                arena_size,
            }) => {
                client.welcome = Welcome {
                    node_id,
                    owner_tag,
                    arena_path,
                    arena_size,
                };
                Ok(client)
            }
            Some(other) => Err(NodeError::Protocol(format!(
                "expected Welcome, got {other:?}"
            ))),
            None => Err(NodeError::Protocol("the node did not answer Hello".into())),
        }
    }

    pub fn welcome(&self) -> &Welcome {
        &self.welcome
    }

    fn req(&self) -> u64 {
        self.next_req.fetch_add(1, Ordering::Relaxed)
    }

    /// Send a message now (with any batched bookkeeping before it).
    pub fn send(&self, msg: &ClientMsg) -> Result<(), NodeError> {
        let mut w = self.writer.lock();
        let Writer { stream, lazy, buf } = &mut *w;
        buf.clear();
        lazy.drain_around(buf, Some(msg));
        let r = stream.write_all(buf);
        if buf.capacity() > 1 << 20 {
            *buf = Vec::new();
        }
        r.map_err(|e| NodeError::io("writing to the node", e))
    }

    fn lazy(&self, f: impl FnOnce(&mut Lazy)) {
        let mut w = self.writer.lock();
        f(&mut w.lazy);
        if w.lazy.len() >= LAZY_LIMIT {
            let Writer { stream, lazy, buf } = &mut *w;
            buf.clear();
            lazy.drain_around(buf, None);
            if let Err(e) = stream.write_all(buf) {
                tracing::debug!("flushing bookkeeping to the node: {e}");
            }
        }
    }

    /// Send batched bookkeeping at least every `every` from a thread of its
    /// own, so a driver that drops refs and then waits (on input, a sleep,
    /// anything but the node) frees their objects: drivers call this, workers
    /// need not (they report a task soon after). The thread ends with the client.
    pub fn flush_in_background(self: &Arc<Self>, every: Duration) {
        let client = Arc::downgrade(self);
        let spawned = std::thread::Builder::new()
            .name("peer-flush".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(every);
                    let Some(c) = client.upgrade() else {
                        return;
                    };
                    if c.inbox.lock().closed.is_some() {
                        return;
                    }
                    if c.writer.lock().lazy.len() > 0
                        && let Err(e) = c.flush()
                    {
                        tracing::debug!("flushing bookkeeping to the node: {e}");
                        return;
                    }
                }
            });
        if let Err(e) = spawned {
            tracing::warn!("no thread to send dropped refs in the background: {e}");
        }
    }

    /// Send batched bookkeeping now.
    pub fn flush(&self) -> Result<(), NodeError> {
        let mut w = self.writer.lock();
        if w.lazy.len() == 0 {
            return Ok(());
        }
        let Writer { stream, lazy, buf } = &mut *w;
        buf.clear();
        lazy.drain_around(buf, None);
        stream
            .write_all(buf)
            .map_err(|e| NodeError::io("writing to the node", e))
    }

    /// Wait until `pick` finds what we need, reading the socket when no one else is.
    fn read_until<T>(
        &self,
        mut pick: impl FnMut(&mut Inbox) -> Option<T>,
        deadline: Option<Instant>,
        interrupted: &mut dyn FnMut() -> bool,
    ) -> Result<Option<T>, NodeError> {
        loop {
            let mut inbox = self.inbox.lock();
            if let Some(v) = pick(&mut inbox) {
                return Ok(Some(v));
            }
            if let Some(why) = &inbox.closed {
                return Err(NodeError::Protocol(why.clone()));
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Ok(None);
            }
            if inbox.reading {
                self.cv.wait_for(&mut inbox, POLL);
                drop(inbox);
            } else {
                inbox.reading = true;
                drop(inbox);
                self.read_as_reader();
            }
            if interrupted() {
                return Ok(None);
            }
        }
    }

    /// Take in what the node sent that is there to read now, without
    /// waiting (nothing when another thread is reading).
    fn read_what_came(&self) {
        let mut inbox = self.inbox.lock();
        if inbox.reading || !crate::sys::readable_now(self.read_side.lock().stream.as_raw_fd()) {
            return;
        }
        inbox.reading = true;
        drop(inbox);
        self.read_as_reader();
    }

    /// Read once and deliver what came; the caller set `reading` (this
    /// thread is the one reader until it is cleared here).
    fn read_as_reader(&self) {
        let got = self.read_some();
        let mut inbox = self.inbox.lock();
        inbox.reading = false;
        match got {
            Ok(msgs) => {
                for m in msgs {
                    deliver(&mut inbox, m);
                }
            }
            Err(e) => inbox.closed = Some(e.to_string()),
        }
        self.cv.notify_all();
    }

    /// Read what is available (waiting at most one poll interval) and frame it.
    fn read_some(&self) -> Result<Vec<NodeMsg>, FrameError> {
        let mut rs = self.read_side.lock();
        let ReadSide { stream, buf, chunk } = &mut *rs;
        match stream.read(chunk) {
            Ok(0) => return Err(FrameError::Closed),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    IoKind::WouldBlock | IoKind::TimedOut | IoKind::Interrupted
                ) => {}
            Err(e) => return Err(FrameError::Io(e)),
        }
        let (msgs, used) = codec::split_frames(buf)?;
        buf.drain(..used);
        Ok(msgs)
    }

    fn request(
        &self,
        req: u64,
        msg: &ClientMsg,
        interrupted: &mut dyn FnMut() -> bool,
    ) -> Result<Option<NodeMsg>, NodeError> {
        self.send(msg)?;
        self.read_until(|inbox| inbox.replies.remove(&req), None, interrupted)
    }

    /// Ask a daemon to stop (control clients).
    pub fn shutdown_node(&self) -> Result<(), NodeError> {
        self.send(&ClientMsg::Shutdown)
    }

    /// Worker side: the next task to run or cancel (cancels first, so that a
    /// call cancelled before it started is known when it comes); None when
    /// the node says exit or goes away.
    pub fn next_event(&self) -> Option<WorkerEvent> {
        if self.inbox.lock().executions.is_empty() {
            // About to wait: held-back outcomes must reach the node first.
            if let Err(e) = self.flush() {
                tracing::debug!("flushing task outcomes: {e}");
                return None;
            }
        } else {
            // A task read earlier is next: a cancel of it that came since
            // must be seen first.
            self.read_what_came();
        }
        let r = self.read_until(
            |inbox| {
                if let Some(t) = inbox.cancels.pop_front() {
                    return Some(Some(WorkerEvent::Cancel(t)));
                }
                if let Some(e) = inbox.executions.pop_front() {
                    return Some(Some(WorkerEvent::Execute(Box::new(e))));
                }
                inbox.exit_requested.then_some(None)
            },
            None,
            &mut || false,
        );
        match r {
            Ok(Some(e)) => e,
            _ => None,
        }
    }

    /// Worker side: the task the main thread runs now (None between tasks),
    /// so that a cancel of it read by any thread interrupts it.
    pub fn set_running(&self, task: Option<TaskId>) {
        self.inbox.lock().running = task;
    }

    /// Worker side (the interrupt signal's handler, `is_canceled()`): whether
    /// the node cancelled `task`, waiting up to `wait` for its word (which may
    /// trail the signal). Takes that cancel.
    pub fn take_cancel(&self, task: TaskId, wait: Duration) -> bool {
        // What came already counts even when `wait` is zero.
        self.read_what_came();
        let r = self.read_until(
            |inbox| {
                let at = inbox.cancels.iter().position(|t| *t == task)?;
                inbox.cancels.remove(at);
                Some(())
            },
            Some(Instant::now() + wait),
            &mut || false,
        );
        matches!(r, Ok(Some(())))
    }

    /// Worker side: pass lines a task printed to the node, for its driver.
    pub fn output(&self, task: TaskId, stream: u8, data: Vec<u8>) -> Result<(), NodeError> {
        self.send(&ClientMsg::Output {
            task,
            stream,
            data: ByteBuf::from(data),
        })
    }

    /// Worker side: report a task's outcome. While more tasks are already
    /// queued here it is held back and goes out with the next write, so a
    /// burst of short tasks costs one write per burst.
    pub fn task_done(
        &self,
        task: TaskId,
        outcome: Outcome,
        run_us: u64,
        contained: Vec<Vec<ObjectId>>,
    ) -> Result<(), NodeError> {
        let msg = ClientMsg::TaskDone {
            task,
            outcome,
            run_us,
            contained,
        };
        if self.inbox.lock().executions.is_empty() {
            return self.send(&msg);
        }
        self.lazy(|l| codec::encode_into(&msg, &mut l.frames));
        Ok(())
    }
}

impl NodeApi for Client {
    fn register_function(&self, id: FnId, blob: Vec<u8>) -> NodeResult<()> {
        self.send(&ClientMsg::RegisterFunction {
            id,
            blob: ByteBuf::from(blob),
        })
    }

    fn submit(&self, spec: TaskSpec) -> NodeResult<()> {
        if spec.actor_options.is_some() {
            let req = self.req();
            let reply = self.request(
                req,
                &ClientMsg::CreateActor {
                    req,
                    spec: Box::new(spec),
                },
                &mut || false,
            )?;
            return match reply {
                Some(NodeMsg::Reply { result: Ok(_), .. }) => Ok(()),
                Some(NodeMsg::Reply { result: Err(e), .. }) => Err(NodeError::Rejected(e)),
                other => Err(NodeError::Protocol(format!("unexpected reply {other:?}"))),
            };
        }
        self.send(&ClientMsg::Submit(Box::new(spec)))
    }

    /// Values of `ids`; None on timeout or interruption. Stored values come pinned.
    fn get(&self, ids: &[ObjectId], p: Patience<'_>) -> NodeResult<Option<Vec<Value>>> {
        let req = self.req();
        let msg = ClientMsg::Get {
            req,
            ids: ids.to_vec(),
            timeout_ms: p.timeout.map(|t| t.as_millis() as u64),
        };
        match self.request(req, &msg, p.interrupted)? {
            Some(NodeMsg::Values { values, .. }) => Ok(values),
            None => Ok(None),
            Some(other) => Err(NodeError::Protocol(format!("unexpected reply {other:?}"))),
        }
    }

    fn wait(
        &self,
        ids: &[ObjectId],
        num_returns: usize,
        fetch_local: bool,
        p: Patience<'_>,
    ) -> NodeResult<Vec<u32>> {
        let req = self.req();
        let msg = ClientMsg::Wait {
            req,
            ids: ids.to_vec(),
            num_returns: num_returns as u32,
            timeout_ms: p.timeout.map(|t| t.as_millis() as u64),
            fetch_local,
        };
        match self.request(req, &msg, p.interrupted)? {
            Some(NodeMsg::Ready { indices, .. }) => Ok(indices),
            None => Ok(Vec::new()),
            Some(other) => Err(NodeError::Protocol(format!("unexpected reply {other:?}"))),
        }
    }

    fn create_object(&self, id: ObjectId, len: u64) -> NodeResult<Result<Reserved, ErrorInfo>> {
        let req = self.req();
        match self.request(req, &ClientMsg::Create { req, id, len }, &mut || false)? {
            Some(NodeMsg::Created { result, .. }) => Ok(result),
            other => Err(NodeError::Protocol(format!("unexpected reply {other:?}"))),
        }
    }

    fn seal(&self, id: ObjectId, contained: Vec<ObjectId>) -> NodeResult<()> {
        self.send(&ClientMsg::Seal { id, contained })
    }

    fn put_inline(&self, id: ObjectId, blob: Vec<u8>, contained: Vec<ObjectId>) -> NodeResult<()> {
        self.send(&ClientMsg::PutInline {
            id,
            blob: ByteBuf::from(blob),
            contained,
        })
    }

    fn release(&self, ids: &[ObjectId]) {
        self.lazy(|l| l.release.extend_from_slice(ids));
    }

    fn add_refs(&self, ids: &[ObjectId]) {
        self.lazy(|l| l.add.extend_from_slice(ids));
    }

    fn dec_refs(&self, ids: &[ObjectId]) {
        self.lazy(|l| l.dec.extend_from_slice(ids));
    }

    fn mark_escaped(&self, ids: &[ObjectId]) {
        self.lazy(|l| l.escaped.extend_from_slice(ids));
    }

    fn cancel(&self, id: ObjectId, force: bool, recursive: bool) -> NodeResult<()> {
        self.send(&ClientMsg::Cancel {
            id,
            force,
            recursive,
        })
    }

    fn kill_actor(&self, actor: ActorId, no_restart: bool) -> NodeResult<()> {
        self.send(&ClientMsg::KillActor { actor, no_restart })
    }

    fn get_actor(&self, name: &str) -> NodeResult<Option<Vec<u8>>> {
        let req = self.req();
        let msg = ClientMsg::GetActor {
            req,
            name: name.to_string(),
        };
        match self.request(req, &msg, &mut || false)? {
            Some(NodeMsg::ActorHandle { blob, .. }) => Ok(blob.map(|b| b.into_vec())),
            other => Err(NodeError::Protocol(format!("unexpected reply {other:?}"))),
        }
    }

    fn query(&self, query: Query) -> NodeResult<serde_json::Value> {
        let req = self.req();
        match self.request(req, &ClientMsg::Query { req, query }, &mut || false)? {
            Some(NodeMsg::Reply {
                result: Ok(text), ..
            }) => serde_json::from_str(&text)
                .map_err(|e| NodeError::Protocol(format!("bad query answer: {e}"))),
            Some(NodeMsg::Reply { result: Err(e), .. }) => Err(NodeError::Rejected(e)),
            other => Err(NodeError::Protocol(format!("unexpected reply {other:?}"))),
        }
    }

    fn close(&self) {
        if let Err(e) = self.flush() {
            tracing::debug!("flushing bookkeeping to the node: {e}");
        }
    }
}

fn deliver(inbox: &mut Inbox, msg: NodeMsg) {
    match msg {
        NodeMsg::Execute(e) => inbox.executions.push_back(*e),
        NodeMsg::Revoke { tasks } => inbox.executions.retain(|e| !tasks.contains(&e.task)),
        NodeMsg::Exit => inbox.exit_requested = true,
        NodeMsg::Cancel { task } => {
            if inbox.cancels.len() == MAX_CANCELS_KEPT {
                inbox.cancels.pop_front();
            }
            inbox.cancels.push_back(task);
            if inbox.running == Some(task) {
                // The node's signal may have come before this word (and been
                // passed over): signal again now that the word is here.
                crate::sys::interrupt_self();
            }
        }
        NodeMsg::Output { stream, data } => {
            // Output of tasks this (attached) driver submitted: print it here.
            use std::io::Write as _;
            let _ = if stream == 2 {
                std::io::stderr().write_all(&data)
            } else {
                std::io::stdout().write_all(&data)
            };
        }
        m @ NodeMsg::Welcome { .. } => {
            inbox.replies.insert(0, m);
        }
        NodeMsg::Values { req, .. }
        | NodeMsg::Ready { req, .. }
        | NodeMsg::Created { req, .. }
        | NodeMsg::ActorHandle { req, .. }
        | NodeMsg::Reply { req, .. } => {
            inbox.replies.insert(req, msg);
        }
    }
}
