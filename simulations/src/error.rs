//! Errors of the simulator: bad settings, unreadable traces, and failures writing results.

use std::path::PathBuf;

/// What can go wrong setting up or reporting a simulation. Messages are lowercase and say what
/// to fix.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// A distribution spec that does not parse (e.g. `exp:abc`).
    #[error(
        "bad distribution {spec:?}: {why}; use const:MS, exp:MS, uniform:LO:HI, pareto:MEAN:SHAPE or trace:FILE.csv"
    )]
    BadDistribution { spec: String, why: String },
    /// A setting outside what the simulator can run.
    #[error("bad setting {name}: {why}")]
    BadSetting { name: &'static str, why: String },
    /// A trace or result file that cannot be read.
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A line of a trace or result file that does not parse.
    #[error("{path} line {line}: {why}")]
    BadLine {
        path: PathBuf,
        line: usize,
        why: String,
    },
    /// Writing a result file failed.
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    /// Drawing the chart failed.
    #[error("cannot draw chart {path}: {why}")]
    Chart { path: PathBuf, why: String },
}
