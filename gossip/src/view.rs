//! The bounded, possibly stale view of the other peers: per peer its latest [`Load`], its
//! addresses, the objects it announced, and when it was last heard from.
//!
//! - A message is applied only if its sequence number is newer than the last one accepted from
//!   that peer (also remembered for a while after the peer leaves, so replays cannot revive it).
//! - An entry expires when nothing was heard from the peer for `expire_after`.
//! - A closed connection or failed ping makes an entry *suspect*; it is removed after a short
//!   grace unless a newer message arrives meanwhile (the peer may still be reachable through
//!   others, or idle connections may simply have been closed).
//! - At most `max_peers` entries and `max_objects_per_peer` objects per entry (oldest dropped).

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use libp2p::{Multiaddr, PeerId};

use crate::messages::{Body, Envelope, Load, ObjectId};

/// Most addresses kept per peer.
pub(crate) const MAX_ADDRESSES: usize = 8;

/// One peer as the view knows it, in a [`view`](crate::Client::view) snapshot.
#[derive(Debug, Clone, PartialEq)]
pub struct PeerInfo {
    /// The peer.
    pub peer_id: PeerId,
    /// Addresses it listens on, as it reported them (may be empty if not connected directly).
    pub addresses: Vec<Multiaddr>,
    /// Its latest load, `None` until the first load message arrives.
    pub load: Option<Load>,
    /// How many objects it announced that the view still remembers.
    pub objects: usize,
    /// Time since the last message from it.
    pub age: Duration,
    /// The best connection to it (direct, relayed or hole punched, with the ping round trip);
    /// `None` while it is heard of only through others.
    pub link: Option<crate::Link>,
}

/// Why a peer left the view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GoneReason {
    /// Its last connection closed and nothing was heard from it since.
    Disconnected,
    /// Pings to it failed and nothing was heard from it since.
    PingFailed,
    /// Nothing was heard from it for the expiry period.
    Expired,
}

/// Outcome of applying a message to the view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Applied {
    /// The sender was not in the view and now is.
    New,
    /// The sender's entry was updated.
    Updated,
    /// Sequence number not newer than the last accepted one: ignored.
    Stale,
    /// The view is full: ignored.
    Full,
}

/// Limits and timings of a [`View`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub max_peers: usize,
    pub max_objects_per_peer: usize,
    pub expire_after: Duration,
    pub suspect_grace: Duration,
}

#[derive(Debug)]
struct Entry {
    last_seq: u64,
    load: Option<Load>,
    addresses: Vec<Multiaddr>,
    objects: HashMap<ObjectId, u64>,
    object_order: VecDeque<ObjectId>,
    last_heard: Instant,
    suspect: Option<(Instant, GoneReason)>,
}

/// See the module documentation.
#[derive(Debug)]
pub(crate) struct View {
    limits: Limits,
    entries: HashMap<PeerId, Entry>,
    /// Last accepted sequence number of peers that left, bounded by `max_peers`.
    retired: HashMap<PeerId, (u64, Instant)>,
}

impl View {
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            entries: HashMap::new(),
            retired: HashMap::new(),
        }
    }

    /// Applies a validated message from `peer`.
    pub fn apply(&mut self, peer: PeerId, envelope: Envelope, now: Instant) -> Applied {
        let outcome = match self.entries.get_mut(&peer) {
            Some(entry) if envelope.seq <= entry.last_seq => return Applied::Stale,
            Some(entry) => {
                entry.last_seq = envelope.seq;
                entry.last_heard = now;
                entry.suspect = None;
                Applied::Updated
            }
            None => {
                if self
                    .retired
                    .get(&peer)
                    .is_some_and(|(seq, _)| envelope.seq <= *seq)
                {
                    return Applied::Stale;
                }
                if self.entries.len() >= self.limits.max_peers {
                    return Applied::Full;
                }
                self.retired.remove(&peer);
                self.entries.insert(
                    peer,
                    Entry {
                        last_seq: envelope.seq,
                        load: None,
                        addresses: Vec::new(),
                        objects: HashMap::new(),
                        object_order: VecDeque::new(),
                        last_heard: now,
                        suspect: None,
                    },
                );
                Applied::New
            }
        };
        let max_objects = self.limits.max_objects_per_peer;
        let Some(entry) = self.entries.get_mut(&peer) else {
            return outcome;
        };
        match envelope.body {
            Body::Load(load) => entry.load = Some(load),
            Body::Objects(announcements) => {
                for (id, size) in announcements.objects {
                    if entry.objects.insert(id, size).is_none() {
                        entry.object_order.push_back(id);
                    }
                }
                while entry.object_order.len() > max_objects {
                    if let Some(oldest) = entry.object_order.pop_front() {
                        entry.objects.remove(&oldest);
                    }
                }
            }
            // Routing news for the swarm and Kademlia: the event loop applies it.
            Body::Addresses(_) => {}
        }
        outcome
    }

    /// Replaces the addresses of a peer already in the view (at most [`MAX_ADDRESSES`]).
    pub fn set_addresses(&mut self, peer: &PeerId, addresses: &[Multiaddr]) {
        if let Some(entry) = self.entries.get_mut(peer) {
            entry.addresses = addresses.iter().take(MAX_ADDRESSES).cloned().collect();
        }
    }

    /// Marks a peer suspect (connection closed, ping failed): removed by [`expire`](Self::expire)
    /// after the grace period unless a newer message arrives first.
    pub fn suspect(&mut self, peer: &PeerId, reason: GoneReason, now: Instant) {
        if let Some(entry) = self.entries.get_mut(peer) {
            entry.suspect.get_or_insert((now, reason));
        }
    }

    /// Removes expired and long-suspect entries, returning who left and why. `pace` stretches
    /// both periods when peers publish less often in a large cluster (see `Config::pace_peers`).
    pub fn expire(&mut self, now: Instant, pace: u32) -> Vec<(PeerId, GoneReason)> {
        let limits = Limits {
            expire_after: self.limits.expire_after * pace,
            suspect_grace: self.limits.suspect_grace * pace,
            ..self.limits
        };
        let gone: Vec<(PeerId, GoneReason)> = self
            .entries
            .iter()
            .filter_map(|(peer, entry)| match entry.suspect {
                Some((since, reason))
                    if now.saturating_duration_since(since) >= limits.suspect_grace =>
                {
                    Some((*peer, reason))
                }
                _ if now.saturating_duration_since(entry.last_heard) > limits.expire_after => {
                    Some((*peer, GoneReason::Expired))
                }
                _ => None,
            })
            .collect();
        for (peer, _) in &gone {
            self.remove(peer, now);
        }
        gone
    }

    /// Removes a peer, remembering its last sequence number. Returns whether it was there.
    pub fn remove(&mut self, peer: &PeerId, now: Instant) -> bool {
        let Some(entry) = self.entries.remove(peer) else {
            return false;
        };
        if self.retired.len() >= self.limits.max_peers {
            let oldest = self
                .retired
                .iter()
                .min_by_key(|(_, (_, at))| *at)
                .map(|(p, _)| *p);
            if let Some(oldest) = oldest {
                self.retired.remove(&oldest);
            }
        }
        self.retired.insert(*peer, (entry.last_seq, now));
        true
    }

    pub fn contains(&self, peer: &PeerId) -> bool {
        self.entries.contains_key(peer)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// A copy of every entry, sorted by peer id.
    pub fn snapshot(&self, now: Instant) -> Vec<PeerInfo> {
        let mut peers: Vec<PeerInfo> = self
            .entries
            .iter()
            .map(|(peer, entry)| PeerInfo {
                peer_id: *peer,
                addresses: entry.addresses.clone(),
                load: entry.load.clone(),
                objects: entry.objects.len(),
                age: now.saturating_duration_since(entry.last_heard),
                link: None,
            })
            .collect();
        peers.sort_by_key(|p| p.peer_id);
        peers
    }

    /// Peers that announced `object`, sorted by peer id.
    pub fn holders(&self, object: &ObjectId) -> Vec<PeerId> {
        let mut holders: Vec<PeerId> = self
            .entries
            .iter()
            .filter(|(_, entry)| entry.objects.contains_key(object))
            .map(|(peer, _)| *peer)
            .collect();
        holders.sort();
        holders
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::messages::ObjectAnnouncements;

    const SEC: Duration = Duration::from_secs(1);

    fn view(max_peers: usize, max_objects: usize) -> View {
        View::new(Limits {
            max_peers,
            max_objects_per_peer: max_objects,
            expire_after: 5 * SEC,
            suspect_grace: SEC,
        })
    }

    fn load(queue_len: u64) -> Envelope {
        Envelope {
            seq: 0,
            body: Body::Load(Load {
                queue_len,
                ..Load::default()
            }),
        }
    }

    fn at(seq: u64, mut env: Envelope) -> Envelope {
        env.seq = seq;
        env
    }

    fn objects(ids: &[u8]) -> Body {
        Body::Objects(ObjectAnnouncements {
            objects: ids.iter().map(|i| ([*i; 20], 1)).collect(),
        })
    }

    #[test]
    fn sequence_numbers_order_messages_even_after_removal() {
        let t0 = Instant::now();
        let mut v = view(4, 4);
        let p = PeerId::random();
        assert_eq!(v.apply(p, at(10, load(1)), t0), Applied::New);
        assert_eq!(v.apply(p, at(10, load(2)), t0), Applied::Stale);
        assert_eq!(v.apply(p, at(9, load(3)), t0), Applied::Stale);
        assert_eq!(v.apply(p, at(11, load(4)), t0), Applied::Updated);
        assert_eq!(v.snapshot(t0)[0].load.as_ref().unwrap().queue_len, 4);
        assert!(v.remove(&p, t0));
        assert_eq!(
            v.apply(p, at(11, load(5)), t0),
            Applied::Stale,
            "replay after leaving"
        );
        assert_eq!(v.apply(p, at(12, load(6)), t0), Applied::New);
    }

    #[test]
    fn bounded_peers_objects_and_addresses() {
        let t0 = Instant::now();
        let mut v = view(2, 3);
        let (a, b, c) = (PeerId::random(), PeerId::random(), PeerId::random());
        v.apply(a, at(1, load(0)), t0);
        v.apply(b, at(1, load(0)), t0);
        assert_eq!(v.apply(c, at(1, load(0)), t0), Applied::Full);
        assert_eq!(v.len(), 2);

        v.apply(
            a,
            Envelope {
                seq: 2,
                body: objects(&[1, 2, 3]),
            },
            t0,
        );
        v.apply(
            a,
            Envelope {
                seq: 3,
                body: objects(&[2, 4]),
            },
            t0,
        );
        assert_eq!(
            v.holders(&[1; 20]),
            Vec::<PeerId>::new(),
            "oldest object dropped"
        );
        assert_eq!(v.holders(&[4; 20]), vec![a]);
        let info = v.snapshot(t0).into_iter().find(|i| i.peer_id == a).unwrap();
        assert_eq!(info.objects, 3);

        let addr: Multiaddr = "/ip4/127.0.0.1/tcp/1".parse().unwrap();
        v.set_addresses(&a, &vec![addr; 20]);
        v.set_addresses(&c, &[]);
        let info = v.snapshot(t0).into_iter().find(|i| i.peer_id == a).unwrap();
        assert_eq!(info.addresses.len(), MAX_ADDRESSES);
    }

    #[test]
    fn expiry_and_suspicion() {
        let t0 = Instant::now();
        let mut v = view(8, 8);
        let (quiet, closed, revived) = (PeerId::random(), PeerId::random(), PeerId::random());
        for p in [quiet, closed, revived] {
            v.apply(p, at(1, load(0)), t0);
        }
        v.suspect(&closed, GoneReason::Disconnected, t0);
        v.suspect(&revived, GoneReason::PingFailed, t0);
        v.apply(revived, at(2, load(0)), t0 + SEC / 2);
        v.apply(closed, at(1, load(0)), t0 + SEC / 2); // stale: does not clear suspicion
        assert_eq!(v.expire(t0 + SEC / 2, 1), vec![]);
        assert_eq!(
            v.expire(t0 + SEC, 1),
            vec![(closed, GoneReason::Disconnected)]
        );
        let age = |v: &View, p| {
            v.snapshot(t0 + 2 * SEC)
                .into_iter()
                .find(|i| i.peer_id == p)
                .unwrap()
                .age
        };
        assert_eq!(age(&v, quiet), 2 * SEC);
        assert_eq!(age(&v, revived), 2 * SEC - SEC / 2);
        let gone = v.expire(t0 + 5 * SEC + SEC / 4, 1);
        assert_eq!(gone, vec![(quiet, GoneReason::Expired)]);
        assert!(v.contains(&revived));
        // Paced at 2, the revived peer (heard at 0.5 s) may stay silent for 10 s.
        assert_eq!(v.expire(t0 + 10 * SEC, 2), vec![]);
        assert_eq!(
            v.expire(t0 + 11 * SEC, 2),
            vec![(revived, GoneReason::Expired)]
        );
        assert_eq!(v.len(), 0);
    }
}
