//! Two processes in two network namespaces joined by a bridge find each other by mDNS alone (no
//! bootstrap) and see each other's load.
//!
//! The test binary is its own probe: run with `--probe`, it joins the cluster and reports what it
//! sees on stdout; without it, it builds the namespaces, starts two probes and checks their
//! reports. Namespaces and links are unique to this run and deleted on every exit path. Skipped
//! (with a message) only where creating a network namespace is not permitted.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read};
use std::process::{Child, ChildStdin, Command, ExitCode, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use peer_gossip::{ClusterKey, Config, Identity, Load};

const NAME: &str = "mdns_discovery_between_namespaces";
/// How long the whole exchange may take once both probes run.
const DEADLINE: Duration = Duration::from_secs(30);
/// A probe left behind by a crashed driver exits on its own after this.
const PROBE_LIFETIME: Duration = Duration::from_secs(45);

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--probe") {
        return probe(&args[1..]);
    }
    if args.iter().any(|a| a == "--list") {
        println!("{NAME}: test");
        return ExitCode::SUCCESS;
    }
    // Honour a name filter given to `cargo test`.
    if args
        .iter()
        .any(|a| !a.starts_with('-') && !NAME.contains(a.as_str()))
    {
        return ExitCode::SUCCESS;
    }
    let start = Instant::now();
    println!("test {NAME} ...");
    match drive() {
        Ok(Some(skip)) => println!("test {NAME} ... skipped: {skip}"),
        Ok(None) => println!("test {NAME} ... ok ({:.1?})", start.elapsed()),
        Err(e) => {
            println!("test {NAME} ... FAILED: {e}");
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}

/// Namespaces and probe processes of one run; torn down on drop, failure or not.
struct Lab {
    namespaces: Vec<String>,
    probes: Vec<Child>,
}

impl Drop for Lab {
    fn drop(&mut self) {
        for probe in &mut self.probes {
            let _ = probe.kill();
            let _ = probe.wait();
        }
        // Deleting a namespace deletes the links inside it.
        for ns in self.namespaces.iter().rev() {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

impl Lab {
    fn add_namespace(&mut self, name: String) -> Result<(), String> {
        let out = Command::new("ip")
            .args(["netns", "add", &name])
            .output()
            .map_err(|e| format!("cannot run ip: {e}"))?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).trim().to_owned());
        }
        self.namespaces.push(name);
        Ok(())
    }
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("cannot run ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Runs the test; `Ok(Some(reason))` when skipped.
fn drive() -> Result<Option<String>, String> {
    let run = format!("pgossip{}", std::process::id());
    let bridge = format!("{run}-br");
    let mut lab = Lab {
        namespaces: Vec::new(),
        probes: Vec::new(),
    };
    if let Err(e) = lab.add_namespace(bridge.clone()) {
        let lowered = e.to_lowercase();
        if lowered.contains("permission denied") || lowered.contains("not permitted") {
            return Ok(Some(format!(
                "creating a network namespace is not permitted here ({e})"
            )));
        }
        return Err(format!("ip netns add failed: {e}"));
    }
    ip(&["-n", &bridge, "link", "add", "br0", "type", "bridge"])?;
    ip(&["-n", &bridge, "link", "set", "br0", "up"])?;
    let peers = [1u64, 2];
    for i in peers {
        let ns = format!("{run}-n{i}");
        lab.add_namespace(ns.clone())?;
        let port = format!("port{i}");
        ip(&[
            "-n", &ns, "link", "add", "eth0", "type", "veth", "peer", "name", &port, "netns",
            &bridge,
        ])?;
        ip(&["-n", &bridge, "link", "set", &port, "master", "br0"])?;
        ip(&["-n", &bridge, "link", "set", &port, "up"])?;
        ip(&[
            "-n",
            &ns,
            "addr",
            "add",
            &format!("10.77.0.{i}/24"),
            "dev",
            "eth0",
        ])?;
        ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
    }

    // Start the probes only once every link is operational: an mDNS query
    // sent before the veth pair carries traffic is lost, and the next retry
    // comes seconds later.
    let mut links: Vec<(String, String)> = vec![(bridge.clone(), "br0".into())];
    for i in peers {
        links.push((format!("{run}-n{i}"), "eth0".into()));
        links.push((bridge.clone(), format!("port{i}")));
    }
    wait_links_up(&links)?;

    let key = ClusterKey::generate().map_err(|e| e.to_string())?;
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let (lines, reports) = mpsc::channel::<(u64, String)>();
    let mut stdins: Vec<ChildStdin> = Vec::new();
    let logs: [Arc<Mutex<VecDeque<String>>>; 2] = Default::default();
    for i in peers {
        let other = 3 - i;
        let ns = format!("{run}-n{i}");
        let mut child = Command::new("ip")
            .args(["netns", "exec", &ns])
            .arg(&exe)
            .args(["--probe", &key.to_hex(), &i.to_string(), &other.to_string()])
            // Kept, and shown only if the test fails.
            .env("RUST_LOG", "libp2p_mdns=debug,peer_gossip=debug")
            .stderr(Stdio::piped())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start probe: {e}"))?;
        stdins.extend(child.stdin.take());
        let stdout = child.stdout.take().ok_or("no probe stdout")?;
        let stderr = child.stderr.take().ok_or("no probe stderr")?;
        lab.probes.push(child);
        let log = Arc::clone(&logs[(i - 1) as usize]);
        std::thread::spawn(move || {
            // Drain the probe's log so it never blocks on a full pipe; keep the tail.
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut log = log.lock().unwrap_or_else(|e| e.into_inner());
                log.push_back(line);
                if log.len() > 200 {
                    log.pop_front();
                }
            }
        });
        let lines = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = lines.send((i, line));
            }
        });
    }

    // Each probe prints `ID <peer>` and, once it sees the other's load, `FOUND <peer> <ms>`.
    let started = Instant::now();
    let mut ids = [String::new(), String::new()];
    let mut found = [None::<(String, String)>, None];
    while found.iter().any(Option::is_none) {
        let left = DEADLINE.checked_sub(started.elapsed()).ok_or_else(|| {
            let tails: Vec<String> = logs
                .iter()
                .enumerate()
                .map(|(n, log)| {
                    let log = log.lock().unwrap_or_else(|e| e.into_inner());
                    let lines: Vec<&str> = log.iter().map(String::as_str).collect();
                    format!("--- probe {} log ---\n{}", n + 1, lines.join("\n"))
                })
                .collect();
            format!(
                "probes did not find each other within {DEADLINE:?}: ids {ids:?}, found \
                 {found:?}\n{}",
                tails.join("\n")
            )
        })?;
        let Ok((i, line)) = reports.recv_timeout(left) else {
            continue;
        };
        println!("  probe {i}: {line}");
        let slot = (i - 1) as usize;
        match line.split_whitespace().collect::<Vec<_>>()[..] {
            ["ID", id] => ids[slot] = id.to_owned(),
            ["FOUND", id, ms] => found[slot] = Some((id.to_owned(), ms.to_owned())),
            _ => {}
        }
    }
    drop(stdins); // probes exit when their stdin closes
    for (slot, report) in found.iter().enumerate() {
        let (seen, _) = report.as_ref().ok_or("missing report")?;
        if *seen != ids[1 - slot] {
            return Err(format!(
                "probe {} found {seen}, expected {}",
                slot + 1,
                ids[1 - slot]
            ));
        }
    }
    for probe in &mut lab.probes {
        let status = probe.wait().map_err(|e| e.to_string())?;
        if !status.success() {
            return Err(format!("probe exited with {status}"));
        }
    }
    Ok(None)
}

/// `--probe <key hex> <my tag> <tag to look for>`: publishes a load with `queue_len = my tag`,
/// prints `ID <peer id>`, then `FOUND <peer id> <ms>` once a peer with the other tag is in the
/// view; exits when stdin closes.
/// Wait (up to 10 s) until each `(namespace, link)` is up with carrier.
fn wait_links_up(links: &[(String, String)]) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    for (ns, link) in links {
        loop {
            let out = Command::new("ip")
                .args(["-n", ns, "-o", "link", "show", link])
                .output()
                .map_err(|e| format!("cannot run ip: {e}"))?;
            let text = String::from_utf8_lossy(&out.stdout);
            if text.contains("LOWER_UP") && !text.contains("NO-CARRIER") {
                break;
            }
            if Instant::now() > deadline {
                return Err(format!("link {link} in {ns} never came up: {text}"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    Ok(())
}

fn probe(args: &[String]) -> ExitCode {
    let [key, tag, wanted] = args else {
        eprintln!("usage: --probe <key hex> <tag> <wanted tag>");
        return ExitCode::FAILURE;
    };
    let (Ok(tag), Ok(wanted)) = (tag.parse::<u64>(), wanted.parse::<u64>()) else {
        eprintln!("tags must be numbers");
        return ExitCode::FAILURE;
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .try_init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("no runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run_probe(key, tag, wanted)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("probe failed: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run_probe(key: &str, tag: u64, wanted: u64) -> Result<(), Box<dyn std::error::Error>> {
    let mut config = Config::new(Identity::generate(), ClusterKey::from_hex(key)?);
    config.listen = vec!["/ip4/0.0.0.0/tcp/0".parse()?];
    config.mdns = true;
    config.load_period = Duration::from_millis(100);
    let (client, mut events, event_loop) = peer_gossip::new(config)?;
    let task = tokio::spawn(event_loop.run());
    tokio::spawn(async move { while events.recv().await.is_some() {} });
    println!("ID {}", client.local_peer_id());
    client.publish_load(Load {
        cpus_total: 1.0,
        cpus_free: 1.0,
        queue_len: tag,
        ..Load::default()
    })?;

    let (closed_tx, mut closed) = tokio::sync::oneshot::channel::<()>();
    std::thread::spawn(move || {
        let _ = std::io::stdin().read_to_end(&mut Vec::new());
        let _ = closed_tx.send(());
    });
    let start = Instant::now();
    let mut reported = false;
    let give_up = tokio::time::sleep(PROBE_LIFETIME);
    tokio::pin!(give_up);
    loop {
        tokio::select! {
            _ = &mut closed => break,
            _ = &mut give_up => return Err("stdin never closed".into()),
            _ = tokio::time::sleep(Duration::from_millis(20)), if !reported => {
                let view = client.view().await?;
                let hit = view.iter().find(|p| p.load.as_ref().is_some_and(|l| l.queue_len == wanted));
                if let Some(peer) = hit {
                    println!("FOUND {} {}", peer.peer_id, start.elapsed().as_millis());
                    reported = true;
                }
            }
        }
    }
    client.shutdown().await?;
    task.await?;
    Ok(())
}
