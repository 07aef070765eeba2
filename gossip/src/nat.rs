//! Reachability and relaying: whether this peer can be dialed from outside, the relay slots it
//! holds while it cannot, and what each connection to another peer is (direct, relayed or hole
//! punched) with its round-trip time.
//!
//! - **Reachability** starts [`Reachability::Unknown`]. An external address that AutoNAT v2
//!   confirmed (another member dialed it back) makes the peer [`Reachability::Public`], and so
//!   does a member that dialed in and reports reaching us at one of our own listen addresses
//!   (the same proof, for free; AutoNAT v2 only asks peers it dialed itself, so a member that
//!   everybody dials, like a relay, would never learn it is reachable otherwise). Without
//!   one, the peer is [`Reachability::Private`] as soon as identify reports that others see it
//!   at an address none of its interfaces has (a NAT translated it), or an AutoNAT test failed.
//! - **Relay server**: switched on exactly while the peer is public (and
//!   [`RelayConfig::serve`](crate::config::RelayConfig::serve) allows it), so a private peer
//!   never offers a relay nobody can reach.
//! - **Reservations**: a private peer reserves a slot on up to
//!   [`RelayConfig::reservations`](crate::config::RelayConfig::reservations) connected members
//!   that offer the relay protocol (bootstrap peers are the first it connects to) by listening on
//!   `<relay address>/p2p/<relay>/p2p-circuit`; it drops them once it turns public. The relay
//!   client confirms the circuit address as external, so identify (and with it every peer's
//!   Kademlia table) carries it.
//! - **Links**: a connection is relayed when its address has `/p2p-circuit`, direct otherwise;
//!   DCUtR marks those it punched. Once a peer has a direct connection its relayed ones are closed,
//!   so every stream (and every pull) takes the direct path.

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::time::Duration;

use libp2p::core::transport::ListenerId;
use libp2p::multiaddr::Protocol;
use libp2p::swarm::ConnectionId;
use libp2p::{Multiaddr, PeerId};

use crate::transport::RelayedBytes;

/// Whether other peers can dial this one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reachability {
    /// Not known yet (no AutoNAT answer, no translated address seen).
    Unknown,
    /// Another member dialed one of its addresses back.
    Public,
    /// Behind a NAT or firewall: others reach it through relays (and hole punching).
    Private,
}

/// What carries the traffic to a peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LinkKind {
    /// A circuit through a relaying member.
    Relayed,
    /// A connection one side dialed straight to the other.
    Direct,
    /// A direct connection DCUtR punched through the NATs of both sides.
    HolePunched,
}

impl LinkKind {
    /// `"direct"`, `"relayed"` or `"hole-punched"`.
    pub fn as_str(self) -> &'static str {
        match self {
            LinkKind::Direct => "direct",
            LinkKind::Relayed => "relayed",
            LinkKind::HolePunched => "hole-punched",
        }
    }
}

/// The best connection to a peer, as the view reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Link {
    pub kind: LinkKind,
    /// The latest ping round trip on that connection, once one came back.
    pub rtt: Option<Duration>,
}

/// This peer's place in the network, for `peer status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkInfo {
    pub reachability: Reachability,
    /// External addresses confirmed to work (AutoNAT dial-backs, relay reservations).
    pub external_addresses: Vec<Multiaddr>,
    /// Relays holding an accepted reservation for this peer.
    pub relays: Vec<PeerId>,
    /// Whether this peer relays for others now.
    pub relaying: bool,
    /// Reservations and circuits this peer accepted as a relay since start.
    pub reservations_served: u64,
    pub circuits_served: u64,
    /// Bytes this peer sent and received over relayed connections since start.
    pub relayed_bytes: u64,
}

#[derive(Debug, Clone)]
struct Conn {
    id: ConnectionId,
    kind: LinkKind,
    rtt: Option<Duration>,
    /// The address we dialed, for a direct connection we opened.
    dialed: Option<Multiaddr>,
    /// A direct connection the other side opened.
    dialed_in: bool,
}

#[derive(Debug, Clone, Copy)]
struct Reservation {
    relay: PeerId,
}

/// What the event loop must do to the swarm after a change (see [`Nat::plan`]).
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Plan {
    /// Switch the relay server on (`Some(true)`) or off.
    pub relay_server: Option<bool>,
    /// Listen on these circuit addresses (reservations), each on the relay named.
    pub reserve: Vec<(PeerId, Multiaddr)>,
    /// Close these reservation listeners.
    pub release: Vec<ListenerId>,
}

/// The state behind this module's rules; the event loop feeds it swarm events and applies its
/// [`Plan`]s.
#[derive(Debug)]
pub(crate) struct Nat {
    serve: bool,
    want_reservations: usize,
    /// Confirmed external addresses, relayed ones included.
    confirmed: Vec<Multiaddr>,
    /// Some peer saw us at an address that is none of ours.
    translated: bool,
    autonat_failed: bool,
    reported: Reachability,
    relaying: bool,
    /// Connected members that offer the relay protocol, with the address to reach them at.
    relays: HashMap<PeerId, Multiaddr>,
    reservations: HashMap<ListenerId, Reservation>,
    /// Relays that accepted a reservation of ours and are still connected.
    held: BTreeSet<PeerId>,
    links: HashMap<PeerId, Vec<Conn>>,
    reservations_served: u64,
    circuits_served: u64,
    relayed_bytes: RelayedBytes,
}

impl Nat {
    pub fn new(serve: bool, want_reservations: usize, relayed_bytes: RelayedBytes) -> Self {
        Self {
            serve,
            want_reservations,
            confirmed: Vec::new(),
            translated: false,
            autonat_failed: false,
            reported: Reachability::Unknown,
            relaying: false,
            relays: HashMap::new(),
            reservations: HashMap::new(),
            held: BTreeSet::new(),
            links: HashMap::new(),
            reservations_served: 0,
            circuits_served: 0,
            relayed_bytes,
        }
    }

    pub fn reachability(&self) -> Reachability {
        if self.confirmed.iter().any(|a| !is_relayed(a)) {
            Reachability::Public
        } else if self.translated || self.autonat_failed {
            Reachability::Private
        } else {
            Reachability::Unknown
        }
    }

    /// Identify says a peer sees us at `observed`; `listen` are our own listen addresses.
    /// Returns whether the observed address was translated by a NAT on the way.
    pub fn observed(&mut self, observed: &Multiaddr, listen: &[Multiaddr]) -> bool {
        let (Some(seen), false) = (ip_of(observed), is_relayed(observed)) else {
            return false;
        };
        let ours = listen.iter().filter_map(ip_of).any(|ip| ip == seen);
        if !ours {
            self.translated = true;
        }
        !ours
    }

    pub fn address_confirmed(&mut self, address: Multiaddr) {
        if !self.confirmed.contains(&address) {
            self.confirmed.push(address);
        }
    }

    pub fn address_expired(&mut self, address: &Multiaddr) {
        self.confirmed.retain(|a| a != address);
    }

    pub fn autonat_failed(&mut self) {
        self.autonat_failed = true;
    }

    /// `peer` offers (or stopped offering, `offers`) the relay protocol. It is reached at the
    /// address we dialed it at if we did, else at the first of `advertised` that is not relayed.
    pub fn relay_offered(&mut self, peer: PeerId, offers: bool, advertised: &[Multiaddr]) {
        let dialed = self
            .links
            .get(&peer)
            .and_then(|conns| conns.iter().find_map(|c| c.dialed.clone()));
        let address = dialed.or_else(|| advertised.iter().find(|a| !is_relayed(a)).cloned());
        match address.filter(|_| offers) {
            Some(address) => {
                self.relays.insert(peer, address);
            }
            None => {
                self.relays.remove(&peer);
            }
        }
    }

    pub fn reservation_accepted(&mut self, relay: PeerId) {
        self.held.insert(relay);
    }

    /// A listener closed: if it was a reservation, it is gone (another is planned).
    pub fn listener_closed(&mut self, listener: &ListenerId) {
        if let Some(r) = self.reservations.remove(listener) {
            self.held.remove(&r.relay);
        }
    }

    pub fn served_reservation(&mut self) {
        self.reservations_served += 1;
    }

    pub fn served_circuit(&mut self) {
        self.circuits_served += 1;
    }

    /// A new connection; returns the relayed connections to `peer` that a direct one makes
    /// redundant (to close), which is this very one when it is relayed and a direct one exists.
    pub fn connected(
        &mut self,
        peer: PeerId,
        id: ConnectionId,
        relayed: bool,
        dialed: Option<Multiaddr>,
    ) -> Vec<ConnectionId> {
        let kind = if relayed {
            LinkKind::Relayed
        } else {
            LinkKind::Direct
        };
        let conns = self.links.entry(peer).or_default();
        conns.push(Conn {
            id,
            kind,
            rtt: None,
            dialed_in: !relayed && dialed.is_none(),
            dialed: dialed.filter(|_| !relayed),
        });
        if !conns.iter().any(|c| c.kind != LinkKind::Relayed) {
            return Vec::new();
        }
        conns
            .iter()
            .filter(|c| c.kind == LinkKind::Relayed)
            .map(|c| c.id)
            .collect()
    }

    pub fn closed(&mut self, peer: &PeerId, id: ConnectionId, last: bool) {
        if let Some(conns) = self.links.get_mut(peer) {
            conns.retain(|c| c.id != id);
            if conns.is_empty() {
                self.links.remove(peer);
            }
        }
        if last {
            self.relays.remove(peer);
            self.held.remove(peer);
        }
    }

    /// Whether `id` is a direct connection `peer` opened to us.
    pub fn dialed_in(&self, peer: &PeerId, id: ConnectionId) -> bool {
        self.links
            .get(peer)
            .is_some_and(|conns| conns.iter().any(|c| c.id == id && c.dialed_in))
    }

    pub fn hole_punched(&mut self, peer: &PeerId, id: ConnectionId) {
        if let Some(c) = self.conn(peer, id) {
            c.kind = LinkKind::HolePunched;
        }
    }

    pub fn rtt(&mut self, peer: &PeerId, id: ConnectionId, rtt: Duration) {
        if let Some(c) = self.conn(peer, id) {
            c.rtt = Some(rtt);
        }
    }

    fn conn(&mut self, peer: &PeerId, id: ConnectionId) -> Option<&mut Conn> {
        self.links.get_mut(peer)?.iter_mut().find(|c| c.id == id)
    }

    /// The best connection to `peer`: hole punched or direct before relayed.
    pub fn link(&self, peer: &PeerId) -> Option<Link> {
        let best = self.links.get(peer)?.iter().max_by_key(|c| c.kind)?;
        Some(Link {
            kind: best.kind,
            rtt: best.rtt,
        })
    }

    /// What to change now: the relay server's state, reservations to make or drop.
    pub fn plan(&mut self) -> Plan {
        let reachability = self.reachability();
        if reachability != self.reported {
            tracing::info!(?reachability, was = ?self.reported, "reachability changed");
            self.reported = reachability;
        }
        let mut plan = Plan::default();
        let relay = self.serve && reachability == Reachability::Public;
        if relay != self.relaying {
            self.relaying = relay;
            plan.relay_server = Some(relay);
        }
        if reachability == Reachability::Public {
            plan.release = self.reservations.keys().copied().collect();
            for r in self.reservations.drain() {
                self.held.remove(&r.1.relay);
            }
            return plan;
        }
        if reachability != Reachability::Private {
            return plan;
        }
        let mut candidates: Vec<(&PeerId, &Multiaddr)> = self
            .relays
            .iter()
            .filter(|(p, _)| !self.reservations.values().any(|r| r.relay == **p))
            .collect();
        // Deterministic order, so two calls in a row choose alike.
        candidates.sort_by_key(|(p, _)| **p);
        let room = self
            .want_reservations
            .saturating_sub(self.reservations.len());
        for (relay, address) in candidates.into_iter().take(room) {
            let circuit = address
                .clone()
                .with(Protocol::P2p(*relay))
                .with(Protocol::P2pCircuit);
            plan.reserve.push((*relay, circuit));
        }
        plan
    }

    /// Remembers a reservation listener the event loop started for `plan.reserve`.
    pub fn reserving(&mut self, listener: ListenerId, relay: PeerId) {
        self.reservations.insert(listener, Reservation { relay });
    }

    pub fn info(&self) -> NetworkInfo {
        NetworkInfo {
            reachability: self.reachability(),
            external_addresses: self.confirmed.clone(),
            relays: self.held.iter().copied().collect(),
            relaying: self.relaying,
            reservations_served: self.reservations_served,
            circuits_served: self.circuits_served,
            relayed_bytes: self.relayed_bytes.get(),
        }
    }
}

/// Whether an address goes through a relay.
pub(crate) fn is_relayed(address: &Multiaddr) -> bool {
    address.iter().any(|p| p == Protocol::P2pCircuit)
}

/// Whether an address names an IP (and is not only `/p2p/…`, say).
pub(crate) fn has_ip(address: &Multiaddr) -> bool {
    ip_of(address).is_some()
}

fn ip_of(address: &Multiaddr) -> Option<IpAddr> {
    address.iter().find_map(|p| match p {
        Protocol::Ip4(ip) => Some(IpAddr::V4(ip)),
        Protocol::Ip6(ip) => Some(IpAddr::V6(ip)),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> Multiaddr {
        s.parse().unwrap()
    }

    fn nat() -> Nat {
        Nat::new(true, 2, RelayedBytes::default())
    }

    #[test]
    fn a_translated_address_makes_a_peer_private_and_a_confirmed_one_public() {
        let mut n = nat();
        let listen = [addr("/ip4/192.168.1.2/tcp/7700")];
        assert_eq!(n.reachability(), Reachability::Unknown);
        assert!(!n.observed(&addr("/ip4/192.168.1.2/tcp/7700"), &listen));
        assert_eq!(n.reachability(), Reachability::Unknown);
        assert!(n.observed(&addr("/ip4/10.0.0.1/tcp/7700"), &listen));
        assert_eq!(n.reachability(), Reachability::Private);
        // A relayed address confirmed is no proof of being reachable directly.
        n.address_confirmed(addr("/ip4/10.0.0.9/tcp/7700/p2p-circuit"));
        assert_eq!(n.reachability(), Reachability::Private);
        n.address_confirmed(addr("/ip4/10.0.0.1/tcp/7700"));
        assert_eq!(n.reachability(), Reachability::Public);
        n.address_expired(&addr("/ip4/10.0.0.1/tcp/7700"));
        assert_eq!(n.reachability(), Reachability::Private);
    }

    #[test]
    fn only_a_public_peer_relays_and_only_a_private_one_reserves() {
        let mut n = nat();
        let relays: Vec<PeerId> = (0..3).map(|_| PeerId::random()).collect();
        for r in &relays {
            n.relay_offered(*r, true, &[addr("/ip4/10.0.0.1/tcp/7700")]);
        }
        assert_eq!(n.plan(), Plan::default(), "unknown: nothing to do yet");
        n.autonat_failed();
        let plan = n.plan();
        assert_eq!(plan.relay_server, None);
        assert_eq!(plan.reserve.len(), 2, "two reservations wanted");
        for (i, (relay, circuit)) in plan.reserve.iter().enumerate() {
            assert!(is_relayed(circuit));
            n.reserving(ListenerId::next(), *relay);
            assert!(i < 2);
        }
        assert!(n.plan().reserve.is_empty(), "enough reservations");
        n.address_confirmed(addr("/ip4/10.0.0.5/tcp/7700"));
        let plan = n.plan();
        assert_eq!(plan.relay_server, Some(true));
        assert_eq!(plan.release.len(), 2, "a public peer needs no relay");
        assert_eq!(n.info().relays, Vec::<PeerId>::new());
    }

    #[test]
    fn a_direct_connection_retires_the_relayed_ones_and_wins_the_link() {
        let mut n = nat();
        let p = PeerId::random();
        let (relayed, direct) = (
            ConnectionId::new_unchecked(1),
            ConnectionId::new_unchecked(2),
        );
        assert!(n.connected(p, relayed, true, None).is_empty());
        assert_eq!(n.link(&p).unwrap().kind, LinkKind::Relayed);
        assert_eq!(n.connected(p, direct, false, None), vec![relayed]);
        n.hole_punched(&p, direct);
        n.rtt(&p, direct, Duration::from_millis(3));
        let link = n.link(&p).unwrap();
        assert_eq!(link.kind, LinkKind::HolePunched);
        assert_eq!(link.rtt, Some(Duration::from_millis(3)));
        // A relayed connection opened while a direct one exists is closed at once.
        let late = ConnectionId::new_unchecked(3);
        assert!(n.connected(p, late, true, None).contains(&late));
        n.closed(&p, relayed, false);
        n.closed(&p, late, false);
        n.closed(&p, direct, true);
        assert_eq!(n.link(&p), None);
    }
}
