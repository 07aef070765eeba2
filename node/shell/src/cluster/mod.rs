//! The node as a member of a multi-peer cluster: starts the gossip layer
//! (`peer-gossip`), publishes this node's load, and keeps a snapshot of the
//! other peers for `peer status`, `nodes()` and the cluster's resources.
//!
//! - `start` loads (or creates) the identity and the cluster key in the state
//!   directory, starts listening, and spawns the gossip event loop;
//! - the node's peer links (`links`) and pulls (`pull`) start on the same
//!   gossip client; `paths` tells pulls which holders sit behind a relay;
//! - a tick task publishes the local load and announcements, and hands the
//!   core the gossip view a few times a second ([`Event::View`]); an event
//!   task logs joins and failed dials and tells the core of departures.
//!
//! Laptop mode never calls `start`: no network port is opened.

mod direct;
pub mod links;
pub mod partial_sends;
pub mod paths;
pub mod pull;

use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use peer_gossip::{
    ClusterKey, Config, DirectTls, Identity, LinkKind, Load, Multiaddr, Reachability,
};
use peer_node_core::{Event, NetworkView, PeerLink, PeerLoad, PeerView};
use tokio::sync::mpsc;

use crate::engine::Shared;
use crate::error::NodeError;

/// How often the local load is published and the core given the gossip view.
const TICK: Duration = Duration::from_millis(250);

/// What a node needs to join a cluster.
#[derive(Debug, Clone)]
pub struct NetworkConfig {
    /// Multiaddrs to listen on (e.g. `/ip4/0.0.0.0/tcp/7700`).
    pub listen: Vec<String>,
    /// Members to join through.
    pub bootstrap: Vec<String>,
    /// The cluster key: 64 hex characters or a key file; None: the state
    /// directory's key, created on first use.
    pub key: Option<String>,
    /// Find peers on the LAN with mDNS.
    pub mdns: bool,
    /// Bytes per second that pulls over relays may take together (when every holder of an
    /// object is reachable only through a relay).
    pub relay_pull_rate: u64,
    /// Relay for other members while this node is publicly reachable.
    pub relay: bool,
    /// TCP port of the direct connections large pulls use (`direct`), on the first listen
    /// address's IP; 0: any free port.
    pub direct_port: u16,
}

/// Default of [`NetworkConfig::relay_pull_rate`]: 4 MiB/s.
pub const RELAY_PULL_RATE: u64 = 4 << 20;

/// The cluster membership of a running node.
pub struct Cluster {
    pub client: peer_gossip::Client,
    pub peer_id: peer_gossip::PeerId,
    /// Where this node listens, as of the last refresh (a wildcard listen
    /// address reports one address per interface, one after another).
    pub listen: Mutex<Vec<Multiaddr>>,
    pub key_hex: String,
    pub key_fingerprint: String,
    /// The key was created just now (print how others join).
    pub key_created: bool,
    /// Which peers sit behind a relay, and the cap on pulls over relays.
    pub paths: Arc<paths::Paths>,
}

impl Cluster {
    /// Where this node listens.
    pub fn listen_addrs(&self) -> Vec<Multiaddr> {
        self.listen.lock().clone()
    }

    /// An address other machines can use to join (prefers a non-loopback one).
    pub fn join_address(&self) -> Option<String> {
        let text: Vec<String> = self.listen_addrs().iter().map(|a| a.to_string()).collect();
        text.iter()
            .find(|a| !a.contains("/127.0.0.1/") && !a.contains("/::1/"))
            .or_else(|| text.first())
            .cloned()
    }
}

fn parse_addrs(list: &[String], what: &str) -> Result<Vec<Multiaddr>, NodeError> {
    list.iter()
        .map(|a| {
            a.parse::<Multiaddr>()
                .map_err(|e| NodeError::Rejected(format!("bad {what} address {a:?}: {e}")))
        })
        .collect()
}

/// Join (or found) a cluster. Must run inside the node's runtime.
pub async fn start(
    net: &NetworkConfig,
    state_dir: &std::path::Path,
    shared: Arc<Shared>,
    arena: Arc<peer_objstore::Arena>,
) -> Result<Arc<Cluster>, NodeError> {
    let gossip_err = |e: peer_gossip::GossipError| NodeError::Rejected(e.to_string());
    let identity = Identity::load_or_create(state_dir).map_err(gossip_err)?;
    let (key, key_created) = match &net.key {
        Some(arg) => (ClusterKey::from_arg(arg).map_err(gossip_err)?, false),
        None => ClusterKey::load_or_create(&state_dir.join("cluster.key")).map_err(gossip_err)?,
    };
    let key_hex = key.to_hex();
    let key_fingerprint = key.fingerprint();
    let direct_tls = DirectTls::new(&identity).map_err(|e| NodeError::Rejected(e.to_string()))?;
    let mut config = Config::new(identity, key);
    config.listen = parse_addrs(&net.listen, "listen")?;
    let config_listen = config.listen.clone();
    config.bootstrap = parse_addrs(&net.bootstrap, "bootstrap")?;
    config.mdns = net.mdns;
    config.relay.serve = net.relay;
    let (client, events, event_loop) = peer_gossip::new(config).map_err(gossip_err)?;
    tokio::spawn(event_loop.run());
    let listen = if net.listen.is_empty() {
        Vec::new()
    } else {
        client.listen_addrs().await.map_err(gossip_err)?;
        // A wildcard listener reports its interfaces one by one: give it a moment.
        tokio::time::sleep(Duration::from_millis(50)).await;
        client.listen_addrs().await.map_err(gossip_err)?
    };
    let cluster = Arc::new(Cluster {
        peer_id: client.local_peer_id(),
        client,
        listen: Mutex::new(listen),
        key_hex,
        key_fingerprint,
        key_created,
        paths: Arc::new(paths::Paths::new(net.relay_pull_rate)),
    });
    let peers = links::start(cluster.client.clone(), Arc::clone(&shared)).map_err(gossip_err)?;
    // Large pulls go over direct connections where holders offer them (`direct`): this node
    // serves them on the address it listens on, beside libp2p's listener.
    if let Some(ip) = config_listen.iter().find_map(peer_gossip::tcp_ip) {
        let served = direct::Direct::start(
            &cluster.client,
            direct_tls.clone(),
            std::net::SocketAddr::new(ip, net.direct_port),
            Arc::clone(&cluster.paths),
            Arc::clone(&shared),
            Arc::clone(&arena),
        );
        if let Err(e) = served {
            tracing::warn!("no direct connections served (large pulls from here use streams): {e}");
        }
    }
    let pulls = pull::start(
        cluster.client.clone(),
        Arc::clone(&shared),
        arena,
        Arc::clone(&cluster.paths),
        Some(Arc::new(direct::Dialer::new(direct_tls))),
    )
    .map_err(gossip_err)?;
    {
        let mut e = shared.engine.lock();
        e.io.peers = Some(peers);
        e.io.pulls = Some(pulls);
        let listen = addr_strings(&cluster.listen_addrs());
        e.handle(Event::Joined {
            listen,
            key_fingerprint: cluster.key_fingerprint.clone(),
        });
    }
    tokio::spawn(watch_events(events, Arc::clone(&shared)));
    tokio::spawn(tick(Arc::clone(&cluster), shared));
    Ok(cluster)
}

/// A peer id as the core holds it.
pub fn peer_id_of(p: &peer_gossip::PeerId) -> peer_node_core::ids::PeerId {
    match peer_node_core::ids::PeerId::from_bytes(&p.to_bytes()) {
        Ok(id) => id,
        Err(e) => unreachable!("libp2p and the core parse peer ids alike: {e}"),
    }
}

/// The libp2p peer id of a core peer id (all are valid: the core parses like libp2p).
pub fn libp2p_id_of(p: &peer_node_core::ids::PeerId) -> Option<peer_gossip::PeerId> {
    peer_gossip::PeerId::from_bytes(p.as_bytes()).ok()
}

fn addr_strings(addrs: &[Multiaddr]) -> Vec<String> {
    addrs.iter().map(|a| a.to_string()).collect()
}

fn core_load(l: Load) -> PeerLoad {
    PeerLoad {
        cpus_total: l.cpus_total,
        cpus_free: l.cpus_free,
        resources: l.resources,
        queue_len: l.queue_len,
        store_used: l.store_used,
        store_total: l.store_total,
        gpu_memory: l.gpu_memory,
    }
}

fn gossip_load(l: PeerLoad) -> Load {
    Load {
        cpus_total: l.cpus_total,
        cpus_free: l.cpus_free,
        resources: l.resources,
        queue_len: l.queue_len,
        store_used: l.store_used,
        store_total: l.store_total,
        gpu_memory: l.gpu_memory,
    }
}

fn network_view(n: peer_gossip::NetworkInfo, paths: &paths::Paths) -> NetworkView {
    let (relayed_pulls, relayed_pull_bytes) = paths.counters();
    let (direct_pull_bytes, direct_served_bytes) = paths.direct_counters();
    NetworkView {
        reachability: match n.reachability {
            Reachability::Public => "public",
            Reachability::Private => "private",
            Reachability::Unknown => "unknown",
        }
        .to_string(),
        external: addr_strings(&n.external_addresses),
        relays: n.relays.iter().map(|p| p.to_string()).collect(),
        relaying: n.relaying,
        reservations_served: n.reservations_served,
        circuits_served: n.circuits_served,
        relayed_bytes: n.relayed_bytes,
        relayed_pulls,
        relayed_pull_bytes,
        direct_pull_bytes,
        direct_served_bytes,
    }
}

async fn tick(cluster: Arc<Cluster>, shared: Arc<Shared>) {
    let mut interval = tokio::time::interval(TICK);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        let (load, announce) = {
            let mut e = shared.engine.lock();
            (e.core.load(), std::mem::take(&mut e.io.announce))
        };
        if let Err(e) = cluster.client.publish_load(gossip_load(load)) {
            tracing::debug!("publishing load: {e}");
        }
        if !announce.is_empty() {
            let objects = announce.into_iter().map(|(id, len)| (id.0, len)).collect();
            if let Err(e) = cluster.client.announce_objects(objects).await {
                tracing::debug!("announcing objects: {e}");
            }
        }
        let listen = if cluster.listen.lock().is_empty() {
            Vec::new()
        } else {
            match cluster.client.listen_addrs().await {
                Ok(addrs) => {
                    *cluster.listen.lock() = addrs.clone();
                    addr_strings(&addrs)
                }
                Err(_) => Vec::new(),
            }
        };
        let network = match cluster.client.network().await {
            Ok(n) => network_view(n, &cluster.paths),
            Err(_) => NetworkView::default(),
        };
        match cluster.client.view().await {
            Ok(view) => {
                cluster.paths.set_relayed(
                    view.iter()
                        .filter(|p| p.link.is_some_and(|l| l.kind == LinkKind::Relayed))
                        .map(|p| p.peer_id),
                );
                let peers = view
                    .into_iter()
                    .map(|p| PeerView {
                        peer: peer_id_of(&p.peer_id),
                        addresses: addr_strings(&p.addresses),
                        load: p.load.map(core_load),
                        objects: p.objects,
                        age: p.age,
                        link: p.link.map(|l| match l.kind {
                            LinkKind::Direct => PeerLink::Direct,
                            LinkKind::Relayed => PeerLink::Relayed,
                            LinkKind::HolePunched => PeerLink::HolePunched,
                        }),
                        rtt: p.link.and_then(|l| l.rtt),
                    })
                    .collect();
                shared.handle(Event::View {
                    listen,
                    peers,
                    network,
                });
            }
            Err(e) => {
                tracing::debug!("gossip stopped: {e}");
                return;
            }
        }
    }
}

/// Logs joins and failed dials; a peer that left the view is recovered from.
async fn watch_events(mut events: mpsc::Receiver<peer_gossip::Event>, shared: Arc<Shared>) {
    use peer_gossip::Event as Gossip;
    while let Some(event) = events.recv().await {
        match event {
            Gossip::PeerUp(p) => tracing::info!(peer = %p, "peer joined"),
            Gossip::PeerGone(p, why) => {
                tracing::info!(peer = %p, ?why, "peer left");
                let why = match why {
                    peer_gossip::GoneReason::Disconnected => "its connection closed",
                    peer_gossip::GoneReason::PingFailed => "it stopped answering pings",
                    peer_gossip::GoneReason::Expired => "nothing was heard from it",
                };
                shared.handle(Event::PeerGone {
                    peer: peer_id_of(&p),
                    why: why.to_string(),
                });
            }
            Gossip::DialFailed(e) => tracing::warn!("{e}"),
            Gossip::PeerLoad(..) | Gossip::ObjectsAnnounced(..) => {}
        }
    }
}
