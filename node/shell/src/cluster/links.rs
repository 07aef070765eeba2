//! The byte plumbing between this node and its peers: one outgoing stream per
//! peer for [`PeerMsg`]s, and a reader for each stream a peer opens to us.
//!
//! The core's [`Command::ToPeer`](peer_node_core::Command::ToPeer)s arrive
//! as `(peer, message)` pairs on an unbounded channel. The dispatcher task
//! here encodes them (off the engine's lock) and hands the frames to a writer
//! task per peer, which opens the stream on first use and writes whatever is
//! queued in one go. Readers decode frames (size-checked before allocating)
//! and hand them to the core ([`Event::Peer`]); a malformed frame closes that
//! one stream and is logged.
//!
//! A message the core addresses to this node itself is handed straight back
//! to it.
//!
//! Every stream starts with both ends sending their incarnation (8 bytes,
//! little endian, each way): how a node learns that a peer restarted under
//! the same PeerId ([`Event::Incarnation`]).

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use peer_gossip::{GossipError, PeerId, StreamProtocol};
use peer_node_core::Event;
use peer_node_core::wire::codec::{self, FrameError};
use peer_node_core::wire::peer::{NODE_PROTOCOL, PeerMsg};
use rustc_hash::FxHashMap;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_util::compat::FuturesAsyncReadCompatExt;

use super::{libp2p_id_of, peer_id_of};
use crate::engine::Shared;
use crate::frames;

/// How long opening a stream to a peer may take (connecting included).
const OPEN_TIMEOUT: Duration = Duration::from_secs(10);
/// Frames written before one flush, at most.
const WRITE_BATCH: usize = 256;

/// Messages for peers, as the core asks for them.
pub type PeerOutbox = mpsc::UnboundedSender<(peer_node_core::ids::PeerId, PeerMsg)>;

/// Why a link to a peer could not carry messages.
#[derive(Debug, thiserror::Error)]
enum LinkError {
    #[error("{0}")]
    Open(String),
    #[error("opening handshake failed: {0}")]
    Handshake(std::io::Error),
    #[error("no opening handshake within {0:?}")]
    HandshakeTimeout(Duration),
}

fn protocol() -> StreamProtocol {
    StreamProtocol::new(NODE_PROTOCOL)
}

/// Start the dispatcher and the acceptor; returns the sender the state queues messages on.
pub fn start(client: peer_gossip::Client, shared: Arc<Shared>) -> Result<PeerOutbox, GossipError> {
    let incoming = client.accept_streams(protocol())?;
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(accept_loop(incoming, Arc::clone(&shared)));
    tokio::spawn(dispatch(client, rx, shared));
    Ok(tx)
}

async fn dispatch(
    client: peer_gossip::Client,
    mut rx: mpsc::UnboundedReceiver<(peer_node_core::ids::PeerId, PeerMsg)>,
    shared: Arc<Shared>,
) {
    let mut writers: FxHashMap<PeerId, mpsc::UnboundedSender<Vec<u8>>> = FxHashMap::default();
    let me = client.local_peer_id();
    while let Some((to, msg)) = rx.recv().await {
        let Some(peer) = libp2p_id_of(&to) else {
            tracing::debug!(peer = %to, "not a libp2p peer id; a {} message is dropped", msg.name());
            continue;
        };
        if peer == me {
            // No stream leads to ourselves (opening one fails after OPEN_TIMEOUT
            // and the message would be lost): deliver it as a peer's would be.
            tracing::debug!(
                "a {} message to this node itself, delivered here",
                msg.name()
            );
            shared.handle(Event::Peer { from: to, msg });
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
            shared.handle(Event::PeerGone {
                peer: peer_id_of(&peer),
                why: "its link broke".into(),
            });
        }
    });
    tx
}

/// Writes queued frames to `peer`, batching what is queued. When the stream
/// breaks (its connection closed), a new one is opened and the state told:
/// frames on the old stream may be lost, which the two nodes then sort out
/// ([`Event::LinkReset`]). Fails only when no stream can be opened at all.
async fn write_loop(
    client: &peer_gossip::Client,
    peer: PeerId,
    mut rx: mpsc::UnboundedReceiver<Vec<u8>>,
    shared: &Shared,
) -> Result<(), LinkError> {
    let mut pending: Option<Vec<u8>> = None;
    let mut first = true;
    let mine = shared.engine.lock().core.incarnation();
    let id = peer_id_of(&peer);
    loop {
        let mut stream = open(client, peer).await?.compat();
        let theirs = exchange_incarnations(&mut stream, mine).await?;
        {
            let mut e = shared.engine.lock();
            e.handle(Event::Incarnation {
                peer: id,
                incarnation: theirs,
            });
            if !first {
                e.handle(Event::LinkReset { peer: id });
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
async fn open(
    client: &peer_gossip::Client,
    peer: PeerId,
) -> Result<peer_gossip::Stream, LinkError> {
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
            return Err(LinkError::Open(error));
        }
        tracing::debug!(%peer, "opening a stream failed, trying again: {error}");
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(1));
    }
}

/// Send this node's incarnation and read the peer's (see the module doc).
async fn exchange_incarnations<S>(stream: &mut S, mine: u64) -> Result<u64, LinkError>
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
        Ok(Err(e)) => Err(LinkError::Handshake(e)),
        Err(_) => Err(LinkError::HandshakeTimeout(OPEN_TIMEOUT)),
    }
}

async fn accept_loop(mut incoming: peer_gossip::IncomingStreams, shared: Arc<Shared>) {
    while let Some((peer, stream)) = incoming.next().await {
        tokio::spawn(read_loop(peer, stream, Arc::clone(&shared)));
    }
}

async fn read_loop(peer: PeerId, stream: peer_gossip::Stream, shared: Arc<Shared>) {
    let mut stream = stream.compat();
    let mine = shared.engine.lock().core.incarnation();
    let from = peer_id_of(&peer);
    match exchange_incarnations(&mut stream, mine).await {
        Ok(theirs) => shared.handle(Event::Incarnation {
            peer: from,
            incarnation: theirs,
        }),
        Err(e) => {
            tracing::warn!(%peer, "closing a stream from peer: {e}");
            return;
        }
    }
    let mut buf = Vec::new();
    loop {
        match frames::read_async::<PeerMsg>(&mut stream, &mut buf).await {
            Ok(msg) => shared.handle(Event::Peer { from, msg }),
            Err(FrameError::Closed) => return,
            Err(e) => {
                shared.handle(Event::BadFrame);
                tracing::warn!(%peer, "closing a stream from peer: {e}");
                return;
            }
        }
    }
}
