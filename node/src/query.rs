//! Answers to read-only questions: resources, nodes, status (JSON).

use serde_json::{Value as Json, json};

use crate::protocol::Query;
use crate::state::{ActorState, State, WorkerKind};

impl State {
    /// Answer a query as JSON.
    pub fn query(&self, q: Query) -> Json {
        match q {
            Query::ClusterResources => json!(self.total.to_map()),
            Query::AvailableResources => {
                let avail: serde_json::Map<String, Json> = self
                    .available
                    .to_map()
                    .into_iter()
                    .map(|(k, v)| (k, json!(v.max(0.0))))
                    .collect();
                Json::Object(avail)
            }
            Query::Nodes => json!([{
                "NodeID": self.node_id.to_string(),
                "Alive": true,
                "Resources": self.total.to_map(),
                "NodeManagerAddress": "127.0.0.1",
                "ObjectStoreSocketName": self.store.arena().path().to_string_lossy(),
            }]),
            Query::Status => self.status_json(),
        }
    }

    fn status_json(&self) -> Json {
        let mut task_workers = 0;
        let mut idle = self.idle.len();
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
        idle = idle.min(task_workers);
        let running = self
            .tasks
            .values()
            .filter(|t| matches!(t.state, crate::state::TaskState::Running(_)))
            .count();
        let alive_actors = self
            .actors
            .values()
            .filter(|a| !matches!(a.state, ActorState::Dead(_)))
            .count();
        let s = self.store.stats();
        json!({
            "node_id": self.node_id.to_string(),
            "daemon": self.config.daemon,
            "resources": {"total": self.total.to_map(), "available": self.available.to_map()},
            "workers": {"task": task_workers, "idle": idle, "starting": starting,
                        "blocked": blocked, "actor": actor_workers},
            "tasks": {"queued": self.ready.len(), "running": running,
                      "pending": self.tasks.len(), "stats": self.stats},
            "actors": {"alive": alive_actors, "named": self.named_actors.len()},
            "objects": {"count": self.objects.len()},
            "store": {"path": self.store.arena().path().to_string_lossy(),
                      "capacity": s.capacity, "used": s.used, "objects": s.num_objects,
                      "pinned_objects": s.num_pinned, "pinned_bytes": s.pinned_bytes,
                      "largest_free": s.largest_free,
                      "spilled_now": self.spilled.len(),
                      "spilled_bytes": s.spilled_bytes_total, "spilled_objects": s.spilled_objects_total,
                      "restored_bytes": s.restored_bytes_total,
                      "restored_objects": s.restored_objects_total,
                      "compactions": s.compactions},
        })
    }
}
