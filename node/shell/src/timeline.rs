//! Chrome trace events (`chrome://tracing`, Perfetto) from the runs and
//! spans every peer kept (`Listing::Timeline`, gathered cluster-wide):
//! one process per peer, one thread row per worker process, an `X`
//! (complete) event per task run, get, put and transfer.

use std::collections::BTreeMap;

use serde_json::{Value as Json, json};

/// The trace of a gathered timeline (`{"nodes": [...]}`), as a JSON array
/// of trace events, sorted by time within each row.
pub fn chrome_trace(gathered: &Json) -> Json {
    let mut events = Vec::new();
    let nodes = gathered["nodes"].as_array().cloned().unwrap_or_default();
    for (i, node) in nodes.iter().enumerate() {
        let pid = i + 1;
        let name = node["node"].as_str().unwrap_or("?");
        events.push(json!({"name": "process_name", "ph": "M", "pid": pid,
                           "args": {"name": format!("peer {name}")}}));
        let mut threads: BTreeMap<u64, &str> = BTreeMap::new();
        for r in node["rows"]["runs"].as_array().into_iter().flatten() {
            let tid = r["worker_pid"].as_u64().unwrap_or(0);
            threads.insert(tid, "worker");
            let (start, end) = times(r);
            events.push(json!({
                "name": r["name"], "cat": r["type"], "ph": "X",
                "ts": start, "dur": end.saturating_sub(start),
                "pid": pid, "tid": tid,
                "args": {"task_id": r["task_id"], "state": r["state"], "node_id": name,
                         "worker_pid": tid, "actor_id": r["actor_id"]},
            }));
        }
        for s in node["rows"]["spans"].as_array().into_iter().flatten() {
            let tid = s["pid"].as_u64().unwrap_or(0);
            threads.entry(tid).or_insert("process");
            let (start, end) = times(s);
            let kind = s["kind"].as_str().unwrap_or("?");
            let amount = if kind == "get" { "objects" } else { "bytes" };
            events.push(json!({
                "name": kind, "cat": kind, "ph": "X",
                "ts": start, "dur": end.saturating_sub(start),
                "pid": pid, "tid": tid,
                "args": {amount: s["amount"], "ok": s["ok"], "node_id": name},
            }));
        }
        for (tid, what) in threads {
            let label = if tid == 0 {
                "node".to_string()
            } else {
                format!("{what} {tid}")
            };
            events.push(
                json!({"name": "thread_name", "ph": "M", "pid": pid, "tid": tid,
                               "args": {"name": label}}),
            );
        }
    }
    Json::Array(events)
}

fn times(r: &Json) -> (u64, u64) {
    (
        r["start_time_us"].as_u64().unwrap_or(0),
        r["end_time_us"].as_u64().unwrap_or(0),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_process_per_peer_one_row_per_worker() {
        let g = json!({"nodes": [
            {"node": "A", "rows": {"runs": [
                {"name": "f", "type": "NORMAL_TASK", "worker_pid": 11, "start_time_us": 5, "end_time_us": 9},
                {"name": "f", "type": "NORMAL_TASK", "worker_pid": 12, "start_time_us": 5, "end_time_us": 7}],
             "spans": [{"kind": "get", "pid": 3, "start_time_us": 1, "end_time_us": 10, "amount": 2}]}},
            {"node": "B", "rows": {"runs": [], "spans": []}}]});
        let t = chrome_trace(&g);
        let ev = t.as_array().unwrap();
        let x: Vec<&Json> = ev.iter().filter(|e| e["ph"] == "X").collect();
        assert_eq!(x.len(), 3);
        assert_eq!(x[0]["dur"], 4);
        assert_eq!(x[0]["tid"], 11);
        let procs = ev.iter().filter(|e| e["name"] == "process_name").count();
        assert_eq!(procs, 2);
        let rows = ev.iter().filter(|e| e["name"] == "thread_name").count();
        assert_eq!(rows, 3);
    }
}
