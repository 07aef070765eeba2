//! `peer list peers|tasks|actors|objects`: the rows every peer sent
//! (`Query::Cluster`), flattened, filtered (`--filter key=value`, or
//! `key!=value`) and shown as a table, like `ray list`.

use serde_json::Value as Json;

use peer_node_core::wire::local::Listing;

/// One `--filter`: a row's field must (or must not) read `value`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    key: String,
    value: String,
    equal: bool,
}

impl std::str::FromStr for Filter {
    type Err = String;
    fn from_str(s: &str) -> Result<Filter, String> {
        let (key, value, equal) = match s.split_once("!=") {
            Some((k, v)) => (k, v, false),
            None => match s.split_once('=') {
                Some((k, v)) => (k, v, true),
                None => return Err(format!("expected KEY=VALUE or KEY!=VALUE, got {s:?}")),
            },
        };
        let key = key.trim();
        if key.is_empty() {
            return Err(format!("no key in filter {s:?}"));
        }
        Ok(Filter {
            key: key.to_string(),
            value: value.trim().to_string(),
            equal,
        })
    }
}

impl Filter {
    fn keeps(&self, row: &Json) -> bool {
        let field = cell(&row[&self.key]);
        field.eq_ignore_ascii_case(&self.value) == self.equal
    }
}

/// The rows of a gathered answer (`{"nodes": [{"rows": …}], …}`) that pass every filter.
pub fn rows(gathered: &Json, filters: &[Filter]) -> Vec<Json> {
    gathered["nodes"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|n| n["rows"].as_array().cloned().unwrap_or_default())
        .filter(|r| filters.iter().all(|f| f.keeps(r)))
        .collect()
}

/// The peers that did not answer in time.
pub fn missing(gathered: &Json) -> Vec<String> {
    gathered["missing"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p.as_str().map(str::to_string))
        .collect()
}

/// A field as a table shows it.
fn cell(v: &Json) -> String {
    match v {
        Json::Null => "-".into(),
        Json::String(s) => s.clone(),
        Json::Array(a) => a.iter().map(cell).collect::<Vec<_>>().join(","),
        v => v.to_string(),
    }
}

/// The columns of a listing's table: (header, field).
fn columns(what: Listing) -> &'static [(&'static str, &'static str)] {
    match what {
        Listing::Peers => &[
            ("NODE_ID", "node_id"),
            ("ADDRESS", "address"),
            ("QUEUED", "queued"),
            ("RUNNING", "running"),
            ("STORE_USED", "store_used"),
            ("STORE_TOTAL", "store_total"),
            ("SPILLED", "spilled_now"),
            ("FINISHED", "tasks_finished"),
            ("FAILED", "tasks_failed"),
        ],
        Listing::Tasks => &[
            ("TASK_ID", "task_id"),
            ("NAME", "name"),
            ("TYPE", "type"),
            ("STATE", "state"),
            ("NODE_ID", "node_id"),
            ("WORKER_PID", "worker_pid"),
            ("ERROR", "error_message"),
        ],
        Listing::Actors => &[
            ("ACTOR_ID", "actor_id"),
            ("CLASS_NAME", "class_name"),
            ("NAME", "name"),
            ("STATE", "state"),
            ("NODE_ID", "node_id"),
            ("PID", "pid"),
            ("RESTARTS", "num_restarts"),
        ],
        Listing::Objects => &[
            ("OBJECT_ID", "object_id"),
            ("SIZE", "size"),
            ("REFERENCE_TYPE", "reference_type"),
            ("STATE", "state"),
            ("NODE_ID", "node_id"),
            ("COPIES", "copies"),
        ],
        Listing::Timeline | Listing::Overview => &[],
    }
}

/// The rows as an aligned text table. An error shows as its last line (the
/// exception; `--json` has the whole traceback).
pub fn table(what: Listing, rows: &[Json]) -> String {
    let cols = columns(what);
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            cols.iter()
                .map(|(_, field)| {
                    let c = cell(&r[*field]);
                    if *field == "error_message" {
                        c.lines()
                            .rev()
                            .find(|l| !l.trim().is_empty())
                            .unwrap_or("-")
                            .trim()
                            .to_string()
                    } else {
                        c
                    }
                })
                .collect()
        })
        .collect();
    let widths: Vec<usize> = cols
        .iter()
        .enumerate()
        .map(|(i, (h, _))| {
            cells
                .iter()
                .map(|r| r[i].chars().count())
                .chain([h.len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |vals: Vec<&str>| {
        let mut s = vals
            .iter()
            .zip(&widths)
            .map(|(v, w)| format!("{v:<w$}"))
            .collect::<Vec<_>>()
            .join("  ");
        s.truncate(s.trim_end().len());
        s
    };
    let mut out = vec![line(cols.iter().map(|(h, _)| *h).collect())];
    out.extend(
        cells
            .iter()
            .map(|r| line(r.iter().map(String::as_str).collect())),
    );
    out.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn filters_pick_rows_across_nodes_and_tables_align() {
        let g = json!({"nodes": [
            {"node": "A", "rows": [{"task_id": "1", "name": "f", "state": "FINISHED"}]},
            {"node": "B", "rows": [{"task_id": "2", "name": "g", "state": "FAILED",
                                    "error_message": "Traceback\n  boom\nValueError: bad\n"}]}],
            "missing": ["C"]});
        let failed = rows(&g, &["state=failed".parse().unwrap()]);
        assert_eq!(failed.len(), 1);
        assert_eq!(rows(&g, &["state!=FAILED".parse().unwrap()]).len(), 1);
        let t = table(Listing::Tasks, &failed);
        assert!(t.contains("ValueError: bad"), "{t}");
        assert!(t.starts_with("TASK_ID"));
        assert_eq!(missing(&g), vec!["C".to_string()]);
        assert!("nokey".parse::<Filter>().is_err());
    }
}
