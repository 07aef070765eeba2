//! [`EventLoop`]: owns the swarm and the view; the only place that touches either.
//!
//! - Commands from [`Client`](crate::Client)s arrive on a bounded channel and are answered on
//!   their oneshot; the latest load arrives on a watch channel.
//! - Every `load_period` the latest load is published if it changed (else every few periods,
//!   as a heartbeat) and the view is expired; every
//!   `announce_period` one batch of queued object announcements is published; every
//!   `rebootstrap_period` bootstrap addresses are re-dialed and Kademlia bootstraps.
//! - Gossip messages are decoded, validated and applied to the view; what changed goes out as
//!   [`Event`]s (see `swarm_events` for the handling of every swarm event).
//! - Reachability, relaying and hole punching are decided by `nat`; the loop feeds it swarm
//!   events and carries out its plans ([`EventLoop::apply_nat_plan`]).

use std::collections::{HashMap, VecDeque};
use std::ops::ControlFlow;
use std::time::Instant;

use libp2p::core::transport::ListenerId;
use libp2p::futures::StreamExt;
use libp2p::gossipsub::{IdentTopic, PublishError};
use libp2p::multiaddr::Protocol;
use libp2p::swarm::ConnectionId;
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::{Multiaddr, PeerId, Swarm};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::{Duration, MissedTickBehavior, interval};

use crate::behaviour::{Behaviour, TOPIC};
use crate::client::Command;
use crate::messages::{self, Body, Envelope, Load, ObjectAnnouncements, ObjectId};
use crate::nat::Nat;
use crate::transport::RelayedBytes;
use crate::view::{self, View};
use crate::{Config, ConnectError, Event};

/// Load periods after which an unchanged load is published again: it is also this peer's
/// heartbeat, so it must come well within `expire_after` and within the grace of a suspect
/// peer (four periods).
const LOAD_HEARTBEAT_PERIODS: u32 = 3;

/// How long `shutdown` waits for connections to close cleanly.
const SHUTDOWN_GRACE: Duration = Duration::from_millis(500);

/// Drives the network. Spawn [`run`](Self::run) on a tokio runtime; it returns after
/// [`Client::shutdown`](crate::Client::shutdown) or once every `Client` is dropped.
pub struct EventLoop {
    pub(crate) swarm: Swarm<Behaviour>,
    commands: mpsc::Receiver<Command>,
    load: watch::Receiver<Option<Load>>,
    pub(crate) events: mpsc::Sender<Event>,
    pub(crate) view: View,
    topic: IdentTopic,
    timing: Timing,
    next_seq: u64,
    /// When the load is next published (later than every tick in a large cluster).
    next_load_at: Instant,
    /// The load last published, and when it is published again even if unchanged.
    last_load: Option<Load>,
    load_heartbeat_at: Instant,
    pending_objects: VecDeque<(ObjectId, u64)>,
    pub(crate) dials: Dials,
    pub(crate) listen: Listen,
    /// Listen addresses reported by identify, for peers we are connected to.
    pub(crate) identified: HashMap<PeerId, Vec<Multiaddr>>,
    /// Counters for rate-limited warnings.
    pub(crate) dropped: Dropped,
    /// Reachability, relays and the kind of every connection.
    pub(crate) nat: Nat,
    /// External addresses as last gossiped, and whether they are due again (they changed, or a
    /// peer joined that has not heard them).
    published_addresses: Vec<Multiaddr>,
    pub(crate) addresses_due: bool,
}

#[derive(Debug, Clone, Copy)]
struct Timing {
    load_period: Duration,
    announce_period: Duration,
    rebootstrap_period: Duration,
    announce_batch: usize,
    max_pending_announcements: usize,
    pace_peers: usize,
}

/// Dials the loop is waiting on.
#[derive(Default)]
pub(crate) struct Dials {
    /// Configured bootstrap addresses, with the peer each turned out to be.
    pub bootstrap: Vec<(Multiaddr, Option<PeerId>)>,
    /// In-flight dials of bootstrap addresses (index into `bootstrap`).
    pub bootstrap_pending: HashMap<ConnectionId, usize>,
    /// In-flight dials asked for by a client.
    pub client_pending:
        HashMap<ConnectionId, (Multiaddr, oneshot::Sender<Result<PeerId, ConnectError>>)>,
}

/// Listeners and clients waiting for their first addresses.
#[derive(Default)]
pub(crate) struct Listen {
    /// Configured listeners; `true` once it reported an address.
    pub listeners: HashMap<ListenerId, bool>,
    pub addresses: Vec<Multiaddr>,
    pub waiting: Vec<oneshot::Sender<Vec<Multiaddr>>>,
}

/// How many messages of each kind were dropped; warnings are logged at powers of two.
#[derive(Debug, Default)]
pub(crate) struct Dropped {
    pub invalid: u64,
    pub view_full: u64,
    pub announcements: u64,
    pub publish_failed: u64,
}

/// Logs `msg` at warn level the 1st, 2nd, 4th, 8th... time, at debug level otherwise.
macro_rules! warn_rarely {
    ($counter:expr, $($arg:tt)+) => {{
        $counter += 1;
        if $counter.is_power_of_two() {
            tracing::warn!(occurrences = $counter, $($arg)+);
        } else {
            tracing::debug!($($arg)+);
        }
    }};
}
pub(crate) use warn_rarely;

impl EventLoop {
    pub(crate) fn new(
        swarm: Swarm<Behaviour>,
        config: &Config,
        commands: mpsc::Receiver<Command>,
        load: watch::Receiver<Option<Load>>,
        events: mpsc::Sender<Event>,
        listeners: Vec<ListenerId>,
        relayed_bytes: RelayedBytes,
    ) -> Self {
        let view = View::new(view::Limits {
            max_peers: config.max_peers,
            max_objects_per_peer: config.max_objects_per_peer,
            expire_after: config.expire_after,
            suspect_grace: config.suspect_grace(),
        });
        // Start at the wall clock in microseconds so sequence numbers grow across restarts.
        let next_seq = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_micros() as u64);
        Self {
            swarm,
            commands,
            load,
            events,
            view,
            topic: IdentTopic::new(TOPIC),
            timing: Timing {
                load_period: config.load_period,
                announce_period: config.announce_period,
                rebootstrap_period: config.rebootstrap_period,
                announce_batch: config.announce_batch,
                max_pending_announcements: config.max_pending_announcements,
                pace_peers: config.pace_peers,
            },
            next_load_at: Instant::now(),
            last_load: None,
            load_heartbeat_at: Instant::now(),
            next_seq,
            pending_objects: VecDeque::new(),
            dials: Dials {
                bootstrap: config
                    .bootstrap
                    .iter()
                    .map(|a| (a.clone(), peer_of(a)))
                    .collect(),
                ..Dials::default()
            },
            listen: Listen {
                listeners: listeners.into_iter().map(|id| (id, false)).collect(),
                ..Listen::default()
            },
            identified: HashMap::new(),
            dropped: Dropped::default(),
            nat: Nat::new(config.relay.serve, config.relay.reservations, relayed_bytes),
            published_addresses: Vec::new(),
            addresses_due: false,
        }
    }

    /// Runs until shut down. See the module documentation for what happens when.
    pub async fn run(mut self) {
        let mut load_tick = interval(self.timing.load_period);
        let mut announce_tick = interval(self.timing.announce_period);
        let mut bootstrap_tick = interval(self.timing.rebootstrap_period);
        for tick in [&mut load_tick, &mut announce_tick, &mut bootstrap_tick] {
            tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        }
        let done = loop {
            tokio::select! {
                event = self.swarm.select_next_some() => self.on_swarm_event(event).await,
                command = self.commands.recv() => match command {
                    Some(command) => if let ControlFlow::Break(done) = self.on_command(command) {
                        break Some(done);
                    },
                    None => break None,
                },
                _ = load_tick.tick() => {
                    self.publish_load();
                    self.publish_addresses();
                    self.expire().await;
                }
                _ = announce_tick.tick() => self.flush_announcements(),
                _ = bootstrap_tick.tick() => self.rebootstrap(),
            }
        };
        self.close_connections().await;
        tracing::info!(peer = %self.swarm.local_peer_id(), "gossip stopped");
        drop(self);
        if let Some(done) = done {
            let _ = done.send(());
        }
    }

    /// Handles one command; breaks with the reply channel of a shutdown.
    fn on_command(&mut self, command: Command) -> ControlFlow<oneshot::Sender<()>> {
        match command {
            Command::ListenAddrs(reply) => {
                self.listen.waiting.push(reply);
                self.answer_listen_waiters();
            }
            Command::AnnounceObjects(objects) => {
                self.pending_objects.extend(objects);
                let excess = self
                    .pending_objects
                    .len()
                    .saturating_sub(self.timing.max_pending_announcements);
                if excess > 0 {
                    self.pending_objects.drain(..excess);
                    warn_rarely!(
                        self.dropped.announcements,
                        excess,
                        "announcement queue full, oldest dropped"
                    );
                }
            }
            Command::View(reply) => {
                let mut peers = self.view.snapshot(Instant::now());
                for p in &mut peers {
                    p.link = self.nat.link(&p.peer_id);
                }
                let _ = reply.send(peers);
            }
            Command::Network(reply) => {
                let _ = reply.send(self.nat.info());
            }
            Command::Holders(object, reply) => {
                let _ = reply.send(self.view.holders(&object));
            }
            Command::Dial(address, reply) => self.dial_for_client(address, reply),
            Command::Shutdown(done) => return ControlFlow::Break(done),
            #[cfg(test)]
            Command::PublishRaw(bytes, reply) => {
                let result = self
                    .swarm
                    .behaviour_mut()
                    .gossipsub
                    .publish(self.topic.clone(), bytes);
                let _ = reply.send(result.map(|_| ()).map_err(|e| e.to_string()));
            }
            #[cfg(test)]
            Command::ListenOn(address, reply) => {
                let result = self.swarm.listen_on(address);
                let _ = reply.send(result.map(|_| ()).map_err(|e| e.to_string()));
            }
        }
        ControlFlow::Continue(())
    }

    /// Answers `listen_addrs` callers once every listener reported an address or went away.
    pub(crate) fn answer_listen_waiters(&mut self) {
        if self.listen.listeners.values().any(|reported| !reported) {
            return;
        }
        let local = *self.swarm.local_peer_id();
        let addresses: Vec<Multiaddr> = self
            .listen
            .addresses
            .iter()
            .map(|a| match a.iter().last() {
                Some(Protocol::P2p(_)) => a.clone(),
                _ => a.clone().with(Protocol::P2p(local)),
            })
            .collect();
        for reply in self.listen.waiting.drain(..) {
            let _ = reply.send(addresses.clone());
        }
    }

    fn dial_for_client(
        &mut self,
        address: Multiaddr,
        reply: oneshot::Sender<Result<PeerId, ConnectError>>,
    ) {
        if let Some(peer) = peer_of(&address).filter(|p| self.swarm.is_connected(p)) {
            let _ = reply.send(Ok(peer));
            return;
        }
        let opts = DialOpts::unknown_peer_id().address(address.clone()).build();
        let id = opts.connection_id();
        match self.swarm.dial(opts) {
            Ok(()) => {
                self.dials.client_pending.insert(id, (address, reply));
            }
            Err(e) => {
                let _ = reply.send(Err(crate::swarm_events::classify(&address, &e)));
            }
        }
    }

    /// Dials every bootstrap address whose peer we are not connected to, then lets Kademlia
    /// look for the rest of the cluster.
    fn rebootstrap(&mut self) {
        for (index, (address, peer)) in self.dials.bootstrap.iter().enumerate() {
            let connected = peer.is_some_and(|p| self.swarm.is_connected(&p));
            let dialing = self.dials.bootstrap_pending.values().any(|i| *i == index);
            if connected || dialing {
                continue;
            }
            let opts = match peer {
                Some(peer) => DialOpts::peer_id(*peer)
                    .addresses(vec![address.clone()])
                    // Not `…AndNotDialing`: a client's dial of the same peer must not swallow
                    // this one, whose failure is reported as an event.
                    .condition(PeerCondition::Disconnected)
                    .build(),
                None => DialOpts::unknown_peer_id().address(address.clone()).build(),
            };
            let id = opts.connection_id();
            match self.swarm.dial(opts) {
                Ok(()) => {
                    self.dials.bootstrap_pending.insert(id, index);
                }
                Err(e) => tracing::debug!(%address, error = %e, "bootstrap dial not started"),
            }
        }
        if self.swarm.behaviour_mut().kad.bootstrap().is_err() {
            tracing::debug!("no known peers to bootstrap Kademlia from yet");
        }
    }

    /// Carries out what `nat` decided: the relay server on or off, reservations made or dropped.
    pub(crate) fn apply_nat_plan(&mut self) {
        let plan = self.nat.plan();
        if let Some(on) = plan.relay_server {
            tracing::info!(on, "relaying for other members");
            let status = if on {
                libp2p::relay::Status::Enable
            } else {
                libp2p::relay::Status::Disable
            };
            self.swarm.behaviour_mut().relay.set_status(Some(status));
        }
        for listener in plan.release {
            self.swarm.remove_listener(listener);
        }
        for (relay, circuit) in plan.reserve {
            match self.swarm.listen_on(circuit.clone()) {
                Ok(listener) => {
                    tracing::info!(%relay, %circuit, "reserving a slot on a relay");
                    self.nat.reserving(listener, relay);
                }
                Err(error) => tracing::warn!(%circuit, %error, "cannot reserve on that relay"),
            }
        }
    }

    /// How many load periods apart peers publish, given the size of the view.
    fn pace(&self) -> u32 {
        let pace = self.view.len().div_ceil(self.timing.pace_peers).max(1);
        u32::try_from(pace).unwrap_or(u32::MAX)
    }

    /// Publishes the latest load if it changed since it was last published, else every
    /// [`LOAD_HEARTBEAT_PERIODS`] periods (an idle cluster then gossips, signs and checks a
    /// fraction of the messages, and every peer is still heard from well within its expiry).
    fn publish_load(&mut self) {
        let now = Instant::now();
        if now < self.next_load_at {
            return;
        }
        let Some(load) = self.load.borrow_and_update().clone() else {
            return;
        };
        if self.last_load.as_ref() == Some(&load) && now < self.load_heartbeat_at {
            return;
        }
        // Half a period early, so timer jitter never costs a whole extra tick.
        let period = self.timing.load_period * self.pace();
        self.next_load_at = now + period - self.timing.load_period / 2;
        self.load_heartbeat_at =
            now + period * LOAD_HEARTBEAT_PERIODS - self.timing.load_period / 2;
        if self.publish(Body::Load(load.clone())) {
            self.last_load = Some(load);
        }
    }

    /// Gossips this peer's external addresses (a private peer's relay circuits among them) when
    /// they changed or a peer joined since they were last sent.
    fn publish_addresses(&mut self) {
        let mut current: Vec<Multiaddr> = self.swarm.external_addresses().cloned().collect();
        current.sort();
        current.truncate(messages::MAX_ADDRESSES_PER_MESSAGE);
        if current != self.published_addresses {
            self.addresses_due = true;
        }
        if !self.addresses_due || current.is_empty() {
            return;
        }
        let bytes = current.iter().map(|a| a.to_vec()).collect();
        if self.publish(Body::Addresses(bytes)) {
            self.addresses_due = false;
            self.published_addresses = current;
        }
    }

    fn flush_announcements(&mut self) {
        if self.pending_objects.is_empty() {
            return;
        }
        let take = self.pending_objects.len().min(self.timing.announce_batch);
        let objects: Vec<_> = self.pending_objects.drain(..take).collect();
        if !self.publish(Body::Objects(ObjectAnnouncements {
            objects: objects.clone(),
        })) {
            // Nobody to tell yet (or queues full): keep them for the next round, in order.
            for object in objects.into_iter().rev() {
                self.pending_objects.push_front(object);
            }
        }
    }

    /// Publishes one message; returns whether gossipsub took it.
    fn publish(&mut self, body: Body) -> bool {
        let envelope = Envelope {
            seq: self.next_seq,
            body,
        };
        self.next_seq += 1;
        let bytes = match messages::encode(&envelope) {
            Ok(bytes) => bytes,
            Err(e) => {
                warn_rarely!(self.dropped.publish_failed, error = %e, "not publishing an invalid message");
                return false;
            }
        };
        match self
            .swarm
            .behaviour_mut()
            .gossipsub
            .publish(self.topic.clone(), bytes)
        {
            Ok(_) => true,
            // Normal until some peer's subscription is known.
            Err(PublishError::NoPeersSubscribedToTopic) => false,
            Err(e) => {
                warn_rarely!(self.dropped.publish_failed, error = %e, "gossip publish failed");
                false
            }
        }
    }

    /// Removes expired and long-suspect peers from the view, telling the node.
    async fn expire(&mut self) {
        let pace = self.pace();
        for (peer, reason) in self.view.expire(Instant::now(), pace) {
            tracing::info!(%peer, ?reason, "peer left the view");
            self.emit(Event::PeerGone(peer, reason)).await;
        }
    }

    /// Sends an event the node must not miss; waits for room (the node must drain the channel).
    pub(crate) async fn emit(&mut self, event: Event) {
        // A dropped receiver means the node does not want events: not an error.
        let _ = self.events.send(event).await;
    }

    async fn close_connections(&mut self) {
        let peers: Vec<PeerId> = self.swarm.connected_peers().copied().collect();
        for peer in peers {
            let _ = self.swarm.disconnect_peer_id(peer);
        }
        let _ = tokio::time::timeout(SHUTDOWN_GRACE, async {
            while self.swarm.network_info().num_peers() > 0 {
                self.swarm.select_next_some().await;
            }
        })
        .await;
    }
}

/// The peer id at the end of a multiaddr, if any.
pub(crate) fn peer_of(address: &Multiaddr) -> Option<PeerId> {
    match address.iter().last() {
        Some(Protocol::P2p(peer)) => Some(peer),
        _ => None,
    }
}
