//! Bad input: protocol violations and fuzzed frames never panic the node.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::*;
use crate::wire::codec;

#[test]
fn protocol_violations_close_the_connection() {
    let mut h = Harness::new(1.0);
    let closes = |a: After| matches!(a, After::Close(_));

    let c = h.connect();
    let a = h.handle(c, ClientMsg::Submit(Box::new(task(FnId::random(), vec![]))));
    assert!(
        matches!(&a, After::Close(m) if m.contains("expected Hello")),
        "{a:?}"
    );
    assert!(h.st.tasks.is_empty());

    let d = h.driver();
    assert!(closes(h.handle(
        d,
        ClientMsg::TaskDone {
            contained: vec![],
            task: TaskId::random(),
            outcome: Outcome::Returns(vec![]),
            run_us: 1,
        }
    )));
    assert_eq!(
        h.handle(
            d,
            ClientMsg::Hello {
                role: Role::Driver,
                pid: FAKE_PID
            }
        ),
        After::Close("second Hello".into())
    );
    assert!(closes(h.handle(d, ClientMsg::Shutdown)));

    let c = h.connect();
    assert!(closes(h.handle(
        c,
        ClientMsg::Hello {
            role: Role::Worker(WorkerId::random()),
            pid: FAKE_PID
        }
    )));
    let [(w, _)] = h.pool()[..] else {
        unreachable!()
    };
    let c = h.connect();
    assert!(closes(h.handle(
        c,
        ClientMsg::Hello {
            role: Role::Worker(w),
            pid: FAKE_PID
        }
    )));

    let (ctl, _) = h.hello(Role::Control);
    assert!(closes(h.handle(
        ctl,
        ClientMsg::AddRefs {
            ids: vec![ObjectId::for_put()]
        }
    )));
    h.send(
        ctl,
        ClientMsg::Query {
            req: 1,
            query: Query::Status,
        },
    );
    assert!(matches!(
        &h.recv(ctl)[..],
        [NodeMsg::Reply {
            req: 1,
            result: Ok(_)
        }]
    ));
    assert!(closes(h.handle(ctl, ClientMsg::Shutdown)));
    h.st.config.daemon = true;
    assert_eq!(h.handle(ctl, ClientMsg::Shutdown), After::Shutdown);
    assert!(closes(h.handle(d, ClientMsg::Shutdown)));
}

/// Messages of every kind, to mutate.
fn sample_messages() -> Vec<ClientMsg> {
    let spec = task(FnId::random(), vec![ObjectId::for_put()]);
    let class = FnId::random();
    let create = actor_spec(class, Some("a"), 2);
    let id = ObjectId::for_put();
    vec![
        ClientMsg::Hello {
            role: Role::Worker(WorkerId::random()),
            pid: 12,
        },
        ClientMsg::RegisterFunction {
            id: FnId::random(),
            blob: ByteBuf::from(vec![1, 2, 3]),
        },
        ClientMsg::Submit(Box::new(spec.clone())),
        ClientMsg::Submit(Box::new(method(&create, "m", vec![id]))),
        ClientMsg::CreateActor {
            req: 1,
            spec: Box::new(create),
        },
        ClientMsg::Get {
            req: 2,
            ids: vec![id, id],
            timeout_ms: Some(5),
        },
        ClientMsg::Wait {
            req: 3,
            ids: vec![id],
            num_returns: 1,
            timeout_ms: None,
            fetch_local: true,
        },
        ClientMsg::Create {
            req: 4,
            id,
            len: 64,
        },
        ClientMsg::Seal {
            id,
            contained: vec![],
        },
        ClientMsg::PutInline {
            contained: vec![],
            id,
            blob: ByteBuf::from(vec![9; 10]),
        },
        ClientMsg::Release { ids: vec![id] },
        ClientMsg::AddRefs { ids: vec![id] },
        ClientMsg::DecRefs { ids: vec![id] },
        ClientMsg::Escaped { ids: vec![id] },
        ClientMsg::TaskDone {
            contained: vec![],
            task: spec.task,
            outcome: Outcome::Failed(ErrorInfo::new(ErrorKind::Task, "x")),
            run_us: 3,
        },
        ClientMsg::Cancel {
            id,
            force: false,
            recursive: true,
        },
        ClientMsg::KillActor {
            actor: ActorId::random(),
            no_restart: true,
        },
        ClientMsg::GetActor {
            req: 5,
            name: "a".into(),
        },
        ClientMsg::Query {
            req: 6,
            query: Query::Nodes,
        },
        ClientMsg::Shutdown,
    ]
}

/// `msg`'s encoding with one to three random byte edits, flips, cuts or additions.
fn mutate(rng: &mut StdRng, msg: &ClientMsg) -> Vec<u8> {
    let mut bytes = postcard::to_stdvec(msg).expect("encode");
    for _ in 0..rng.random_range(1..4) {
        match rng.random_range(0..3) {
            0 => {
                let i = rng.random_range(0..bytes.len());
                bytes[i] = rng.random();
            }
            1 => bytes.truncate(rng.random_range(0..bytes.len())),
            _ => bytes.push(rng.random()),
        }
        if bytes.is_empty() {
            break;
        }
    }
    bytes
}

#[test]
fn decoding_random_and_mutated_bytes_never_panics() {
    let mut rng = StdRng::seed_from_u64(0x5eed);
    let mut decoded = 0;
    for _ in 0..4000 {
        let len = rng.random_range(0..96);
        let bytes: Vec<u8> = (0..len).map(|_| rng.random()).collect();
        decoded += usize::from(codec::decode::<ClientMsg>(&bytes).is_ok());
    }
    let samples = sample_messages();
    for _ in 0..4000 {
        let pick = rng.random_range(0..samples.len());
        let bytes = mutate(&mut rng, &samples[pick]);
        decoded += usize::from(codec::decode::<ClientMsg>(&bytes).is_ok());
    }
    // Some inputs are valid messages, most are not; none may panic.
    assert!(decoded > 0 && decoded < 8000, "decoded {decoded}");
    for msg in &samples {
        let bytes = postcard::to_stdvec(msg).expect("encode");
        assert_eq!(&codec::decode::<ClientMsg>(&bytes).expect("decode"), msg);
    }
}

#[test]
fn mangled_but_decodable_messages_never_panic_the_state() {
    let mut rng = StdRng::seed_from_u64(0xfeed);
    let mut h = Harness::new(2.0);
    let d = h.driver();
    h.register(d, FN_BLOB);
    let mut conns: Vec<ConnId> = vec![d];
    conns.extend(h.pool().into_iter().map(|(_, c)| c));
    let samples = sample_messages();
    let mut handled = 0;
    let mut closed = 0;
    for _ in 0..3000 {
        let pick = rng.random_range(0..samples.len());
        let bytes = mutate(&mut rng, &samples[pick]);
        // Leniently (trailing bytes allowed, unlike `codec::decode`): what matters
        // here is what the state makes of odd but well-typed messages.
        let Ok((msg, _)) = postcard::take_from_bytes::<ClientMsg>(&bytes) else {
            continue;
        };
        if matches!(msg, ClientMsg::Hello { .. }) {
            continue;
        }
        let slot = rng.random_range(0..conns.len());
        let conn = conns[slot];
        handled += 1;
        if let After::Continue = h.handle(conn, msg) {
            // What the node answers is well formed on the wire.
            for m in h.recv(conn) {
                let frame = codec::encode(&m);
                assert_eq!(codec::decode::<NodeMsg>(&frame[4..]).expect("decode"), m);
            }
        } else {
            // As the server does: the connection goes, a new client comes.
            closed += 1;
            h.st.conn_closed(conn);
            conns[slot] = h.driver();
        }
        for w in h.spawned() {
            let (c, _) = h.hello(Role::Worker(w));
            conns.push(c);
        }
    }
    assert!(handled > 500, "only {handled} messages got through");
    assert!(closed > 0 && closed < handled);
    // The node still answers.
    let d2 = h.driver();
    let id = ObjectId::for_put();
    h.send(
        d2,
        ClientMsg::PutInline {
            contained: vec![],
            id,
            blob: ByteBuf::from(b"still here".to_vec()),
        },
    );
    assert_eq!(h.get_now(d2, &[id]), vec![inline(b"still here")]);
}
