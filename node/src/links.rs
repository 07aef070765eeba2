//! The byte plumbing between this node and its peers: one outgoing stream per
//! peer for [`PeerMsg`]s, and a reader for each stream a peer opens to us.
//!
//! [`State`](crate::state::State) never does I/O: it queues `(peer, message)`
//! pairs on an unbounded channel. The dispatcher task here encodes them (off
//! the state lock) and hands the frames to a writer task per peer, which opens
//! the stream on first use and writes whatever is queued in one go. Readers
//! decode frames (size-checked before allocating) and apply them to the state
//! with [`State::handle_peer`](crate::state::State::handle_peer); a malformed
//! frame closes that one stream and is logged.
//!
//! A message the state addresses to this node itself is handed straight back
//! to it.
//!
//! Every stream starts with both ends sending their incarnation (8 bytes,
//! little endian, each way): how a node learns that a peer restarted under
//! the same PeerId (`State::peer_incarnation`).

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use peer_gossip::{PeerId, StreamProtocol};
use rustc_hash::FxHashMap;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_util::compat::FuturesAsyncReadCompatExt;

use crate::codec;
use crate::node::Shared;
use crate::peer_msg::{NODE_PROTOCOL, PeerMsg};

/// How long opening a stream to a peer may take (connecting included).
const OPEN_TIMEOUT: Duration = Duration::from_secs(10);
/// Frames written before one flush, at most.
const WRITE_BATCH: usize = 256;

/// Messages for peers, as the state queues them.
pub type PeerOutbox = mpsc::UnboundedSender<(PeerId, PeerMsg)>;

fn protocol() -> StreamProtocol {
    StreamProtocol::new(NODE_PROTOCOL)
}

/// Start the dispatcher and the acceptor; returns the sender the state queues messages on.
pub fn start(client: peer_gossip::Client, shared: Arc<Shared>) -> Result<PeerOutbox, String> {
    let incoming = client
        .accept_streams(protocol())
        .map_err(|e| e.to_string())?;
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(accept_loop(incoming, Arc::clone(&shared)));
    tokio::spawn(dispatch(client, rx, shared));
    Ok(tx)
}

async fn dispatch(
    client: peer_gossip::Client,
    mut rx: mpsc::UnboundedReceiver<(PeerId, PeerMsg)>,
    shared: Arc<Shared>,
) {
    let mut writers: FxHashMap<PeerId, mpsc::UnboundedSender<Vec<u8>>> = FxHashMap::default();
    let me = client.local_peer_id();
    while let Some((peer, msg)) = rx.recv().await {
        if peer == me {
            // No stream leads to ourselves (opening one fails after OPEN_TIMEOUT
            // and the message would be lost): deliver it as a peer's would be.
            tracing::debug!(
                "a {} message to this node itself, delivered here",
                msg.name()
            );
            shared.state.lock().handle_peer(peer, msg);
            continue;
        }
        let frame = codec::encode(&msg);
        let writer = writers
            .entry(peer)
            .or_insert_with(|| spawn_writer(client.clone(), peer, Arc::clone(&shared)));
        if let Err(mpsc::error::SendError(frame)) = writer.send(frame) {
            // The last writer to that peer gave up: try a fresh stream.
            let fresh = spawn_writer(client.clone(), peer, Arc::clone(&shared));
            let _ = fresh.send(frame);
            writers.insert(peer, fresh);
        }
    }
}

fn spawn_writer(
    client: peer_gossip::Client,
    peer: PeerId,
    shared: Arc<Shared>,
) -> mpsc::UnboundedSender<Vec<u8>> {
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        if let Err(e) = write_loop(&client, peer, rx, &shared).await {
            tracing::warn!(%peer, "link to peer lost: {e}");
            shared.state.lock().peer_unreachable(peer);
        }
    });
    tx
}

/// Writes queued frames to `peer`, batching what is queued. When the stream
/// breaks (its connection closed), a new one is opened and the state told:
/// frames on the old stream may be lost, which the two nodes then sort out
/// (`State::link_reset`). Fails only when no stream can be opened at all.
async fn write_loop(
    client: &peer_gossip::Client,
    peer: PeerId,
    mut rx: mpsc::UnboundedReceiver<Vec<u8>>,
    shared: &Shared,
) -> Result<(), String> {
    let mut pending: Option<Vec<u8>> = None;
    let mut first = true;
    let mine = shared.state.lock().remote.incarnation;
    loop {
        let mut stream = open(client, peer).await?.compat();
        let theirs = exchange_incarnations(&mut stream, mine).await?;
        {
            let mut state = shared.state.lock();
            state.peer_incarnation(peer, theirs);
            if !first {
                state.link_reset(peer, true);
            }
        }
        first = false;
        let (mut closed, mut writer) = tokio::io::split(stream);
        let mut probe = [0u8; 1];
        let broke = loop {
            let frame = match pending.take() {
                Some(f) => f,
                None => tokio::select! {
                    frame = rx.recv() => match frame {
                        Some(f) => f,
                        None => {
                            let _ = writer.shutdown().await;
                            return Ok(());
                        }
                    },
                    // The peer never writes here: a read ends only when the stream does.
                    _ = closed.read(&mut probe) => break "the stream closed".to_string(),
                },
            };
            if let Err(e) = writer.write_all(&frame).await {
                pending = Some(frame);
                break e.to_string();
            }
            let mut batch = 1;
            let mut failed = None;
            while batch < WRITE_BATCH {
                let Ok(more) = rx.try_recv() else {
                    break;
                };
                if let Err(e) = writer.write_all(&more).await {
                    pending = Some(more);
                    failed = Some(e.to_string());
                    break;
                }
                batch += 1;
            }
            if let Some(e) = failed {
                break e;
            }
            if let Err(e) = writer.flush().await {
                break e.to_string();
            }
        };
        tracing::debug!(%peer, "link stream broke ({broke}); opening a new one");
    }
}

/// Open a stream to `peer`, trying again for a while: a peer heard of through
/// gossip may need a moment before its addresses are known (a Kademlia lookup).
async fn open(client: &peer_gossip::Client, peer: PeerId) -> Result<peer_gossip::Stream, String> {
    let deadline = tokio::time::Instant::now() + OPEN_TIMEOUT;
    let mut pause = Duration::from_millis(50);
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let error = match tokio::time::timeout(left, client.open_stream(peer, protocol())).await {
            Ok(Ok(stream)) => return Ok(stream),
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("no stream within {OPEN_TIMEOUT:?}"),
        };
        if tokio::time::Instant::now() + pause >= deadline {
            return Err(error);
        }
        tracing::debug!(%peer, "opening a stream failed, trying again: {error}");
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(1));
    }
}

/// Send this node's incarnation and read the peer's (see the module doc).
async fn exchange_incarnations<S>(stream: &mut S, mine: u64) -> Result<u64, String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let exchange = async {
        stream.write_all(&mine.to_le_bytes()).await?;
        stream.flush().await?;
        let mut theirs = [0u8; 8];
        stream.read_exact(&mut theirs).await?;
        Ok::<_, std::io::Error>(u64::from_le_bytes(theirs))
    };
    match tokio::time::timeout(OPEN_TIMEOUT, exchange).await {
        Ok(Ok(theirs)) => Ok(theirs),
        Ok(Err(e)) => Err(format!("opening handshake failed: {e}")),
        Err(_) => Err(format!("no opening handshake within {OPEN_TIMEOUT:?}")),
    }
}

async fn accept_loop(mut incoming: peer_gossip::IncomingStreams, shared: Arc<Shared>) {
    while let Some((peer, stream)) = incoming.next().await {
        tokio::spawn(read_loop(peer, stream, Arc::clone(&shared)));
    }
}

async fn read_loop(peer: PeerId, stream: peer_gossip::Stream, shared: Arc<Shared>) {
    let mut stream = stream.compat();
    let mine = shared.state.lock().remote.incarnation;
    match exchange_incarnations(&mut stream, mine).await {
        Ok(theirs) => shared.state.lock().peer_incarnation(peer, theirs),
        Err(e) => {
            tracing::warn!(%peer, "closing a stream from peer: {e}");
            return;
        }
    }
    let mut buf = Vec::new();
    loop {
        match codec::read_async::<PeerMsg>(&mut stream, &mut buf).await {
            Ok(msg) => shared.state.lock().handle_peer(peer, msg),
            Err(codec::FrameError::Closed) => return,
            Err(e) => {
                shared.state.lock().stats.bad_frames += 1;
                tracing::warn!(%peer, "closing a stream from peer: {e}");
                return;
            }
        }
    }
}
