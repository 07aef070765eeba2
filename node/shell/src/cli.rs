//! The `peer` command line: `peer up`, `peer status`, `peer list`,
//! `peer timeline`, `peer down`.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};

use crate::api::NodeApi;
use crate::config::{NodeConfig, default_state_dir};
use crate::local::client::Client;
use crate::local::socket::daemon_socket_path;
use crate::node::Node;
use peer_node_core::wire::local::{Listing, Query, Role};

#[derive(Debug, Parser)]
#[command(
    name = "peer",
    version,
    about = "Run Python tasks and actors on a cluster with no head node"
)]
pub struct Cli {
    /// The node's state directory (socket, identity, logs, spill files).
    #[arg(long, global = true, env = "PEER_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a node daemon in the foreground until `peer down` or Ctrl-C.
    Up {
        /// CPU slots (default: the machine's cores).
        #[arg(long)]
        num_cpus: Option<f64>,
        /// A custom resource, NAME=AMOUNT (repeatable), e.g. --resource TPU=1.
        #[arg(long = "resource", value_parser = parse_resource)]
        resources: Vec<(String, f64)>,
        /// GPUs to offer (default: the NVIDIA devices found, limited by
        /// CUDA_VISIBLE_DEVICES).
        #[arg(long)]
        num_gpus: Option<u32>,
        /// Bytes of shared memory for the object store.
        #[arg(long)]
        object_store_memory: Option<u64>,
        /// The Python interpreter that runs workers (it must have `peer` installed).
        #[arg(long, env = "PEER_PYTHON", default_value = "python3")]
        python: PathBuf,
        /// Address to listen on for other peers (repeatable).
        #[arg(long, default_value = "/ip4/0.0.0.0/tcp/7700")]
        listen: Vec<String>,
        /// A member to join through, e.g. /ip4/10.0.0.5/tcp/7700/p2p/12D3Koo… (repeatable).
        #[arg(long)]
        bootstrap: Vec<String>,
        /// The cluster key: 64 hex characters or a key file. Default: the state
        /// directory's key, created on first use.
        #[arg(long, env = "PEER_KEY")]
        key: Option<String>,
        /// Do not look for peers on the LAN with mDNS.
        #[arg(long)]
        no_mdns: bool,
        /// MiB per second that pulls over relays may take together, when every holder of an
        /// object is reachable only through a relay (see "Joining from behind a NAT").
        #[arg(long, default_value_t = 4.0)]
        relay_pull_mib_s: f64,
        /// Never relay for other members, even when this node is publicly reachable.
        #[arg(long)]
        no_relay: bool,
        /// TCP port of the direct connections that large objects are pulled over, on the
        /// --listen address (0: any free port). Fix it where a firewall must let it through;
        /// where it is blocked, pulls use the --listen port, more slowly.
        #[arg(long, default_value_t = 0)]
        direct_port: u16,
        /// A one-peer cluster: open no network port at all.
        #[arg(long, conflicts_with_all = ["bootstrap", "key"])]
        local: bool,
        /// Serve the dashboard, on ADDR (default 127.0.0.1:8265). Off a
        /// loopback address it needs the token the printed URL carries.
        #[arg(long, value_name = "ADDR", num_args = 0..=1,
              default_missing_value = crate::dashboard::DEFAULT_ADDR)]
        dashboard: Option<SocketAddr>,
    },
    /// List the cluster's peers, tasks, actors or objects, gathered from every peer.
    List {
        /// peers, tasks, actors or objects.
        #[arg(value_parser = ["peers", "tasks", "actors", "objects"])]
        kind: String,
        /// Machine-readable output (every field, whole tracebacks).
        #[arg(long)]
        json: bool,
        /// Keep rows whose KEY reads VALUE (KEY!=VALUE: does not), e.g.
        /// --filter state=FAILED (repeatable; all must hold).
        #[arg(long = "filter", value_name = "KEY=VALUE")]
        filters: Vec<crate::listing::Filter>,
    },
    /// Write the cluster's task timeline as Chrome trace events (open it in
    /// Perfetto or chrome://tracing).
    Timeline {
        /// The file to write (default: peer-timeline-<time>.json here).
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
    /// Print the node's resources, workers, tasks and store usage.
    Status {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Stop the running daemon.
    Down,
}

fn parse_resource(s: &str) -> Result<(String, f64), String> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| format!("expected NAME=AMOUNT, got {s:?}"))?;
    let v: f64 = v.parse().map_err(|e| format!("amount of {k}: {e}"))?;
    if k.is_empty() || !v.is_finite() || v < 0.0 {
        return Err(format!("bad resource {s:?}"));
    }
    if k == "CPU" || k == "GPU" {
        return Err(format!("use --num-{}s instead", k.to_lowercase()));
    }
    Ok((k.to_string(), v))
}

/// Start `tracing` output to stderr, filtered by `PEER_LOG`.
pub fn init_logging(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("PEER_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}

/// Run the CLI; `python_path` is handed to daemon workers (the Python entry point passes `sys.path`).
pub fn run(cli: Cli, python_path: Vec<String>) -> anyhow::Result<()> {
    let state_dir = cli.state_dir.unwrap_or_else(default_state_dir);
    match cli.command {
        Command::Up {
            num_cpus,
            resources,
            num_gpus,
            object_store_memory,
            python,
            listen,
            bootstrap,
            key,
            no_mdns,
            relay_pull_mib_s,
            no_relay,
            direct_port,
            local,
            dashboard,
        } => {
            if !(relay_pull_mib_s.is_finite() && relay_pull_mib_s > 0.0) {
                anyhow::bail!("--relay-pull-mib-s must be a positive number");
            }
            init_logging("info");
            let mut config = NodeConfig::new(state_dir.clone());
            if let Some(n) = num_cpus {
                config.num_cpus = n;
            }
            config.resources = resources;
            config.num_gpus = num_gpus;
            config.object_store_memory = object_store_memory;
            config.python = python;
            config.python_path = python_path;
            config.cwd = std::env::current_dir().ok();
            config.daemon = true;
            config.dashboard = dashboard;
            if !local {
                config.network = Some(crate::cluster::NetworkConfig {
                    listen,
                    bootstrap,
                    key,
                    mdns: !no_mdns,
                    relay_pull_rate: (relay_pull_mib_s * 1048576.0) as u64,
                    relay: !no_relay,
                    direct_port,
                });
            }
            let node = Node::start(config)?;
            let info = node.info().clone();
            match node.cluster() {
                Some(c) => {
                    println!("peer node {} is up", c.peer_id);
                    for a in &c.listen_addrs() {
                        println!("  listening: {a}");
                    }
                    println!("  cluster key fingerprint: {}", c.key_fingerprint);
                    if let Some(addr) = c.join_address() {
                        println!("Join from another machine with:");
                        println!("  peer up --bootstrap {addr} --key {}", c.key_hex);
                    }
                }
                None => println!(
                    "peer node {} is up (local only: no network port)",
                    info.node_id
                ),
            }
            println!("  state dir: {}", state_dir.display());
            println!("  socket:    {}", info.socket.display());
            println!(
                "  store:     {} MiB at {}",
                info.arena_size >> 20,
                info.arena_path.display()
            );
            println!("  cpus:      {}", info.num_cpus);
            let extra: Vec<String> = info
                .resources
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            if !extra.is_empty() {
                println!("  resources: {}", extra.join(", "));
            }
            if let Some(d) = node.dashboard() {
                println!("  dashboard: {}", d.url);
            }
            println!(
                "Python drivers on this machine attach with peer.init(). Stop with `peer down`."
            );
            node.wait_for_stop();
            println!("peer node stopping");
            node.shutdown();
            Ok(())
        }
        Command::Status { json } => {
            let client = connect(&state_dir)?;
            let mut status = client.query(Query::Status)?;
            status["runtime_envs"] = crate::runtime_envs::listing(&state_dir);
            if json {
                println!("{}", serde_json::to_string_pretty(&status)?);
            } else {
                print_status(&status);
            }
            Ok(())
        }
        Command::List {
            kind,
            json,
            filters,
        } => {
            let what =
                Listing::from_name(&kind).ok_or_else(|| anyhow::anyhow!("cannot list {kind:?}"))?;
            let client = connect(&state_dir)?;
            let gathered = client.query(Query::Cluster(what))?;
            let rows = crate::listing::rows(&gathered, &filters);
            if json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                println!("{}", crate::listing::table(what, &rows));
                println!("({} {kind})", rows.len());
            }
            let missing = crate::listing::missing(&gathered);
            if !missing.is_empty() {
                eprintln!(
                    "note: {} peer(s) did not answer in time: {}",
                    missing.len(),
                    missing.join(", ")
                );
            }
            Ok(())
        }
        Command::Timeline { output } => {
            let client = connect(&state_dir)?;
            let gathered = client.query(Query::Cluster(Listing::Timeline))?;
            let trace = crate::timeline::chrome_trace(&gathered);
            let path = output.unwrap_or_else(|| {
                let secs = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs());
                PathBuf::from(format!("peer-timeline-{secs}.json"))
            });
            std::fs::write(&path, serde_json::to_vec(&trace)?)?;
            println!(
                "wrote {} trace events to {} (open it in https://ui.perfetto.dev or chrome://tracing)",
                trace.as_array().map_or(0, Vec::len),
                path.display()
            );
            Ok(())
        }
        Command::Down => {
            let socket = daemon_socket_path(&state_dir);
            let client = connect(&state_dir)?;
            client.shutdown_node()?;
            let deadline = Instant::now() + Duration::from_secs(10);
            while socket.exists() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            if socket.exists() {
                anyhow::bail!("the daemon did not stop within 10 s");
            }
            println!("peer node stopped");
            Ok(())
        }
    }
}

fn connect(state_dir: &std::path::Path) -> anyhow::Result<Client> {
    let socket = daemon_socket_path(state_dir);
    Client::connect(&socket, Role::Control).map_err(|e| {
        anyhow::anyhow!(
            "no peer daemon is running for {} ({e}); start one with `peer up`",
            state_dir.display()
        )
    })
}

fn print_status(s: &serde_json::Value) {
    let g = |path: &[&str]| {
        let mut v = s;
        for p in path {
            v = &v[*p];
        }
        v.clone()
    };
    let mib = |v: serde_json::Value| v.as_u64().unwrap_or(0) as f64 / (1 << 20) as f64;
    println!("node {}", g(&["node_id"]).as_str().unwrap_or("?"));
    println!(
        "  resources  total {}  available {}",
        g(&["resources", "total"]),
        g(&["resources", "available"])
    );
    if let Some(devices) = s["gpus"]["devices"].as_array().filter(|d| !d.is_empty()) {
        let list: Vec<String> = devices
            .iter()
            .map(|d| {
                let free = d["free"].as_f64().unwrap_or(0.0);
                format!("{} ({} free)", d["id"].as_str().unwrap_or("?"), free)
            })
            .collect();
        let memory = match g(&["gpus", "memory"]).as_u64().unwrap_or(0) {
            0 => "memory unknown (no NVML)".to_string(),
            m => format!("{:.1} GiB memory", m as f64 / (1u64 << 30) as f64),
        };
        println!("  gpus       {}; {memory}", list.join(", "));
    }
    println!(
        "  workers    {} task ({} idle, {} starting, {} blocked), {} actor",
        g(&["workers", "task"]),
        g(&["workers", "idle"]),
        g(&["workers", "starting"]),
        g(&["workers", "blocked"]),
        g(&["workers", "actor"])
    );
    println!(
        "  tasks      {} queued, {} running, {} finished, {} retried",
        g(&["tasks", "queued"]),
        g(&["tasks", "running"]),
        g(&["tasks", "stats", "tasks_finished"]),
        g(&["tasks", "stats", "tasks_retried"])
    );
    if s["cluster"].is_object() {
        println!(
            "  placement  {} sent to peers ({} running there), {} received, {} forwarded, {} being placed",
            g(&["tasks", "stats", "tasks_sent"]),
            g(&["placement", "remote"]),
            g(&["tasks", "stats", "tasks_received"]),
            g(&["tasks", "stats", "tasks_forwarded"]),
            g(&["placement", "placing"])
        );
        for w in s["placement"]["waiting_for_resources"]
            .as_array()
            .into_iter()
            .flatten()
        {
            println!(
                "  waiting    task {} needs {}, which no peer has; it waits for one that does",
                w["task"].as_str().unwrap_or("?"),
                w["needs"]
            );
        }
    }
    println!(
        "  actors     {} alive ({} named)",
        g(&["actors", "alive"]),
        g(&["actors", "named"])
    );
    println!(
        "  store      {:.1} / {:.1} MiB used, {} objects, {:.1} MiB pinned",
        mib(g(&["store", "used"])),
        mib(g(&["store", "capacity"])),
        g(&["store", "objects"]),
        mib(g(&["store", "pinned_bytes"]))
    );
    println!(
        "  objects    {} owned ({:.1} MiB, {} lent to peers), {} borrowed ({:.1} MiB), {} cached copies ({:.1} MiB)",
        g(&["objects", "owned"]),
        mib(g(&["objects", "owned_bytes"])),
        g(&["objects", "lent"]),
        g(&["objects", "borrowed"]),
        mib(g(&["objects", "borrowed_bytes"])),
        g(&["objects", "cached"]),
        mib(g(&["objects", "cached_bytes"]))
    );
    if let Some(addr) = s["cluster"]["join"].as_str() {
        println!("  address    {addr}");
    }
    let n = &s["network"];
    if n.is_object() {
        let role = if n["relaying"].as_bool() == Some(true) {
            format!(
                "relaying for members ({} reservations, {} circuits so far)",
                n["reservations_served"], n["circuits_served"]
            )
        } else {
            match n["relays"].as_array() {
                Some(r) if !r.is_empty() => format!("reachable through {} relay(s)", r.len()),
                _ => "no relay".to_string(),
            }
        };
        println!(
            "  network    {}; {role}; {:.1} MiB over relays, {} pull(s) over a relay now ({:.1} MiB so far, capped)",
            n["reachability"].as_str().unwrap_or("unknown"),
            mib(n["relayed_bytes"].clone()),
            n["relayed_pulls"],
            mib(n["relayed_pull_bytes"].clone()),
        );
        println!(
            "  direct     {:.1} MiB pulled, {:.1} MiB served over direct connections",
            mib(n["direct_pull_bytes"].clone()),
            mib(n["direct_served_bytes"].clone()),
        );
    }
    if let Some(peers) = s["peers"].as_array() {
        println!("  peers      {} known", peers.len());
        for p in peers {
            let gpus = p["resources"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|r| r["name"] == "GPU")
                .map(|r| {
                    format!(
                        "  gpus {}/{} ({:.1} GiB)",
                        r["free"],
                        r["total"],
                        p["gpu_memory"].as_u64().unwrap_or(0) as f64 / (1u64 << 30) as f64
                    )
                })
                .unwrap_or_default();
            let link = match (p["link"].as_str(), p["rtt_ms"].as_f64()) {
                (Some(kind), Some(rtt)) => format!("{kind} {rtt:.1} ms"),
                (Some(kind), None) => kind.to_string(),
                (None, _) => "via others".to_string(),
            };
            println!(
                "    {}  {}  {link}  cpus {}/{}{gpus}  queue {}  store {:.0}/{:.0} MiB  heard {:.1}s ago",
                p["peer_id"].as_str().unwrap_or("?"),
                p["address"].as_str().unwrap_or("-"),
                p["cpus_free"],
                p["cpus_total"],
                p["queue"],
                mib(p["store_used"].clone()),
                mib(p["store_total"].clone()),
                p["age_s"].as_f64().unwrap_or(0.0)
            );
        }
    }
    let pulls = s["store"]["pulling"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    if !pulls.is_empty() {
        println!("  pulling    {} object(s) from other peers", pulls.len());
        for p in &pulls {
            println!(
                "    {}  {:.1}/{:.1} MiB  {:.2} GB/s over {:.1} s",
                p["object"].as_str().unwrap_or("?"),
                mib(p["received"].clone()),
                mib(p["bytes"].clone()),
                p["bytes_per_s"].as_f64().unwrap_or(0.0) / 1e9,
                p["seconds"].as_f64().unwrap_or(0.0)
            );
        }
    }
    println!(
        "  spilling   {} objects on disk now; {:.1} MiB spilled, {:.1} MiB restored in all",
        g(&["store", "spilled_now"]),
        mib(g(&["store", "spilled_bytes"])),
        mib(g(&["store", "restored_bytes"]))
    );
    let envs = s["runtime_envs"].as_array().cloned().unwrap_or_default();
    if !envs.is_empty() {
        println!(
            "  runtime envs  {} cached (least recently used first)",
            envs.len()
        );
        for e in &envs {
            println!(
                "    {:<12} {}  {:.1} MiB  {}  {}",
                e["kind"].as_str().unwrap_or("?"),
                e["name"].as_str().unwrap_or("?"),
                mib(e["bytes"].clone()),
                e["state"].as_str().unwrap_or("?"),
                e["what"].as_str().unwrap_or("")
            );
        }
    }
}
