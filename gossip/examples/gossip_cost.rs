//! Measures what gossip costs per peer: starts N peers in this process on loopback (chained by
//! bootstrap, mDNS off), lets them settle, then reports loopback bytes per second per peer and
//! CPU per peer over a measuring window.
//!
//! `SETTLE_S` (default 5) sets how long peers run before measuring; past 60 s, connections
//! outside every gossipsub mesh have closed as idle, which is the steady state.
//!
//! Loopback byte counts are only meaningful in a network namespace of its own:
//!
//! ```text
//! ip netns add gossip-cost && ip -n gossip-cost link set lo up
//! ip netns exec gossip-cost target/release/examples/gossip_cost 5 10 20
//! ip netns del gossip-cost
//! ```

use std::time::{Duration, Instant};

use peer_gossip::{ClusterKey, Config, Identity, Load};

const WINDOW: Duration = Duration::from_secs(10);

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let sizes: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse())
        .collect::<Result<_, _>>()?;
    let sizes = if sizes.is_empty() {
        vec![5, 10, 20]
    } else {
        sizes
    };
    println!("peers  view  conns/peer  bytes/s/peer  cpu%/peer");
    for n in sizes {
        measure(n).await?;
    }
    Ok(())
}

async fn measure(n: usize) -> Result<(), Box<dyn std::error::Error>> {
    let key = ClusterKey::generate()?;
    let mut peers = Vec::new();
    let mut tasks = Vec::new();
    let mut previous = None;
    for i in 0..n {
        let mut config = Config::new(Identity::generate(), key.clone());
        config.listen = vec!["/ip4/127.0.0.1/tcp/0".parse()?];
        config.bootstrap = previous.iter().cloned().collect();
        config.mdns = false;
        let (client, mut events, event_loop) = peer_gossip::new(config)?;
        tasks.push(tokio::spawn(event_loop.run()));
        tokio::spawn(async move { while events.recv().await.is_some() {} });
        previous = Some(client.listen_addrs().await?.remove(0));
        let load = Load {
            cpus_total: 8.0,
            cpus_free: 4.0,
            queue_len: i as u64,
            ..Load::default()
        };
        client.publish_load(load)?;
        peers.push(client);
    }
    let settle = std::env::var("SETTLE_S")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    tokio::time::sleep(Duration::from_secs(settle)).await;

    let (bytes0, cpu0, t0) = (lo_bytes()?, cpu_seconds()?, Instant::now());
    tokio::time::sleep(WINDOW).await;
    let (bytes1, cpu1, elapsed) = (lo_bytes()?, cpu_seconds()?, t0.elapsed().as_secs_f64());

    let mut smallest_view = usize::MAX;
    for peer in &peers {
        smallest_view = smallest_view.min(peer.view().await?.len());
    }
    let connections = established_sockets()? as f64 / n as f64;
    let per_peer = (bytes1 - bytes0) as f64 / elapsed / n as f64;
    let cpu = (cpu1 - cpu0) / elapsed / n as f64 * 100.0;
    println!("{n:>5}  {smallest_view:>4}  {connections:>10.1}  {per_peer:>12.0}  {cpu:>9.2}");
    for peer in &peers {
        peer.shutdown().await?;
    }
    for task in tasks {
        task.await?;
    }
    Ok(())
}

/// Bytes received on `lo` (every byte sent on loopback is received once).
fn lo_bytes() -> Result<u64, Box<dyn std::error::Error>> {
    let dev = std::fs::read_to_string("/proc/net/dev")?;
    let line = dev
        .lines()
        .find(|l| l.trim_start().starts_with("lo:"))
        .ok_or("no lo")?;
    let fields: Vec<&str> = line
        .split(':')
        .nth(1)
        .ok_or("bad line")?
        .split_whitespace()
        .collect();
    Ok(fields.first().ok_or("no bytes")?.parse()?)
}

/// Established TCP sockets (both ends of each loopback connection are counted).
fn established_sockets() -> Result<usize, Box<dyn std::error::Error>> {
    let tcp = std::fs::read_to_string("/proc/net/tcp")?;
    Ok(tcp
        .lines()
        .skip(1)
        .filter(|l| l.split_whitespace().nth(3) == Some("01"))
        .count())
}

/// User plus system CPU time of this process, in seconds.
fn cpu_seconds() -> Result<f64, Box<dyn std::error::Error>> {
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    let after_name = stat.rsplit(')').next().ok_or("bad stat")?;
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks: f64 = fields[11].parse::<f64>()? + fields[12].parse::<f64>()?;
    Ok(ticks / 100.0)
}
