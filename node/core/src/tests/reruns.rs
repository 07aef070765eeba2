//! A task run again where an earlier run, a pull or an earlier incarnation
//! of a peer left traces: a result already in the store is kept (the new run
//! writes nothing), a writer of an object being pulled waits for the pull, and
//! a peer that restarted under the same PeerId is treated as gone.

use super::*;
use crate::store::ObjectStore;

const BIG: u64 = 2 * 1024 * 1024;

fn create(h: &mut Harness, conn: ConnId, id: ObjectId, len: u64) -> Vec<NodeMsg> {
    h.send(conn, ClientMsg::Create { req: 5, id, len });
    h.recv(conn)
}

#[test]
fn a_rerun_whose_result_is_still_in_the_store_writes_nothing_and_completes() {
    let mut h = Harness::new(1.0);
    let d = h.driver();
    let f = h.register(d, FN_BLOB);
    let [(_, w)] = h.pool()[..] else {
        unreachable!()
    };
    let t = task(f, vec![]);
    let r = ret(&t);
    // An earlier run's result: written, read by a driver (pinned), then
    // dropped while that reader still holds it.
    let [
        NodeMsg::Created {
            result: Ok(Reserved::Write { offset }),
            ..
        },
    ] = create(&mut h, d, r, 1000)[..]
    else {
        panic!("expected room")
    };
    h.store.write(offset, &[3; 1000]).unwrap();
    h.add_refs(d, vec![r]);
    h.send(
        d,
        ClientMsg::Seal {
            id: r,
            contained: vec![],
        },
    );
    let stored = Value::Stored { offset, len: 1000 };
    assert_eq!(h.get_now(d, &[r]), vec![stored.clone()]);
    h.send(d, ClientMsg::DecRefs { ids: vec![r] });
    assert!(!h.st.objects.contains(&r));
    assert!(
        h.st.store.is_pinned(&r) && !h.store.contains(&r),
        "deleted, but still read"
    );

    // The task runs again: its worker is told the value is there.
    let d2 = h.driver();
    h.add_refs(d2, vec![r]);
    h.submit(d2, &t);
    assert_eq!(one_execution(&h.recv(w)).task, t.task);
    let msgs = create(&mut h, w, r, 1000);
    assert_eq!(
        msgs,
        vec![NodeMsg::Created {
            req: 5,
            result: Ok(Reserved::Present { offset, len: 1000 })
        }]
    );
    h.returns(w, t.task, stored.clone());
    assert_eq!(h.get_now(d2, &[r]), vec![stored]);
    assert_eq!(h.store.read(offset, 1000).unwrap(), vec![3; 1000]);
    // The first reader lets go: the object stays (it is live again).
    h.send(d, ClientMsg::Release { ids: vec![r] });
    assert!(h.st.store.get(&r).is_some());
}

#[test]
fn a_writer_of_an_object_being_pulled_waits_for_the_pull() {
    for pull_succeeds in [true, false] {
        let mut h = Harness::new(1.0);
        h.join();
        let d = h.driver();
        let id = ObjectId::for_put_by(h.st.owner_tag);
        h.add_refs(d, vec![id]);
        h.st.object_located(id, BIG, vec![peer()], Vec::new());
        h.send(
            d,
            ClientMsg::Get {
                req: 1,
                ids: vec![id],
                timeout_ms: None,
            },
        );
        let [pull] = &h.pulls()[..] else {
            panic!("expected one pull")
        };
        let pulled_at = pull.offset;

        let w = h.driver();
        assert!(
            create(&mut h, w, id, BIG).is_empty(),
            "answered when the pull ends"
        );
        if pull_succeeds {
            h.st.pull_finished(id, Ok(()));
            assert_eq!(
                h.recv(w),
                vec![NodeMsg::Created {
                    req: 5,
                    result: Ok(Reserved::Present {
                        offset: pulled_at,
                        len: BIG
                    })
                }]
            );
        } else {
            h.st.pull_finished(id, Err("the holder went away".into()));
            let msgs = h.recv(w);
            assert!(
                matches!(
                    msgs[..],
                    [NodeMsg::Created {
                        result: Ok(Reserved::Write { .. }),
                        ..
                    }]
                ),
                "{msgs:?}"
            );
        }
    }
}

#[test]
fn a_peer_that_restarted_under_the_same_id_is_gone_and_back() {
    let mut h = Harness::new(1.0);
    h.join();
    let peer = peer();
    h.st.peer_incarnation(peer, 1);
    h.st.peer_incarnation(peer, 1);
    assert_eq!(h.st.cluster.gone_count(), 0, "the same run seen twice");

    // A task sent to it, and an object whose only copy it holds.
    let d = h.driver();
    let f = h.register(d, FN_BLOB);
    let mut t = task(f, vec![]);
    t.max_retries = 3;
    t.task = TaskId::owned_by(h.st.owner_tag);
    h.submit(d, &t);
    h.st.tasks.get_mut(&t.task).unwrap().state = TaskState::Remote;
    h.st.tasks.remove_ready(t.task);
    h.st.cluster.note_sent(t.task, peer);
    let id = ObjectId::for_put_by(h.st.owner_tag);
    h.add_refs(d, vec![id]);
    h.st.object_located(id, BIG, vec![peer], Vec::new());

    h.st.peer_incarnation(peer, 2);
    assert!(
        h.st.cluster.sent_to(&t.task).is_none(),
        "its tasks are placed again"
    );
    assert_eq!(h.st.stats.tasks_retried, 1);
    assert!(
        h.st.objects[&id].elsewhere.is_none(),
        "its copies are forgotten"
    );
    assert!(
        !h.st.cluster.is_gone(&peer),
        "the new run may get work at once"
    );
}

#[test]
fn tasks_waiting_for_a_function_ask_their_owner_and_go_when_it_does() {
    let mut h = Harness::new(1.0);
    h.join();
    let (owner, forwarder) = (peer(), peer());
    let f = FnId::random();
    let mut spec = task(f, vec![]);
    spec.task = TaskId::owned_by(crate::ids::OwnerTag::of_peer(&owner));
    h.st.handle_peer(
        forwarder,
        PeerMsg::Task {
            spec: Box::new(spec.clone()),
            deps: vec![],
            deps_contain: vec![],
            owner: serde_bytes::ByteBuf::from(owner.as_bytes().to_vec()),
            hops: 1,
            expect_queue: 0,
            lend: 1,
        },
    );
    let asked: Vec<_> = h.peer_msgs();
    assert!(
        matches!(&asked[..], [(p, PeerMsg::NeedFunction { id })] if *p == owner && *id == f),
        "the owner is asked, not the peer that passed the task on: {asked:?}"
    );

    // The link to the owner is reset: asked again.
    h.st.link_reset(owner, false);
    let again: Vec<_> = h.peer_msgs();
    assert!(
        again
            .iter()
            .any(|(p, m)| *p == owner && matches!(m, PeerMsg::NeedFunction { .. })),
        "{again:?}"
    );

    // The owner dies: nobody wants the task's result any more.
    h.st.peer_gone(owner, "test");
    assert!(!h.st.cluster.awaits_functions());
}

#[test]
fn a_retiring_worker_hands_back_the_tasks_it_did_not_start_and_is_told_to_exit() {
    let mut h = Harness::new(1.0);
    let d = h.driver();
    let f = h.register(d, FN_BLOB);
    let [(_, w)] = h.pool()[..] else {
        unreachable!()
    };
    let first = task(f, vec![]);
    let second = task(f, vec![]);
    h.submit(d, &first);
    h.submit(d, &second);
    assert_eq!(one_execution(&h.recv(w)).task, first.task);
    // Its function's max_calls is reached: it reports the task, then retires.
    h.returns(w, first.task, inline(b"one"));
    let sent = h.recv(w);
    h.send(w, ClientMsg::Retire);
    assert!(h.recv(w).contains(&NodeMsg::Exit), "{sent:?}");
    assert_eq!(h.available_cpu(), 1.0, "its slot is free");
    // The second task (maybe sent to it already) waits for another worker,
    // with its retries untouched.
    assert_eq!(h.st.tasks[&second.task].state, TaskState::Queued);
    assert_eq!(h.st.tasks[&second.task].retries_left, second.max_retries);
    h.event(Event::Closed { conn: w });
    let [w2] = h.spawned()[..] else {
        panic!("a new worker replaces it")
    };
    let (c2, msgs) = h.hello(Role::Worker(w2));
    assert_eq!(one_execution(&msgs).task, second.task);
    h.returns(c2, second.task, inline(b"two"));
    assert_eq!(h.get_now(d, &[ret(&second)]), vec![inline(b"two")]);
    // A driver does not retire.
    assert!(matches!(h.handle(d, ClientMsg::Retire), After::Close(_)));
}

#[test]
fn an_exception_its_retry_list_does_not_name_fails_the_task_at_once() {
    let mut h = Harness::new(1.0);
    let d = h.driver();
    let f = h.register(d, FN_BLOB);
    let [(_, w)] = h.pool()[..] else {
        unreachable!()
    };
    let mut t = task(f, vec![]);
    t.max_retries = 3;
    t.retry_exceptions = true;
    h.submit(d, &t);
    h.recv(w);
    // A listed exception: retried.
    h.done(
        w,
        t.task,
        Outcome::Failed(ErrorInfo::new(ErrorKind::Task, "Flaky")),
        10,
    );
    assert_eq!(h.st.stats.tasks_retried, 1);
    assert_eq!(one_execution(&h.recv(w)).task, t.task);
    // One the list does not name: failed for good.
    h.done(
        w,
        t.task,
        Outcome::FailedFinal(ErrorInfo::new(ErrorKind::Task, "ValueError")),
        10,
    );
    assert_eq!(h.st.stats.tasks_retried, 1);
    let v = h.get_now(d, &[ret(&t)]);
    assert_eq!(error_kind(&v[0]), Some(ErrorKind::Task));
}

#[test]
fn an_actor_call_with_task_retries_runs_again_on_the_restarted_actor() {
    let mut h = Harness::new(2.0);
    let d = h.driver();
    let class = h.register(d, CLASS_BLOB);
    let create = actor_spec(class, None, 1);
    let aid = create.actor.expect("actor id");
    let (_, ac) = started_actor(&mut h, d, &create);
    let mut retried = method(&create, "m", vec![]);
    retried.max_retries = 1;
    let plain = method(&create, "m", vec![]);
    h.submit(d, &retried);
    h.submit(d, &plain);
    assert_eq!(executions(&h.recv(ac)).len(), 2);
    // The actor's process dies under both calls: it restarts (max_restarts=1).
    h.event(Event::Closed { conn: ac });
    let v = h.get_now(d, &[ret(&plain)]);
    assert_eq!(
        error_kind(&v[0]),
        Some(ErrorKind::ActorDied),
        "no task retries: it fails"
    );
    let [aw2] = h.spawned()[..] else {
        panic!("the actor restarts")
    };
    let (ac2, _) = h.hello(Role::Worker(aw2));
    h.returns(ac2, create.task, inline(b"None"));
    let again = executions(&h.recv(ac2));
    assert_eq!(
        again.iter().map(|e| e.task).collect::<Vec<_>>(),
        vec![retried.task]
    );
    h.returns(ac2, retried.task, inline(b"second run"));
    assert_eq!(h.get_now(d, &[ret(&retried)]), vec![inline(b"second run")]);
    assert_eq!(h.st.actors[&aid].state, ActorState::Alive);
}
