//! Placement across peers, driven through the state with a fake gossip view:
//! bid rounds, batches, the less-loaded bid winning, resources only one peer
//! has, tasks that fit nowhere waiting, and the result path back to the owner.

use super::*;
use crate::event::PeerLoad;
use crate::wire::peer::{BidLoad, WireValue};

fn load(cpus: f64, free: f64, queue: u64, gpus: f64) -> PeerLoad {
    PeerLoad {
        cpus_total: cpus,
        cpus_free: free,
        resources: if gpus > 0.0 {
            vec![("GPU".into(), gpus, gpus)]
        } else {
            vec![]
        },
        queue_len: queue,
        ..Default::default()
    }
}

fn bid_requests(msgs: &[(PeerId, PeerMsg)]) -> Vec<(PeerId, u64)> {
    msgs.iter()
        .filter_map(|(p, m)| match m {
            PeerMsg::BidRequest { round, .. } => Some((*p, *round)),
            _ => None,
        })
        .collect()
}

fn tasks_sent(msgs: &[(PeerId, PeerMsg)]) -> Vec<(PeerId, TaskId)> {
    msgs.iter()
        .filter_map(|(p, m)| match m {
            PeerMsg::Task { spec, .. } => Some((*p, spec.task)),
            _ => None,
        })
        .collect()
}

fn bid(free_cpu: f64, queue_len: u32, fits_now: bool) -> BidLoad {
    BidLoad {
        queue_len,
        free_cpu,
        total_cpu: 4.0,
        fits_now,
    }
}

#[test]
fn without_peers_nothing_changes_and_no_message_is_sent() {
    let mut h = Harness::new(1.0);
    h.join();
    let d = h.driver();
    let f = h.register(d, FN_BLOB);
    h.pool();
    let a = task(f, vec![]);
    let b = task(f, vec![]);
    h.submit(d, &a);
    h.submit(d, &b);
    assert_eq!(
        h.st.tasks.ready_list(),
        vec![b.task],
        "an empty view keeps work here"
    );
    assert!(h.peer_msgs().is_empty());
}

#[test]
fn a_burst_that_does_not_fit_is_one_batch_spread_by_bids_with_this_node_in_it() {
    let mut h = Harness::new(1.0);
    h.join();
    let (idle, busy) = (peer(), peer());
    h.st.update_view(vec![
        (idle, load(4.0, 4.0, 0, 0.0)),
        (busy, load(4.0, 0.0, 9, 0.0)),
    ]);
    let d = h.driver();
    let f = h.register(d, FN_BLOB);
    h.pool();
    let first = task(f, vec![]);
    h.submit(d, &first);
    assert!(h.peer_msgs().is_empty(), "a free slot here: the fast path");

    // The first task that does not fit starts a round; the rest of the burst
    // arrives while its bids are out and becomes the next round's batch.
    let burst: Vec<TaskSpec> = (0..7).map(|_| task(f, vec![])).collect();
    for t in &burst {
        h.submit(d, t);
    }
    let mut msgs = Vec::new();
    for (batch, free) in [(1, 4.0), (6, 3.0)] {
        let asked = bid_requests(&h.peer_msgs());
        assert_eq!(asked.len(), 2, "a round probes two peers: {asked:?}");
        let round = asked[0].1;
        assert!(asked.iter().all(|(_, r)| *r == round));
        assert_eq!(h.st.cluster.round_size(), Some(batch));
        h.st.handle_peer(
            idle,
            PeerMsg::Bid {
                round,
                load: bid(free, 0, true),
            },
        );
        assert!(
            tasks_sent(&h.peer_msgs()).is_empty(),
            "the round waits for every bid"
        );
        h.st.handle_peer(
            busy,
            PeerMsg::Bid {
                round,
                load: bid(0.0, 9, false),
            },
        );
        msgs.extend(h.peer_msgs());
        // Put the next round's requests back in line for the next pass.
        let (next, done): (Vec<_>, Vec<_>) = msgs
            .drain(..)
            .partition(|(_, m)| matches!(m, PeerMsg::BidRequest { .. }));
        for r in next {
            h.to_peers.push(r);
        }
        msgs = done;
        if batch == 1 {
            assert_eq!(tasks_sent(&msgs).len(), 1);
        }
    }
    let sent = tasks_sent(&msgs);
    assert!(
        sent.iter().all(|(p, _)| *p == idle),
        "the less-loaded bid wins: {sent:?}"
    );
    assert!(
        msgs.iter()
            .any(|(p, m)| *p == idle && matches!(m, PeerMsg::Function { .. })),
        "the function goes first"
    );
    let kept = burst.len() - sent.len();
    assert!(
        sent.len() >= 4 && kept >= 1,
        "4 free CPUs there, and this node queues too: sent {}",
        sent.len()
    );
    assert_eq!(h.st.tasks.ready_len(), kept);
    for (_, tid) in &sent {
        assert_eq!(h.st.tasks[tid].state, TaskState::Remote);
        assert_eq!(h.st.cluster.sent_to(tid), Some(idle));
    }
}

#[test]
fn a_resource_only_one_peer_has_sends_the_task_there() {
    let mut h = Harness::new(2.0);
    h.join();
    let gpu_peer = peer();
    let mut view = vec![(gpu_peer, load(2.0, 0.0, 5, 1.0))];
    view.extend((0..20).map(|_| (peer(), load(8.0, 8.0, 0, 0.0))));
    h.st.update_view(view);
    let d = h.driver();
    let f = h.register(d, FN_BLOB);
    h.pool();
    let mut t = task(f, vec![]);
    t.resources.push(("GPU".into(), 1.0));
    h.submit(d, &t);
    let asked = bid_requests(&h.peer_msgs());
    assert_eq!(
        asked.iter().map(|(p, _)| *p).collect::<Vec<_>>(),
        [gpu_peer]
    );
    h.st.handle_peer(
        gpu_peer,
        PeerMsg::Bid {
            round: asked[0].1,
            load: bid(0.0, 5, false),
        },
    );
    assert_eq!(tasks_sent(&h.peer_msgs()), [(gpu_peer, t.task)]);
}

#[test]
fn a_task_that_fits_nowhere_waits_says_so_and_goes_when_a_peer_can_run_it() {
    let mut h = Harness::new(2.0);
    h.join();
    h.st.update_view(vec![(peer(), load(4.0, 4.0, 0, 0.0))]);
    let d = h.driver();
    let f = h.register(d, FN_BLOB);
    h.pool();
    let mut t = task(f, vec![]);
    t.resources.push(("GPU".into(), 1.0));
    h.submit(d, &t);
    for _ in 0..10 {
        h.st.update_view(vec![(peer(), load(4.0, 4.0, 0, 0.0))]);
        h.st.expire_placement(h.now + std::time::Duration::from_secs(5));
    }
    assert!(h.peer_msgs().is_empty(), "no probe, no bounce");
    assert_eq!(h.st.tasks[&t.task].state, TaskState::Placing);
    let status = h.st.query(Query::Status);
    let waiting = &status["placement"]["waiting_for_resources"];
    assert_eq!(waiting[0]["task"], "f", "{status}");
    assert_eq!(waiting[0]["needs"]["GPU"], 1.0);

    let gpu_peer = peer();
    h.st.update_view(vec![(gpu_peer, load(1.0, 1.0, 0, 1.0))]);
    let asked = bid_requests(&h.peer_msgs());
    assert_eq!(
        asked.iter().map(|(p, _)| *p).collect::<Vec<_>>(),
        [gpu_peer]
    );
    assert!(
        h.st.query(Query::Status)["placement"]["waiting_for_resources"]
            .as_array()
            .is_some_and(|w| w.is_empty())
    );
}

#[test]
fn late_bids_do_not_hold_tasks_forever() {
    let mut h = Harness::new(1.0);
    h.join();
    let silent = peer();
    h.st.update_view(vec![(silent, load(4.0, 4.0, 0, 0.0))]);
    let d = h.driver();
    let f = h.register(d, FN_BLOB);
    h.pool();
    let (a, b) = (task(f, vec![]), task(f, vec![]));
    h.submit(d, &a);
    h.submit(d, &b);
    assert_eq!(bid_requests(&h.peer_msgs()).len(), 1);
    h.st.expire_placement(h.now + crate::BID_TIMEOUT);
    assert_eq!(
        h.st.tasks.ready_list(),
        vec![b.task],
        "decided without the late bid: it stays here"
    );
}

#[test]
fn results_of_a_remote_task_come_back_to_the_owner_and_free_the_guest_copy() {
    let mut owner = Harness::new(1.0);
    let owner_id = owner.join();
    let mut guest = Harness::new(1.0);
    let guest_id = guest.join();
    owner
        .st
        .update_view(vec![(guest_id, load(1.0, 1.0, 0, 0.0))]);
    guest
        .st
        .update_view(vec![(owner_id, load(1.0, 0.0, 0, 0.0))]);
    let d = owner.driver();
    let f = owner.register(d, FN_BLOB);
    owner.pool();
    let [(_, gw)] = guest.pool()[..] else {
        unreachable!()
    };
    owner.submit(d, &task(f, vec![]));
    let arg = ObjectId::for_put();
    owner.send(
        d,
        ClientMsg::PutInline {
            id: arg,
            blob: ByteBuf::from(b"argument".to_vec()),
            contained: vec![],
        },
    );
    let t = task(f, vec![arg]);
    owner.submit(d, &t);
    let [(_, round)] = bid_requests(&owner.peer_msgs())[..] else {
        panic!("one probe")
    };
    owner.st.handle_peer(
        guest_id,
        PeerMsg::Bid {
            round,
            load: bid(1.0, 0, true),
        },
    );
    for (to, msg) in owner.peer_msgs() {
        assert_eq!(to, guest_id);
        guest.st.handle_peer(owner_id, msg);
    }
    let exec = one_execution(&guest.recv(gw));
    assert_eq!(exec.task, t.task);
    assert_eq!(
        exec.deps,
        vec![inline(b"argument")],
        "the argument came along"
    );
    assert!(
        exec.forward_output,
        "printed lines go to the owner's driver"
    );
    guest.returns(gw, t.task, inline(b"result"));
    let back = guest.peer_msgs();
    assert!(
        matches!(&back[..], [(p, PeerMsg::Objects { values, .. }), (q, PeerMsg::Release { ids, .. })]
        if *p == owner_id && values[0] == (ret(&t), WireValue::Blob(ByteBuf::from(b"result".to_vec())))
            && *q == owner_id && ids[..] == t.deps[..]),
        "the result goes home, then the argument borrowed from the owner goes back: {back:?}"
    );
    assert!(
        !guest.st.objects.contains(&ret(&t)),
        "the guest keeps no copy"
    );
    assert!(!guest.st.objects.contains(&arg), "nor the argument");
    for (_, msg) in back {
        owner.st.handle_peer(guest_id, msg);
    }
    assert_eq!(owner.get_now(d, &[ret(&t)]), vec![inline(b"result")]);
    assert!(
        !owner.st.tasks.contains(&t.task),
        "the task is over at its owner"
    );
}

#[test]
fn an_actor_call_lost_with_a_link_fails_as_unavailable_instead_of_waiting_forever() {
    // Found by the simulation (seed 22135): a call lost when the link to its
    // actor's peer broke was never placed again (it must not run twice), and
    // its get never returned.
    let mut h = Harness::new(0.0);
    h.join();
    let host = peer();
    h.st.update_view(vec![(host, load(4.0, 4.0, 0, 0.0))]);
    let d = h.driver();
    let class = h.register(d, CLASS_BLOB);
    let owner = h.st.owner_tag;
    let mut create = actor_spec(class, None, 0);
    let aid = crate::ids::ActorId::owned_by(owner);
    create.task = TaskId::owned_by(owner);
    create.actor = Some(aid);
    if let Some(o) = create.actor_options.as_mut() {
        o.actor = aid;
    }
    h.submit(d, &create);
    // No CPU here: the actor goes to the host.
    let [(_, round)] = bid_requests(&h.peer_msgs())[..] else {
        panic!("one bid round")
    };
    h.st.handle_peer(
        host,
        PeerMsg::Bid {
            round,
            load: bid(4.0, 0, true),
        },
    );
    assert_eq!(tasks_sent(&h.peer_msgs()), [(host, create.task)]);
    let mut call = method(&create, "m", vec![]);
    call.task = TaskId::owned_by(owner);
    h.submit(d, &call);
    assert_eq!(tasks_sent(&h.peer_msgs()), [(host, call.task)]);
    // The link breaks and comes back; the host has never seen the call.
    h.event(Event::LinkReset { peer: host });
    assert!(
        h.peer_msgs().iter().any(|(p, m)| *p == host
            && matches!(m, PeerMsg::Which { tasks } if tasks.contains(&call.task)))
    );
    h.st.handle_peer(host, PeerMsg::Have { tasks: vec![] });
    let v = h.get_now(d, &[ret(&call)]);
    assert_eq!(error_kind(&v[0]), Some(ErrorKind::ActorUnavailable));
}

#[test]
fn a_relayed_peer_bids_worse_for_tasks_with_large_inputs_elsewhere() {
    use crate::event::{NetworkView, PeerLink, PeerView};
    use peer_placement::{Bid, Load as PlacementLoad};
    let mut h = Harness::new(1.0);
    h.join();
    let (direct, relayed) = (peer(), peer());
    let view = |p: PeerId, link| PeerView {
        peer: p,
        addresses: vec![],
        load: Some(load(4.0, 2.0, 0, 0.0)),
        objects: 0,
        age: Duration::ZERO,
        link: Some(link),
        rtt: None,
    };
    h.event(Event::View {
        listen: vec![],
        peers: vec![
            view(relayed, PeerLink::Relayed),
            view(direct, PeerLink::HolePunched),
        ],
        network: NetworkView::default(),
    });
    let bid = |p| Bid {
        peer: Some(p),
        load: PlacementLoad {
            queue_len: 0,
            free_cpu: 2.0,
            total_cpu: 4.0,
        },
        fits_now: true,
    };
    let far = vec![bid(relayed), bid(direct)];
    // Small inputs (or none elsewhere): a relay costs nothing extra.
    assert_eq!(h.st.relay_penalty(far.clone(), false), far);
    let ranked = h.st.relay_penalty(far, true);
    assert_eq!(ranked[0].peer, Some(direct), "the direct peer comes first");
    assert_eq!(ranked[1].peer, Some(relayed));
    assert_eq!(
        ranked[1].load.queue_len, 4,
        "as if one more task per CPU were queued there"
    );
    assert!(ranked[0].load.backlog() < ranked[1].load.backlog());
}
