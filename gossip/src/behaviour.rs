//! The composed libp2p behaviour: connection limits, identify, ping, Kademlia, mDNS (optional),
//! gossipsub, generic streams (the node's peer-to-peer protocols), and what peers behind NATs
//! need — AutoNAT v2 (client and server), the circuit relay v2 (client, and a server switched
//! on by `nat` while this peer is publicly reachable) and DCUtR hole punching — with the
//! protocol names and limits of a `peer` cluster.

use std::error::Error;
use std::time::Duration;

use libp2p::identity::Keypair;
use libp2p::swarm::NetworkBehaviour;
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::{
    StreamProtocol, autonat, connection_limits, dcutr, gossipsub, identify, kad, mdns, ping, relay,
};

use crate::Config;
use crate::messages::MAX_MESSAGE_BYTES;

/// Identify protocol version: peers of other applications are told apart by it.
pub(crate) const PROTOCOL_VERSION: &str = "/peer/1.0.0";
/// Our own Kademlia protocol, so we never join a public DHT.
pub(crate) const KAD_PROTOCOL: StreamProtocol = StreamProtocol::new("/peer/kad/1.0.0");
/// The one gossipsub topic, carrying load and object announcements.
pub(crate) const TOPIC: &str = "peer/gossip/1";

/// Bytes of gossipsub framing (signature, key, topic, ids) allowed on top of our payload.
const GOSSIPSUB_OVERHEAD: usize = 16 * 1024;
/// Handshakes in progress that a listener accepts at once (strangers without the key included).
const MAX_PENDING_INCOMING: u32 = 64;

/// mDNS re-query period; the first queries after start come much faster.
const MDNS_QUERY_INTERVAL: Duration = Duration::from_secs(30);
/// How often AutoNAT looks for untested address candidates (each is tested once).
const AUTONAT_PROBE_INTERVAL: Duration = Duration::from_secs(1);
/// Connections to one peer: a relayed one, a direct one (hole punched or not) and one being
/// set up meanwhile (a hole punch, an AutoNAT dial-back).
const MAX_CONNECTIONS_PER_PEER: u32 = 3;

#[derive(NetworkBehaviour)]
pub(crate) struct Behaviour {
    pub limits: connection_limits::Behaviour,
    pub identify: identify::Behaviour,
    pub ping: ping::Behaviour,
    pub kad: kad::Behaviour<kad::store::MemoryStore>,
    pub mdns: Toggle<mdns::tokio::Behaviour>,
    pub gossipsub: gossipsub::Behaviour,
    pub stream: libp2p_stream::Behaviour,
    pub relay_client: relay::client::Behaviour,
    pub relay: relay::Behaviour,
    pub dcutr: dcutr::Behaviour,
    pub autonat: autonat::v2::client::Behaviour,
    pub autonat_server: autonat::v2::server::Behaviour,
}

impl Behaviour {
    pub fn new(
        keypair: &Keypair,
        config: &Config,
        relay_client: relay::client::Behaviour,
    ) -> Result<Self, Box<dyn Error + Send + Sync>> {
        let peer_id = keypair.public().to_peer_id();

        let max_peers = u32::try_from(config.max_peers).unwrap_or(u32::MAX);
        let limits = connection_limits::Behaviour::new(
            connection_limits::ConnectionLimits::default()
                .with_max_pending_incoming(Some(MAX_PENDING_INCOMING))
                .with_max_established(Some(max_peers.saturating_mul(2)))
                .with_max_established_per_peer(Some(MAX_CONNECTIONS_PER_PEER)),
        );

        let identify = identify::Behaviour::new(
            identify::Config::new(PROTOCOL_VERSION.to_owned(), keypair.public())
                .with_agent_version(format!("peer/{}", env!("CARGO_PKG_VERSION")))
                .with_push_listen_addr_updates(true),
        );

        // Pings double as a liveness check: a failure makes the peer suspect in the view. Every
        // connection is pinged, so the interval is a cost per connection.
        let ping = ping::Behaviour::new(
            ping::Config::new()
                .with_interval(Duration::from_secs(2))
                // Generous: a loaded machine (or a connection busy moving gigabytes) must not
                // look dead; a dead peer's connection closes long before this anyway.
                .with_timeout(Duration::from_secs(10)),
        );

        let mut kad_config = kad::Config::new(KAD_PROTOCOL);
        // The event loop re-bootstraps on its own timer (`Config::rebootstrap_period`); Kademlia
        // still bootstraps by itself when its routing table gains peers.
        kad_config.set_periodic_bootstrap_interval(None);
        // Only routing is used: records others try to store are handed to us and dropped.
        kad_config.set_record_filtering(kad::StoreInserts::FilterBoth);
        let mut kad =
            kad::Behaviour::with_config(peer_id, kad::store::MemoryStore::new(peer_id), kad_config);
        kad.set_mode(Some(kad::Mode::Server));

        let mdns = if config.mdns {
            let mdns_config = mdns::Config {
                query_interval: MDNS_QUERY_INTERVAL,
                ..mdns::Config::default()
            };
            Some(mdns::tokio::Behaviour::new(mdns_config, peer_id)?)
        } else {
            None
        };

        // Cost per peer: loads are superseded within a period, so lazy repair (IHAVE) only
        // advertises the last heartbeat's messages, ids are 16 bytes instead of ~57, and a
        // publisher sends to its mesh rather than flooding every subscriber.
        let gossipsub_config = gossipsub::ConfigBuilder::default()
            .validation_mode(gossipsub::ValidationMode::Strict)
            .validate_messages()
            .max_transmit_size(MAX_MESSAGE_BYTES + GOSSIPSUB_OVERHEAD)
            .message_id_fn(compact_message_id)
            .history_length(2)
            .history_gossip(1)
            .flood_publish(false)
            .mesh_n(4)
            .mesh_n_low(3)
            .mesh_n_high(8)
            .mesh_outbound_min(2)
            .gossip_lazy(4)
            .build()?;
        let mut gossipsub = gossipsub::Behaviour::new(
            gossipsub::MessageAuthenticity::Signed(keypair.clone()),
            gossipsub_config,
        )?;
        gossipsub.subscribe(&gossipsub::IdentTopic::new(TOPIC))?;

        let r = &config.relay;
        let mut relay = relay::Behaviour::new(
            peer_id,
            relay::Config {
                max_reservations: r.max_reservations,
                reservation_duration: r.reservation_duration,
                max_circuits: r.max_circuits,
                max_circuits_per_peer: r.max_circuits_per_peer,
                max_circuit_duration: r.max_circuit_duration,
                max_circuit_bytes: r.max_circuit_bytes,
                ..relay::Config::default()
            },
        );
        // `nat` switches it on once this peer is known to be publicly reachable (libp2p's own
        // rule would also count an address on another relay as reachable).
        relay.set_status(Some(relay::Status::Disable));

        let autonat = autonat::v2::client::Behaviour::new(
            rand_autonat::make_rng::<rand_autonat::rngs::StdRng>(),
            autonat::v2::client::Config::default().with_probe_interval(AUTONAT_PROBE_INTERVAL),
        );

        Ok(Self {
            limits,
            identify,
            ping,
            kad,
            mdns: mdns.into(),
            gossipsub,
            stream: libp2p_stream::Behaviour::new(),
            relay_client,
            relay,
            dcutr: dcutr::Behaviour::new(peer_id),
            autonat,
            autonat_server: autonat::v2::server::Behaviour::default(),
        })
    }
}

/// A message id of the last 8 bytes of the author's peer id (its public key, for ed25519) and
/// the 8-byte gossipsub sequence number: unique within a cluster, and short because ids are
/// repeated in every IHAVE/IWANT/IDONTWANT.
fn compact_message_id(message: &gossipsub::Message) -> gossipsub::MessageId {
    let mut id = Vec::with_capacity(16);
    if let Some(source) = message.source {
        let bytes = source.to_bytes();
        id.extend_from_slice(&bytes[bytes.len().saturating_sub(8)..]);
    }
    id.extend_from_slice(&message.sequence_number.unwrap_or_default().to_be_bytes());
    gossipsub::MessageId::new(&id)
}
