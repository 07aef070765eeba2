//! `peer-sim`: run one simulation, or the load and staleness sweeps behind the README.

#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use peer_simulations::experiment::{
    load_grid, ratio_tables, read_csv, run_all, staleness_grid, staleness_table, write_csv,
};
use peer_simulations::{Dist, Gossip, Policy, Report, SimConfig, SimError, chart};

/// Pixels of the chart.
const CHART_SIZE: (u32, u32) = (1000, 750);

#[derive(Parser)]
#[command(
    name = "peer-sim",
    about = "Discrete-event simulator of peer placement at scale"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// One run; prints a CSV header and one line.
    Run {
        #[command(flatten)]
        common: Common,
        #[arg(long, value_enum, default_value = "p2c-bids")]
        policy: Policy,
        #[arg(long, default_value_t = 0.9)]
        load: f64,
        /// Task durations in ms: const:MS, exp:MS, uniform:LO:HI, pareto:MEAN:SHAPE, trace:FILE.csv
        #[arg(long, default_value = "exp:100")]
        duration: String,
    },
    /// Every policy at every load and duration distribution: CSV, markdown tables, PNG chart.
    Sweep {
        #[command(flatten)]
        common: Common,
        #[arg(long, value_enum, value_delimiter = ',', default_values_t = Policy::ALL)]
        policies: Vec<Policy>,
        #[arg(long, value_delimiter = ',', default_value = "0.5,0.7,0.8,0.9,0.95")]
        loads: Vec<f64>,
        #[arg(long, value_delimiter = ',', default_value = "exp:100,pareto:100:1.5")]
        durations: Vec<String>,
        /// Directory for sweep.csv, sweep.md and response-vs-load.png.
        #[arg(long, default_value = "simulations/out")]
        out: PathBuf,
    },
    /// p99 and messages against the gossip period, for p2c on the view and p2c with bids.
    Staleness {
        #[command(flatten)]
        common: Common,
        #[arg(long, value_enum, value_delimiter = ',', default_values_t = [Policy::P2cView, Policy::P2cBids])]
        policies: Vec<Policy>,
        /// Gossip periods in ms.
        #[arg(
            long,
            value_delimiter = ',',
            default_value = "50,100,200,500,1000,2000,5000"
        )]
        periods: Vec<f64>,
        #[arg(long, default_value_t = 0.9)]
        load: f64,
        #[arg(long, default_value = "exp:100")]
        duration: String,
        /// Directory for staleness.csv and staleness.md.
        #[arg(long, default_value = "simulations/out")]
        out: PathBuf,
    },
    /// Redraws the chart from a sweep's CSV.
    Chart {
        #[arg(long, default_value = "simulations/out/sweep.csv")]
        csv: PathBuf,
        #[arg(long, default_value = "simulations/out/response-vs-load.png")]
        png: PathBuf,
    },
}

/// Settings shared by every command.
#[derive(Args)]
struct Common {
    #[arg(long, default_value_t = 10_000)]
    peers: usize,
    /// Slots per peer, repeated over the peers (e.g. 4, or 2,8 for a mix).
    #[arg(long, value_delimiter = ',', default_value = "4")]
    slots: Vec<u32>,
    /// Tasks per run.
    #[arg(long, default_value_t = 1_000_000)]
    tasks: u64,
    /// Tasks per job (m).
    #[arg(long, default_value_t = 10)]
    tasks_per_job: u32,
    /// Latency of one message in ms (same syntax as durations).
    #[arg(long, default_value = "const:1")]
    latency: String,
    #[arg(long, default_value_t = 200.0)]
    gossip_period_ms: f64,
    /// Gossip mesh degree.
    #[arg(long, default_value_t = 6)]
    gossip_fanout: u32,
    /// Probability that one gossip transmission is lost.
    #[arg(long, default_value_t = 0.0)]
    gossip_loss: f64,
    /// Candidates per task (d).
    #[arg(long, default_value_t = 2)]
    choices: usize,
    /// Turn off the node's fast path (run on the submitting peer when a slot is free there).
    #[arg(long)]
    no_local_first: bool,
    /// Fraction of the first jobs left out of the statistics.
    #[arg(long, default_value_t = 0.1)]
    warmup: f64,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Runs at a time (sweeps).
    #[arg(long, default_value_t = 2)]
    threads: usize,
}

impl Common {
    fn config(&self) -> Result<SimConfig, SimError> {
        Ok(SimConfig {
            peers: self.peers,
            slots: self.slots.clone(),
            tasks: self.tasks,
            tasks_per_job: self.tasks_per_job,
            latency: Dist::parse(&self.latency)?,
            gossip: Gossip {
                period_ms: self.gossip_period_ms,
                fanout: self.gossip_fanout,
                loss: self.gossip_loss,
            },
            choices: self.choices,
            local_first: !self.no_local_first,
            warmup: self.warmup,
            seed: self.seed,
            ..SimConfig::default()
        })
    }
}

fn progress(r: &Report) {
    eprintln!(
        "{:>12} {:>10} load {:.2} period {:>5} ms: p50 {:>7.1} ms p99 {:>7.1} ms, {:.2} msgs/task ({:.1} s)",
        r.policy,
        r.duration,
        r.load,
        r.gossip_period_ms,
        r.job.p50,
        r.job.p99,
        r.messages_per_task,
        r.wall_s
    );
}

fn create_dir(dir: &Path) -> Result<(), SimError> {
    std::fs::create_dir_all(dir).map_err(|source| SimError::Write {
        path: dir.to_owned(),
        source,
    })
}

fn write(path: &Path, text: &str) -> Result<(), SimError> {
    std::fs::write(path, text).map_err(|source| SimError::Write {
        path: path.to_owned(),
        source,
    })
}

fn try_main(cli: Cli) -> Result<(), SimError> {
    match cli.command {
        Command::Run {
            common,
            policy,
            load,
            duration,
        } => {
            let cfg = SimConfig {
                policy,
                load,
                duration: Dist::parse(&duration)?,
                ..common.config()?
            };
            let report = peer_simulations::simulate(&cfg)?;
            println!("{}\n{}", Report::CSV_HEADER, report.csv_row());
        }
        Command::Sweep {
            common,
            policies,
            loads,
            durations,
            out,
        } => {
            let durations = durations
                .iter()
                .map(|d| Dist::parse(d))
                .collect::<Result<Vec<_>, _>>()?;
            let grid = load_grid(&common.config()?, &policies, &loads, &durations);
            let reports = run_all(&grid, common.threads, &progress)?;
            create_dir(&out)?;
            write_csv(&out.join("sweep.csv"), &reports)?;
            let md = ratio_tables(&reports);
            write(&out.join("sweep.md"), &md)?;
            chart::draw(
                &out.join("response-vs-load.png"),
                &reports,
                CHART_SIZE.0,
                CHART_SIZE.1,
            )?;
            println!("{md}");
        }
        Command::Staleness {
            common,
            policies,
            periods,
            load,
            duration,
            out,
        } => {
            let base = SimConfig {
                load,
                duration: Dist::parse(&duration)?,
                ..common.config()?
            };
            let reports = run_all(
                &staleness_grid(&base, &policies, &periods),
                common.threads,
                &progress,
            )?;
            create_dir(&out)?;
            write_csv(&out.join("staleness.csv"), &reports)?;
            let md = staleness_table(&reports);
            write(&out.join("staleness.md"), &md)?;
            println!("{md}");
        }
        Command::Chart { csv, png } => {
            let reports = read_csv(&csv)?;
            chart::draw(&png, &reports, CHART_SIZE.0, CHART_SIZE.1)?;
            println!("{}", ratio_tables(&reports));
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    match try_main(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("peer-sim: {e}");
            ExitCode::FAILURE
        }
    }
}
