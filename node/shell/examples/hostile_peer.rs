//! A cluster member that misbehaves, for `tests/test_hostile_peer.py`.
//!
//! It holds the cluster key and joins through a bootstrap address like any
//! peer, publishes no load (so no work is placed on it), and for the given
//! time keeps sending every peer it finds, on the node and pull protocols:
//! garbage bytes, streams that skip or break the opening handshake, truncated
//! frames, oversized frame headers, well-formed messages naming tasks,
//! objects, actors and rounds nobody has (each sent twice: replayed), tasks
//! whose function never comes or is garbage, and pull requests for missing
//! objects or impossible ranges. Garbage on the gossip topic itself is
//! covered by the gossip crate's tests (`publish_raw`).
//!
//! At the end it prints one JSON line counting what it sent.
//!
//! ```text
//! cargo run --example hostile_peer -- --key HEX --bootstrap ADDR --seconds 10
//! ```

use std::collections::BTreeMap;
use std::time::Duration;

use peer_gossip::{ClusterKey, Config, Identity, PeerId, StreamProtocol};
use peer_node_core::ids::{ActorId, FnId, ObjectId, TaskId};
use peer_node_core::wire::codec;
use peer_node_core::wire::local::{ErrorInfo, ErrorKind, TaskKind, TaskSpec, Value};
use peer_node_core::wire::peer::{
    BidLoad, IN_MESSAGE_MAX, NODE_PROTOCOL, PULL_PROTOCOL, PeerMsg, PullRequest, WireValue,
};
use rand::Rng;
use serde_bytes::ByteBuf;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::compat::FuturesAsyncReadCompatExt;

type Counts = BTreeMap<&'static str, u64>;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1).cloned())
            .ok_or_else(|| format!("missing {name}"))
    };
    let key = ClusterKey::from_arg(&arg("--key")?).map_err(|e| e.to_string())?;
    let bootstrap = arg("--bootstrap")?.parse().map_err(|e| format!("{e}"))?;
    let seconds: u64 = arg("--seconds")?.parse().map_err(|e| format!("{e}"))?;
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let identity = Identity::load_or_create(dir.path()).map_err(|e| e.to_string())?;
    let mut config = Config::new(identity, key);
    config.bootstrap = vec![bootstrap];
    config.mdns = false;
    let (client, _events, event_loop) = peer_gossip::new(config).map_err(|e| e.to_string())?;
    tokio::spawn(event_loop.run());
    let me = client.local_peer_id();

    let deadline = tokio::time::Instant::now() + Duration::from_secs(seconds);
    let mut counts = Counts::new();
    let mut round = 0u64;
    while tokio::time::Instant::now() < deadline {
        let peers: Vec<PeerId> = client
            .view()
            .await
            .map_err(|e| e.to_string())?
            .into_iter()
            .map(|p| p.peer_id)
            .filter(|p| *p != me)
            .collect();
        if peers.is_empty() {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        }
        // Four misdeeds against each peer at once.
        let mut attacks = Vec::new();
        for peer in peers {
            for _ in 0..4 {
                round += 1;
                attacks.push(attack(&client, me, peer, round));
            }
        }
        for what in futures::future::join_all(attacks).await {
            *counts.entry(what).or_default() += 1;
        }
    }
    let _ = client.shutdown().await;
    let fields: Vec<String> = counts
        .iter()
        .map(|(k, v)| format!("\"{k}\": {v}"))
        .collect();
    println!("{{{}}}", fields.join(", "));
    Ok(())
}

/// One misdeed against `peer`, chosen by `round`; returns its name. Errors
/// (the peer closing the stream on us, as it should) are part of the game.
async fn attack(
    client: &peer_gossip::Client,
    me: PeerId,
    peer: PeerId,
    round: u64,
) -> &'static str {
    let node = StreamProtocol::new(NODE_PROTOCOL);
    let pull = StreamProtocol::new(PULL_PROTOCOL);
    let mut rng = rand::rng();
    let (name, protocol, bytes, handshake): (&'static str, _, Vec<u8>, bool) = match round % 9 {
        0 => (
            "garbage_without_handshake",
            node,
            random_bytes(&mut rng, 64),
            false,
        ),
        1 => ("short_handshake", node, vec![1, 2, 3], false),
        2 => ("garbage_frame", node, garbage_frame(&mut rng), true),
        3 => {
            let mut frame = codec::encode(&bogus_messages(me).swap_remove(0));
            frame.truncate(frame.len() / 2);
            ("truncated_frame", node, frame, true)
        }
        4 => {
            let claim = if rng.random_bool(0.5) {
                u32::MAX
            } else {
                (codec::MAX_FRAME + 1) as u32
            };
            let mut frame = claim.to_le_bytes().to_vec();
            frame.extend(random_bytes(&mut rng, 256));
            ("oversized_frame", node, frame, true)
        }
        5 | 6 => {
            // Every kind of message, well formed but about nothing that
            // exists, each sent twice (a replay).
            let mut frames = Vec::new();
            for msg in bogus_messages(me) {
                let frame = codec::encode(&msg);
                frames.extend_from_slice(&frame);
                frames.extend_from_slice(&frame);
            }
            ("replayed_bogus_messages", node, frames, true)
        }
        7 => {
            let req = match rng.random_range(0..4) {
                0 => PullRequest {
                    id: ObjectId::for_return(TaskId::random(), 1),
                    offset: 0,
                    len: 4 << 20,
                },
                1 => PullRequest {
                    id: ObjectId::for_return(TaskId::random(), 1),
                    offset: u64::MAX - 1,
                    len: 16,
                },
                2 => PullRequest {
                    id: ObjectId::for_return(TaskId::random(), 1),
                    offset: 0,
                    len: u64::MAX,
                },
                _ => PullRequest {
                    id: ObjectId::for_return(TaskId::random(), 1),
                    offset: 0,
                    len: 0,
                },
            };
            ("pull_for_nothing", pull, codec::encode(&req), false)
        }
        _ => ("pull_garbage", pull, garbage_frame(&mut rng), false),
    };
    let Ok(Ok(stream)) =
        tokio::time::timeout(Duration::from_secs(2), client.open_stream(peer, protocol)).await
    else {
        return "stream_refused";
    };
    let mut stream = stream.compat();
    let send = async {
        if handshake {
            stream
                .write_all(&rand::random::<u64>().to_le_bytes())
                .await?;
            let mut theirs = [0u8; 8];
            stream.read_exact(&mut theirs).await?;
        }
        stream.write_all(&bytes).await?;
        stream.flush().await?;
        // Read whatever comes back (pull answers) until the peer closes or a moment passes.
        let mut sink = [0u8; 4096];
        let _ = tokio::time::timeout(Duration::from_millis(50), async {
            while stream.read(&mut sink).await? > 0 {}
            Ok::<_, std::io::Error>(())
        })
        .await;
        stream.shutdown().await
    };
    let _ = tokio::time::timeout(Duration::from_secs(2), send).await;
    name
}

fn random_bytes(rng: &mut impl Rng, max: usize) -> Vec<u8> {
    let len = rng.random_range(1..=max);
    (0..len).map(|_| rng.random()).collect()
}

/// A frame whose header tells the truth about a random payload.
fn garbage_frame(rng: &mut impl Rng) -> Vec<u8> {
    let payload = random_bytes(rng, 1024);
    let mut frame = (payload.len() as u32).to_le_bytes().to_vec();
    frame.extend(payload);
    frame
}

/// One of each message, naming ids nobody has.
fn bogus_messages(me: PeerId) -> Vec<PeerMsg> {
    let task = TaskId::random();
    let object = ObjectId::for_return(task, 1);
    let actor = ActorId::random();
    let fn_id = FnId::random();
    let owner = ByteBuf::from(me.to_bytes());
    let spec = |fn_id: FnId| TaskSpec {
        task: TaskId::random(),
        kind: TaskKind::Normal,
        fn_id,
        actor: None,
        method: String::new(),
        name: "hostile".into(),
        args: Value::Inline(ByteBuf::from(vec![0xFF; 16])),
        deps: vec![object],
        contained: Vec::new(),
        num_returns: 1,
        resources: vec![("CPU".into(), 1.0)],
        max_retries: 0,
        retry_exceptions: false,
        actor_options: None,
        runtime_env: None,
    };
    let error = ErrorInfo::new(ErrorKind::Task, "from a hostile peer");
    vec![
        PeerMsg::Bid {
            round: rand::random(),
            load: BidLoad {
                queue_len: 0,
                free_cpu: f64::NAN,
                total_cpu: f64::INFINITY,
                fits_now: true,
            },
        },
        PeerMsg::BidRequest {
            round: rand::random(),
            demand: vec![("CPU".into(), f64::NAN), ("GPU".into(), -1.0)],
            tasks: u32::MAX,
        },
        // A task whose function is never sent (the receiver asks us; we never answer).
        PeerMsg::Task {
            spec: Box::new(spec(FnId::random())),
            deps: vec![WireValue::At {
                len: u64::MAX,
                holders: vec![ByteBuf::from(vec![1, 2, 3])],
                complete: u32::MAX,
            }],
            deps_contain: vec![vec![object; 3], vec![object]],
            owner: owner.clone(),
            hops: 0,
            expect_queue: 0,
            lend: u64::MAX,
        },
        // A garbage function, then a task that runs it.
        PeerMsg::Function {
            id: fn_id,
            blob: ByteBuf::from(vec![0x80, 0x05, 0xFF, 0x00]),
        },
        PeerMsg::Task {
            spec: Box::new(spec(fn_id)),
            deps: vec![WireValue::Error(error.clone())],
            deps_contain: Vec::new(),
            owner: owner.clone(),
            hops: 7,
            expect_queue: u32::MAX,
            lend: 0,
        },
        // A task naming an owner that is not a peer id.
        PeerMsg::Task {
            spec: Box::new(spec(fn_id)),
            deps: Vec::new(),
            deps_contain: Vec::new(),
            owner: ByteBuf::from(vec![0; 5]),
            hops: 0,
            expect_queue: 0,
            lend: 1,
        },
        PeerMsg::NeedFunction { id: FnId::random() },
        PeerMsg::Objects {
            values: vec![
                (object, WireValue::Blob(ByteBuf::from(vec![7; 100]))),
                (
                    ObjectId::for_return(TaskId::random(), 2),
                    WireValue::At {
                        len: IN_MESSAGE_MAX as u64 * 4,
                        holders: vec![owner.clone()],
                        complete: 0,
                    },
                ),
                (
                    ObjectId::for_return(TaskId::random(), 3),
                    WireValue::Error(error.clone()),
                ),
            ],
            contains: vec![(
                object,
                vec![object, ObjectId::for_return(TaskId::random(), 1)],
            )],
            lend: 2,
        },
        // Refs released, asked about and borrowed that were never lent.
        PeerMsg::Release {
            ids: vec![object; 100],
            seen: u64::MAX,
        },
        PeerMsg::AskBorrows {
            ids: vec![object; 100],
            upto: u64::MAX,
        },
        PeerMsg::Borrowing {
            ids: vec![object; 100],
        },
        PeerMsg::CopiesKept {
            ids: vec![object; 100],
        },
        PeerMsg::ActorOutOfScope { actor },
        PeerMsg::Fetch {
            id: object,
            failed: vec![ByteBuf::from(vec![9; 40])],
        },
        PeerMsg::LocateActor { actor },
        PeerMsg::ActorAt {
            actor,
            host: Some(ByteBuf::from(vec![0; 3])),
            error: Some(error),
        },
        PeerMsg::LookupName {
            req: rand::random(),
            name: "x".repeat(1000),
        },
        PeerMsg::NameFound {
            req: rand::random(),
            handle: Some(ByteBuf::from(vec![1; 32])),
            lent: vec![object],
            lend: 3,
        },
        PeerMsg::KillActor {
            actor,
            no_restart: true,
        },
        PeerMsg::Cancel {
            task,
            force: true,
            recursive: true,
        },
        PeerMsg::Located { id: object },
        PeerMsg::Free {
            ids: vec![object; 64],
        },
        PeerMsg::LinkReset,
        PeerMsg::Moved {
            task,
            to: ByteBuf::from(vec![0xAA; 38]),
        },
        PeerMsg::Which {
            tasks: vec![task; 100],
        },
        PeerMsg::Have {
            tasks: vec![TaskId::random(); 100],
        },
        PeerMsg::Output {
            task,
            stream: 9,
            data: ByteBuf::from(b"not yours\n".to_vec()),
        },
    ]
}
