//! The node as a member of a multi-peer cluster: starts the gossip layer
//! (`peer-gossip`), publishes this node's load, and keeps a snapshot of the
//! other peers for `peer status`, `nodes()` and the cluster's resources.
//!
//! - `start` loads (or creates) the identity and the cluster key in the state
//!   directory, starts listening, and spawns the gossip event loop;
//! - the node's peer links (`links`) start on the same gossip client;
//! - a tick task publishes the local load and refreshes the snapshot and the
//!   placement view a few times a second; an event task logs joins,
//!   departures and failed dials.
//!
//! Laptop mode never calls `start`: no network port is opened.

use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use peer_gossip::{ClusterKey, Config, Event, Identity, Load, Multiaddr, PeerId};
use tokio::sync::mpsc;

use crate::error::NodeError;
use crate::node::Shared;
use crate::state::State;

/// How often the local load is published, the snapshot and the placement view
/// refreshed, and late bid rounds and lookups given up on.
const TICK: Duration = Duration::from_millis(250);
/// Objects at least this large are announced to the cluster (placement will
/// prefer their holders; smaller ones are cheaper to move than to track).
pub const ANNOUNCE_MIN_BYTES: u64 = 1 << 20;
/// Most announcements waiting for the next tick (the gossip layer bounds what it sends too).
pub const ANNOUNCE_QUEUE_MAX: usize = 8192;

/// What a node needs to join a cluster.
#[derive(Debug, Clone, Default)]
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
}

/// One other peer as this node last heard of it.
#[derive(Debug, Clone)]
pub struct PeerSnapshot {
    pub peer_id: String,
    pub addresses: Vec<String>,
    pub load: Option<Load>,
    pub objects: usize,
    /// Age of the information when the snapshot was taken.
    pub age: Duration,
}

/// The cluster membership of a running node.
pub struct Cluster {
    pub client: peer_gossip::Client,
    pub peer_id: PeerId,
    /// Where this node listens, as of the last refresh (a wildcard listen
    /// address reports one address per interface, one after another).
    pub listen: Mutex<Vec<Multiaddr>>,
    pub key_hex: String,
    pub key_fingerprint: String,
    /// The key was created just now (print how others join).
    pub key_created: bool,
    /// Other peers at the last refresh, and when that was.
    pub peers: Mutex<(Vec<PeerSnapshot>, Instant)>,
}

impl Cluster {
    /// Where this node listens.
    pub fn listen_addrs(&self) -> Vec<Multiaddr> {
        self.listen.lock().clone()
    }

    /// The known peers, with ages as of now.
    pub fn peers(&self) -> Vec<PeerSnapshot> {
        let (peers, at) = &*self.peers.lock();
        let since = at.elapsed();
        peers
            .iter()
            .cloned()
            .map(|mut p| {
                p.age += since;
                p
            })
            .collect()
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
) -> Result<Arc<Cluster>, NodeError> {
    let gossip_err = |e: peer_gossip::GossipError| NodeError::Rejected(e.to_string());
    let identity = Identity::load_or_create(state_dir).map_err(gossip_err)?;
    let (key, key_created) = match &net.key {
        Some(arg) => (ClusterKey::from_arg(arg).map_err(gossip_err)?, false),
        None => ClusterKey::load_or_create(&state_dir.join("cluster.key")).map_err(gossip_err)?,
    };
    let key_hex = key.to_hex();
    let key_fingerprint = key.fingerprint();
    let mut config = Config::new(identity, key);
    config.listen = parse_addrs(&net.listen, "listen")?;
    config.bootstrap = parse_addrs(&net.bootstrap, "bootstrap")?;
    config.mdns = net.mdns;
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
        peers: Mutex::new((Vec::new(), Instant::now())),
    });
    let out = crate::links::start(cluster.client.clone(), Arc::clone(&shared))
        .map_err(NodeError::Rejected)?;
    let pull_jobs = crate::pull::start(cluster.client.clone(), Arc::clone(&shared))
        .map_err(NodeError::Rejected)?;
    {
        let mut st = shared.state.lock();
        st.remote.out = Some(out);
        st.remote.pull_jobs = Some(pull_jobs);
        st.remote.me = Some(cluster.peer_id);
    }
    tokio::spawn(watch_events(events, Arc::clone(&shared)));
    tokio::spawn(tick(Arc::clone(&cluster), shared));
    Ok(cluster)
}

/// The load this node publishes.
pub fn local_load(st: &State) -> Load {
    let total = st.total.to_map();
    let avail = st.available.to_map();
    let stats = st.store.stats();
    Load {
        cpus_total: total.get("CPU").copied().unwrap_or(0.0),
        cpus_free: avail.get("CPU").copied().unwrap_or(0.0).max(0.0),
        resources: total
            .iter()
            .filter(|(k, _)| k.as_str() != "CPU")
            .map(|(k, v)| (k.clone(), *v, avail.get(k).copied().unwrap_or(0.0).max(0.0)))
            .collect(),
        queue_len: st.ready.len() as u64,
        store_used: stats.used,
        store_total: stats.capacity,
    }
}

async fn tick(cluster: Arc<Cluster>, shared: Arc<Shared>) {
    let mut interval = tokio::time::interval(TICK);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        let (load, announce) = {
            let mut st = shared.state.lock();
            (local_load(&st), std::mem::take(&mut st.to_announce))
        };
        if let Err(e) = cluster.client.publish_load(load) {
            tracing::debug!("publishing load: {e}");
        }
        if !announce.is_empty() {
            let objects = announce.into_iter().map(|(id, len)| (id.0, len)).collect();
            if let Err(e) = cluster.client.announce_objects(objects).await {
                tracing::debug!("announcing objects: {e}");
            }
        }
        if !cluster.listen.lock().is_empty()
            && let Ok(addrs) = cluster.client.listen_addrs().await
        {
            *cluster.listen.lock() = addrs;
        }
        match cluster.client.view().await {
            Ok(view) => {
                {
                    let loads = view
                        .iter()
                        .filter_map(|p| p.load.clone().map(|l| (p.peer_id, l)))
                        .collect();
                    let mut st = shared.state.lock();
                    st.update_view(loads);
                    let now = Instant::now();
                    st.expire_placement(now);
                    st.expire_lookups(now);
                    st.refetch_due(now);
                    st.audit_remote_tasks(now);
                }
                let peers = view
                    .into_iter()
                    .map(|p| PeerSnapshot {
                        peer_id: p.peer_id.to_string(),
                        addresses: p.addresses.iter().map(|a| a.to_string()).collect(),
                        load: p.load,
                        objects: p.objects,
                        age: p.age,
                    })
                    .collect();
                *cluster.peers.lock() = (peers, Instant::now());
            }
            Err(e) => {
                tracing::debug!("gossip stopped: {e}");
                return;
            }
        }
    }
}

/// Logs joins and failed dials; a peer that left the view is recovered from.
async fn watch_events(mut events: mpsc::Receiver<Event>, shared: Arc<Shared>) {
    while let Some(event) = events.recv().await {
        match event {
            Event::PeerUp(p) => tracing::info!(peer = %p, "peer joined"),
            Event::PeerGone(p, why) => {
                tracing::info!(peer = %p, ?why, "peer left");
                let why = match why {
                    peer_gossip::GoneReason::Disconnected => "its connection closed",
                    peer_gossip::GoneReason::PingFailed => "it stopped answering pings",
                    peer_gossip::GoneReason::Expired => "nothing was heard from it",
                };
                shared.state.lock().peer_gone(p, why);
            }
            Event::DialFailed(e) => tracing::warn!("{e}"),
            Event::PeerLoad(..) | Event::ObjectsAnnounced(..) => {}
        }
    }
}
