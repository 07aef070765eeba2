//! How the [`EventLoop`] reacts to each swarm event: gossip into the view, identify and mDNS into
//! Kademlia, connection and ping failures into suspicion, dial results into answers, and
//! reachability, relay and hole-punching news into `nat` (whose plan is applied after every
//! event).

use std::io;
use std::time::Instant;

use libp2p::gossipsub::{self, MessageAcceptance};
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::swarm::{DialError, SwarmEvent};
use libp2p::{Multiaddr, PeerId, autonat, dcutr, identify, kad, mdns, ping, relay};

use crate::behaviour::{BehaviourEvent, KAD_PROTOCOL};
use crate::event_loop::{EventLoop, warn_rarely};
use crate::messages::{self, Body};
use crate::nat::{has_ip, is_relayed};
use crate::transport::{KEY_MISMATCH, KeyCheckError};
use crate::view::{Applied, GoneReason, MAX_ADDRESSES};
use crate::{ConnectError, Event};

impl EventLoop {
    pub(crate) async fn on_swarm_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        self.dispatch(event).await;
        self.apply_nat_plan();
    }

    async fn dispatch(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::Behaviour(BehaviourEvent::Gossipsub(gossipsub::Event::Message {
                propagation_source,
                message_id,
                message,
            })) => {
                self.on_gossip(propagation_source, message_id, message)
                    .await
            }
            SwarmEvent::Behaviour(BehaviourEvent::Identify(identify::Event::Received {
                peer_id,
                connection_id,
                info,
            })) => self.on_identify(peer_id, connection_id, info),
            SwarmEvent::Behaviour(BehaviourEvent::Mdns(mdns::Event::Discovered(found))) => {
                self.on_mdns(found)
            }
            SwarmEvent::Behaviour(BehaviourEvent::Ping(ping::Event {
                peer,
                connection,
                result: Ok(rtt),
            })) => self.nat.rtt(&peer, connection, rtt),
            SwarmEvent::Behaviour(BehaviourEvent::Ping(ping::Event {
                peer,
                connection,
                result: Err(error),
            })) => {
                tracing::debug!(%peer, %error, "ping failed; closing that connection");
                self.view
                    .suspect(&peer, GoneReason::PingFailed, Instant::now());
                self.swarm.close_connection(connection);
            }
            SwarmEvent::Behaviour(BehaviourEvent::Kad(kad::Event::OutboundQueryProgressed {
                result: kad::QueryResult::GetClosestPeers(Ok(found)),
                ..
            })) => self.on_closest_peers(found.peers),
            SwarmEvent::Behaviour(BehaviourEvent::Autonat(autonat::v2::client::Event {
                tested_addr,
                server,
                result,
                ..
            })) => match result {
                Ok(()) => {
                    tracing::info!(address = %tested_addr, %server, "reachable at this address")
                }
                // Identify also reports how peers see us over relayed connections; such
                // "addresses" are no evidence either way.
                Err(error) if is_relayed(&tested_addr) || !has_ip(&tested_addr) => {
                    tracing::debug!(address = %tested_addr, %error, "a relayed candidate is not dialable");
                }
                Err(error) => {
                    tracing::info!(address = %tested_addr, %server, %error, "not reachable at this address");
                    self.nat.autonat_failed();
                }
            },
            SwarmEvent::Behaviour(BehaviourEvent::RelayClient(
                relay::client::Event::ReservationReqAccepted {
                    relay_peer_id,
                    renewal: false,
                    ..
                },
            )) => {
                tracing::info!(relay = %relay_peer_id, "relay reservation accepted");
                self.nat.reservation_accepted(relay_peer_id);
            }
            SwarmEvent::Behaviour(BehaviourEvent::Relay(event)) => match event {
                relay::Event::ReservationReqAccepted {
                    src_peer_id,
                    renewed: false,
                } => {
                    tracing::info!(peer = %src_peer_id, "holding a relay slot for a member");
                    self.nat.served_reservation();
                }
                relay::Event::CircuitReqAccepted {
                    src_peer_id,
                    dst_peer_id,
                } => {
                    tracing::debug!(from = %src_peer_id, to = %dst_peer_id, "relaying a circuit");
                    self.nat.served_circuit();
                }
                other => tracing::debug!(?other, "relay event"),
            },
            SwarmEvent::Behaviour(BehaviourEvent::Dcutr(dcutr::Event {
                remote_peer_id,
                result,
            })) => match result {
                Ok(connection) => {
                    tracing::info!(peer = %remote_peer_id, "hole punched: direct connection");
                    self.nat.hole_punched(&remote_peer_id, connection);
                }
                Err(error) => {
                    tracing::info!(peer = %remote_peer_id, %error, "hole punch failed; staying on the relay");
                }
            },
            SwarmEvent::ExternalAddrConfirmed { address } => {
                tracing::info!(%address, "external address confirmed");
                self.nat.address_confirmed(address);
            }
            SwarmEvent::ExternalAddrExpired { address } => {
                tracing::info!(%address, "external address expired");
                self.nat.address_expired(&address);
            }
            SwarmEvent::Behaviour(other) => tracing::trace!(?other, "behaviour event"),
            SwarmEvent::NewListenAddr {
                listener_id,
                address,
            } => {
                tracing::info!(%address, peer = %self.swarm.local_peer_id(), "listening");
                self.listen.addresses.push(address);
                if let Some(reported) = self.listen.listeners.get_mut(&listener_id) {
                    *reported = true;
                }
                self.answer_listen_waiters();
            }
            SwarmEvent::ExpiredListenAddr { address, .. } => {
                self.listen.addresses.retain(|a| *a != address);
            }
            SwarmEvent::ListenerClosed { listener_id, .. } => self.listener_gone(listener_id),
            SwarmEvent::ListenerError { listener_id, error } => {
                tracing::warn!(%error, "listener failed");
                self.listener_gone(listener_id);
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                connection_id,
                num_established,
                ..
            } if num_established > 0 => {
                self.nat.closed(&peer_id, connection_id, false);
            }
            SwarmEvent::ConnectionEstablished {
                peer_id,
                connection_id,
                endpoint,
                ..
            } => {
                let relayed = endpoint.is_relayed();
                tracing::debug!(peer = %peer_id, address = %endpoint.get_remote_address(), relayed, "connected");
                let dialed = match &endpoint {
                    libp2p::core::ConnectedPoint::Dialer { address, .. } => {
                        let mut address = address.clone();
                        if let Some(libp2p::multiaddr::Protocol::P2p(_)) = address.iter().last() {
                            address.pop();
                        }
                        Some(address)
                    }
                    libp2p::core::ConnectedPoint::Listener { .. } => None,
                };
                for redundant in self.nat.connected(peer_id, connection_id, relayed, dialed) {
                    tracing::debug!(peer = %peer_id, "direct connection up; closing a relayed one");
                    self.swarm.close_connection(redundant);
                }
                if let Some((_, reply)) = self.dials.client_pending.remove(&connection_id) {
                    let _ = reply.send(Ok(peer_id));
                }
                if let Some(index) = self.dials.bootstrap_pending.remove(&connection_id)
                    && let Some((_, peer)) = self.dials.bootstrap.get_mut(index)
                {
                    *peer = Some(peer_id);
                }
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                connection_id,
                num_established: 0,
                cause,
                ..
            } => {
                tracing::debug!(peer = %peer_id, ?cause, "last connection closed");
                self.nat.closed(&peer_id, connection_id, true);
                self.identified.remove(&peer_id);
                self.view
                    .suspect(&peer_id, GoneReason::Disconnected, Instant::now());
            }
            SwarmEvent::OutgoingConnectionError {
                connection_id,
                peer_id,
                error,
            } => self.on_dial_error(connection_id, peer_id, &error).await,
            SwarmEvent::IncomingConnectionError {
                send_back_addr,
                error,
                ..
            } => {
                if is_key_mismatch(&error) {
                    tracing::warn!(from = %send_back_addr, "refused a peer with another cluster key");
                } else {
                    let error = chain(&error);
                    tracing::debug!(from = %send_back_addr, %error, "incoming connection failed");
                }
            }
            _ => {}
        }
    }

    async fn on_gossip(
        &mut self,
        via: PeerId,
        id: gossipsub::MessageId,
        message: gossipsub::Message,
    ) {
        let author = message.source;
        let decoded = messages::decode(&message.data);
        let (author, envelope) = match (author, decoded) {
            (Some(author), Ok(envelope)) => (author, envelope),
            (author, result) => {
                let error = result
                    .err()
                    .map_or("no author".to_owned(), |e| e.to_string());
                warn_rarely!(self.dropped.invalid, ?author, %via, %error, "dropped invalid gossip");
                self.report(&id, &via, MessageAcceptance::Reject);
                return;
            }
        };
        let body = envelope.body.clone();
        let applied = self.view.apply(author, envelope, Instant::now());
        let acceptance = match applied {
            Applied::New | Applied::Updated => MessageAcceptance::Accept,
            Applied::Stale | Applied::Full => MessageAcceptance::Ignore,
        };
        self.report(&id, &via, acceptance);
        match applied {
            Applied::Stale => {
                tracing::debug!(peer = %author, "dropped stale gossip");
                return;
            }
            Applied::Full => {
                warn_rarely!(self.dropped.view_full, peer = %author, "view full; peer ignored");
                return;
            }
            Applied::New => {
                tracing::info!(peer = %author, "peer joined the view");
                if let Some(addresses) = self.identified.get(&author) {
                    self.view.set_addresses(&author, addresses);
                } else if !self.swarm.is_connected(&author) {
                    // Heard through others only: look its addresses up, so that a stream to it
                    // (the node's own protocols) can be opened when needed.
                    self.swarm.behaviour_mut().kad.get_closest_peers(author);
                }
                // It has not heard our addresses yet.
                self.addresses_due = true;
                self.emit(Event::PeerUp(author)).await;
            }
            Applied::Updated => {}
        }
        match body {
            // Loads are superseded a fraction of a second later: drop one rather than wait.
            Body::Load(load) => {
                let _ = self.events.try_send(Event::PeerLoad(author, load));
            }
            Body::Objects(a) => self.emit(Event::ObjectsAnnounced(author, a.objects)).await,
            Body::Addresses(list) => self.on_gossiped_addresses(author, &list),
        }
    }

    fn report(&mut self, id: &gossipsub::MessageId, via: &PeerId, acceptance: MessageAcceptance) {
        self.swarm
            .behaviour_mut()
            .gossipsub
            .report_message_validation_result(id, via, acceptance);
    }

    fn on_identify(
        &mut self,
        peer: PeerId,
        connection: libp2p::swarm::ConnectionId,
        info: identify::Info,
    ) {
        let observed = &info.observed_addr;
        if self.nat.observed(observed, &self.listen.addresses) {
            tracing::debug!(%peer, %observed, "seen through a NAT");
        } else if self.nat.dialed_in(&peer, connection)
            && self.listen.addresses.contains(observed)
            && !self.swarm.external_addresses().any(|a| a == observed)
        {
            // The member dialed this very address and got through: it is reachable.
            tracing::info!(address = %observed, by = %peer, "a member dialed in here: reachable");
            self.swarm.add_external_address(observed.clone());
            self.nat.address_confirmed(observed.clone());
        }
        let addresses = routable_first(info.listen_addrs.into_iter().take(MAX_ADDRESSES).collect());
        let offers_relay = info.protocols.contains(&relay::HOP_PROTOCOL_NAME);
        self.nat.relay_offered(peer, offers_relay, &addresses);
        if info.protocols.contains(&KAD_PROTOCOL) {
            for address in &addresses {
                self.swarm
                    .behaviour_mut()
                    .kad
                    .add_address(&peer, address.clone());
            }
        }
        self.view.set_addresses(&peer, &addresses);
        self.identified.insert(peer, addresses);
    }

    /// Addresses a peer gossiped (validated on decoding): the swarm can dial it through them,
    /// and the view shows them unless the peer is identified over a connection of ours.
    fn on_gossiped_addresses(&mut self, author: PeerId, list: &[Vec<u8>]) {
        let addresses: Vec<Multiaddr> = list
            .iter()
            .filter_map(|bytes| Multiaddr::try_from(bytes.clone()).ok())
            .map(|mut a| {
                if a.iter().last() == Some(libp2p::multiaddr::Protocol::P2p(author)) {
                    a.pop();
                }
                a
            })
            .collect();
        for address in &addresses {
            self.swarm
                .behaviour_mut()
                .kad
                .add_address(&author, address.clone());
        }
        if !self.identified.contains_key(&author) {
            self.view.set_addresses(&author, &addresses);
        }
    }

    /// Addresses a Kademlia lookup found: remembered for the peers in the view, so the swarm can
    /// dial them when a stream is opened.
    fn on_closest_peers(&mut self, found: Vec<kad::PeerInfo>) {
        for info in found {
            if !self.view.contains(&info.peer_id) || self.identified.contains_key(&info.peer_id) {
                continue;
            }
            let addresses = routable_first(info.addrs.into_iter().take(MAX_ADDRESSES).collect());
            for address in &addresses {
                self.swarm
                    .behaviour_mut()
                    .kad
                    .add_address(&info.peer_id, address.clone());
            }
            self.view.set_addresses(&info.peer_id, &addresses);
        }
    }

    fn on_mdns(&mut self, found: Vec<(PeerId, Multiaddr)>) {
        let mut by_peer: Vec<(PeerId, Vec<Multiaddr>)> = Vec::new();
        for (peer, address) in found {
            self.swarm
                .behaviour_mut()
                .kad
                .add_address(&peer, address.clone());
            match by_peer.iter_mut().find(|(p, _)| *p == peer) {
                Some((_, addresses)) => addresses.push(address),
                None => by_peer.push((peer, vec![address])),
            }
        }
        for (peer, addresses) in by_peer {
            if self.swarm.is_connected(&peer) {
                continue;
            }
            tracing::debug!(%peer, "found by mDNS; dialing");
            // From a new port: two peers on a LAN hear each other's announcements at the same
            // moment and dial at once; dialing from the listen port (libp2p's default) then
            // makes one TCP connection by simultaneous open, on which both sides start TLS as
            // the client and fail, in lockstep, on every retry.
            let opts = DialOpts::peer_id(peer)
                .addresses(addresses)
                .condition(PeerCondition::DisconnectedAndNotDialing)
                .allocate_new_port()
                .build();
            if let Err(error) = self.swarm.dial(opts) {
                tracing::debug!(%peer, %error, "mDNS dial not started");
            }
        }
    }

    async fn on_dial_error(
        &mut self,
        connection: libp2p::swarm::ConnectionId,
        peer: Option<PeerId>,
        error: &DialError,
    ) {
        if let Some((address, reply)) = self.dials.client_pending.remove(&connection) {
            let error = classify(&address, error);
            tracing::warn!(%error, "dial failed");
            let _ = reply.send(Err(error));
        } else if let Some(index) = self.dials.bootstrap_pending.remove(&connection) {
            let address = self
                .dials
                .bootstrap
                .get(index)
                .map_or_else(Multiaddr::empty, |(a, _)| a.clone());
            let error = classify(&address, error);
            tracing::warn!(%error, "bootstrap dial failed; retrying every rebootstrap period");
            self.emit(Event::DialFailed(error)).await;
        } else {
            tracing::debug!(?peer, error = %chain(error), "dial failed");
        }
    }

    fn listener_gone(&mut self, listener: libp2p::core::transport::ListenerId) {
        self.nat.listener_closed(&listener);
        self.listen.listeners.remove(&listener);
        self.answer_listen_waiters();
    }
}

/// Turns a dial error into a [`ConnectError`], recognising a failed key check anywhere in it.
pub(crate) fn classify(address: &Multiaddr, error: &DialError) -> ConnectError {
    if let DialError::Transport(attempts) = error {
        for (attempt, transport_error) in attempts {
            if is_key_mismatch(transport_error) {
                return ConnectError::KeyMismatch {
                    address: attempt.clone(),
                };
            }
        }
        if let Some((attempt, _)) = attempts.first() {
            return ConnectError::Failed {
                address: attempt.clone(),
                reason: chain(error),
            };
        }
    }
    ConnectError::Failed {
        address: address.clone(),
        reason: chain(error),
    }
}

/// Whether a failed key check is somewhere in `error`. The transport stack boxes errors into
/// `io::Error`s and `Either`s whose `source()` skips a level, so the chain's text is checked too.
pub(crate) fn is_key_mismatch(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut current = Some(error);
    while let Some(e) = current {
        let inner = e.downcast_ref::<io::Error>().and_then(|io| io.get_ref());
        let typed = [Some(e), inner.map(|i| i as _)]
            .into_iter()
            .flatten()
            .any(|e| matches!(e.downcast_ref(), Some(KeyCheckError::Mismatch)));
        if typed || e.to_string().contains(KEY_MISMATCH) {
            return true;
        }
        current = e.source();
    }
    false
}

/// An error with its sources, `outer: inner: innermost`, without repeats.
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        let part = e.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = e.source();
    }
    text
}

/// Whether an address is on the loopback interface.
fn is_loopback(address: &Multiaddr) -> bool {
    address.iter().any(|p| match p {
        libp2p::multiaddr::Protocol::Ip4(ip) => ip.is_loopback(),
        libp2p::multiaddr::Protocol::Ip6(ip) => ip.is_loopback(),
        _ => false,
    })
}

/// A peer's advertised addresses without its loopback ones when it has any
/// other: dialing another machine's 127.0.0.1 reaches our own machine. A peer
/// that only listens on loopback (one machine, tests) keeps them.
fn routable_first(addresses: Vec<Multiaddr>) -> Vec<Multiaddr> {
    let (local, routable): (Vec<_>, Vec<_>) = addresses.into_iter().partition(is_loopback);
    if routable.is_empty() { local } else { routable }
}

#[cfg(test)]
mod address_tests {
    use super::*;

    #[test]
    fn loopback_addresses_go_when_a_routable_one_exists() {
        let lo: Multiaddr = "/ip4/127.0.0.1/tcp/7700".parse().unwrap();
        let lan: Multiaddr = "/ip4/10.79.0.2/tcp/7700".parse().unwrap();
        let lo6: Multiaddr = "/ip6/::1/tcp/7700".parse().unwrap();
        assert_eq!(
            routable_first(vec![lo.clone(), lan.clone(), lo6.clone()]),
            vec![lan]
        );
        assert_eq!(routable_first(vec![lo.clone(), lo6.clone()]), vec![lo, lo6]);
        assert!(routable_first(Vec::new()).is_empty());
    }
}
