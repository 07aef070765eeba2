//! What `peer status` says about the runtime environments cached in a state
//! directory (`<state dir>/runtime_envs`, written by the Python workers that
//! set them up): each entry's kind, size, state and when it was last used.
//!
//! Every entry `NAME` has a description `NAME.json`; one being built has
//! `NAME.building` beside it instead, naming what is built and since when.

use std::path::Path;
use std::time::SystemTime;

use serde_json::{Value as Json, json};

/// The cached environments, least recently used first.
pub fn listing(state_dir: &Path) -> Json {
    let dir = state_dir.join("runtime_envs");
    let Ok(read) = std::fs::read_dir(&dir) else {
        return json!([]);
    };
    let mut out: Vec<(SystemTime, Json)> = Vec::new();
    for entry in read.flatten() {
        let path = entry.path();
        let file = entry.file_name().to_string_lossy().into_owned();
        let (name, building) = if let Some(n) = file.strip_suffix(".json") {
            (n.to_string(), false)
        } else if let Some(n) = file.strip_suffix(".building") {
            (n.to_string(), true)
        } else {
            continue;
        };
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        let Ok(mut meta) = serde_json::from_str::<Json>(&text) else {
            continue;
        };
        if !meta.is_object() {
            continue;
        }
        // Last used: when a worker last took it up (it touches the use lock).
        let used = std::fs::metadata(dir.join(format!("{name}.lock")))
            .and_then(|m| m.modified())
            .or_else(|_| entry.metadata().and_then(|m| m.modified()))
            .unwrap_or(SystemTime::UNIX_EPOCH);
        let ago = SystemTime::now()
            .duration_since(used)
            .map_or(0.0, |d| d.as_secs_f64());
        meta["name"] = json!(name);
        meta["state"] = json!(if building { "building" } else { "ready" });
        meta["last_used_s_ago"] = json!(ago);
        out.push((used, meta));
    }
    out.sort_by_key(|(t, _)| *t);
    Json::Array(out.into_iter().map(|(_, m)| m).collect())
}
