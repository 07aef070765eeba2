//! The experiments behind the README: grids of runs (in parallel), their CSV, and the markdown
//! tables (ratios to the omniscient scheduler; p99 against gossip staleness).

use std::fmt::Write as _;
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::config::{Policy, SimConfig};
use crate::dist::Dist;
use crate::error::SimError;
use crate::stats::{Report, Summary};

/// Runs every config, `threads` at a time; reports come back in the order of `configs`.
/// `progress` is called after each run.
pub fn run_all(
    configs: &[SimConfig],
    threads: usize,
    progress: &(dyn Fn(&Report) + Sync),
) -> Result<Vec<Report>, SimError> {
    for c in configs {
        c.validate()?;
    }
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<Result<Report, SimError>>>> =
        Mutex::new((0..configs.len()).map(|_| None).collect());
    std::thread::scope(|s| {
        for _ in 0..threads.clamp(1, configs.len().max(1)) {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(cfg) = configs.get(i) else { break };
                    let report = crate::simulate(cfg);
                    if let Ok(r) = &report {
                        progress(r);
                    }
                    results.lock().unwrap_or_else(|e| e.into_inner())[i] = Some(report);
                }
            });
        }
    });
    results
        .into_inner()
        .unwrap_or_else(|e| e.into_inner())
        .into_iter()
        .map(|r| {
            r.unwrap_or_else(|| {
                Err(SimError::BadSetting {
                    name: "threads",
                    why: "a run did not finish".into(),
                })
            })
        })
        .collect()
}

/// The load sweep: every policy at every load, for every duration distribution.
pub fn load_grid(
    base: &SimConfig,
    policies: &[Policy],
    loads: &[f64],
    durations: &[Dist],
) -> Vec<SimConfig> {
    let mut grid = Vec::new();
    for duration in durations {
        for &load in loads {
            for &policy in policies {
                grid.push(SimConfig {
                    duration: duration.clone(),
                    load,
                    policy,
                    ..base.clone()
                });
            }
        }
    }
    grid
}

/// The staleness sweep: every policy at every gossip period.
pub fn staleness_grid(base: &SimConfig, policies: &[Policy], periods_ms: &[f64]) -> Vec<SimConfig> {
    let mut grid = Vec::new();
    for &period_ms in periods_ms {
        for &policy in policies {
            let gossip = crate::config::Gossip {
                period_ms,
                ..base.gossip
            };
            grid.push(SimConfig {
                gossip,
                policy,
                ..base.clone()
            });
        }
    }
    grid
}

/// Writes the reports as CSV.
pub fn write_csv(path: &Path, reports: &[Report]) -> Result<(), SimError> {
    let mut text = String::from(Report::CSV_HEADER);
    text.push('\n');
    for r in reports {
        text.push_str(&r.csv_row());
        text.push('\n');
    }
    std::fs::write(path, text).map_err(|source| SimError::Write {
        path: path.to_owned(),
        source,
    })
}

/// Reads reports back from a CSV written by [`write_csv`] (to redraw a chart without rerunning).
pub fn read_csv(path: &Path) -> Result<Vec<Report>, SimError> {
    let text = std::fs::read_to_string(path).map_err(|source| SimError::Read {
        path: path.to_owned(),
        source,
    })?;
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap_or("").split(',').collect();
    let mut reports = Vec::new();
    for (n, line) in lines.enumerate().filter(|(_, l)| !l.is_empty()) {
        let bad = |why: String| SimError::BadLine {
            path: path.to_owned(),
            line: n + 2,
            why,
        };
        let cells: Vec<&str> = line.split(',').collect();
        let cell = |name: &str| -> Result<&str, SimError> {
            let i = header
                .iter()
                .position(|h| *h == name)
                .ok_or_else(|| bad(format!("no column {name}")))?;
            cells
                .get(i)
                .copied()
                .ok_or_else(|| bad(format!("no value for {name}")))
        };
        let num = |name: &str| -> Result<f64, SimError> {
            cell(name)?
                .parse::<f64>()
                .map_err(|_| bad(format!("{name} is not a number")))
        };
        let summary = |prefix: &str| -> Result<Summary, SimError> {
            Ok(Summary {
                mean: num(&format!(
                    "{prefix}_mean{}",
                    if prefix == "util" { "" } else { "_ms" }
                ))?,
                p50: num(&format!(
                    "{prefix}_p50{}",
                    if prefix == "util" { "" } else { "_ms" }
                ))?,
                p95: if prefix == "util" {
                    0.0
                } else {
                    num(&format!("{prefix}_p95_ms"))?
                },
                p99: num(&format!(
                    "{prefix}_p99{}",
                    if prefix == "util" { "" } else { "_ms" }
                ))?,
                max: if prefix == "util" {
                    num("util_max")?
                } else {
                    0.0
                },
            })
        };
        let name = cell("policy")?;
        let policy = Policy::ALL
            .iter()
            .find(|p| p.name() == name)
            .ok_or_else(|| bad(format!("unknown policy {name}")))?;
        reports.push(Report {
            policy: policy.name(),
            duration: cell("duration")?.to_owned(),
            load: num("load")?,
            peers: num("peers")? as usize,
            tasks: num("tasks")? as u64,
            measured_jobs: num("measured_jobs")? as u64,
            gossip_period_ms: num("gossip_period_ms")?,
            job: summary("job")?,
            wait: summary("wait")?,
            messages_per_task: num("messages_per_task")?,
            gossip_per_task: num("gossip_messages_per_task")?,
            utilisation: summary("util")?,
            max_queue: num("max_queue")? as u32,
            simulated_s: num("simulated_s")?,
            events: num("events")? as u64,
            wall_s: num("wall_s")?,
        });
    }
    Ok(reports)
}

/// Distinct values in first-seen order.
fn distinct<T: PartialEq + Clone>(items: impl Iterator<Item = T>) -> Vec<T> {
    let mut out: Vec<T> = Vec::new();
    for item in items {
        if !out.contains(&item) {
            out.push(item);
        }
    }
    out
}

/// Markdown tables, one per duration distribution: each policy's median and p99 job response
/// time as a ratio to the omniscient scheduler's at the same load.
pub fn ratio_tables(reports: &[Report]) -> String {
    let mut md = String::new();
    for duration in distinct(reports.iter().map(|r| r.duration.clone())) {
        let rows: Vec<&Report> = reports.iter().filter(|r| r.duration == duration).collect();
        let loads = distinct(rows.iter().map(|r| r.load.to_bits()));
        let _ = writeln!(
            md,
            "\n**{duration} durations** — job response time, median / p99, as a ratio to omniscient\n"
        );
        md.push_str("| policy |");
        for &l in &loads {
            let _ = write!(md, " load {:.0}% |", f64::from_bits(l) * 100.0);
        }
        md.push_str(" msgs/task |\n|---|");
        md.push_str(&"---|".repeat(loads.len() + 1));
        md.push('\n');
        for policy in distinct(rows.iter().map(|r| r.policy)) {
            let _ = write!(md, "| {policy} |");
            let mut messages = 0.0;
            for &l in &loads {
                let find = |p: &str| rows.iter().find(|r| r.policy == p && r.load.to_bits() == l);
                match (find(policy), find(Policy::Omniscient.name())) {
                    (Some(r), Some(o)) => {
                        messages = r.messages_per_task;
                        let _ = write!(
                            md,
                            " {:.2} / {:.2} |",
                            r.job.p50 / o.job.p50,
                            r.job.p99 / o.job.p99
                        );
                    }
                    _ => md.push_str(" – |"),
                }
            }
            let _ = writeln!(md, " {messages:.2} |");
        }
        md.push_str("\n| omniscient, absolute (ms) |");
        for &l in &loads {
            match rows
                .iter()
                .find(|r| r.policy == Policy::Omniscient.name() && r.load.to_bits() == l)
            {
                Some(o) => {
                    let _ = write!(md, " {:.0} / {:.0} |", o.job.p50, o.job.p99);
                }
                None => md.push_str(" – |"),
            }
        }
        md.push_str(" 0 |\n");
    }
    md
}

/// Markdown table of p99 job response time and messages per task against the gossip period.
pub fn staleness_table(reports: &[Report]) -> String {
    let policies = distinct(reports.iter().map(|r| r.policy));
    let mut md = String::from("\n| gossip period |");
    for p in &policies {
        let _ = write!(md, " {p} p99 (ms) | {p} msgs/task |");
    }
    md.push_str(" gossip msgs/task |\n|---|");
    md.push_str(&"---|---|".repeat(policies.len()));
    md.push_str("---|\n");
    for period in distinct(reports.iter().map(|r| r.gossip_period_ms.to_bits())) {
        let at: Vec<&Report> = reports
            .iter()
            .filter(|r| r.gossip_period_ms.to_bits() == period)
            .collect();
        let _ = write!(md, "| {} ms |", f64::from_bits(period));
        for p in &policies {
            match at.iter().find(|r| r.policy == *p) {
                Some(r) => {
                    let _ = write!(md, " {:.0} | {:.2} |", r.job.p99, r.messages_per_task);
                }
                None => md.push_str(" – | – |"),
            }
        }
        let gossip = at.first().map_or(0.0, |r| r.gossip_per_task);
        let _ = writeln!(md, " {gossip:.0} |");
    }
    md
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small(policy: Policy, load: f64) -> SimConfig {
        SimConfig {
            peers: 50,
            tasks: 5_000,
            policy,
            load,
            ..SimConfig::default()
        }
    }

    #[test]
    fn a_grid_runs_in_parallel_in_order_and_tabulates() {
        let base = small(Policy::P2cBids, 0.5);
        let durations = [Dist::Exp { mean: 100.0 }];
        let grid = load_grid(
            &base,
            &[Policy::P2cBids, Policy::Omniscient],
            &[0.5, 0.8],
            &durations,
        );
        assert_eq!(grid.len(), 4);
        let reports = run_all(&grid, 2, &|_| {}).unwrap();
        let order: Vec<_> = reports.iter().map(|r| (r.policy, r.load)).collect();
        assert_eq!(
            order,
            [
                ("p2c-bids", 0.5),
                ("omniscient", 0.5),
                ("p2c-bids", 0.8),
                ("omniscient", 0.8)
            ]
        );
        let md = ratio_tables(&reports);
        assert!(
            md.contains("| omniscient | 1.00 / 1.00 | 1.00 / 1.00 |"),
            "{md}"
        );
        assert!(md.contains("| p2c-bids |"));
    }

    #[test]
    fn the_staleness_table_has_a_row_per_period() {
        let base = small(Policy::P2cView, 0.7);
        let grid = staleness_grid(&base, &[Policy::P2cView, Policy::P2cBids], &[50.0, 1000.0]);
        let reports = run_all(&grid, 2, &|_| {}).unwrap();
        let md = staleness_table(&reports);
        assert!(
            md.contains("| 50 ms |") && md.contains("| 1000 ms |"),
            "{md}"
        );
        let gossip: Vec<_> = reports.iter().map(|r| r.gossip_per_task).collect();
        assert!(
            gossip[0] > 10.0 * gossip[2],
            "a 20x longer period gossips far less: {gossip:?}"
        );
    }

    #[test]
    fn csv_has_a_header_and_a_line_per_run() {
        let reports = run_all(&[small(Policy::Random, 0.5)], 1, &|_| {}).unwrap();
        let dir = std::env::temp_dir().join(format!("peer-sim-csv-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("r.csv");
        write_csv(&path, &reports).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 2);
        assert!(text.starts_with("policy,"));
        let back = read_csv(&path).unwrap();
        assert_eq!(
            (back[0].policy, back[0].tasks),
            (reports[0].policy, reports[0].tasks)
        );
        assert!((back[0].job.p99 - reports[0].job.p99).abs() < 1e-3);
        std::fs::write(&path, "policy,load\nnobody,0.5\n").unwrap();
        assert!(
            read_csv(&path).is_err(),
            "a bad file is an error, not a panic"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
