//! A discrete-event simulator of work placement across thousands of peers with no central
//! scheduler, running the node's own placement policy (`peer-placement`).
//!
//! - [`config`]: what a run is (cluster, workload, network, gossip, policy);
//! - [`dist`]: duration and latency distributions (constant, exponential, uniform, Pareto, trace);
//! - [`events`]: the event queue;
//! - [`gossip`]: how stale each peer's view is;
//! - `engine` and `place`: the simulation loop and job placement;
//! - [`omniscient`]: the ideal central scheduler's shortest-queue index;
//! - [`stats`]: what a run measures;
//! - [`experiment`]: the sweeps behind the README tables, CSV and markdown;
//! - [`chart`]: the PNG chart.

#![forbid(unsafe_code)]

pub mod chart;
pub mod config;
pub mod dist;
mod engine;
pub mod error;
pub mod events;
pub mod experiment;
pub mod gossip;
pub mod omniscient;
mod place;
pub mod stats;

pub use config::{Gossip, Policy, SimConfig};
pub use dist::Dist;
pub use engine::Sim;
pub use error::SimError;
pub use stats::Report;

/// Runs one simulation to the end.
pub fn simulate(cfg: &SimConfig) -> Result<Report, SimError> {
    Ok(Sim::new(cfg)?.run())
}
