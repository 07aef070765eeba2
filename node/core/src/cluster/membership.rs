//! Who this node is among its peers, and what it knows of them: owner tags,
//! each peer's incarnation, peers found gone, the functions each was sent,
//! and the last gossip view (for `peer status`, `nodes()` and the cluster's
//! resources).

use std::time::{Duration, Instant};

use rustc_hash::{FxHashMap, FxHashSet};

use crate::event::{NetworkView, PeerLink, PeerView};
use crate::ids::{FnId, OwnerTag, PeerId};

/// How long a gone peer is remembered as gone (tasks moved to it run again).
const GONE_MEMORY: Duration = Duration::from_secs(60);

/// This node's membership of its cluster.
#[derive(Debug)]
pub(super) struct Membership {
    /// This node's peer id (None: laptop mode).
    pub(super) me: Option<PeerId>,
    /// This run of the node (exchanged when a stream opens).
    pub(super) incarnation: u64,
    /// Each peer's incarnation as last heard.
    incarnations: FxHashMap<PeerId, u64>,
    /// Owner tags of known peers.
    tags: FxHashMap<OwnerTag, PeerId>,
    /// Peers found gone, and when (a task moved to one runs again).
    gone_at: FxHashMap<PeerId, Instant>,
    /// Functions each peer has been sent.
    fns_sent: FxHashMap<PeerId, FxHashSet<FnId>>,
    /// Where this node listens, and its cluster key's fingerprint (once joined).
    joined: Option<(Vec<String>, String)>,
    /// The other peers at the last view, and when that was.
    view: Vec<PeerView>,
    view_at: Option<Instant>,
    /// This node's reachability and relaying, as of the last view.
    network: NetworkView,
}

impl Membership {
    pub(super) fn new(me: Option<PeerId>, incarnation: u64) -> Self {
        Self {
            me,
            incarnation,
            incarnations: FxHashMap::default(),
            tags: FxHashMap::default(),
            gone_at: FxHashMap::default(),
            fns_sent: FxHashMap::default(),
            joined: None,
            view: Vec::new(),
            view_at: None,
            network: NetworkView::default(),
        }
    }

    /// The peer behind an owner tag, if it is known.
    pub(super) fn peer_of(&self, owner: OwnerTag) -> Option<PeerId> {
        self.tags.get(&owner).copied()
    }

    /// A message came from `peer`: its tag names it.
    pub(super) fn heard_from(&mut self, peer: PeerId) {
        self.tags.entry(OwnerTag::of_peer(&peer)).or_insert(peer);
    }

    /// `peer` is in the gossip view.
    pub(super) fn seen(&mut self, peer: PeerId) {
        self.tags.insert(OwnerTag::of_peer(&peer), peer);
    }

    /// Record the incarnation `peer` said it is; the one before, if any.
    pub(super) fn incarnation_of(&mut self, peer: PeerId, incarnation: u64) -> Option<u64> {
        self.incarnations.insert(peer, incarnation)
    }

    /// `peer` is gone as of `now` (forgetting peers gone long ago).
    pub(super) fn gone(&mut self, peer: PeerId, now: Instant) {
        self.gone_at
            .retain(|_, at| now.duration_since(*at) < GONE_MEMORY);
        self.gone_at.insert(peer, now);
        self.fns_sent.remove(&peer);
    }

    #[cfg(test)]
    pub(super) fn gone_count(&self) -> usize {
        self.gone_at.len()
    }

    /// `peer` came back as a new incarnation: it is not gone.
    pub(super) fn back(&mut self, peer: PeerId) {
        self.gone_at.remove(&peer);
    }

    pub(super) fn is_gone(&self, peer: &PeerId) -> bool {
        self.gone_at.contains_key(peer)
    }

    /// Whether `peer` was sent function `id`.
    pub(super) fn has_function(&self, peer: &PeerId, id: &FnId) -> bool {
        self.fns_sent.get(peer).is_some_and(|s| s.contains(id))
    }

    pub(super) fn sent_function(&mut self, peer: PeerId, id: FnId) {
        self.fns_sent.entry(peer).or_default().insert(id);
    }

    /// `peer` may be a new incarnation that has none of our functions.
    pub(super) fn forget_functions(&mut self, peer: &PeerId) {
        self.fns_sent.remove(peer);
    }

    pub(super) fn joined(&mut self, listen: Vec<String>, key_fingerprint: String) {
        self.joined = Some((listen, key_fingerprint));
    }

    pub(super) fn remember_view(
        &mut self,
        listen: Vec<String>,
        view: Vec<PeerView>,
        network: NetworkView,
        now: Instant,
    ) {
        self.network = network;
        if let Some((l, _)) = self.joined.as_mut()
            && !listen.is_empty()
        {
            *l = listen;
        }
        self.view = view;
        self.view_at = Some(now);
    }

    /// This node's reachability and relaying, as of the last view.
    pub(super) fn network(&self) -> &NetworkView {
        &self.network
    }

    /// Whether `peer` is reached only through a relay (as of the last view).
    pub(super) fn is_relayed(&self, peer: &PeerId) -> bool {
        self.view
            .iter()
            .any(|p| p.peer == *peer && p.link == Some(PeerLink::Relayed))
    }

    /// The known peers, with ages as of `now`.
    pub(super) fn peers(&self, now: Instant) -> Vec<PeerView> {
        let since = self
            .view_at
            .map_or(Duration::ZERO, |at| now.saturating_duration_since(at));
        self.view
            .iter()
            .cloned()
            .map(|mut p| {
                p.age += since;
                p
            })
            .collect()
    }

    /// Where this node listens and its key's fingerprint, once joined.
    pub(super) fn joined_info(&self) -> Option<(&[String], &str)> {
        self.joined
            .as_ref()
            .map(|(l, f)| (l.as_slice(), f.as_str()))
    }
}

/// An address other machines can use to join (prefers a non-loopback one).
pub(crate) fn best_address(addresses: &[String]) -> Option<String> {
    addresses
        .iter()
        .find(|a| !a.contains("/127.0.0.1/") && !a.contains("/::1/"))
        .or_else(|| addresses.first())
        .cloned()
}
