//! Everything libp2p for a `peer` node: identity, cluster key, transport, discovery, and gossip
//! of load and large-object announcements, behind a small async API.
//!
//! [`new`] returns a [`Client`] (cloneable handle), a receiver of [`Event`]s, and an [`EventLoop`]
//! that owns the libp2p swarm; the caller spawns [`EventLoop::run`] on its tokio runtime. Laptop
//! mode simply never calls [`new`]: nothing in this crate opens a socket on its own.
//!
//! ```no_run
//! # async fn example(state_dir: &std::path::Path) -> Result<(), peer_gossip::GossipError> {
//! use peer_gossip::{ClusterKey, Config, Event, Identity, Load};
//!
//! let identity = Identity::load_or_create(state_dir)?;
//! let (key, _created) = ClusterKey::load_or_create(&state_dir.join("cluster.key"))?;
//! let mut config = Config::new(identity, key);
//! config.listen = vec!["/ip4/0.0.0.0/tcp/0".parse().unwrap()];
//! let (client, mut events, event_loop) = peer_gossip::new(config)?;
//! tokio::spawn(event_loop.run());
//!
//! println!("join with --bootstrap {}", client.listen_addrs().await?[0]);
//! client.publish_load(Load { cpus_total: 8.0, cpus_free: 8.0, ..Load::default() })?;
//! while let Some(event) = events.recv().await {
//!     if let Event::PeerUp(peer) = event {
//!         println!("{peer} joined");
//!     }
//! }
//! # Ok(()) }
//! ```
//!
//! # Design
//!
//! - **Cluster key.** Every connection is TCP, then TLS 1.3 (authenticating the [`Identity`] and
//!   encrypting everything with AES-GCM, see `tls`), then a proof of the [`ClusterKey`] bound to
//!   the two identities TLS proved, then yamux. A peer without the key cannot send a single libp2p message; a mismatch shows as
//!   [`ConnectError::KeyMismatch`] on the dialer and as a log line on the listener. QUIC is not
//!   used (see `transport`, which also says why this replaced pnet).
//! - **Discovery.** mDNS on the LAN (unless [`Config::mdns`] is off) and Kademlia (our own
//!   protocol name, server mode) from [`Config::bootstrap`]; bootstrap addresses are re-dialed
//!   and Kademlia re-bootstraps every [`Config::rebootstrap_period`], so a peer that knows one
//!   member finds all of them.
//! - **Gossip.** One gossipsub topic with signed messages. Each carries a sequence number; the
//!   receiver validates size and content and drops stale, replayed, oversized or garbage
//!   messages (never forwarding them). Loads go out every [`Config::load_period`] when they
//!   changed and every few periods when they did not, stretched in clusters larger than
//!   [`Config::pace_peers`] so the traffic each peer receives stays bounded
//!   (`examples/gossip_cost.rs` measures it).
//! - **View.** Peers heard from recently, with their load, addresses, announced objects and the
//!   age of the information; bounded in peers and objects. See [`Config::expire_after`] and
//!   [`GoneReason`] for when peers leave it.
//! - **Behind NATs.** Every peer learns whether it is publicly reachable (AutoNAT v2, identify's
//!   observed addresses). A public member relays for the others (relay v2, members only: the
//!   relay is reached over keyed connections and circuits run the key proof end to end); a
//!   private one reserves a slot on relays it is connected to and advertises the circuit
//!   address; two private peers meet through a relay and then punch a direct TCP connection
//!   (DCUtR, port reuse), after which the relayed one is closed. [`Client::network`] and
//!   [`PeerInfo::link`] tell what happened (see `nat`).
//! - **Streams.** [`Client::open_stream`] and [`Client::accept_streams`] give the node plain
//!   byte streams to other members (same connection, same key and TLS), for its own
//!   protocols: task hand-off, bids and object transfer.
//!
//! Modules: `config`, `identity`, `key` (and `secret` for their files), `messages` (wire types
//! and limits), `view`, `tls`, `transport`, `behaviour`, `nat`, `client`, `event_loop` and `swarm_events`
//! (the loop's reactions to the network), `error`. `tests/mdns.rs` checks LAN discovery between
//! two processes in network namespaces.

#![forbid(unsafe_code)]

mod behaviour;
mod client;
mod config;
mod direct;
mod error;
mod event_loop;
mod identity;
mod key;
mod messages;
mod nat;
mod records;
mod secret;
mod swarm_events;
mod tls;
mod transport;
mod view;

#[cfg(test)]
mod tests;

pub use client::Client;
pub use config::{Config, RelayConfig};
pub use direct::{DirectStream, DirectTls, direct_ips, tcp_ip};
pub use error::{ConnectError, GossipError};
pub use event_loop::EventLoop;
pub use identity::{IDENTITY_FILE, Identity};
pub use key::ClusterKey;
pub use libp2p::{Multiaddr, PeerId, Stream, StreamProtocol};
pub use libp2p_stream::IncomingStreams;
pub use messages::{
    Load, MAX_MESSAGE_BYTES, MAX_OBJECTS_PER_MESSAGE, MAX_RESOURCE_NAME, MAX_RESOURCES,
    MessageError, ObjectId,
};
pub use nat::{Link, LinkKind, NetworkInfo, Reachability};
pub use tls::TlsError;
pub use view::{GoneReason, PeerInfo};

use tokio::sync::{mpsc, watch};

/// Decodes and validates `bytes` exactly as a received gossip payload is, then encodes the
/// result again as it would be published. For the fuzz targets in `fuzz/` only.
#[doc(hidden)]
pub fn fuzz_reencode_message(bytes: &[u8]) -> Result<Vec<u8>, MessageError> {
    messages::encode(&messages::decode(bytes)?)
}

/// Capacity of the command channel from clients to the event loop.
const COMMAND_BUFFER: usize = 256;

/// What the event loop tells the node.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A peer entered the view (its first valid message arrived).
    PeerUp(PeerId),
    /// A peer's latest load. Lossy: dropped when the event channel is full, since the next one
    /// follows within a `load_period` and [`Client::view`] always has the latest.
    PeerLoad(PeerId, Load),
    /// A peer left the view.
    PeerGone(PeerId, GoneReason),
    /// A peer announced objects it holds, as `(id, size in bytes)`.
    ObjectsAnnounced(PeerId, Vec<(ObjectId, u64)>),
    /// Dialing a configured bootstrap address failed (it is retried every rebootstrap period).
    DialFailed(ConnectError),
}

/// Builds the network stack for `config` and starts listening on `config.listen`.
///
/// Must be called inside a tokio runtime. Returns the client, the event receiver (which the node
/// must keep draining: all events but [`Event::PeerLoad`] wait for room) and the event loop to
/// spawn. Bootstrap addresses are dialed as soon as the loop runs.
pub fn new(config: Config) -> Result<(Client, mpsc::Receiver<Event>, EventLoop), GossipError> {
    tokio::runtime::Handle::try_current().map_err(|_| GossipError::NoRuntime)?;
    config.validate()?;
    let (mut swarm, relayed_bytes) = transport::swarm(&config)?;
    let peer_id = *swarm.local_peer_id();
    let streams = swarm.behaviour().stream.new_control();
    tracing::info!(%peer_id, key = %config.key.fingerprint(), "starting gossip");

    for address in &config.bootstrap {
        if let Some(peer) = event_loop::peer_of(address) {
            let mut dialable = address.clone();
            dialable.pop();
            swarm.behaviour_mut().kad.add_address(&peer, dialable);
        }
    }
    let mut listeners = Vec::new();
    for address in &config.listen {
        let id = swarm
            .listen_on(address.clone())
            .map_err(|e| GossipError::Listen {
                address: address.clone(),
                reason: e.to_string(),
            })?;
        listeners.push(id);
    }

    let (command_tx, command_rx) = mpsc::channel(COMMAND_BUFFER);
    let (event_tx, event_rx) = mpsc::channel(config.event_buffer);
    let (load_tx, load_rx) = watch::channel(None);
    let event_loop = EventLoop::new(
        swarm,
        &config,
        command_rx,
        load_rx,
        event_tx,
        listeners,
        relayed_bytes,
    );
    Ok((
        Client::new(command_tx, load_tx, peer_id, streams),
        event_rx,
        event_loop,
    ))
}
