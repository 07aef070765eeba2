//! [`Client`]: the cloneable handle the node uses to talk to the [`EventLoop`](crate::EventLoop).
//! Every call is a [`Command`] on a bounded channel; calls that need an answer carry a oneshot.

use libp2p::{Multiaddr, PeerId, Stream, StreamProtocol};
use tokio::sync::{mpsc, oneshot, watch};

use crate::messages::{Load, ObjectId};
use crate::{ConnectError, GossipError, NetworkInfo, PeerInfo};

/// What the client asks of the event loop.
#[derive(Debug)]
pub(crate) enum Command {
    ListenAddrs(oneshot::Sender<Vec<Multiaddr>>),
    AnnounceObjects(Vec<(ObjectId, u64)>),
    View(oneshot::Sender<Vec<PeerInfo>>),
    Network(oneshot::Sender<NetworkInfo>),
    Holders(ObjectId, oneshot::Sender<Vec<PeerId>>),
    Dial(Multiaddr, oneshot::Sender<Result<PeerId, ConnectError>>),
    Shutdown(oneshot::Sender<()>),
    /// Publishes bytes as they are, bypassing encoding and validation (tests of the receivers).
    #[cfg(test)]
    PublishRaw(Vec<u8>, oneshot::Sender<Result<(), String>>),
    /// Listens on an address as it is (tests reserve on a relay with a circuit address).
    #[cfg(test)]
    ListenOn(Multiaddr, oneshot::Sender<Result<(), String>>),
}

/// Handle to a running gossip [`EventLoop`](crate::EventLoop). Cheap to clone; all clones talk to
/// the same loop. Once the loop has stopped every call returns [`GossipError::Stopped`]
/// (except [`shutdown`](Self::shutdown), which then succeeds at once).
#[derive(Clone)]
pub struct Client {
    commands: mpsc::Sender<Command>,
    load: watch::Sender<Option<Load>>,
    peer_id: PeerId,
    streams: libp2p_stream::Control,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("peer_id", &self.peer_id)
            .finish_non_exhaustive()
    }
}

impl Client {
    pub(crate) fn new(
        commands: mpsc::Sender<Command>,
        load: watch::Sender<Option<Load>>,
        peer_id: PeerId,
        streams: libp2p_stream::Control,
    ) -> Self {
        Self {
            commands,
            load,
            peer_id,
            streams,
        }
    }

    /// This node's peer id.
    pub fn local_peer_id(&self) -> PeerId {
        self.peer_id
    }

    /// The addresses this node listens on, each ending in `/p2p/<peer id>` so it can be passed to
    /// another peer's `bootstrap` as is. Waits until every configured listener has reported its
    /// first address (or failed); empty when the config asked to listen on nothing.
    pub async fn listen_addrs(&self) -> Result<Vec<Multiaddr>, GossipError> {
        self.ask(Command::ListenAddrs).await
    }

    /// Sets this node's load. Never blocks: the event loop publishes the latest value every
    /// `load_period` (also when it did not change, which keeps this peer fresh in the views of
    /// others). Nothing is published before the first call.
    pub fn publish_load(&self, load: Load) -> Result<(), GossipError> {
        load.validate()?;
        self.load.send(Some(load)).map_err(|_| GossipError::Stopped)
    }

    /// Queues announcements of objects this node holds, as `(id, size in bytes)`. They are sent
    /// in batches of `announce_batch` every `announce_period`. Announcements are hints: past
    /// `max_pending_announcements` queued the oldest are dropped, and a peer that joins later
    /// only learns of objects announced after it joined.
    pub async fn announce_objects(&self, objects: Vec<(ObjectId, u64)>) -> Result<(), GossipError> {
        if objects.is_empty() {
            return Ok(());
        }
        self.commands
            .send(Command::AnnounceObjects(objects))
            .await
            .map_err(|_| GossipError::Stopped)
    }

    /// A snapshot of the view: every peer heard from recently, sorted by peer id.
    pub async fn view(&self) -> Result<Vec<PeerInfo>, GossipError> {
        self.ask(Command::View).await
    }

    /// This peer's reachability, the relays it holds a slot on and what it relays for others.
    pub async fn network(&self) -> Result<NetworkInfo, GossipError> {
        self.ask(Command::Network).await
    }

    /// Peers in the view that announced `object`, sorted by peer id.
    pub async fn holders(&self, object: ObjectId) -> Result<Vec<PeerId>, GossipError> {
        self.ask(|reply| Command::Holders(object, reply)).await
    }

    /// Connects to `address` (with or without `/p2p/<peer id>`) and returns the remote's peer id.
    /// If the address names a peer already connected, returns at once. A remote with another
    /// cluster key fails with [`ConnectError::KeyMismatch`].
    pub async fn dial(&self, address: Multiaddr) -> Result<PeerId, GossipError> {
        Ok(self.ask(|reply| Command::Dial(address, reply)).await??)
    }

    /// Opens a new stream of `protocol` to `peer` (TLS-encrypted and multiplexed on the peer's
    /// connection), connecting first when there is none. Fails when the peer cannot be reached
    /// or does not speak `protocol`.
    pub async fn open_stream(
        &self,
        peer: PeerId,
        protocol: StreamProtocol,
    ) -> Result<Stream, GossipError> {
        // A clone per call: each control opens one stream at a time.
        let mut control = self.streams.clone();
        control
            .open_stream(peer, protocol)
            .await
            .map_err(|e| match e {
                libp2p_stream::OpenStreamError::UnsupportedProtocol(protocol) => {
                    GossipError::Unsupported { peer, protocol }
                }
                e => GossipError::Stream {
                    peer,
                    reason: e.to_string(),
                },
            })
    }

    /// The streams other peers open with `protocol`, each with the peer that opened it. Only one
    /// receiver may exist per protocol at a time; dropping it refuses further streams.
    pub fn accept_streams(
        &self,
        protocol: StreamProtocol,
    ) -> Result<libp2p_stream::IncomingStreams, GossipError> {
        let mut control = self.streams.clone();
        control
            .accept(protocol.clone())
            .map_err(|_| GossipError::StreamTaken(protocol))
    }

    /// Closes every connection and stops the event loop; returns once it has stopped.
    pub async fn shutdown(&self) -> Result<(), GossipError> {
        match self.ask(Command::Shutdown).await {
            Ok(()) | Err(GossipError::Stopped) => Ok(()),
            Err(e) => Err(e),
        }
    }

    #[cfg(test)]
    pub(crate) async fn publish_raw(&self, bytes: Vec<u8>) -> Result<(), String> {
        self.ask(|reply| Command::PublishRaw(bytes, reply))
            .await
            .map_err(|e| e.to_string())?
    }

    #[cfg(test)]
    pub(crate) async fn listen_on(&self, address: Multiaddr) -> Result<(), String> {
        self.ask(|reply| Command::ListenOn(address, reply))
            .await
            .map_err(|e| e.to_string())?
    }

    async fn ask<T>(
        &self,
        command: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, GossipError> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(command(reply))
            .await
            .map_err(|_| GossipError::Stopped)?;
        answer.await.map_err(|_| GossipError::Stopped)
    }
}
