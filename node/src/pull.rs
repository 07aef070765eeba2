//! The object plane: values larger than a message pulled in chunks from the
//! peers that hold them, straight into this node's store.
//!
//! - **Pull** ([`State::start_pull`], [`run_pull`]): space is reserved in the
//!   store first (evicting or spilling as a `put` would, or failing with the
//!   store's error). Chunks of [`CHUNK`] bytes are requested over
//!   `/peer/pull/1.0.0` streams, at most [`PER_SOURCE`] at a time from each
//!   holder and [`IN_FLIGHT`] in all (so a pull buffers at most
//!   `IN_FLIGHT × CHUNK` bytes besides the object), spread over the holders
//!   chunk by chunk. Each chunk carries a CRC-32 that is checked before it is
//!   written into the object's place in the arena; a source that fails, is
//!   slow or sends a bad chunk is dropped and its chunks asked of the others.
//!   The object is sealed only when every chunk is in, and the owner is told
//!   there is one more copy. Everyone needing the object on this node shares
//!   the one pull.
//! - **Serve** ([`serve`]): a complete copy is read straight out of the shared
//!   store (pinned while it is sent); a node still pulling serves the chunks
//!   it already has and waits a little for the ones on their way, so peers
//!   pulling the same object at once feed each other rather than all asking
//!   the first holder.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use parking_lot::Mutex;
use peer_gossip::{PeerId, StreamProtocol};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{Notify, mpsc};
use tokio_util::compat::FuturesAsyncReadCompatExt;

use crate::codec;
use crate::ids::ObjectId;
use crate::node::Shared;
use crate::peer_msg::{PULL_PROTOCOL, PeerMsg, PullReply, PullRequest};
use crate::protocol::{ErrorInfo, ErrorKind, Reserved, Value};
use crate::state::{Holder, ObjState, State, TaskState};

/// Bytes per chunk request.
pub const CHUNK: u64 = 4 * 1024 * 1024;
/// Chunk requests in flight per source.
const PER_SOURCE: usize = 2;
/// Chunk requests in flight per pull (bounds its buffers to `IN_FLIGHT × CHUNK`).
const IN_FLIGHT: usize = 8;
/// How long a chunk may take, from opening the stream to its last byte.
const CHUNK_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a node still pulling waits for a chunk another peer asks it for.
const PARTIAL_WAIT: Duration = Duration::from_secs(10);
/// Times a node asks an object's owner again after pulling it failed, and the
/// pause before each (the owner needs a few seconds to notice a dead peer).
const REFETCH_TRIES: u8 = 30;
const REFETCH_PAUSE: Duration = Duration::from_millis(500);
/// The largest range one request may ask for.
const MAX_REQUEST: u64 = 64 * 1024 * 1024;
/// Largest pull request or reply header frame (both are a few dozen bytes).
const PULL_FRAME_MAX: usize = 64 * 1024;
/// How long a peer that opened a pull stream may take to send its request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Transport failures in a row after which a source is given up (a stream can
/// fail while a duplicate connection between two peers is being closed).
const SOURCE_STRIKES: u32 = 3;

/// Why a pull failed, and the holders that failed it.
#[derive(Debug, Default)]
pub struct PullFailure {
    pub why: String,
    pub bad: Vec<PeerId>,
}

impl From<&str> for PullFailure {
    fn from(why: &str) -> Self {
        Self {
            why: why.to_string(),
            bad: Vec::new(),
        }
    }
}

/// Why a chunk did not come.
enum ChunkError {
    /// The source has no such bytes (no copy, or not yet): ask another.
    Missing(String),
    /// The stream failed, timed out or carried a bad chunk.
    Transport(String),
}

impl std::fmt::Display for ChunkError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ChunkError::Missing(why) | ChunkError::Transport(why) => f.write_str(why),
        }
    }
}

/// A holder a pull asks for chunks.
struct SourcePeer {
    peer: PeerId,
    in_flight: usize,
    /// Transport failures since its last good chunk.
    strikes: u32,
}

fn protocol() -> StreamProtocol {
    StreamProtocol::new(PULL_PROTOCOL)
}

/// A pull in progress: where the object goes and which chunks are in.
pub struct PullProgress {
    pub offset: u64,
    pub len: u64,
    done: Mutex<Vec<bool>>,
    /// Woken on every chunk that arrives (peers waiting for it).
    arrived: Notify,
}

impl PullProgress {
    fn new(offset: u64, len: u64) -> Self {
        let chunks = len.div_ceil(CHUNK).max(1) as usize;
        Self {
            offset,
            len,
            done: Mutex::new(vec![false; chunks]),
            arrived: Notify::new(),
        }
    }

    /// Whether every chunk overlapping `offset..offset + len` is in.
    fn has(&self, offset: u64, len: u64) -> bool {
        let first = (offset / CHUNK) as usize;
        let last = ((offset + len).saturating_sub(1) / CHUNK) as usize;
        let done = self.done.lock();
        (first..=last).all(|c| done.get(c).copied().unwrap_or(false))
    }

    /// Bytes received so far.
    pub fn received(&self) -> u64 {
        let done = self.done.lock();
        let full = done.iter().filter(|d| **d).count() as u64 * CHUNK;
        full.min(self.len)
    }
}

/// What a serving node can do for a request.
enum Source {
    /// A sealed copy, pinned for us: (offset in the arena, object length).
    Stored {
        offset: u64,
        len: u64,
    },
    /// Bytes copied from a pull in progress.
    Partial(Vec<u8>),
    /// A pull in progress that does not have those chunks yet.
    NotYet(Arc<PullProgress>),
    Missing(String),
}

impl State {
    /// Bring an object that is only on other peers into this node's store
    /// (once: later needs share the pull in flight).
    pub fn start_pull(&mut self, id: ObjectId) {
        if self.pulls.contains_key(&id) || self.made_here_soon(&id) {
            return;
        }
        let Some(e) = self.objects.get(&id) else {
            return;
        };
        let Some(ew) = e.elsewhere.clone().filter(|_| e.is_elsewhere()) else {
            return;
        };
        let me = self.remote.me;
        let sources: Vec<PeerId> = ew.holders().filter(|p| Some(*p) != me).collect();
        let Some(jobs) = self.remote.pull_jobs.clone() else {
            return;
        };
        if sources.is_empty() {
            // Nobody else has it: as when every source failed (ask the owner
            // again later, or rebuild it when owned here).
            self.pulls.insert(id, Arc::new(PullProgress::new(0, 0)));
            return self.pull_finished(id, Err("no other peer holds a copy".into()));
        }
        let offset = match self.create_object(Holder::Local, id, ew.len) {
            Ok(Reserved::Write { offset }) => offset,
            Ok(Reserved::Present { offset, len }) => {
                // A copy is here already (a run of its task on this node made it).
                return self.object_ready(id, Value::Stored { offset, len });
            }
            Err(err) => return self.object_ready(id, Value::Error(err)),
        };
        let progress = Arc::new(PullProgress::new(offset, ew.len));
        self.pulls.insert(id, Arc::clone(&progress));
        if jobs.send((id, progress, sources)).is_err() {
            self.pull_finished(id, Err("the node is stopping".into()));
        }
    }

    /// Whether the task that makes `id` is about to run or running on this
    /// node (run again after its copies were lost): its result will be here
    /// without a pull.
    fn made_here_soon(&self, id: &ObjectId) -> bool {
        self.tasks.get(&id.task()).is_some_and(|t| {
            matches!(t.state, TaskState::Queued | TaskState::Running(_))
                && t.spec.return_ids().any(|r| r == *id)
        })
    }

    /// A pull ended: seal the object (and tell its owner there is a copy here), or fail it.
    pub fn pull_finished(&mut self, id: ObjectId, result: Result<(), PullFailure>) {
        if self.pulls.remove(&id).is_none() {
            return;
        }
        self.pull_ended(id, result);
        // Writers of the same object waited for the pull: now it is there, or they write it.
        for (conn, req, len) in self
            .remote
            .creates_after_pull
            .remove(&id)
            .unwrap_or_default()
        {
            if self.conns.contains_key(&conn) {
                self.create_for_client(conn, req, id, len);
            }
        }
        // Tasks that would make this object again waited for the pull.
        for (from, msg) in self.remote.after_pull.remove(&id).unwrap_or_default() {
            self.handle_peer(from, msg);
        }
    }

    fn pull_ended(&mut self, id: ObjectId, result: Result<(), PullFailure>) {
        let wanted = self.objects.get(&id).is_some_and(|e| e.is_elsewhere());
        match result {
            Ok(()) if wanted => {
                self.stats.objects_pulled += 1;
                self.remote.refetches.remove(&id);
                self.seal_object(Holder::Local, id, Vec::new());
                if self.is_foreign(id.owner())
                    && let Some(owner) = self.remote.tags.get(&id.owner()).copied()
                {
                    self.send_peer(owner, PeerMsg::Located { id });
                }
            }
            Ok(()) => {
                // Nobody needs it any more.
                let _ = self.store.abort(id);
            }
            Err(PullFailure { why, bad }) => {
                let _ = self.store.abort(id);
                if !bad.is_empty() {
                    self.remote.failed_holders.insert(id, bad.clone());
                }
                if !wanted {
                    return;
                }
                let foreign = self.is_foreign(id.owner());
                let tries = self.remote.refetches.entry(id).or_insert(0);
                *tries += 1;
                let how = format!("pulling it from other peers failed: {why}");
                if foreign && *tries <= REFETCH_TRIES {
                    // Its owner may not have noticed yet that those copies are gone: ask it
                    // again in a moment (it rebuilds the object, or names other copies).
                    if let Some(e) = self.objects.get_mut(&id) {
                        e.elsewhere = None;
                    }
                    let at = std::time::Instant::now() + REFETCH_PAUSE;
                    self.remote.refetch_at.push((id, at));
                } else if !foreign {
                    if let Some(e) = self.objects.get_mut(&id)
                        && let Some(ew) = e.elsewhere.as_mut()
                    {
                        ew.copies.retain(|p| !bad.contains(p));
                        ew.partial.retain(|p| !bad.contains(p));
                        let me = self.remote.me;
                        if !bad.is_empty() && ew.copies.iter().any(|p| Some(*p) != me) {
                            // Other copies are left: try them.
                            return self.start_pull(id);
                        }
                    }
                    self.object_lost(id, &how);
                } else {
                    let err = ErrorInfo::new(
                        ErrorKind::ObjectLost,
                        format!("object {id} could not be brought here: {how}"),
                    );
                    self.object_ready(id, Value::Error(err));
                }
            }
        }
    }

    /// Time passed: ask owners again for objects whose pulls failed.
    pub fn refetch_due(&mut self, now: std::time::Instant) {
        if self.remote.refetch_at.is_empty() {
            return;
        }
        let (due, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.remote.refetch_at)
            .into_iter()
            .partition(|(_, at)| *at <= now);
        self.remote.refetch_at = later;
        for (id, _) in due {
            if let Some(e) = self.objects.get_mut(&id)
                && matches!(e.state, ObjState::Pending)
                && e.elsewhere.is_none()
            {
                e.unfetched = true;
                self.fetch_foreign(id);
            }
        }
    }

    /// What this node can serve of `id`'s bytes `offset..offset + len`.
    fn pull_source(&mut self, req: &PullRequest) -> Source {
        let id = req.id;
        if let Some(p) = self.pulls.get(&id) {
            if req.offset + req.len > p.len {
                return Source::Missing(format!("object {id} has only {} bytes", p.len));
            }
            if !p.has(req.offset, req.len) {
                return Source::NotYet(Arc::clone(p));
            }
            return match self.store.arena().slice(p.offset + req.offset, req.len) {
                Ok(bytes) => Source::Partial(bytes.to_vec()),
                Err(e) => Source::Missing(e.to_string()),
            };
        }
        match self.objects.get(&id).map(|e| &e.state) {
            Some(ObjState::Ready(Value::Stored { .. })) => match self.value_for(&id, Holder::Local)
            {
                Value::Stored { offset, len } => Source::Stored { offset, len },
                Value::Error(e) => Source::Missing(e.message),
                Value::Inline(_) => Source::Missing("not in the store".into()),
            },
            _ => Source::Missing(format!("no copy of object {id} here")),
        }
    }
}

/// A pull the state asks for: the object, its progress record, and the holders.
pub type PullJob = (ObjectId, Arc<PullProgress>, Vec<PeerId>);

/// Start the pull server and the task that runs the pulls the state asks
/// for; returns the sender the state queues pulls on.
pub fn start(
    client: peer_gossip::Client,
    shared: Arc<Shared>,
) -> Result<mpsc::UnboundedSender<PullJob>, String> {
    let mut incoming = client
        .accept_streams(protocol())
        .map_err(|e| e.to_string())?;
    let serve_shared = Arc::clone(&shared);
    tokio::spawn(async move {
        while let Some((peer, stream)) = incoming.next().await {
            tokio::spawn(serve(peer, stream, Arc::clone(&serve_shared)));
        }
    });
    let (tx, mut rx) = mpsc::unbounded_channel::<PullJob>();
    tokio::spawn(async move {
        while let Some((id, progress, sources)) = rx.recv().await {
            let shared = Arc::clone(&shared);
            let client = client.clone();
            tokio::spawn(async move {
                let arena = shared.state.lock().store.shared_arena();
                let result = run_pull(&client, id, &progress, sources, &arena).await;
                if let Err(e) = &result {
                    tracing::warn!("pull of object {id} failed: {}", e.why);
                }
                let mut st = shared.state.lock();
                st.stats.bytes_pulled += progress.received();
                st.pull_finished(id, result);
            });
        }
    });
    Ok(tx)
}

/// Fetch every chunk of object `id` from `sources` into the arena.
pub async fn run_pull(
    client: &peer_gossip::Client,
    id: ObjectId,
    progress: &PullProgress,
    sources: Vec<PeerId>,
    arena: &peer_objstore::Arena,
) -> Result<(), PullFailure> {
    let mut bad = Vec::new();
    run_chunks(client, id, progress, sources, arena, &mut bad)
        .await
        .map_err(|why| PullFailure { why, bad })
}

async fn run_chunks(
    client: &peer_gossip::Client,
    id: ObjectId,
    progress: &PullProgress,
    sources: Vec<PeerId>,
    arena: &peer_objstore::Arena,
    bad: &mut Vec<PeerId>,
) -> Result<(), String> {
    let chunks = progress.len.div_ceil(CHUNK) as usize;
    let mut todo: std::collections::VecDeque<usize> = (0..chunks).collect();
    let mut alive: Vec<SourcePeer> = sources
        .into_iter()
        .map(|peer| SourcePeer {
            peer,
            in_flight: 0,
            strikes: 0,
        })
        .collect();
    let mut failures: Vec<String> = Vec::new();
    let mut in_flight = FuturesUnordered::new();
    loop {
        while in_flight.len() < IN_FLIGHT && !todo.is_empty() {
            // Chunk c prefers source c mod n, so the chunks spread over the holders.
            let Some(&chunk) = todo.front() else { break };
            let n = alive.len();
            let pick = (0..n)
                .map(|k| (chunk + k) % n.max(1))
                .find(|&s| alive[s].in_flight < PER_SOURCE);
            let Some(s) = pick else { break };
            todo.pop_front();
            alive[s].in_flight += 1;
            let peer = alive[s].peer;
            let offset = chunk as u64 * CHUNK;
            let len = CHUNK.min(progress.len - offset);
            let client = client.clone();
            in_flight.push(async move {
                let got = tokio::time::timeout(
                    CHUNK_TIMEOUT,
                    fetch_chunk(&client, peer, PullRequest { id, offset, len }),
                )
                .await
                .unwrap_or_else(|_| {
                    Err(ChunkError::Transport(format!(
                        "no answer within {CHUNK_TIMEOUT:?}"
                    )))
                });
                (peer, chunk, got)
            });
        }
        let Some((peer, chunk, got)) = in_flight.next().await else {
            if todo.is_empty() {
                return Ok(());
            }
            return Err(if failures.is_empty() {
                "no source left".into()
            } else {
                failures.join("; ")
            });
        };
        let slot = alive.iter().position(|h| h.peer == peer);
        if let Some(s) = slot {
            alive[s].in_flight = alive[s].in_flight.saturating_sub(1);
        }
        match got {
            Ok(bytes) => {
                if let Some(s) = slot {
                    alive[s].strikes = 0;
                }
                arena
                    .write(progress.offset + chunk as u64 * CHUNK, &bytes)
                    .map_err(|e| e.to_string())?;
                progress.done.lock()[chunk] = true;
                progress.arrived.notify_waiters();
            }
            Err(e) => {
                todo.push_front(chunk);
                let give_up = match (&e, slot) {
                    (_, None) => false,
                    (ChunkError::Missing(_), Some(_)) => true,
                    (ChunkError::Transport(_), Some(s)) => {
                        alive[s].strikes += 1;
                        alive[s].strikes >= SOURCE_STRIKES
                    }
                };
                tracing::debug!(%peer, "chunk {chunk} of object {id}: {e} (dropping the source: {give_up})");
                if !give_up {
                    continue;
                }
                failures.push(format!("{peer}: {e}"));
                bad.push(peer);
                if let Some(s) = slot {
                    alive.remove(s);
                }
                if alive.is_empty() {
                    // Let the requests still in flight finish, then give up.
                    while let Some((_, c, got)) = in_flight.next().await {
                        if got.is_err() {
                            todo.push_front(c);
                        }
                    }
                    return Err(failures.join("; "));
                }
            }
        }
    }
}

/// One chunk from one peer, checked against its CRC.
async fn fetch_chunk(
    client: &peer_gossip::Client,
    peer: PeerId,
    req: PullRequest,
) -> Result<Vec<u8>, ChunkError> {
    let transport = |e: &dyn std::fmt::Display| ChunkError::Transport(e.to_string());
    let stream = client
        .open_stream(peer, protocol())
        .await
        .map_err(|e| transport(&e))?;
    let mut stream = stream.compat();
    stream
        .write_all(&codec::encode(&req))
        .await
        .map_err(|e| transport(&e))?;
    stream.flush().await.map_err(|e| transport(&e))?;
    let mut buf = Vec::new();
    let reply: PullReply = codec::read_async_max(&mut stream, &mut buf, PULL_FRAME_MAX)
        .await
        .map_err(|e| transport(&e))?;
    let crc = match reply {
        PullReply::Data { crc } => crc,
        PullReply::Missing(why) => return Err(ChunkError::Missing(why)),
    };
    let mut bytes = vec![0u8; req.len as usize];
    stream
        .read_exact(&mut bytes)
        .await
        .map_err(|e| ChunkError::Transport(format!("reading the chunk: {e}")))?;
    if crc32fast::hash(&bytes) != crc {
        return Err(ChunkError::Transport("chunk failed its checksum".into()));
    }
    Ok(bytes)
}

/// Answer one pull request on a stream a peer opened.
async fn serve(peer: PeerId, stream: peer_gossip::Stream, shared: Arc<Shared>) {
    let mut stream = stream.compat();
    let mut buf = Vec::new();
    let read = codec::read_async_max(&mut stream, &mut buf, PULL_FRAME_MAX);
    let req: PullRequest = match tokio::time::timeout(REQUEST_TIMEOUT, read).await {
        Ok(Ok(r)) => r,
        Ok(Err(codec::FrameError::Closed)) => return,
        Ok(Err(e)) => {
            shared.state.lock().stats.bad_frames += 1;
            tracing::debug!(%peer, "bad pull request: {e}");
            return;
        }
        Err(_) => {
            tracing::debug!(%peer, "no pull request within {REQUEST_TIMEOUT:?}");
            return;
        }
    };
    if req.len == 0 || req.len > MAX_REQUEST || req.offset.checked_add(req.len).is_none() {
        let _ = send_missing(&mut stream, format!("bad range length {}", req.len)).await;
        return;
    }
    let deadline = tokio::time::Instant::now() + PARTIAL_WAIT;
    let source = loop {
        let source = shared.state.lock().pull_source(&req);
        match source {
            Source::NotYet(progress) => {
                let arrived = progress.arrived.notified();
                if progress.has(req.offset, req.len) {
                    continue;
                }
                if tokio::time::timeout_at(deadline, arrived).await.is_err() {
                    break Source::Missing("chunk not pulled here yet".into());
                }
            }
            other => break other,
        }
    };
    let result = match source {
        Source::Stored { offset, len } => {
            let sent = if req.offset + req.len > len {
                send_missing(&mut stream, format!("object has only {len} bytes")).await
            } else {
                let arena = shared.state.lock().store.shared_arena();
                match arena.slice(offset + req.offset, req.len) {
                    Ok(bytes) => send_data(&mut stream, bytes).await,
                    Err(e) => send_missing(&mut stream, e.to_string()).await,
                }
            };
            shared.state.lock().release_pins(Holder::Local, &[req.id]);
            sent
        }
        Source::Partial(bytes) => send_data(&mut stream, &bytes).await,
        Source::Missing(why) => send_missing(&mut stream, why).await,
        Source::NotYet(_) => unreachable!("resolved in the loop above"),
    };
    match result {
        Ok(true) => shared.state.lock().stats.bytes_served += req.len,
        Ok(false) => {}
        Err(e) => tracing::debug!(%peer, "serving a pull of {}: {e}", req.id),
    }
}

/// Sends the bytes; `Ok(true)`.
async fn send_data(
    stream: &mut (impl tokio::io::AsyncWrite + Unpin),
    bytes: &[u8],
) -> std::io::Result<bool> {
    let header = codec::encode(&PullReply::Data {
        crc: crc32fast::hash(bytes),
    });
    stream.write_all(&header).await?;
    stream.write_all(bytes).await?;
    stream.flush().await?;
    stream.shutdown().await?;
    Ok(true)
}

/// Says the bytes are not here; `Ok(false)`.
async fn send_missing(
    stream: &mut (impl tokio::io::AsyncWrite + Unpin),
    why: String,
) -> std::io::Result<bool> {
    stream
        .write_all(&codec::encode(&PullReply::Missing(why)))
        .await?;
    stream.shutdown().await?;
    Ok(false)
}
