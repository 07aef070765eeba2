//! [`Config`]: who this peer is, which cluster it belongs to, where it listens and whom it asks
//! first, plus the timings and bounds of gossip.

use std::time::Duration;

use libp2p::Multiaddr;

use crate::messages::MAX_OBJECTS_PER_MESSAGE;
use crate::{ClusterKey, GossipError, Identity};

/// Settings for [`new`](crate::new). Build with [`Config::new`] and adjust the public fields.
#[derive(Debug, Clone)]
pub struct Config {
    /// This node's keypair (see [`Identity::load_or_create`]).
    pub identity: Identity,
    /// The cluster key; peers without it cannot connect.
    pub key: ClusterKey,
    /// TCP multiaddrs to listen on, e.g. `/ip4/0.0.0.0/tcp/0`. Empty (the default): listen on
    /// nothing and only dial out. mDNS advertises listen addresses, so a peer that should be
    /// found on the LAN must listen on `0.0.0.0` or an interface address (not loopback).
    pub listen: Vec<Multiaddr>,
    /// Members to join through: `/ip4/…/tcp/…/p2p/<peer id>` (the `/p2p/` part is optional).
    /// Dialed at start and again every `rebootstrap_period` while not connected.
    pub bootstrap: Vec<Multiaddr>,
    /// Discover peers on the LAN with mDNS (default `true`).
    pub mdns: bool,
    /// How often the latest load is published when it changed (default 250 ms); an unchanged
    /// one goes out every three periods, as this peer's heartbeat.
    pub load_period: Duration,
    /// A peer not heard from for this long leaves the view (default 5 s). A closed connection or
    /// failed ping removes it after `4 × load_period` instead, unless it is heard from meanwhile.
    pub expire_after: Duration,
    /// Above this many peers in the view the load period grows in proportion (and with it the
    /// expiry and the grace for suspects), so the load gossip each peer receives stays near
    /// `pace_peers / load_period` messages a second however large the cluster (default 16).
    pub pace_peers: usize,
    /// How often bootstrap addresses are re-dialed if disconnected and a Kademlia bootstrap is
    /// run to find members that joined elsewhere (default 30 s).
    pub rebootstrap_period: Duration,
    /// How often queued object announcements are sent (default 500 ms).
    pub announce_period: Duration,
    /// Most objects per announcement message (default 256, at most 1024).
    pub announce_batch: usize,
    /// Most announcements queued for sending; beyond it the oldest are dropped (default 8192).
    pub max_pending_announcements: usize,
    /// Most peers in the view (default 1024).
    pub max_peers: usize,
    /// Most objects remembered per peer, oldest dropped first (default 4096).
    pub max_objects_per_peer: usize,
    /// Capacity of the event channel (default 1024).
    pub event_buffer: usize,
    /// Relaying for members behind NATs: what this peer offers when it is publicly reachable,
    /// and how many relays it reserves a slot on when it is not.
    pub relay: RelayConfig,
}

/// Limits of the circuit relay (libp2p relay v2) every publicly reachable member runs for the
/// others. Only members can use it: a reservation or circuit request comes over a connection
/// that already passed the cluster-key proof, and the relayed connection runs its own proof end
/// to end. libp2p's own defaults (128 KiB and 2 minutes a circuit) are meant for a brief hop
/// before hole punching; a cluster keeps control traffic and small values on a relay for as long
/// as two peers cannot punch through, so these are far larger.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// Relay for other members while this peer is publicly reachable (default `true`).
    pub serve: bool,
    /// Most reservations held for others (default 128).
    pub max_reservations: usize,
    /// How long a reservation lasts before the holder renews it (default 1 h).
    pub reservation_duration: Duration,
    /// Most circuits relayed at once (default 64) and per peer (default 8).
    pub max_circuits: usize,
    pub max_circuits_per_peer: usize,
    /// A circuit is closed (and re-opened by its ends if still needed) after this long
    /// (default 1 h) or this many bytes either way (default 1 GiB).
    pub max_circuit_duration: Duration,
    pub max_circuit_bytes: u64,
    /// On how many relays a peer that is not publicly reachable reserves a slot (default 2).
    pub reservations: usize,
}

impl Default for RelayConfig {
    fn default() -> Self {
        Self {
            serve: true,
            max_reservations: 128,
            reservation_duration: Duration::from_secs(3600),
            max_circuits: 64,
            max_circuits_per_peer: 8,
            max_circuit_duration: Duration::from_secs(3600),
            max_circuit_bytes: 1 << 30,
            reservations: 2,
        }
    }
}

impl Config {
    /// Defaults for everything but who we are and which cluster we join.
    pub fn new(identity: Identity, key: ClusterKey) -> Self {
        Self {
            identity,
            key,
            listen: Vec::new(),
            bootstrap: Vec::new(),
            mdns: true,
            load_period: Duration::from_millis(250),
            expire_after: Duration::from_secs(5),
            pace_peers: 16,
            rebootstrap_period: Duration::from_secs(30),
            announce_period: Duration::from_millis(500),
            announce_batch: 256,
            max_pending_announcements: 8192,
            max_peers: 1024,
            max_objects_per_peer: 4096,
            event_buffer: 1024,
            relay: RelayConfig::default(),
        }
    }

    /// How long a suspect peer (closed connection, failed ping) stays in the view.
    pub(crate) fn suspect_grace(&self) -> Duration {
        self.load_period * 4
    }

    pub(crate) fn validate(&self) -> Result<(), GossipError> {
        let bad = |what: &str| Err(GossipError::InvalidConfig(what.to_owned()));
        if [
            self.load_period,
            self.announce_period,
            self.rebootstrap_period,
        ]
        .contains(&Duration::ZERO)
        {
            return bad("periods must be longer than zero");
        }
        if self.expire_after <= self.load_period * 2 {
            return bad("expire_after must be more than two load periods");
        }
        if !(1..=MAX_OBJECTS_PER_MESSAGE).contains(&self.announce_batch) {
            return bad("announce_batch must be between 1 and 1024");
        }
        let r = &self.relay;
        if r.max_circuits == 0 || r.max_circuits_per_peer == 0 || r.max_circuit_bytes == 0 {
            return bad("relay circuits and their byte limit must be at least 1");
        }
        if r.max_circuit_duration.is_zero() || r.reservation_duration.is_zero() {
            return bad("relay durations must be longer than zero");
        }
        if self.max_peers == 0 || self.event_buffer == 0 || self.pace_peers == 0 {
            return bad("max_peers, pace_peers and event_buffer must be at least 1");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_nonsense_is_refused() {
        let config = Config::new(Identity::generate(), ClusterKey::generate().unwrap());
        config.validate().unwrap();
        assert!(config.listen.is_empty(), "listens on nothing unless asked");
        let mut c = config.clone();
        c.load_period = Duration::ZERO;
        assert!(c.validate().is_err());
        let mut c = config.clone();
        c.expire_after = c.load_period;
        assert!(c.validate().is_err());
        let mut c = config;
        c.announce_batch = 5000;
        assert!(matches!(c.validate(), Err(GossipError::InvalidConfig(_))));
    }
}
