//! Answers to read-only questions: resources, nodes, status (JSON).

use std::collections::BTreeMap;

use serde_json::{Value as Json, json};

use crate::cluster::best_address;
use crate::core::Core;
use crate::event::{PeerLink, PeerLoad, PeerView};
use crate::local::actors::ActorState;
use crate::local::gpus::GPU;
use crate::local::objects::ObjState;
use crate::local::tasks::TaskState;
use crate::local::workers::WorkerKind;
use crate::wire::local::{Query, Value};

/// Resources of a peer's load as (name → total, name → free).
fn peer_resources(load: &PeerLoad) -> (BTreeMap<String, f64>, BTreeMap<String, f64>) {
    let mut total = BTreeMap::from([("CPU".to_string(), load.cpus_total)]);
    let mut free = BTreeMap::from([("CPU".to_string(), load.cpus_free)]);
    for (name, t, f) in &load.resources {
        total.insert(name.clone(), *t);
        free.insert(name.clone(), *f);
    }
    (total, free)
}

fn add_into(sum: &mut BTreeMap<String, f64>, more: BTreeMap<String, f64>) {
    for (k, v) in more {
        *sum.entry(k).or_insert(0.0) += v.max(0.0);
    }
}

impl Core {
    fn peers(&self) -> Vec<PeerView> {
        self.cluster.peers(self.now)
    }

    /// The load this node publishes to the cluster.
    pub fn load(&self) -> PeerLoad {
        let total = self.total.to_map();
        let mut avail = self.available.to_map();
        if self.gpus.len() > 0 {
            // Free devices as placement must see them (fractions on one device).
            avail.insert(GPU.into(), self.gpus.placement_free());
        }
        let stats = self.store.stats();
        PeerLoad {
            cpus_total: total.get("CPU").copied().unwrap_or(0.0),
            cpus_free: avail.get("CPU").copied().unwrap_or(0.0).max(0.0),
            resources: total
                .iter()
                .filter(|(k, _)| k.as_str() != "CPU")
                .map(|(k, v)| (k.clone(), *v, avail.get(k).copied().unwrap_or(0.0).max(0.0)))
                .collect(),
            queue_len: self.tasks.ready_len() as u64,
            store_used: stats.used,
            store_total: stats.capacity,
            gpu_memory: self.config.gpu_memory,
        }
    }

    /// Answer a query as JSON.
    pub(crate) fn query(&self, q: Query) -> Json {
        match q {
            Query::ClusterResources => {
                let mut sum = self.total.to_map();
                for p in self.peers() {
                    if let Some(load) = &p.load {
                        add_into(&mut sum, peer_resources(load).0);
                    }
                }
                json!(sum)
            }
            Query::AvailableResources => {
                let mut sum: BTreeMap<String, f64> = self
                    .available
                    .to_map()
                    .into_iter()
                    .map(|(k, v)| (k, v.max(0.0)))
                    .collect();
                for p in self.peers() {
                    if let Some(load) = &p.load {
                        add_into(&mut sum, peer_resources(load).1);
                    }
                }
                json!(sum)
            }
            Query::Nodes => {
                let local_addr = self
                    .cluster
                    .joined_info()
                    .and_then(|(listen, _)| best_address(listen))
                    .unwrap_or_else(|| "127.0.0.1".into());
                let mut nodes = vec![json!({
                    "NodeID": self.node_name(),
                    "Alive": true,
                    "Local": true,
                    "Resources": self.total.to_map(),
                    "NodeManagerAddress": local_addr,
                    "ObjectStoreSocketName": self.config.store_path.to_string_lossy(),
                })];
                for p in self.peers() {
                    let resources = p
                        .load
                        .as_ref()
                        .map(|l| peer_resources(l).0)
                        .unwrap_or_default();
                    nodes.push(json!({
                        "NodeID": p.peer.to_string(),
                        "Alive": true,
                        "Local": false,
                        "Resources": resources,
                        "NodeManagerAddress": best_address(&p.addresses).unwrap_or_default(),
                        "AgeSeconds": p.age.as_secs_f64(),
                    }));
                }
                Json::Array(nodes)
            }
            Query::Status => self.status_json(),
            Query::List(what) => self.listing(what),
            // Answered through `gather` by whoever takes client queries;
            // here (a synchronous answer) only this node's part.
            Query::Cluster(what) => json!({"nodes": [self.listing(what)], "missing": []}),
        }
    }

    fn status_json(&self) -> Json {
        let mut task_workers = 0;
        let mut starting = 0;
        let mut blocked = 0;
        let mut actor_workers = 0;
        for w in self.workers.values() {
            match w.kind {
                WorkerKind::Task => task_workers += 1,
                WorkerKind::Actor(_) => actor_workers += 1,
            }
            starting += usize::from(w.conn.is_none());
            blocked += usize::from(w.blocked > 0);
        }
        let idle = self.workers.idle_count().min(task_workers);
        let running = self
            .tasks
            .values()
            .filter(|t| matches!(t.state, TaskState::Running(_)))
            .count();
        let alive_actors = self
            .actors
            .values()
            .filter(|a| !matches!(a.state, ActorState::Dead(_)))
            .count();
        let s = self.store.stats();
        let cluster = self.cluster.joined_info().map(|(listen, fingerprint)| {
            json!({
                "peer_id": self.node_name(),
                "listen": listen,
                "join": best_address(listen),
                "key_fingerprint": fingerprint,
            })
        });
        let peers: Vec<Json> = self
            .peers()
            .into_iter()
            .map(|p| {
                let l = p.load.clone().unwrap_or_default();
                json!({
                    "peer_id": p.peer.to_string(),
                    // A relayed peer is reached through its circuit, not its LAN address.
                    "address": if p.link == Some(PeerLink::Relayed) {
                        p.addresses.iter().find(|a| a.contains("/p2p-circuit")).cloned()
                            .or_else(|| best_address(&p.addresses))
                    } else {
                        best_address(&p.addresses)
                    },
                    "cpus_total": l.cpus_total, "cpus_free": l.cpus_free,
                    "resources": l.resources.iter().map(|(n, t, f)| json!({"name": n, "total": t, "free": f})).collect::<Vec<_>>(),
                    "queue": l.queue_len,
                    "store_used": l.store_used, "store_total": l.store_total,
                    "gpu_memory": l.gpu_memory,
                    "objects": p.objects,
                    "age_s": p.age.as_secs_f64(),
                    "has_load": p.load.is_some(),
                    "link": p.link.map(|l| l.as_str()),
                    "rtt_ms": p.rtt.map(|r| r.as_secs_f64() * 1000.0),
                })
            })
            .collect();
        let n = self.cluster.network();
        let network = self.cluster.joined_info().map(|_| {
            json!({
                "reachability": n.reachability, "external": n.external,
                "relays": n.relays, "relaying": n.relaying,
                "reservations_served": n.reservations_served,
                "circuits_served": n.circuits_served, "relayed_bytes": n.relayed_bytes,
                "relayed_pulls": n.relayed_pulls, "relayed_pull_bytes": n.relayed_pull_bytes,
                "direct_pull_bytes": n.direct_pull_bytes,
                "direct_served_bytes": n.direct_served_bytes,
            })
        });
        json!({
            "node_id": self.node_name(),
            "cluster": cluster,
            "network": network,
            "peers": peers,
            "daemon": self.config.daemon,
            "resources": {"total": self.total.to_map(), "available": self.available.to_map()},
            "gpus": {
                "devices": self.gpus.devices()
                    .map(|(id, free)| json!({"id": id, "free": free}))
                    .collect::<Vec<_>>(),
                "memory": self.config.gpu_memory,
            },
            "workers": {"task": task_workers, "idle": idle, "starting": starting,
                        "blocked": blocked, "actor": actor_workers},
            "tasks": {"queued": self.tasks.ready_len(), "running": running,
                      "pending_sample": self.tasks.values().take(5).map(|t| json!({
                          "task": t.spec.name, "state": format!("{:?}", t.state),
                          "missing_inputs": t.missing,
                      })).collect::<Vec<_>>(),
                      "pending": self.tasks.len(), "stats": self.stats},
            "placement": {
                "placing": self.cluster.placing(),
                "remote": self.tasks.values()
                    .filter(|t| t.state == TaskState::Remote).count(),
                "remote_by_peer": self.cluster.sent_by_peer(),
                "guests": self.tasks.values().filter(|t| t.guest.is_some()).count(),
                "waiting_for_resources": self.parked_tasks().into_iter()
                    .map(|(name, needs)| json!({"task": name, "needs": needs}))
                    .collect::<Vec<_>>(),
            },
            "actors": {"alive": alive_actors, "named": self.actors.named_count()},
            "objects": self.object_census(),
            "store": {"path": self.config.store_path.to_string_lossy(),
                      "capacity": s.capacity, "used": s.used, "objects": s.num_objects,
                      "pinned_objects": s.num_pinned, "pinned_bytes": s.pinned_bytes,
                      "largest_free": s.largest_free,
                      "spilled_now": self.objects.spilled_count(),
                      "spilled_bytes": s.spilled_bytes_total, "spilled_objects": s.spilled_objects_total,
                      "restored_bytes": s.restored_bytes_total,
                      "restored_objects": s.restored_objects_total,
                      "compactions": s.compactions,
                      "cached_copies": self.objects.cached_count(),
                      "pulling": self.pulls_json()},
        })
    }

    /// Pulls in flight, with their progress and rate so far.
    fn pulls_json(&self) -> Json {
        let pulls =
            self.cluster
                .pulls_in_progress()
                .into_iter()
                .map(|(id, len, received, since)| {
                    let seconds = self.now.saturating_duration_since(since).as_secs_f64();
                    let rate = if seconds > 0.0 {
                        received as f64 / seconds
                    } else {
                        0.0
                    };
                    json!({"object": id.to_string(), "bytes": len, "received": received,
                   "seconds": seconds, "bytes_per_s": rate})
                });
        Json::Array(pulls.collect())
    }

    /// What the object table holds, by kind, with bytes: objects owned here,
    /// refs borrowed from other peers, cached copies of theirs, and how many
    /// owned objects peers borrow.
    fn object_census(&self) -> Json {
        let (mut owned, mut owned_bytes) = (0u64, 0u64);
        let (mut borrowed, mut borrowed_bytes) = (0u64, 0u64);
        let (mut cached, mut cached_bytes) = (0u64, 0u64);
        for (id, e) in self.objects.iter_entries() {
            let bytes = match &e.state {
                ObjState::Ready(Value::Stored { len, .. }) => *len,
                ObjState::Ready(Value::Inline(b)) => b.len() as u64,
                _ => 0,
            };
            if e.cached {
                cached += 1;
                cached_bytes += bytes;
            } else if self.is_foreign(id.owner()) {
                borrowed += 1;
                borrowed_bytes += bytes;
            } else {
                owned += 1;
                owned_bytes += bytes;
            }
        }
        let (lent, _) = self.cluster.borrow_counts();
        json!({
            "count": self.objects.len(),
            "owned": owned, "owned_bytes": owned_bytes,
            "borrowed": borrowed, "borrowed_bytes": borrowed_bytes,
            "cached": cached, "cached_bytes": cached_bytes,
            "lent": lent,
        })
    }
}
