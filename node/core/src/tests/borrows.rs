//! Refs across peers (`cluster::borrows`): an owner keeps what a peer
//! borrows until the peer releases it, a release that crossed a newer lend
//! is ignored, a gone borrower has released everything, a borrower answers a
//! lender's ask with what it no longer holds, and actors end with their handles.

use super::*;
use crate::ids::OwnerTag;

/// A node of a pretend cluster with a driver that put a small value.
fn owner_with_put() -> (Harness, ConnId, ObjectId) {
    let mut h = Harness::new(1.0);
    h.join();
    let d = h.driver();
    let x = ObjectId::for_put_by(h.st.owner_tag);
    h.send(
        d,
        ClientMsg::PutInline {
            id: x,
            blob: ByteBuf::from(b"x".to_vec()),
            contained: Vec::new(),
        },
    );
    h.add_refs(d, vec![x]);
    (h, d, x)
}

#[test]
fn an_owner_keeps_what_a_peer_borrows_until_its_release_covers_the_last_lend() {
    let (mut h, d, x) = owner_with_put();
    let b = peer();
    h.st.cluster.learn_peer(b);
    assert_eq!(h.st.lend(b, &[x]), 1);
    h.send(d, ClientMsg::DecRefs { ids: vec![x] });
    assert!(h.st.knows_object(&x), "the borrower still holds it");

    assert_eq!(h.st.lend(b, &[x]), 2, "lent again, in a later message");
    h.event(Event::Peer {
        from: b,
        msg: PeerMsg::Release {
            ids: vec![x],
            seen: 1,
        },
    });
    assert!(
        h.st.knows_object(&x),
        "a release sent before the second lend arrived does not count"
    );
    // Repeated, it still does not; the release covering both does.
    for _ in 0..2 {
        h.event(Event::Peer {
            from: b,
            msg: PeerMsg::Release {
                ids: vec![x],
                seen: 1,
            },
        });
    }
    assert!(h.st.knows_object(&x));
    h.event(Event::Peer {
        from: b,
        msg: PeerMsg::Release {
            ids: vec![x],
            seen: 2,
        },
    });
    assert!(!h.st.knows_object(&x), "freed once no peer borrows it");
    // A late duplicate frees nothing twice.
    h.event(Event::Peer {
        from: b,
        msg: PeerMsg::Release {
            ids: vec![x],
            seen: 2,
        },
    });
}

#[test]
fn a_borrower_that_is_gone_has_released_everything() {
    let (mut h, d, x) = owner_with_put();
    let b = peer();
    h.st.cluster.learn_peer(b);
    h.st.lend(b, &[x]);
    h.send(d, ClientMsg::DecRefs { ids: vec![x] });
    assert!(h.st.knows_object(&x));
    h.event(Event::PeerGone {
        peer: b,
        why: "killed".into(),
    });
    assert!(!h.st.knows_object(&x));
}

#[test]
fn a_lender_asks_after_a_link_reset_and_the_answer_releases_what_is_not_held() {
    let (mut h, d, x) = owner_with_put();
    let b = peer();
    h.st.cluster.learn_peer(b);
    h.st.lend(b, &[x]);
    h.send(d, ClientMsg::DecRefs { ids: vec![x] });
    h.peer_msgs();
    // The borrower's release was lost with the link: the owner asks.
    h.event(Event::LinkReset { peer: b });
    let asked = h.peer_msgs();
    assert!(
        asked
            .iter()
            .any(|(p, m)| *p == b
                && matches!(m, PeerMsg::AskBorrows { ids, upto: 1 } if ids[..] == [x])),
        "{asked:?}"
    );

    // The borrower's side: it holds nothing of that lender any more.
    let mut bh = Harness::new(1.0);
    let me = bh.join();
    let owner = h.st.cluster.me().expect("joined");
    bh.st.cluster.learn_peer(owner);
    bh.event(Event::Peer {
        from: owner,
        msg: PeerMsg::AskBorrows {
            ids: vec![x],
            upto: 1,
        },
    });
    let answer = bh.peer_msgs();
    let [(to, PeerMsg::Release { ids, seen: 1 })] = &answer[..] else {
        panic!("{answer:?}")
    };
    assert_eq!((*to, &ids[..]), (owner, &[x][..]));
    h.event(Event::Peer {
        from: b,
        msg: PeerMsg::Release {
            ids: ids.clone(),
            seen: 1,
        },
    });
    assert!(!h.st.knows_object(&x));
    let _ = me;
}

#[test]
fn a_borrower_gives_back_at_once_a_ref_nothing_takes_over_and_ignores_a_repeated_lend() {
    let mut h = Harness::new(1.0);
    h.join();
    let lender = peer();
    h.st.cluster.learn_peer(lender);
    let x = ObjectId::for_put_by(OwnerTag::of_peer(&lender));
    let taken = h.st.take_lends(lender, 3, &[x]);
    h.st.settle_borrows(&taken);
    h.pump();
    let back = h.peer_msgs();
    assert!(
        matches!(&back[..], [(p, PeerMsg::Release { ids, seen: 3 })] if *p == lender && ids[..] == [x]),
        "{back:?}"
    );
    assert!(!h.st.knows_object(&x), "no entry is left behind");

    // The same lend again (a broken stream wrote it twice): no lender is
    // noted (the lender forgot this node for it), and nothing is left.
    let taken = h.st.take_lends(lender, 3, &[x]);
    h.st.settle_borrows(&taken);
    h.pump();
    assert!(h.peer_msgs().is_empty());
    assert!(!h.st.knows_object(&x));
    assert!(!h.st.cluster.is_borrowed(&x));
}

#[test]
fn an_actor_whose_handles_are_gone_finishes_its_calls_then_its_worker_is_told_to_exit() {
    let mut h = Harness::new(2.0);
    let d = h.driver();
    let class = h.register(d, CLASS_BLOB);
    let create = actor_spec(class, None, 3);
    let aid = create.actor.expect("actor id");
    let handle = ObjectId::for_actor(aid);
    let (_, ac) = started_actor(&mut h, d, &create);
    h.add_refs(d, vec![handle]);
    let call = method(&create, "m", vec![]);
    h.submit(d, &call);
    h.recv(ac);

    // The last handle goes while a call runs: the call finishes first.
    h.send(d, ClientMsg::DecRefs { ids: vec![handle] });
    assert!(!h.st.knows_object(&handle));
    assert!(
        !h.recv(ac).contains(&NodeMsg::Exit),
        "a call is still running"
    );
    h.returns(ac, call.task, inline(b"done"));
    assert_eq!(h.get_now(d, &[ret(&call)]), vec![inline(b"done")]);
    assert!(h.recv(ac).contains(&NodeMsg::Exit), "then the worker exits");

    // It exits: the actor is dead for good (no restart), its CPU back.
    h.event(Event::Closed { conn: ac });
    assert!(matches!(h.st.actors[&aid].state, ActorState::Dead(_)));
    assert_eq!(h.available_cpu(), 2.0);
    assert!(h.spawned().is_empty(), "not restarted");
}

#[test]
fn a_detached_actor_outlives_its_handles() {
    let mut h = Harness::new(2.0);
    let d = h.driver();
    let class = h.register(d, CLASS_BLOB);
    let mut create = actor_spec(class, Some("keeper"), 0);
    if let Some(o) = create.actor_options.as_mut() {
        o.detached = true;
    }
    let aid = create.actor.expect("actor id");
    let handle = ObjectId::for_actor(aid);
    create_actor(&mut h, d, &create);
    h.add_refs(d, vec![handle]);
    h.send(d, ClientMsg::DecRefs { ids: vec![handle] });
    assert!(
        h.st.knows_object(&handle),
        "nothing frees a detached actor's handle"
    );
    assert!(h.st.actors.is_named("keeper"));
}

/// A guest task run here for `owner` whose small result a driver here also
/// borrows (it came back nested in another result): the value is the owner's,
/// so once the owner is gone the get fails, whichever came first.
fn small_result_for_a_peer_then_owner_dies(result_first: bool) {
    let mut h = Harness::new(1.0);
    h.join();
    let d = h.driver();
    let f = h.register(d, FN_BLOB);
    let [(_, w)] = h.pool()[..] else {
        unreachable!()
    };
    let owner = peer();
    h.st.cluster.learn_peer(owner);
    let mut spec = task(f, vec![]);
    spec.task = TaskId::owned_by(OwnerTag::of_peer(&owner));
    let inner = ret(&spec);
    h.st.handle_peer(
        owner,
        PeerMsg::Task {
            spec: Box::new(spec.clone()),
            deps: vec![],
            deps_contain: vec![],
            owner: ByteBuf::from(owner.as_bytes().to_vec()),
            hops: 1,
            expect_queue: 0,
            lend: 1,
        },
    );
    h.pump();
    let e = one_execution(&h.recv(w));
    assert_eq!(e.task, spec.task);
    // The driver got `inner` nested in another result (as a ref).
    let borrowed = |h: &mut Harness| {
        h.add_refs(d, vec![inner]);
        h.pump();
    };
    if !result_first {
        borrowed(&mut h);
    }
    h.returns(w, spec.task, inline(b"made on the owner's behalf"));
    h.pump();
    if result_first {
        borrowed(&mut h);
    }
    h.peer_msgs();
    h.event(Event::PeerGone {
        peer: owner,
        why: "killed".into(),
    });
    let got = h.get_now(d, &[inner]);
    assert_eq!(error_kind(&got[0]), Some(ErrorKind::OwnerDied), "{got:?}");
}

#[test]
fn a_small_result_made_here_for_a_peer_fails_when_its_owner_dies_made_first() {
    small_result_for_a_peer_then_owner_dies(true);
}

#[test]
fn a_small_result_made_here_for_a_peer_fails_when_its_owner_dies_borrowed_first() {
    small_result_for_a_peer_then_owner_dies(false);
}
