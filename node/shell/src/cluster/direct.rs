//! Direct connections for large pulls: TLS over a plain TCP socket, one per (pull, holder)
//! and kept a while for the holder's next pull, each driven by its own thread, so the bulk bytes of an object skip yamux's 16 KiB frames
//! and the node runtime, and land in the object's place in the arena straight from the TLS
//! record layer. (`pull.rs` decides which chunks go where; libp2p streams remain the path
//! for small objects, relayed or hole-punched holders, and whenever this one fails.)
//!
//! - **Tickets** ([`DIRECT_PROTOCOL`]): a puller asks a holder, over their admitted libp2p
//!   link, for a ticket; the holder answers with its direct listener's port and 16 random
//!   bytes, good once, for [`TICKET_LIFE`], for that peer only. The direct connection carries
//!   no cluster-key proof of its own: the ticket stands for the link's.
//! - **Serving** ([`Direct::start`]): the listener accepts, a thread per connection runs the
//!   TLS handshake (the remote proves its host key), checks the ticket, then answers
//!   [`PullRequest`]s one after another exactly as a pull stream does (`pull.rs`'s
//!   `source_for` and `Reply`), until the puller closes the connection or sends nothing for
//!   [`STREAM_IDLE`].
//! - **Pulling** ([`DirectPull`]): a thread owns the client end; chunks are queued to it with
//!   their places in the arena, their requests are written ahead (pipelined), and each reply's
//!   bytes are read straight into its place. On the first failure the thread fails every
//!   chunk it holds and ends, so a place is never written after its chunk was answered.

use std::collections::{HashMap, VecDeque};
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc as std_mpsc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use parking_lot::Mutex;
use peer_gossip::{DirectStream, DirectTls, GossipError, PeerId, StreamProtocol};
use peer_node_core::wire::codec::{self, FrameError};
use peer_node_core::wire::peer::{DIRECT_PROTOCOL, DirectOffer, PullReply, PullRequest};
use peer_node_core::{Event, PullSource};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::oneshot;
use tokio_util::compat::FuturesAsyncReadCompatExt;

use super::paths::Paths;
use super::pull::{
    CHUNK_TIMEOUT, ChunkError, PULL_FRAME_MAX, REQUEST_TIMEOUT, Reply, STREAM_IDLE, bad_range,
    pull_source_here, release, source_for,
};
use crate::engine::Shared;

/// Objects at least this large are pulled over direct connections where a holder offers one.
pub(super) const DIRECT_MIN: u64 = 16 << 20;
/// How long a ticket is good for.
const TICKET_LIFE: Duration = Duration::from_secs(30);
/// Tickets out at once (a peer asking for ticket after ticket gets `Refused`).
const MAX_TICKETS: usize = 1024;
/// Direct connections served at once (past it, pullers get `Refused` and use streams).
const MAX_SERVING: usize = 64;
/// How long asking for a ticket, connecting and the handshake may take in all.
const OPEN_TIMEOUT: Duration = Duration::from_secs(3);
/// Chunk requests a pulling thread writes ahead of the reply it reads.
const AHEAD: usize = 4;
/// Bytes of a reply written between checks of its deadline.
const SEND_PIECE: usize = 256 * 1024;

fn protocol() -> StreamProtocol {
    StreamProtocol::new(DIRECT_PROTOCOL)
}

/// This node's direct listener and the tickets it handed out.
pub(super) struct Direct {
    tls: DirectTls,
    paths: Arc<Paths>,
    port: u16,
    tickets: Tickets,
    serving: AtomicUsize,
}

/// Tickets handed out and not used yet: each good once, for [`TICKET_LIFE`], for one peer.
#[derive(Default)]
struct Tickets(Mutex<HashMap<[u8; 16], (PeerId, Instant)>>);

impl Tickets {
    /// A new ticket for `peer` (expired ones are forgotten on the way); `None` while
    /// [`MAX_TICKETS`] are out.
    fn issue(&self, peer: PeerId) -> Option<[u8; 16]> {
        let ticket: [u8; 16] = rand::random();
        let now = Instant::now();
        let mut tickets = self.0.lock();
        tickets.retain(|_, (_, at)| now.duration_since(*at) < TICKET_LIFE);
        if tickets.len() >= MAX_TICKETS {
            return None;
        }
        tickets.insert(ticket, (peer, now));
        Some(ticket)
    }

    /// Whether `ticket` was issued to `peer` and is still good; it is used up either way.
    fn redeem(&self, ticket: &[u8; 16], peer: PeerId) -> bool {
        match self.0.lock().remove(ticket) {
            Some((owner, at)) => owner == peer && at.elapsed() < TICKET_LIFE,
            None => false,
        }
    }
}

impl std::fmt::Debug for Direct {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Direct").field("port", &self.port).finish()
    }
}

impl Direct {
    /// Listens on `addr` (port 0: one the system picks) and answers ticket requests; must run
    /// inside the node's runtime.
    pub(super) fn start(
        client: &peer_gossip::Client,
        tls: DirectTls,
        addr: SocketAddr,
        paths: Arc<Paths>,
        shared: Arc<Shared>,
        arena: Arc<peer_objstore::Arena>,
    ) -> Result<Arc<Direct>, String> {
        let listener = TcpListener::bind(addr).map_err(|e| format!("direct listener: {e}"))?;
        let port = listener.local_addr().map_err(|e| e.to_string())?.port();
        let direct = Arc::new(Direct {
            tls,
            paths,
            port,
            tickets: Tickets::default(),
            serving: AtomicUsize::new(0),
        });
        // The listener is ready before any ticket names its port.
        listener
            .set_nonblocking(true)
            .map_err(|e| format!("direct listener: {e}"))?;
        let listener = tokio::net::TcpListener::from_std(listener)
            .map_err(|e| format!("direct listener: {e}"))?;
        let mut asks = client
            .accept_streams(protocol())
            .map_err(|e| e.to_string())?;
        let offers = Arc::clone(&direct);
        tokio::spawn(async move {
            while let Some((peer, stream)) = asks.next().await {
                let offer = offers.offer(peer);
                tokio::spawn(async move {
                    let mut stream = stream.compat();
                    let sent = async {
                        stream.write_all(&codec::encode(&offer)).await?;
                        stream.flush().await?;
                        stream.shutdown().await
                    };
                    if let Ok(Err(e)) = tokio::time::timeout(REQUEST_TIMEOUT, sent).await {
                        tracing::debug!(%peer, "sending a direct ticket: {e}");
                    }
                });
            }
        });
        let handle = tokio::runtime::Handle::current();
        let accepting = Arc::clone(&direct);
        // A task (not a thread): it ends with the node's runtime, and with it the listener.
        tokio::spawn(async move {
            loop {
                let socket = match listener.accept().await {
                    Ok((socket, _)) => socket,
                    Err(e) => {
                        tracing::debug!("direct listener: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                if accepting.serving.fetch_add(1, Ordering::AcqRel) >= MAX_SERVING {
                    accepting.serving.fetch_sub(1, Ordering::AcqRel);
                    continue;
                }
                let socket = match socket.into_std().and_then(|s| {
                    s.set_nonblocking(false)?;
                    Ok(s)
                }) {
                    Ok(s) => s,
                    Err(e) => {
                        accepting.serving.fetch_sub(1, Ordering::AcqRel);
                        tracing::debug!("direct connection: {e}");
                        continue;
                    }
                };
                let (direct, shared, arena, handle) = (
                    Arc::clone(&accepting),
                    Arc::clone(&shared),
                    Arc::clone(&arena),
                    handle.clone(),
                );
                let spawned = std::thread::Builder::new()
                    .name("peer-direct-serve".into())
                    .spawn(move || {
                        if let Err(e) = direct.serve(socket, &shared, &arena, &handle) {
                            tracing::debug!("direct connection: {e}");
                        }
                        direct.serving.fetch_sub(1, Ordering::AcqRel);
                    });
                if spawned.is_err() {
                    accepting.serving.fetch_sub(1, Ordering::AcqRel);
                }
            }
        });
        Ok(direct)
    }

    /// A ticket for `peer`, or why not.
    fn offer(&self, peer: PeerId) -> DirectOffer {
        if self.serving.load(Ordering::Acquire) >= MAX_SERVING {
            return DirectOffer::Refused("serving as many direct connections as it may".into());
        }
        match self.tickets.issue(peer) {
            Some(ticket) => DirectOffer::Ticket {
                port: self.port,
                ticket,
            },
            None => DirectOffer::Refused("too many tickets out".into()),
        }
    }

    /// One accepted connection, to its end (on its own thread).
    fn serve(
        &self,
        socket: TcpStream,
        shared: &Arc<Shared>,
        arena: &peer_objstore::Arena,
        handle: &tokio::runtime::Handle,
    ) -> Result<(), String> {
        socket.set_nodelay(true).map_err(|e| e.to_string())?;
        let mut refused = false;
        let admit = |peer, ticket: &[u8; 16]| {
            refused = !self.tickets.redeem(ticket, peer);
            !refused
        };
        let accepted = self.tls.accept(socket, admit);
        if refused {
            shared.handle(Event::BadFrame);
        }
        let (peer, mut stream) = accepted.map_err(|e| e.to_string())?;
        stream
            .set_timeouts(STREAM_IDLE, CHUNK_TIMEOUT)
            .map_err(|e| e.to_string())?;
        loop {
            let req: PullRequest = match codec::read_blocking_max(&mut stream, PULL_FRAME_MAX) {
                Ok(r) => r,
                Err(FrameError::Closed) => return Ok(()),
                Err(e) => return Err(format!("{peer}: reading a request: {e}")),
            };
            if let Some(why) = bad_range(&req) {
                shared.handle(Event::BadFrame);
                let _ = write_reply(&mut stream, &Reply::Missing(why));
                return Err(format!("{peer} asked for a bad range"));
            }
            let source = source_here(&req, shared, handle);
            let reply = Reply::of(&req, &source, arena);
            let sent = write_reply(&mut stream, &reply);
            release(&source, &req, shared);
            sent.map_err(|e| format!("{peer}: sending {}: {e}", req.id))?;
            if let Reply::Bytes(_) = reply {
                self.paths.count_direct_served(req.len);
                shared.handle(Event::Served { bytes: req.len });
            }
        }
    }
}

/// What serves `req` (see `pull::source_for`), from a serving thread: a stored copy at once;
/// for a chunk still on its way here, the wait runs on the node's runtime.
fn source_here(
    req: &PullRequest,
    shared: &Arc<Shared>,
    handle: &tokio::runtime::Handle,
) -> PullSource {
    let now = pull_source_here(&mut shared.engine.lock(), req);
    if now != PullSource::NotYet {
        return now;
    }
    let (req, shared) = (*req, Arc::clone(shared));
    let waited = handle.spawn(async move { source_for(&req, &shared).await });
    // A runtime that is shutting down cancels the task: the chunk is then not served.
    futures::executor::block_on(waited)
        .unwrap_or_else(|_| PullSource::Missing("this node is stopping".into()))
}

/// Writes one reply (header and bytes) and flushes it, within [`CHUNK_TIMEOUT`] (a send out
/// of a pull in progress holds up that pull's end).
fn write_reply(stream: &mut DirectStream, reply: &Reply<'_>) -> std::io::Result<()> {
    match reply {
        Reply::Bytes(bytes) => {
            let deadline = Instant::now() + CHUNK_TIMEOUT;
            stream.write_all(&codec::encode(&PullReply::Data))?;
            for piece in bytes.chunks(SEND_PIECE) {
                if Instant::now() > deadline {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!("the puller took more than {CHUNK_TIMEOUT:?} to read a chunk"),
                    ));
                }
                stream.write_all(piece)?;
            }
        }
        Reply::Missing(why) => {
            stream.write_all(&codec::encode(&PullReply::Missing(why.clone())))?;
        }
    }
    stream.flush()
}

/// Opens direct connections for this node's pulls, keeps those a pull finished with for the
/// next pull from the same holder (a handshake, a ticket round trip and a thread saved, and no
/// chunks over streams while they would be made), and remembers holders it could not reach
/// that way for a while (their pulls use streams at once).
pub(super) struct Dialer {
    tls: DirectTls,
    unreachable: Mutex<HashMap<PeerId, Instant>>,
    idle: Mutex<HashMap<PeerId, Vec<(DirectPull, Instant)>>>,
}

/// How long a holder that could not be reached directly is not tried again.
const UNREACHABLE_FOR: Duration = Duration::from_secs(30);
/// How long an idle direct connection is kept for the next pull (well within the holder's
/// [`STREAM_IDLE`], after which it closes its end).
const IDLE_FOR: Duration = Duration::from_secs(20);
/// Idle direct connections kept per holder.
const IDLE_PER_PEER: usize = 4;

impl Dialer {
    pub(super) fn new(tls: DirectTls) -> Self {
        Dialer {
            tls,
            unreachable: Mutex::new(HashMap::new()),
            idle: Mutex::new(HashMap::new()),
        }
    }

    /// An idle direct connection to `peer` that an earlier pull finished with, if one is
    /// fresh and still up.
    pub(super) fn reuse(&self, peer: PeerId) -> Option<DirectPull> {
        let mut stale = Vec::new();
        let found = {
            let mut idle = self.idle.lock();
            let conns = idle.get_mut(&peer)?;
            let mut found = None;
            while let Some((conn, since)) = conns.pop() {
                if since.elapsed() < IDLE_FOR && conn.is_up() {
                    found = Some(conn);
                    break;
                }
                stale.push(conn);
            }
            if conns.is_empty() {
                idle.remove(&peer);
            }
            found
        };
        // Dropped outside the lock: each joins its (idle, so promptly ending) thread.
        drop(stale);
        found
    }

    /// Keeps `conn`, which a pull finished with (every chunk queued to it answered), for the
    /// next pull from `peer`; connections idle past [`IDLE_FOR`] are closed on the way.
    pub(super) fn keep(&self, peer: PeerId, conn: DirectPull) {
        let mut closing = Vec::new();
        {
            let mut idle = self.idle.lock();
            for conns in idle.values_mut() {
                let (fresh, old): (Vec<_>, Vec<_>) = std::mem::take(conns)
                    .into_iter()
                    .partition(|(c, since)| since.elapsed() < IDLE_FOR && c.is_up());
                *conns = fresh;
                closing.extend(old);
            }
            idle.retain(|_, conns| !conns.is_empty());
            let conns = idle.entry(peer).or_default();
            if conn.is_up() && conns.len() < IDLE_PER_PEER {
                conns.push((conn, Instant::now()));
            } else {
                closing.push((conn, Instant::now()));
            }
        }
        drop(closing);
    }

    /// A direct connection to `peer` at one of `ips` within [`OPEN_TIMEOUT`], or `None` (pull
    /// over streams).
    pub(super) async fn open(
        &self,
        client: &peer_gossip::Client,
        peer: PeerId,
        ips: Vec<IpAddr>,
    ) -> Option<DirectPull> {
        if let Some(at) = self.unreachable.lock().get(&peer)
            && at.elapsed() < UNREACHABLE_FOR
        {
            return None;
        }
        let mut connecting = false;
        let opening = DirectPull::open(client, &self.tls, peer, ips, &mut connecting);
        let opened = tokio::time::timeout(OPEN_TIMEOUT, opening)
            .await
            .unwrap_or_else(|_| {
                let late = format!("no direct connection within {OPEN_TIMEOUT:?}");
                // A port that swallows connection attempts is a firewall's doing; a slow
                // ticket or handshake is a busy peer's.
                Err(match connecting {
                    true => OpenError::Unreachable(late),
                    false => OpenError::Transient(late),
                })
            });
        match opened {
            Ok(pull) => Some(pull),
            Err(OpenError::Transient(why)) => {
                tracing::debug!(%peer, "no direct connection this time (pulling over streams): {why}");
                None
            }
            Err(OpenError::Unreachable(why)) => {
                tracing::debug!(%peer, "no direct connection (pulling over streams for {UNREACHABLE_FOR:?}): {why}");
                self.unreachable.lock().insert(peer, Instant::now());
                None
            }
        }
    }
}

/// Why a direct connection was not opened.
enum OpenError {
    /// The holder serves none, refused, or its direct port cannot be reached or does not
    /// speak TLS as it should: not asked again for [`UNREACHABLE_FOR`].
    Unreachable(String),
    /// Asking for the ticket failed on the way (a libp2p connection being replaced, a busy
    /// holder): the next pull asks again.
    Transient(String),
}

/// A chunk's place in the arena, handed to a pulling thread.
struct Place {
    ptr: *mut u8,
    len: usize,
}

// SAFETY: a `Place` is only made by `DirectPull::fetch`, whose caller guarantees that the
// range stays valid and is written by nobody else until the chunk is answered; the pulling
// thread is the only one that touches it in that time.
unsafe impl Send for Place {}

/// One chunk for the pulling thread.
struct Job {
    req: PullRequest,
    place: Place,
    reply: oneshot::Sender<Result<(), ChunkError>>,
}

/// The pulling end of a direct connection to one holder, for one pull at a time.
pub(super) struct DirectPull {
    jobs: Option<std_mpsc::Sender<Job>>,
    socket: TcpStream,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for DirectPull {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DirectPull")
    }
}

impl DirectPull {
    /// Whether its thread still runs (it ends on the connection's first failure).
    fn is_up(&self) -> bool {
        self.thread.as_ref().is_some_and(|t| !t.is_finished())
    }

    /// Asks `peer` for a ticket and connects to it at one of `ips`; `Err` (why) if it offers
    /// none or cannot be reached directly (the caller bounds the time; `connecting` says,
    /// when the time is up, whether the ticket had come and the TCP connection had not).
    async fn open(
        client: &peer_gossip::Client,
        tls: &DirectTls,
        peer: PeerId,
        ips: Vec<IpAddr>,
        connecting: &mut bool,
    ) -> Result<DirectPull, OpenError> {
        let mut ask = client
            .open_stream(peer, protocol())
            .await
            .map_err(|e| match e {
                GossipError::Unsupported { .. } => OpenError::Unreachable(e.to_string()),
                e => OpenError::Transient(e.to_string()),
            })?
            .compat();
        let mut buf = Vec::new();
        let offer: DirectOffer = crate::frames::read_async_max(&mut ask, &mut buf, PULL_FRAME_MAX)
            .await
            .map_err(|e| OpenError::Transient(e.to_string()))?;
        let mut rest = Vec::new();
        let _ = ask.read_to_end(&mut rest).await;
        let (port, ticket) = match offer {
            DirectOffer::Ticket { port, ticket } => (port, ticket),
            DirectOffer::Refused(why) => return Err(OpenError::Unreachable(why)),
        };
        *connecting = true;
        let mut socket = None;
        let mut failures = Vec::new();
        for ip in ips {
            match tokio::net::TcpStream::connect(SocketAddr::new(ip, port)).await {
                Ok(s) => {
                    socket = Some(s);
                    break;
                }
                Err(e) => failures.push(format!("{ip}: {e}")),
            }
        }
        let Some(socket) = socket else {
            let why = format!("could not connect: {}", failures.join("; "));
            return Err(OpenError::Unreachable(why));
        };
        *connecting = false;
        let unreachable = |e: &dyn std::fmt::Display| OpenError::Unreachable(e.to_string());
        let socket = socket.into_std().map_err(|e| unreachable(&e))?;
        socket.set_nonblocking(false).map_err(|e| unreachable(&e))?;
        socket.set_nodelay(true).map_err(|e| unreachable(&e))?;
        let tls = tls.clone();
        let mut stream = tokio::task::spawn_blocking(move || -> Result<DirectStream, String> {
            tls.connect(socket, peer, &ticket)
                .map_err(|e| e.to_string())
        })
        .await
        .map_err(|e| unreachable(&e))?
        .map_err(OpenError::Unreachable)?;
        let io = |e: std::io::Error| unreachable(&e);
        stream
            .set_timeouts(CHUNK_TIMEOUT, CHUNK_TIMEOUT)
            .map_err(io)?;
        let socket = stream.socket().try_clone().map_err(io)?;
        let (tx, rx) = std_mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("peer-direct-pull".into())
            .spawn(move || pull_thread(&mut stream, &rx))
            .map_err(io)?;
        Ok(DirectPull {
            jobs: Some(tx),
            socket,
            thread: Some(thread),
        })
    }

    /// Queues one chunk, read into `place`; the future says how it went.
    ///
    /// # Safety
    ///
    /// `place` must stay valid, and be neither read nor written by anyone else, until the
    /// returned future has resolved or this `DirectPull` has been dropped (its drop waits for
    /// the thread, which writes places only until it answers their chunks).
    pub(super) unsafe fn fetch(
        &self,
        req: PullRequest,
        place: &mut [u8],
    ) -> impl Future<Output = Result<(), ChunkError>> + use<> {
        let (reply, answer) = oneshot::channel();
        let job = Job {
            req,
            place: Place {
                ptr: place.as_mut_ptr(),
                len: place.len(),
            },
            reply,
        };
        let queued = self.jobs.as_ref().map(|jobs| jobs.send(job).is_ok());
        async move {
            if queued != Some(true) {
                return Err(ChunkError::Transport("the direct connection ended".into()));
            }
            answer.await.unwrap_or_else(|_| {
                Err(ChunkError::Transport("the direct connection ended".into()))
            })
        }
    }
}

impl Drop for DirectPull {
    /// Ends the connection and waits for its thread: a blocked read returns at once, and the
    /// thread answers every chunk it holds as failed before it ends, so no place is written
    /// after this returns.
    fn drop(&mut self) {
        let _ = self.socket.shutdown(std::net::Shutdown::Both);
        self.jobs = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The pulling thread: writes requests ahead, reads each reply into its chunk's place.
fn pull_thread(stream: &mut DirectStream, jobs: &std_mpsc::Receiver<Job>) {
    let mut sent: VecDeque<Job> = VecDeque::new();
    loop {
        let mut new = Vec::new();
        if sent.is_empty() {
            match jobs.recv() {
                Ok(job) => new.push(job),
                Err(_) => return,
            }
        }
        while sent.len() + new.len() < AHEAD {
            match jobs.try_recv() {
                Ok(job) => new.push(job),
                Err(_) => break,
            }
        }
        let mut wrote = Ok(());
        for job in new {
            if wrote.is_ok() {
                wrote = stream.write_all(&codec::encode(&job.req));
            }
            sent.push_back(job);
        }
        if let Err(e) = wrote.and_then(|()| stream.flush()) {
            return fail_all(sent, jobs, &format!("sending a request: {e}"));
        }
        let Some(job) = sent.pop_front() else {
            continue;
        };
        // SAFETY: the place is valid and ours alone until the job is answered (see `fetch`).
        let place = unsafe { std::slice::from_raw_parts_mut(job.place.ptr, job.place.len) };
        match read_chunk(stream, place) {
            Ok(got) => {
                let _ = job.reply.send(got);
            }
            Err(why) => {
                let _ = job.reply.send(Err(ChunkError::Transport(why.clone())));
                return fail_all(sent, jobs, &why);
            }
        }
    }
}

/// Reads one reply: `Ok(Ok)` with the bytes in `place`, `Ok(Err(Missing))` if the holder has
/// none, `Err` if the connection failed (or took longer than [`CHUNK_TIMEOUT`]).
fn read_chunk(
    stream: &mut DirectStream,
    place: &mut [u8],
) -> Result<Result<(), ChunkError>, String> {
    let deadline = Instant::now() + CHUNK_TIMEOUT;
    let reply: PullReply = codec::read_blocking_max(stream, PULL_FRAME_MAX)
        .map_err(|e| format!("reading a reply: {e}"))?;
    if let PullReply::Missing(why) = reply {
        return Ok(Err(ChunkError::Missing(why)));
    }
    let mut filled = 0;
    while filled < place.len() {
        if Instant::now() > deadline {
            return Err(format!("no chunk within {CHUNK_TIMEOUT:?}"));
        }
        match stream.read(&mut place[filled..]) {
            Ok(0) => return Err("the holder closed the connection mid-chunk".into()),
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("reading the chunk: {e}")),
        }
    }
    Ok(Ok(()))
}

/// Answers every chunk held or still queued as failed (the connection is over).
fn fail_all(sent: VecDeque<Job>, jobs: &std_mpsc::Receiver<Job>, why: &str) {
    for job in sent.into_iter().chain(jobs.try_iter()) {
        let _ = job.reply.send(Err(ChunkError::Transport(format!(
            "direct connection: {why}"
        ))));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer() -> PeerId {
        PeerId::random()
    }

    #[test]
    fn a_ticket_is_good_once_and_only_for_the_peer_it_was_issued_to() {
        let tickets = Tickets::default();
        let (a, b) = (peer(), peer());
        let t = tickets.issue(a).unwrap();
        assert!(!tickets.redeem(&t, b), "another peer's ticket");
        // Presenting it under the wrong identity used it up.
        assert!(!tickets.redeem(&t, a));
        let t = tickets.issue(a).unwrap();
        assert!(tickets.redeem(&t, a));
        assert!(!tickets.redeem(&t, a), "used twice");
        assert!(!tickets.redeem(&[0; 16], a), "never issued");
    }

    #[test]
    fn an_expired_ticket_is_refused_and_forgotten() {
        let tickets = Tickets::default();
        let a = peer();
        let t = tickets.issue(a).unwrap();
        let long_ago = Instant::now() - TICKET_LIFE - Duration::from_secs(1);
        tickets.0.lock().get_mut(&t).unwrap().1 = long_ago;
        assert!(!tickets.redeem(&t, a));
        let old = tickets.issue(a).unwrap();
        tickets.0.lock().get_mut(&old).unwrap().1 = long_ago;
        tickets.issue(a).unwrap();
        assert!(
            !tickets.0.lock().contains_key(&old),
            "issuing forgets expired tickets"
        );
    }

    #[test]
    fn a_peer_asking_for_ticket_after_ticket_is_refused_past_the_cap() {
        let tickets = Tickets::default();
        let a = peer();
        for _ in 0..MAX_TICKETS {
            assert!(tickets.issue(a).is_some());
        }
        assert!(tickets.issue(a).is_none());
    }
}
