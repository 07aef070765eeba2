//! The object plane's bytes: pulling chunks of an object from the peers
//! that hold it straight into this node's arena, and serving chunks to
//! peers that pull from here. (What to pull, and when, is the core's:
//! `peer_node_core::cluster::pulls`.)
//!
//! - **Pull** ([`run_pull`]): the core reserved the object's space and asks
//!   for a pull ([`PullJob`]). Chunks of [`CHUNK`] bytes are requested over
//!   `/peer/pull/2.0.0` streams, at most [`PER_SOURCE`] at a time from each
//!   holder and [`IN_FLIGHT`] in all, spread over the holders chunk by chunk.
//!   A stream carries one request at a time and is used again for the next
//!   chunk from that holder: opening a stream per chunk cost a yamux window
//!   warm-up each time, and libp2p-stream drops an inbound stream when the
//!   acceptor has not taken the one before it yet (a 0-slot channel), which
//!   under load failed one chunk request in a few dozen.
//!   Each chunk is read off its stream straight into the object's place in
//!   the arena (no buffer besides the transport's, and no checksum: TLS
//!   authenticates every byte) and then reported to the core; a source that
//!   fails or is slow is dropped and its chunks asked of the others.
//! - **Serve** ([`serve`]): the core says what it can serve
//!   ([`PullSource`]): a complete copy is read straight out of the shared
//!   store (pinned while it is sent); a node still pulling serves the chunks
//!   it already has straight out of the object's place too (its pull reports
//!   its end, after which the space may be freed, only once those sends are
//!   over) and waits a little for the ones on their way, so peers pulling the
//!   same object at once feed each other rather than all asking the first
//!   holder.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use peer_gossip::{GossipError, LinkKind, PeerId, StreamProtocol};
use peer_node_core::wire::codec::{self, FrameError};
use peer_node_core::wire::peer::{PULL_PROTOCOL, PullReply, PullRequest};
use peer_node_core::{CHUNK, Event, PullFailure, PullSource};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_util::compat::FuturesAsyncReadCompatExt;

use super::direct::{DIRECT_MIN, Dialer, DirectPull};
use super::paths::Paths;
use super::{libp2p_id_of, peer_id_of};
use crate::engine::{Engine, PullJob, Shared};
use crate::frames;
/// Chunk requests in flight per source.
const PER_SOURCE: usize = 4;
/// Chunk requests in flight per pull.
const IN_FLIGHT: usize = 8;
/// How long a chunk may take, from opening the stream to its last byte.
pub(super) const CHUNK_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a node still pulling waits for a chunk another peer asks it for.
const PARTIAL_WAIT: Duration = Duration::from_secs(10);
/// The largest range one request may ask for.
const MAX_REQUEST: u64 = 64 * 1024 * 1024;
/// Largest pull request or reply header frame (both are a few dozen bytes).
pub(super) const PULL_FRAME_MAX: usize = 64 * 1024;
/// How long a peer that opened a pull stream may take to send its request.
pub(super) const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a pull stream is kept open for a next request.
pub(super) const STREAM_IDLE: Duration = Duration::from_secs(60);
/// Transport failures in a row after which a source is given up (a stream can
/// fail while a duplicate connection between two peers is being closed).
const SOURCE_STRIKES: u32 = 3;

/// Why a chunk did not come.
pub(super) enum ChunkError {
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

/// A pull stream: one request at a time, used again for the next.
type PullStream = tokio_util::compat::Compat<peer_gossip::Stream>;

/// A holder a pull asks for chunks.
struct SourcePeer {
    peer: PeerId,
    /// It has a whole copy (else it is pulling the object too).
    whole: bool,
    /// Streams to it between requests.
    idle: Vec<PullStream>,
    /// A direct connection to it, which carries every chunk asked of it while it works.
    direct: Option<DirectPull>,
    /// A direct connection to it is being opened.
    opening: bool,
    in_flight: usize,
    /// Transport failures since its last good chunk.
    strikes: u32,
}

impl SourcePeer {
    /// Requests it may have in flight. A whole copy gets none while peers
    /// that pull the same object are sources too: they asked the owner
    /// earlier (it lists pullers in that order), so they are ahead, and the
    /// producer of an object that many peers read at once serves about one
    /// copy, not one per reader. A puller source that fails (or has not got
    /// a chunk within [`PARTIAL_WAIT`]) is dropped, and with the last of them
    /// gone the whole copies serve the rest. While a direct connection to it is being
    /// opened, one chunk at a time goes over a stream, so the bulk waits for the cheaper path.
    fn limit(&self, peers_pulling: bool) -> usize {
        if self.whole && peers_pulling {
            0
        } else if self.opening && self.direct.is_none() {
            1
        } else {
            PER_SOURCE
        }
    }
}

fn protocol() -> StreamProtocol {
    StreamProtocol::new(PULL_PROTOCOL)
}

/// Start the pull server and the task that runs the pulls the core asks
/// for; returns the sender the engine queues pulls on.
pub(super) fn start(
    client: peer_gossip::Client,
    shared: Arc<Shared>,
    arena: Arc<peer_objstore::Arena>,
    paths: Arc<Paths>,
    dialer: Option<Arc<Dialer>>,
) -> Result<mpsc::UnboundedSender<PullJob>, GossipError> {
    let mut incoming = client.accept_streams(protocol())?;
    let serve_shared = Arc::clone(&shared);
    let serve_arena = Arc::clone(&arena);
    tokio::spawn(async move {
        while let Some((peer, stream)) = incoming.next().await {
            tokio::spawn(serve(
                peer,
                stream,
                Arc::clone(&serve_shared),
                Arc::clone(&serve_arena),
            ));
        }
    });
    let (tx, mut rx) = mpsc::unbounded_channel::<PullJob>();
    tokio::spawn(async move {
        while let Some(job) = rx.recv().await {
            let shared = Arc::clone(&shared);
            let client = client.clone();
            let arena = Arc::clone(&arena);
            let paths = Arc::clone(&paths);
            let dialer = dialer.clone();
            tokio::spawn(async move {
                let id = job.id;
                let result =
                    run_pull(&client, &job, &arena, &shared, &paths, dialer.as_deref()).await;
                if let Err(e) = &result {
                    tracing::warn!("pull of object {id} failed: {}", e.why);
                }
                let ended = shared.engine.lock().io.partial_sends.finish(id);
                if let Some(ended) = ended {
                    // Every such send is bounded by CHUNK_TIMEOUT.
                    ended.notified().await;
                }
                let mut e = shared.engine.lock();
                e.io.partial_sends.forget(id);
                if let Some(n) = e.io.arrivals.remove(&id) {
                    n.notify_waiters();
                }
                e.handle(Event::PullDone { id, result });
            });
        }
    });
    Ok(tx)
}

/// What the core says serves `req`, counted as a send out of a pull in progress when it is
/// one (see `partial_sends`; [`release`] ends it). Call it under the engine lock.
pub(super) fn pull_source_here(e: &mut Engine, req: &PullRequest) -> PullSource {
    let source = e.core.pull_source(req);
    if let PullSource::Partial { .. } = source
        && !e.io.partial_sends.start(req.id)
    {
        // The pull is ending: the chunk is served from the sealed copy in a moment.
        return PullSource::NotYet;
    }
    source
}

/// Fetch every chunk of a pull from its sources into the arena.
pub(super) async fn run_pull(
    client: &peer_gossip::Client,
    job: &PullJob,
    arena: &peer_objstore::Arena,
    shared: &Shared,
    paths: &Paths,
    dialer: Option<&Dialer>,
) -> Result<(), PullFailure> {
    let mut bad = Vec::new();
    // Every direct connection of this pull lives in `run_chunks` and has ended (its thread
    // joined) when it returns, before the core hears `PullDone` and frees what is unfilled.
    run_chunks(client, job, arena, shared, paths, dialer, &mut bad)
        .await
        .map_err(|why| PullFailure {
            why,
            bad: bad.iter().map(peer_id_of).collect(),
        })
}

async fn run_chunks(
    client: &peer_gossip::Client,
    job: &PullJob,
    arena: &peer_objstore::Arena,
    shared: &Shared,
    paths: &Paths,
    dialer: Option<&Dialer>,
    bad: &mut Vec<PeerId>,
) -> Result<(), String> {
    let id = job.id;
    let chunks = job.len.div_ceil(CHUNK) as usize;
    let mut todo: std::collections::VecDeque<usize> = (0..chunks).collect();
    let mut sources: Vec<PeerId> = job.sources.iter().filter_map(libp2p_id_of).collect();
    let whole: Vec<PeerId> = sources.iter().take(job.complete).copied().collect();
    tracing::debug!(
        "pulling object {id} ({} bytes) from {sources:?} ({} with whole copies)",
        job.len,
        job.complete
    );
    let over_relay = paths.prefer_direct(&mut sources);
    let _counted = over_relay.then(|| {
        tracing::info!(
            "object {id}: every holder is behind a relay; pulling over it at the relay cap"
        );
        paths.relayed_pull()
    });
    let mut alive: Vec<SourcePeer> = sources
        .into_iter()
        .map(|peer| SourcePeer {
            peer,
            whole: whole.contains(&peer),
            idle: Vec::new(),
            direct: None,
            opening: false,
            in_flight: 0,
            strikes: 0,
        })
        .collect();
    // Direct connections an earlier pull left idle are used at once; others open in the
    // background: meanwhile a chunk at a time goes over a stream, and a holder's next ones
    // over its direct connection once it is up (a holder whose direct listener cannot be
    // reached costs nothing but the attempt).
    let mut opening = FuturesUnordered::new();
    let dialer = dialer.filter(|_| job.len >= DIRECT_MIN && !over_relay);
    if let Some(dialer) = dialer {
        let holders: Vec<PeerId> = alive.iter().map(|s| s.peer).collect();
        for (peer, ips) in direct_addresses(client, holders).await {
            let Some(source) = alive.iter_mut().find(|s| s.peer == peer) else {
                continue;
            };
            source.direct = dialer.reuse(peer);
            if source.direct.is_none() {
                source.opening = true;
                opening.push(async move { (peer, dialer.open(client, peer, ips).await) });
            }
        }
    }
    let mut failures: Vec<String> = Vec::new();
    let mut in_flight = FuturesUnordered::new();
    loop {
        while in_flight.len() < IN_FLIGHT && !todo.is_empty() {
            // Chunk c prefers source c mod n, so the chunks spread over the holders.
            let Some(&chunk) = todo.front() else { break };
            let n = alive.len();
            let peers_pulling = alive.iter().any(|s| !s.whole);
            let pick = (0..n)
                .map(|k| (chunk + k) % n.max(1))
                .find(|&s| alive[s].in_flight < alive[s].limit(peers_pulling));
            let Some(s) = pick else { break };
            todo.pop_front();
            alive[s].in_flight += 1;
            let peer = alive[s].peer;
            let stream = alive[s].idle.pop();
            let offset = chunk as u64 * CHUNK;
            let len = CHUNK.min(job.len - offset);
            let client = client.clone();
            let relayed = paths.is_relayed(&peer);
            // SAFETY: the range is chunk `chunk` of the space the core reserved for this
            // object, which stays reserved and unsealed until this pull reports `PullDone`
            // (after every future here has finished or been dropped). Chunks in flight are
            // distinct (a chunk is in `todo` or in flight, never both), nothing serves or
            // reads a chunk before `PullChunk` reports it, and a retried chunk is only
            // written again after the failed attempt's future has ended.
            let place =
                unsafe { arena.range_mut(job.offset + offset, len) }.map_err(|e| e.to_string())?;
            let req = PullRequest { id, offset, len };
            let path = match &alive[s].direct {
                // SAFETY: as above; and the direct connection's thread writes `place` only
                // until it answers the chunk, and is joined when the connection is dropped,
                // which happens before this pull reports `PullDone`.
                Some(direct) => Path::Direct(unsafe { direct.fetch(req, place) }),
                None => Path::Stream(place, stream),
            };
            in_flight.push(async move {
                let (got, stream, direct) = match path {
                    // No timeout here: the thread bounds every chunk by CHUNK_TIMEOUT, and a
                    // chunk it holds must not be handed to another source before it answers.
                    Path::Direct(fetched) => (fetched.await, None, true),
                    Path::Stream(place, stream) => {
                        if relayed {
                            paths.throttle(len).await;
                        }
                        let (got, stream) = tokio::time::timeout(
                            CHUNK_TIMEOUT,
                            fetch_chunk(&client, peer, req, place, stream),
                        )
                        .await
                        .unwrap_or_else(|_| {
                            let late = format!("no answer within {CHUNK_TIMEOUT:?}");
                            (Err(ChunkError::Transport(late)), None)
                        });
                        (got, stream, false)
                    }
                };
                (peer, chunk, got, stream, direct)
            });
        }
        let next = tokio::select! {
            Some((peer, direct)) = opening.next(), if !opening.is_empty() => {
                if let Some(source) = alive.iter_mut().find(|s| s.peer == peer) {
                    source.direct = direct;
                    source.opening = false;
                }
                continue;
            }
            next = in_flight.next() => next,
        };
        let Some((peer, chunk, got, stream, direct)) = next else {
            if todo.is_empty() {
                // Every chunk is answered, so no direct connection holds a place of this
                // object: they can serve the next pull from their holders.
                if let Some(dialer) = dialer {
                    for source in &mut alive {
                        if let Some(conn) = source.direct.take() {
                            dialer.keep(source.peer, conn);
                        }
                    }
                }
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
            alive[s].idle.extend(stream);
        }
        match got {
            Ok(()) => {
                if let Some(s) = slot {
                    alive[s].strikes = 0;
                }
                if direct {
                    paths.count_direct_pulled(CHUNK.min(job.len - chunk as u64 * CHUNK));
                }
                let mut e = shared.engine.lock();
                e.handle(Event::PullChunk { id, chunk });
                if let Some(n) = e.io.arrivals.get(&id) {
                    n.notify_waiters();
                }
            }
            Err(e) => {
                todo.push_front(chunk);
                if let (ChunkError::Transport(_), true, Some(s)) = (&e, direct, slot) {
                    // The connection is over; the source's next chunks go over streams.
                    alive[s].direct = None;
                }
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
                    while let Some((_, c, got, _, _)) = in_flight.next().await {
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

/// How one chunk is fetched.
enum Path<'a, F> {
    /// Over the source's direct connection (the future answers when the chunk is in place).
    Direct(F),
    /// Over a pull stream (this one, or a new one), into this place.
    Stream(&'a mut [u8], Option<PullStream>),
}

/// The holders with a direct link (not relayed, not hole punched), and the IPs they listen
/// on: those a pull may open direct connections to.
async fn direct_addresses(
    client: &peer_gossip::Client,
    holders: Vec<PeerId>,
) -> Vec<(PeerId, Vec<std::net::IpAddr>)> {
    let view = client.view().await.unwrap_or_default();
    holders
        .into_iter()
        .filter_map(|peer| {
            let info = view.iter().find(|p| p.peer_id == peer)?;
            let direct = info.link.is_some_and(|l| l.kind == LinkKind::Direct);
            let ips = peer_gossip::direct_ips(&info.addresses);
            (direct && !ips.is_empty()).then_some((peer, ips))
        })
        .collect()
}

/// One chunk from one peer, read into `place` (its place in the arena), on
/// `stream` if there is one (else a new one); the stream comes back for the
/// next request unless it failed.
async fn fetch_chunk(
    client: &peer_gossip::Client,
    peer: PeerId,
    req: PullRequest,
    place: &mut [u8],
    stream: Option<PullStream>,
) -> (Result<(), ChunkError>, Option<PullStream>) {
    let mut stream = match stream {
        Some(s) => s,
        None => match client.open_stream(peer, protocol()).await {
            Ok(s) => s.compat(),
            Err(e) => return (Err(ChunkError::Transport(e.to_string())), None),
        },
    };
    match request_chunk(&mut stream, req, place).await {
        Ok(()) => (Ok(()), Some(stream)),
        Err(e @ ChunkError::Missing(_)) => (Err(e), Some(stream)),
        Err(e) => (Err(e), None),
    }
}

/// Ask for one chunk on `stream` and read it into `place`.
async fn request_chunk(
    stream: &mut PullStream,
    req: PullRequest,
    place: &mut [u8],
) -> Result<(), ChunkError> {
    let transport = |e: &dyn std::fmt::Display| ChunkError::Transport(e.to_string());
    stream
        .write_all(&codec::encode(&req))
        .await
        .map_err(|e| transport(&e))?;
    stream.flush().await.map_err(|e| transport(&e))?;
    let mut buf = Vec::new();
    let reply: PullReply = frames::read_async_max(stream, &mut buf, PULL_FRAME_MAX)
        .await
        .map_err(|e| transport(&e))?;
    if let PullReply::Missing(why) = reply {
        return Err(ChunkError::Missing(why));
    }
    stream
        .read_exact(place)
        .await
        .map_err(|e| ChunkError::Transport(format!("reading the chunk: {e}")))?;
    Ok(())
}

/// Answer the pull requests a peer sends on a stream it opened, one at a
/// time, until it closes the stream (or sends nothing for [`STREAM_IDLE`]).
async fn serve(
    peer: PeerId,
    stream: peer_gossip::Stream,
    shared: Arc<Shared>,
    arena: Arc<peer_objstore::Arena>,
) {
    let mut stream = stream.compat();
    let mut buf = Vec::new();
    let mut patience = REQUEST_TIMEOUT;
    loop {
        let read = frames::read_async_max(&mut stream, &mut buf, PULL_FRAME_MAX);
        let req: PullRequest = match tokio::time::timeout(patience, read).await {
            Ok(Ok(r)) => r,
            Ok(Err(FrameError::Closed)) => return,
            Ok(Err(e)) => {
                shared.handle(Event::BadFrame);
                tracing::debug!(%peer, "bad pull request: {e}");
                return;
            }
            Err(_) => {
                tracing::debug!(%peer, "no pull request within {patience:?}");
                return;
            }
        };
        patience = STREAM_IDLE;
        if let Some(why) = bad_range(&req) {
            let _ = send_missing(&mut stream, why).await;
            return;
        }
        match answer(&mut stream, &req, &shared, &arena).await {
            Ok(true) => shared.handle(Event::Served { bytes: req.len }),
            Ok(false) => {}
            Err(e) => {
                tracing::debug!(%peer, "serving a pull of {}: {e}", req.id);
                return;
            }
        }
    }
}

/// Answer one request: the bytes (`Ok(true)`) or why not (`Ok(false)`).
async fn answer(
    stream: &mut (impl tokio::io::AsyncWrite + Unpin),
    req: &PullRequest,
    shared: &Shared,
    arena: &peer_objstore::Arena,
) -> std::io::Result<bool> {
    let source = source_for(req, shared).await;
    // Bounded, as a send out of a pull in progress holds up that pull's end.
    let send = async {
        match Reply::of(req, &source, arena) {
            Reply::Bytes(bytes) => send_data(stream, bytes).await,
            Reply::Missing(why) => send_missing(stream, why).await,
        }
    };
    let sent = tokio::time::timeout(CHUNK_TIMEOUT, send)
        .await
        .unwrap_or_else(|_| {
            Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("the puller took more than {CHUNK_TIMEOUT:?} to read a chunk"),
            ))
        });
    release(&source, req, shared);
    sent
}

/// What serves `req` here, once the core can say: a node still pulling the object waits up to
/// [`PARTIAL_WAIT`] for the chunk (it is probably on its way).
pub(super) async fn source_for(req: &PullRequest, shared: &Shared) -> PullSource {
    let deadline = tokio::time::Instant::now() + PARTIAL_WAIT;
    loop {
        let arrival = {
            let mut e = shared.engine.lock();
            match pull_source_here(&mut e, req) {
                PullSource::NotYet => Arc::clone(e.io.arrivals.entry(req.id).or_default()),
                other => return other,
            }
        };
        // Registered before the engine is looked at again, so a chunk that
        // lands in between wakes it.
        let arrived = arrival.notified();
        tokio::pin!(arrived);
        arrived.as_mut().enable();
        let source = pull_source_here(&mut shared.engine.lock(), req);
        if source != PullSource::NotYet {
            return source;
        }
        if tokio::time::timeout_at(deadline, arrived).await.is_err() {
            return PullSource::Missing("chunk not pulled here yet".into());
        }
    }
}

/// The answer to a request, from the source the core named.
pub(super) enum Reply<'a> {
    /// `PullReply::Data` and these bytes.
    Bytes(&'a [u8]),
    /// `PullReply::Missing`.
    Missing(String),
}

impl<'a> Reply<'a> {
    pub(super) fn of(
        req: &PullRequest,
        source: &'a PullSource,
        arena: &'a peer_objstore::Arena,
    ) -> Self {
        match source {
            PullSource::Stored { offset, len } | PullSource::Partial { offset, len } => {
                if req.offset + req.len > *len {
                    Reply::Missing(format!("object has only {len} bytes"))
                } else {
                    match arena.slice(offset + req.offset, req.len) {
                        Ok(bytes) => Reply::Bytes(bytes),
                        Err(e) => Reply::Missing(e.to_string()),
                    }
                }
            }
            PullSource::Missing(why) => Reply::Missing(why.clone()),
            PullSource::NotYet => Reply::Missing("chunk not pulled here yet".into()),
        }
    }
}

/// Ends a serving once its bytes are sent: unpins a stored copy (the core pinned it for the
/// serving), or ends a send out of a pull in progress (see [`pull_source_here`]).
pub(super) fn release(source: &PullSource, req: &PullRequest, shared: &Shared) {
    match source {
        PullSource::Stored { .. } => {
            let mut e = shared.engine.lock();
            e.core.driver_release(&[req.id]);
            e.run();
        }
        PullSource::Partial { .. } => shared.engine.lock().io.partial_sends.end(req.id),
        PullSource::NotYet | PullSource::Missing(_) => {}
    }
}

/// Why a request cannot be served at all, whatever is stored here.
pub(super) fn bad_range(req: &PullRequest) -> Option<String> {
    (req.len == 0 || req.len > MAX_REQUEST || req.offset.checked_add(req.len).is_none())
        .then(|| format!("bad range length {}", req.len))
}

/// Sends the bytes; `Ok(true)`.
async fn send_data(
    stream: &mut (impl tokio::io::AsyncWrite + Unpin),
    bytes: &[u8],
) -> std::io::Result<bool> {
    stream.write_all(&codec::encode(&PullReply::Data)).await?;
    stream.write_all(bytes).await?;
    stream.flush().await?;
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
    stream.flush().await?;
    Ok(false)
}
