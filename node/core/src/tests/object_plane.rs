//! Large values across peers, driven through two nodes' states: a guest's
//! large result travels as a location and stays where it was made, the owner
//! pulls it on `get` (one pull however many ask), the pulled copy is sealed and
//! the owner learns of it, and freeing the object tells the holders.

use super::*;
use crate::event::{PeerLoad, PullFailure};
use crate::store::ObjectStore;
use crate::wire::peer::WireValue;

const BIG: u64 = 2 * 1024 * 1024;

/// A worker of `h` writes a `BIG`-byte result for `task` into the store.
fn stored_result(h: &mut Harness, worker: ConnId, task: TaskId) -> Value {
    let id = ObjectId::for_return(task, 1);
    h.send(
        worker,
        ClientMsg::Create {
            req: 9,
            id,
            len: BIG,
        },
    );
    let [
        NodeMsg::Created {
            result: Ok(Reserved::Write { offset }),
            ..
        },
    ] = h.recv(worker)[..]
    else {
        panic!("expected Created")
    };
    h.store.write(offset, &vec![7u8; BIG as usize]).unwrap();
    Value::Stored { offset, len: BIG }
}

#[test]
fn a_large_result_stays_where_it_was_made_and_is_pulled_once_by_its_owner() {
    let mut owner = Harness::new(1.0);
    let owner_id = owner.join();
    let mut guest = Harness::new(1.0);
    let guest_id = guest.join();
    owner.st.update_view(vec![(
        guest_id,
        PeerLoad {
            cpus_total: 1.0,
            cpus_free: 1.0,
            ..Default::default()
        },
    )]);
    guest.st.cluster.learn_peer(owner_id);
    let d = owner.driver();
    let f = owner.register(d, FN_BLOB);
    owner.pool();
    let [(_, gw)] = guest.pool()[..] else {
        unreachable!()
    };

    // The owner's only CPU is taken: the next task goes to the guest.
    let mut first = task(f, vec![]);
    first.task = TaskId::owned_by(owner.st.owner_tag);
    owner.submit(d, &first);
    let mut t = task(f, vec![]);
    t.task = TaskId::owned_by(owner.st.owner_tag);
    owner.submit(d, &t);
    let round = owner
        .peer_msgs()
        .into_iter()
        .find_map(|(_, m)| match m {
            PeerMsg::BidRequest { round, .. } => Some(round),
            _ => None,
        })
        .expect("a bid request");
    owner.st.handle_peer(
        guest_id,
        PeerMsg::Bid {
            round,
            load: crate::wire::peer::BidLoad {
                queue_len: 0,
                free_cpu: 1.0,
                total_cpu: 1.0,
                fits_now: true,
            },
        },
    );
    for (_, msg) in owner.peer_msgs() {
        guest.st.handle_peer(owner_id, msg);
    }
    assert_eq!(one_execution(&guest.recv(gw)).task, t.task);
    let value = stored_result(&mut guest, gw, t.task);
    guest.returns(gw, t.task, value);

    let back = guest.peer_msgs();
    let [(to, PeerMsg::Objects { values, .. })] = &back[..] else {
        panic!("{back:?}")
    };
    assert_eq!(*to, owner_id);
    assert!(
        matches!(&values[0].1, WireValue::At { len: BIG, holders, complete: 1 } if holders.len() == 1),
        "too big for a message: it travels as its location"
    );
    let r = ret(&t);
    assert!(
        guest.st.objects[&r].held_for_owner,
        "the guest keeps it for the owner"
    );
    assert!(guest.st.store.get(&r).is_some());

    for (_, msg) in back {
        owner.st.handle_peer(guest_id, msg);
    }
    assert!(owner.st.objects[&r].is_elsewhere());
    assert!(
        !owner.st.tasks.contains(&t.task),
        "the task is done once its result is located"
    );

    // Two gets share one pull.
    let d2 = owner.driver();
    owner.add_refs(d, vec![r]);
    for conn in [d, d2] {
        owner.send(
            conn,
            ClientMsg::Get {
                req: 1,
                ids: vec![r],
                timeout_ms: None,
            },
        );
    }
    let jobs = owner.pulls();
    assert_eq!(jobs.len(), 1, "one pull for every local need");
    let pull = &jobs[0];
    assert_eq!((pull.id, pull.sources.clone()), (r, vec![guest_id]));
    assert!(owner.recv(d).is_empty(), "the get waits for the pull");

    // The pull wrote every chunk; the object is sealed and both gets answered.
    owner
        .store
        .write(pull.offset, &vec![7u8; BIG as usize])
        .unwrap();
    owner.st.pull_finished(r, Ok(()));
    for conn in [d, d2] {
        let msgs = owner.recv(conn);
        assert!(
            matches!(&msgs[..], [NodeMsg::Values { values: Some(v), .. }] if matches!(v[0], Value::Stored { len: BIG, .. })),
            "{msgs:?}"
        );
    }
    assert_eq!(owner.st.stats.objects_pulled, 1);

    // Freeing the object at its owner tells the peer that kept a copy for it.
    owner.send(d, ClientMsg::Release { ids: vec![r, r] });
    owner.send(d2, ClientMsg::Release { ids: vec![r] });
    owner.send(d, ClientMsg::DecRefs { ids: vec![r] });
    assert!(!owner.st.objects.contains(&r));
    let frees: Vec<_> = owner
        .peer_msgs()
        .into_iter()
        .filter(|(p, m)| *p == guest_id && matches!(m, PeerMsg::Free { ids } if ids == &vec![r]))
        .collect();
    assert_eq!(frees.len(), 1);
    for (_, msg) in frees {
        guest.st.handle_peer(owner_id, msg);
    }
    assert!(!guest.st.objects.contains(&r));
    assert!(guest.st.store.get(&r).is_none(), "the guest's copy is gone");
}

#[test]
fn a_pull_that_fails_makes_the_object_an_error_instead_of_a_hang() {
    let mut h = Harness::new(1.0);
    h.join();
    let d = h.driver();
    // Owned here, no lineage to rebuild it: the failure is the answer.
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
    assert_eq!(h.pulls().len(), 1);
    h.st.pull_finished(id, Err("the holder went away".into()));
    let msgs = h.recv(d);
    let [
        NodeMsg::Values {
            values: Some(v), ..
        },
    ] = &msgs[..]
    else {
        panic!("{msgs:?}")
    };
    assert_eq!(error_kind(&v[0]), Some(ErrorKind::ObjectLost));
    assert_eq!(
        h.st.store.stats().used,
        0,
        "the space reserved for it is given back"
    );

    // Owned by another peer: its owner is asked again (it may rebuild it), naming the holder
    // that failed, after a pause.
    let owner = peer();
    h.st.cluster.learn_peer(owner);
    let foreign = ObjectId::for_put_by(crate::ids::OwnerTag::of_peer(&owner));
    h.add_refs(d, vec![foreign]);
    let holder = peer();
    h.st.object_located(foreign, BIG, vec![holder], Vec::new());
    h.send(
        d,
        ClientMsg::Get {
            req: 2,
            ids: vec![foreign],
            timeout_ms: None,
        },
    );
    assert_eq!(h.pulls().len(), 1);
    let failure = PullFailure {
        why: "refused".into(),
        bad: vec![holder],
    };
    h.st.pull_finished(foreign, Err(failure));
    assert!(h.recv(d).is_empty(), "still waiting");
    h.peer_msgs();
    h.advance(Duration::from_secs(1));
    let asked = h.peer_msgs();
    assert!(
        matches!(&asked[..], [(p, PeerMsg::Fetch { id, failed })]
            if *p == owner && *id == foreign && failed == &vec![ByteBuf::from(holder.as_bytes().to_vec())]),
        "{asked:?}"
    );
}

#[test]
fn an_argument_passed_twice_runs_its_task_once_it_is_pulled() {
    // Found by the simulation (seed 40): the task waited for the pull of its
    // argument once per occurrence but was woken once, and never ran.
    let mut h = Harness::new(1.0);
    h.join();
    let d = h.driver();
    let f = h.register(d, FN_BLOB);
    let [(_, w)] = h.pool()[..] else {
        unreachable!()
    };
    let (owner, holder) = (peer(), peer());
    h.st.cluster.learn_peer(owner);
    let arg = ObjectId::for_put_by(crate::ids::OwnerTag::of_peer(&owner));
    let mut spec = task(f, vec![arg, arg]);
    spec.task = TaskId::owned_by(crate::ids::OwnerTag::of_peer(&owner));
    let at = || WireValue::At {
        len: BIG,
        holders: vec![ByteBuf::from(holder.as_bytes().to_vec())],
        complete: 1,
    };
    h.st.handle_peer(
        owner,
        PeerMsg::Task {
            spec: Box::new(spec.clone()),
            deps: vec![at(), at()],
            deps_contain: vec![vec![], vec![]],
            owner: ByteBuf::from(owner.as_bytes().to_vec()),
            hops: 1,
            expect_queue: 0,
            lend: 1,
        },
    );
    let [pull] = &h.pulls()[..] else {
        panic!("one pull for both occurrences")
    };
    assert!(h.recv(w).is_empty(), "it waits for the pull");
    h.store
        .write(pull.offset, &vec![7u8; BIG as usize])
        .unwrap();
    h.st.pull_finished(arg, Ok(()));
    let e = one_execution(&h.recv(w));
    assert_eq!(e.task, spec.task);
    assert_eq!(e.deps.len(), 2);
}

#[test]
fn a_wait_with_fetch_local_pulls_first_and_one_without_is_ready_where_the_value_is() {
    let mut h = Harness::new(1.0);
    h.join();
    let d = h.driver();
    let wait = |req, ids: Vec<ObjectId>, fetch_local| ClientMsg::Wait {
        req,
        ids,
        num_returns: 1,
        timeout_ms: None,
        fetch_local,
    };

    // A value on another peer: `fetch_local=False` is ready at once and pulls nothing.
    let there = ObjectId::for_put_by(h.st.owner_tag);
    h.add_refs(d, vec![there]);
    h.st.object_located(there, BIG, vec![peer()], Vec::new());
    h.send(d, wait(1, vec![there], false));
    assert!(matches!(&h.recv(d)[..], [NodeMsg::Ready { req: 1, indices }] if indices == &[0]));
    assert!(h.pulls().is_empty(), "fetch_local=False pulls nothing");

    // One whose place is learnt while the wait is on: ready then, still without a pull.
    let later = ObjectId::for_put_by(h.st.owner_tag);
    h.add_refs(d, vec![later]);
    h.send(d, wait(2, vec![later], false));
    assert!(h.recv(d).is_empty());
    h.st.object_located(later, BIG, vec![peer()], Vec::new());
    assert!(matches!(&h.recv(d)[..], [NodeMsg::Ready { req: 2, indices }] if indices == &[0]));
    assert!(h.pulls().is_empty());

    // `fetch_local=True` (Ray's default) pulls it and is ready once the value is here.
    h.send(d, wait(3, vec![there], true));
    assert_eq!(h.pulls().len(), 1, "the wait starts the pull");
    assert!(
        h.recv(d).is_empty(),
        "not ready while the value is elsewhere"
    );
    h.st.pull_finished(there, Ok(()));
    assert!(matches!(&h.recv(d)[..], [NodeMsg::Ready { req: 3, indices }] if indices == &[0]));
}

#[test]
fn status_lists_a_pull_in_flight_with_its_bytes_and_rate() {
    let mut h = Harness::new(1.0);
    h.join();
    let d = h.driver();
    let id = ObjectId::for_put_by(h.st.owner_tag);
    h.add_refs(d, vec![id]);
    let len = crate::CHUNK + 1000; // two chunks (the harness's store holds 8 MiB)
    h.st.object_located(id, len, vec![peer()], Vec::new());
    h.send(
        d,
        ClientMsg::Get {
            req: 1,
            ids: vec![id],
            timeout_ms: None,
        },
    );
    assert_eq!(h.pulls().len(), 1);
    h.now += Duration::from_secs(2);
    h.event(Event::PullChunk { id, chunk: 0 });
    let pulls = &h.st.query(Query::Status)["store"]["pulling"];
    assert_eq!(pulls.as_array().map(Vec::len), Some(1), "{pulls}");
    let p = &pulls[0];
    assert_eq!(p["object"], id.to_string());
    assert_eq!(p["bytes"], len);
    assert_eq!(p["received"], crate::CHUNK);
    assert_eq!(p["seconds"], 2.0);
    assert_eq!(p["bytes_per_s"], crate::CHUNK as f64 / 2.0);
    h.st.pull_finished(id, Ok(()));
    assert_eq!(
        h.st.query(Query::Status)["store"]["pulling"],
        serde_json::json!([])
    );
}

#[test]
fn a_puller_learns_which_holders_have_whole_copies_and_which_are_pulling_too() {
    let mut h = Harness::new(1.0);
    h.join();
    let d = h.driver();
    let owner = peer();
    h.st.cluster.learn_peer(owner);
    let id = ObjectId::for_put_by(crate::ids::OwnerTag::of_peer(&owner));
    h.add_refs(d, vec![id]);
    let (producer, puller) = (peer(), peer());
    let bytes = |p: &PeerId| ByteBuf::from(p.as_bytes().to_vec());
    h.st.handle_peer(
        owner,
        PeerMsg::Objects {
            values: vec![(
                id,
                WireValue::At {
                    len: BIG,
                    holders: vec![bytes(&producer), bytes(&puller)],
                    complete: 1,
                },
            )],
            contains: Vec::new(),
            lend: 0,
        },
    );
    h.send(
        d,
        ClientMsg::Get {
            req: 1,
            ids: vec![id],
            timeout_ms: None,
        },
    );
    let pulls = h.pulls();
    assert_eq!(pulls.len(), 1);
    assert_eq!(pulls[0].sources, vec![producer, puller]);
    assert_eq!(pulls[0].complete, 1, "the puller is not a whole copy");
}
