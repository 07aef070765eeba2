//! Actors (ordering, death, restart, names) and cancellation.

use super::*;

#[test]
fn actor_methods_run_in_submission_order_pipelined_and_a_waiting_one_holds_back_the_rest() {
    let mut h = Harness::new(2.0);
    let d = h.driver();
    let class = h.register(d, CLASS_BLOB);
    let create = actor_spec(class, None, 0);
    let aid = create.actor.expect("actor id");
    h.send(
        d,
        ClientMsg::CreateActor {
            req: 5,
            spec: Box::new(create.clone()),
        },
    );
    assert_eq!(
        h.recv(d),
        vec![NodeMsg::Reply {
            req: 5,
            result: Ok(String::new())
        }]
    );
    assert_eq!(h.st.actors[&aid].state, ActorState::Creating);
    assert_eq!(h.available_cpu(), 1.0, "the actor holds its CPU");
    let [aw] = h.spawned()[..] else {
        panic!("one worker for the actor")
    };

    let m: Vec<TaskSpec> = (0..3)
        .map(|i| method(&create, &format!("m{i}"), vec![]))
        .collect();
    for s in &m {
        h.submit(d, s);
    }
    let (ac, msgs) = h.hello(Role::Worker(aw));
    let e = one_execution(&msgs);
    assert_eq!(e.kind, TaskKind::ActorCreate);
    assert_eq!(e.task, create.task);
    assert_eq!(e.fn_blob.as_deref().map(|b| &b[..]), Some(CLASS_BLOB));

    h.returns(ac, create.task, inline(b"None"));
    assert_eq!(h.st.actors[&aid].state, ActorState::Alive);
    let execs = executions(&h.recv(ac));
    assert_eq!(
        execs.iter().map(|e| e.task).collect::<Vec<_>>(),
        m.iter().map(|s| s.task).collect::<Vec<_>>(),
        "all three, in order, without waiting for each other"
    );
    assert!(
        execs.iter().all(|e| e.kind == TaskKind::ActorMethod
            && e.fn_blob.is_none()
            && e.actor == Some(aid))
    );
    assert_eq!(execs[1].method, "m1");
    assert_eq!(h.st.actors[&aid].inflight.len(), 3);
    for s in &m {
        h.returns(ac, s.task, inline(s.method.as_bytes()));
    }
    assert!(h.st.actors[&aid].inflight.is_empty());
    assert_eq!(h.get_now(d, &[ret(&m[2])]), vec![inline(b"m2")]);

    // A method waiting for an argument holds back the calls behind it.
    let p = ObjectId::for_put();
    h.add_refs(d, vec![p]);
    let waiting = method(&create, "needs_p", vec![p]);
    let behind = method(&create, "behind", vec![]);
    h.submit(d, &waiting);
    h.submit(d, &behind);
    assert!(h.recv(ac).is_empty());
    assert_eq!(h.st.actors[&aid].queue.len(), 2);
    h.send(
        d,
        ClientMsg::PutInline {
            contained: vec![],
            id: p,
            blob: ByteBuf::from(b"p".to_vec()),
        },
    );
    let execs = executions(&h.recv(ac));
    assert_eq!(
        execs.iter().map(|e| e.task).collect::<Vec<_>>(),
        vec![waiting.task, behind.task]
    );
    assert_eq!(execs[0].deps, vec![inline(b"p")]);
    assert_eq!(h.available_cpu(), 1.0, "methods take no CPU of their own");
}

#[test]
fn actor_death_fails_inflight_calls_and_restarts_while_allowed() {
    let mut h = Harness::new(1.0);
    let d = h.driver();
    let class = h.register(d, CLASS_BLOB);
    let create = actor_spec(class, Some("survivor"), 1);
    let aid = create.actor.expect("actor id");
    h.send(
        d,
        ClientMsg::CreateActor {
            req: 1,
            spec: Box::new(create.clone()),
        },
    );
    h.recv(d);
    let [aw] = h.spawned()[..] else {
        panic!("one actor worker")
    };
    let (ac, _) = h.hello(Role::Worker(aw));
    h.returns(ac, create.task, inline(b"None"));
    assert_eq!(h.available_cpu(), 0.0);

    let m1 = method(&create, "m1", vec![]);
    let m2 = method(&create, "m2", vec![]);
    let p = ObjectId::for_put();
    h.add_refs(d, vec![p]);
    let m3 = method(&create, "m3", vec![p]);
    for s in [&m1, &m2, &m3] {
        h.submit(d, s);
    }
    assert_eq!(executions(&h.recv(ac)).len(), 2);

    h.st.conn_closed(ac);
    for s in [&m1, &m2] {
        let v = h.get_now(d, &[ret(s)]);
        assert_eq!(error_kind(&v[0]), Some(ErrorKind::ActorDied));
    }
    assert!(!is_ready(&h.st, &ret(&m3)), "m3 was never sent: it waits");
    let a = &h.st.actors[&aid];
    assert_eq!(a.state, ActorState::Creating, "restarting");
    assert_eq!(a.restarts_left, 0);
    assert_eq!(a.queue.len(), 1);
    assert_eq!(h.available_cpu(), 0.0, "the restarted actor holds the CPU");
    let [aw2] = h.spawned()[..] else {
        panic!("a new worker for the restart")
    };
    let (ac2, msgs) = h.hello(Role::Worker(aw2));
    let e = one_execution(&msgs);
    assert_eq!(e.task, create.task);
    assert!(e.fn_blob.is_some());
    h.returns(ac2, create.task, inline(b"None"));
    assert_eq!(h.st.actors[&aid].state, ActorState::Alive);
    h.send(
        d,
        ClientMsg::GetActor {
            req: 2,
            name: "survivor".into(),
        },
    );
    assert!(matches!(
        &h.recv(d)[..],
        [NodeMsg::ActorHandle {
            req: 2,
            blob: Some(_)
        }]
    ));

    // No restarts left: the actor is dead, and so is every call still queued.
    h.st.conn_closed(ac2);
    assert!(matches!(
        h.st.actors[&aid].state,
        ActorState::Dead(ErrorInfo {
            kind: ErrorKind::ActorDied,
            ..
        })
    ));
    let v = h.get_now(d, &[ret(&m3)]);
    assert_eq!(error_kind(&v[0]), Some(ErrorKind::ActorDied));
    assert!(h.spawned().is_empty());
    assert_eq!(h.available_cpu(), 1.0);
    assert!(!h.st.actors.is_named("survivor"));
    let late = method(&create, "late", vec![]);
    h.submit(d, &late);
    let v = h.get_now(d, &[ret(&late)]);
    assert_eq!(error_kind(&v[0]), Some(ErrorKind::ActorDied));
    assert!(h.st.tasks.is_empty());
}

#[test]
fn named_actors_are_found_by_name_and_names_are_unique_while_alive() {
    let mut h = Harness::new(2.0);
    let d = h.driver();
    let class = h.register(d, CLASS_BLOB);
    let first = actor_spec(class, Some("counter"), 0);
    h.send(
        d,
        ClientMsg::CreateActor {
            req: 1,
            spec: Box::new(first.clone()),
        },
    );
    assert_eq!(
        h.recv(d),
        vec![NodeMsg::Reply {
            req: 1,
            result: Ok(String::new())
        }]
    );
    let lookup = |h: &mut Harness, name: &str| {
        h.send(
            d,
            ClientMsg::GetActor {
                req: 9,
                name: name.into(),
            },
        );
        match &h.recv(d)[..] {
            [NodeMsg::ActorHandle { req: 9, blob }] => blob.clone(),
            other => panic!("expected an ActorHandle, got {other:?}"),
        }
    };
    assert_eq!(
        lookup(&mut h, "counter").as_deref().map(|b| &b[..]),
        Some(&b"actor handle"[..])
    );
    assert_eq!(lookup(&mut h, "nobody"), None);

    let second = actor_spec(class, Some("counter"), 0);
    h.send(
        d,
        ClientMsg::CreateActor {
            req: 2,
            spec: Box::new(second.clone()),
        },
    );
    let [
        NodeMsg::Reply {
            req: 2,
            result: Err(msg),
        },
    ] = &h.recv(d)[..]
    else {
        panic!("a taken name is an error")
    };
    assert!(msg.contains("already exists"));
    assert!(!h.st.actors.contains(&second.actor.expect("id")));
    assert!(!h.st.tasks.contains(&second.task));
    assert_eq!(h.spawned().len(), 1, "only the first actor got a worker");

    let aid = first.actor.expect("id");
    h.send(
        d,
        ClientMsg::KillActor {
            actor: aid,
            no_restart: true,
        },
    );
    assert!(matches!(h.st.actors[&aid].state, ActorState::Dead(_)));
    assert_eq!(lookup(&mut h, "counter"), None);
    assert_eq!(h.available_cpu(), 2.0);
    // The creation task never ran: it fails with the actor.
    let v = h.get_now(d, &[ret(&first)]);
    assert_eq!(error_kind(&v[0]), Some(ErrorKind::ActorDied));

    // The name is free again.
    let third = actor_spec(class, Some("counter"), 0);
    h.send(
        d,
        ClientMsg::CreateActor {
            req: 3,
            spec: Box::new(third.clone()),
        },
    );
    assert!(matches!(
        &h.recv(d)[..],
        [NodeMsg::Reply {
            req: 3,
            result: Ok(_)
        }]
    ));
    assert!(lookup(&mut h, "counter").is_some());
}

#[test]
fn cancel_fails_queued_and_waiting_tasks_and_marks_running_ones() {
    let mut h = Harness::new(1.0);
    let d = h.driver();
    let f = h.register(d, FN_BLOB);
    let [(_, wc)] = h.pool()[..] else {
        unreachable!()
    };
    let running = task(f, vec![]);
    let queued = task(f, vec![]);
    let p = ObjectId::for_put();
    h.add_refs(d, vec![p]);
    let waiting = task(f, vec![p]);
    for t in [&running, &queued, &waiting] {
        h.submit(d, t);
    }
    h.recv(wc);
    assert_eq!(h.st.tasks.ready_list(), vec![queued.task]);
    assert_eq!(h.st.objects[&p].holds, 1);

    for t in [&queued, &waiting] {
        h.send(
            d,
            ClientMsg::Cancel {
                id: ret(t),
                force: false,
                recursive: true,
            },
        );
        let v = h.get_now(d, &[ret(t)]);
        assert_eq!(error_kind(&v[0]), Some(ErrorKind::Cancelled));
    }
    assert!(h.st.tasks.ready_list().is_empty());
    assert_eq!(h.st.objects[&p].holds, 0);
    assert!(h.st.objects[&p].dependents.is_empty());

    h.send(
        d,
        ClientMsg::Cancel {
            id: ret(&running),
            force: false,
            recursive: true,
        },
    );
    assert!(h.st.tasks[&running.task].cancelled);
    assert_eq!(
        h.recv(wc),
        vec![NodeMsg::Cancel { task: running.task }],
        "the worker is told, to interrupt it"
    );
    h.returns(wc, running.task, inline(b"too late"));
    let v = h.get_now(d, &[ret(&running)]);
    assert_eq!(error_kind(&v[0]), Some(ErrorKind::Cancelled));
    assert!(h.st.tasks.is_empty());
    assert_eq!(h.available_cpu(), 1.0);
    // Cancelling what is over, or unknown, does nothing.
    h.send(
        d,
        ClientMsg::Cancel {
            id: ret(&running),
            force: true,
            recursive: true,
        },
    );
    h.send(
        d,
        ClientMsg::Cancel {
            id: ObjectId::for_put(),
            force: true,
            recursive: true,
        },
    );
    assert!(h.recv(wc).is_empty());
}

#[test]
fn killing_an_actor_still_waiting_to_start_restarts_it_once() {
    // Found by the simulation (seed 16002): a restart put the creation task
    // in the ready queue a second time while it was still waiting there.
    let mut h = Harness::new(1.0);
    let d = h.driver();
    let f = h.register(d, FN_BLOB);
    let class = h.register(d, CLASS_BLOB);
    let [(_, w)] = h.pool()[..] else {
        unreachable!()
    };
    let busy = task(f, vec![]);
    h.submit(d, &busy);
    assert_eq!(one_execution(&h.recv(w)).task, busy.task);
    let create = actor_spec(class, None, 2);
    let aid = create.actor.expect("actor id");
    h.submit(d, &create);
    assert_eq!(
        h.st.tasks.ready_list(),
        vec![create.task],
        "no CPU free yet"
    );
    h.send(
        d,
        ClientMsg::KillActor {
            actor: aid,
            no_restart: false,
        },
    );
    assert_eq!(
        h.st.tasks.ready_list(),
        vec![create.task],
        "it keeps its one place"
    );
    h.returns(w, busy.task, inline(b"done"));
    assert_eq!(h.spawned().len(), 1, "one worker for the one actor");
    assert_eq!(h.st.actors[&aid].state, ActorState::Creating);
}

#[test]
fn a_killed_workers_late_outcome_is_not_its_restarted_actors() {
    // Found by the simulation (seed 10757): the old worker's report that the
    // constructor returned marked the restarted actor alive before its new
    // worker ran the constructor, and calls then went to a worker without it.
    let mut h = Harness::new(1.0);
    let d = h.driver();
    let class = h.register(d, CLASS_BLOB);
    let create = actor_spec(class, None, 2);
    let aid = create.actor.expect("actor id");
    h.submit(d, &create);
    let [first] = h.spawned()[..] else {
        panic!("one worker")
    };
    let (old, msgs) = h.hello(Role::Worker(first));
    assert_eq!(one_execution(&msgs).task, create.task);
    h.send(
        d,
        ClientMsg::KillActor {
            actor: aid,
            no_restart: false,
        },
    );
    let [second] = h.spawned()[..] else {
        panic!("a new worker for the restarted actor")
    };
    // The old worker's outcome was on its way when it was killed.
    h.returns(old, create.task, inline(b"None"));
    assert_eq!(h.st.actors[&aid].state, ActorState::Creating);
    let (new, msgs) = h.hello(Role::Worker(second));
    assert_eq!(
        one_execution(&msgs).task,
        create.task,
        "the new worker runs the constructor"
    );
    let call = method(&create, "m", vec![]);
    h.submit(d, &call);
    assert!(h.recv(new).is_empty(), "calls wait for the constructor");
    h.returns(new, create.task, inline(b"None"));
    assert_eq!(one_execution(&h.recv(new)).task, call.task);
}

#[test]
fn an_actor_that_exits_on_purpose_fails_its_calls_with_the_reason_and_is_not_restarted() {
    let mut h = Harness::new(2.0);
    let d = h.driver();
    let class = h.register(d, CLASS_BLOB);
    let create = actor_spec(class, None, 3);
    let aid = create.actor.expect("actor id");
    let (_, ac) = started_actor(&mut h, d, &create);
    let calls: Vec<TaskSpec> = (0..2)
        .map(|i| method(&create, &format!("m{i}"), vec![]))
        .collect();
    for c in &calls {
        h.submit(d, c);
    }
    h.recv(ac);
    // A driver (not a worker) cannot say so.
    let other = h.driver();
    let after = h.handle(
        other,
        ClientMsg::ActorExit {
            reason: "no".into(),
        },
    );
    assert!(matches!(after, After::Close(_)), "{after:?}");

    // The first call ran exit_actor(): both calls fail, saying so.
    h.send(
        ac,
        ClientMsg::ActorExit {
            reason: "exit_actor() was called".into(),
        },
    );
    assert!(
        h.recv(ac).contains(&NodeMsg::Exit),
        "its worker is told to exit"
    );
    assert!(matches!(h.st.actors[&aid].state, ActorState::Dead(_)));
    let got = h.get_now(d, &[ret(&calls[0]), ret(&calls[1])]);
    for v in &got {
        let Value::Error(e) = v else { panic!("{v:?}") };
        assert_eq!(e.kind, ErrorKind::ActorDied);
        assert!(e.message.contains("exit_actor()"), "{}", e.message);
    }
    assert_eq!(h.available_cpu(), 2.0, "its CPU is back at once");

    // Its process exits: no restart, nothing more to give back.
    h.event(Event::Closed { conn: ac });
    assert!(h.spawned().is_empty(), "not restarted");
    assert_eq!(h.available_cpu(), 2.0);
    // Nor is a lingering worker killed once it is gone.
    h.advance(Duration::from_secs(11));
    assert!(h.kills.is_empty());
}

#[test]
fn an_actor_worker_that_lingers_after_exiting_on_purpose_is_killed() {
    let mut h = Harness::new(1.0);
    let d = h.driver();
    let class = h.register(d, CLASS_BLOB);
    let create = actor_spec(class, None, 0);
    create_actor(&mut h, d, &create);
    let [aw] = h.spawned()[..] else {
        panic!("one worker for the actor")
    };
    let ac = worker_with_pid(&mut h, aw, 4_000_000);
    h.recv(d);
    h.send(
        ac,
        ClientMsg::ActorExit {
            reason: "exit_actor() was called in __init__".into(),
        },
    );
    let got = h.get_now(d, &[ObjectId::for_return(create.task, 1)]);
    assert_eq!(
        error_kind(&got[0]),
        Some(ErrorKind::ActorDied),
        "the creation failed"
    );
    h.advance(Duration::from_secs(11));
    assert_eq!(h.kills, vec![4_000_000], "killed after the grace period");
}

/// A worker connected with a pid the harness only records signals to.
fn worker_with_pid(h: &mut Harness, wid: WorkerId, pid: u32) -> ConnId {
    let c = h.connect();
    h.send(
        c,
        ClientMsg::Hello {
            role: Role::Worker(wid),
            pid,
        },
    );
    h.recv(c);
    c
}

fn cancel(h: &mut Harness, d: ConnId, id: ObjectId, force: bool, recursive: bool) {
    h.send(
        d,
        ClientMsg::Cancel {
            id,
            force,
            recursive,
        },
    );
}

#[test]
fn a_running_task_is_interrupted_and_a_recursive_cancel_reaches_the_tasks_it_submitted() {
    let mut h = Harness::new(1.0);
    let d = h.driver();
    let f = h.register(d, FN_BLOB);
    h.st.start_pool();
    let [wid] = h.spawned()[..] else {
        panic!("one worker")
    };
    let w = worker_with_pid(&mut h, wid, 4_000_001);
    let parent = task(f, vec![]);
    h.submit(d, &parent);
    assert_eq!(one_execution(&h.recv(w)).task, parent.task);
    // It submits two children (they wait: its CPU is taken) and blocks on them.
    let kids: Vec<TaskSpec> = (0..2).map(|_| task(f, vec![])).collect();
    for k in &kids {
        h.submit(w, k);
    }
    h.send(
        w,
        ClientMsg::Get {
            req: 9,
            ids: kids.iter().map(ret).collect(),
            timeout_ms: None,
        },
    );
    assert_eq!(h.st.tasks[&parent.task].children.len(), 2);

    // Not recursive: only the parent is interrupted.
    cancel(&mut h, d, ret(&parent), false, false);
    assert_eq!(h.interrupts, vec![4_000_001], "the worker is signalled");
    assert!(h.recv(w).contains(&NodeMsg::Cancel { task: parent.task }));
    assert!(kids.iter().all(|k| h.st.tasks.contains(&k.task)));

    // Recursive: the children go too (never run), and their get answers.
    cancel(&mut h, d, ret(&parent), false, true);
    for k in &kids {
        assert!(!h.st.tasks.contains(&k.task), "child cancelled");
    }
    let got = h.recv(w);
    assert!(
        got.iter()
            .any(|m| matches!(m, NodeMsg::Values { req: 9, values: Some(v) }
            if v.iter().all(|v| error_kind(v) == Some(ErrorKind::Cancelled)))),
        "{got:?}"
    );
    // The interrupted task reports KeyboardInterrupt: it fails as cancelled.
    h.done(
        w,
        parent.task,
        Outcome::Failed(ErrorInfo::new(ErrorKind::Task, "KeyboardInterrupt")),
        10,
    );
    let v = h.get_now(d, &[ret(&parent)]);
    assert_eq!(error_kind(&v[0]), Some(ErrorKind::Cancelled));
    assert_eq!(h.available_cpu(), 1.0);
}

#[test]
fn a_started_actor_call_is_told_of_its_cancel_but_not_failed_by_the_node() {
    let mut h = Harness::new(2.0);
    let d = h.driver();
    let class = h.register(d, CLASS_BLOB);
    let create = actor_spec(class, None, 0);
    create_actor(&mut h, d, &create);
    h.recv(d);
    let [aw] = h.spawned()[..] else {
        panic!("one worker for the actor")
    };
    let ac = worker_with_pid(&mut h, aw, 4_000_002);
    h.returns(ac, create.task, inline(b"None"));
    let call = method(&create, "m", vec![]);
    h.submit(d, &call);
    h.recv(ac);
    cancel(&mut h, d, ret(&call), true, true);
    assert!(h.kills.is_empty(), "force does not kill an actor");
    assert!(h.interrupts.is_empty(), "actor calls are not interrupted");
    assert_eq!(h.recv(ac), vec![NodeMsg::Cancel { task: call.task }]);
    // A call of a regular actor runs on: its value stands.
    h.returns(ac, call.task, inline(b"done"));
    assert_eq!(h.get_now(d, &[ret(&call)]), vec![inline(b"done")]);
    // One the worker skipped (or an async actor's, cancelled) reports so.
    let call2 = method(&create, "m", vec![]);
    h.submit(d, &call2);
    h.recv(ac);
    cancel(&mut h, d, ret(&call2), false, true);
    h.done(
        ac,
        call2.task,
        Outcome::Failed(ErrorInfo::new(ErrorKind::Cancelled, "skipped")),
        1,
    );
    let v = h.get_now(d, &[ret(&call2)]);
    assert_eq!(error_kind(&v[0]), Some(ErrorKind::Cancelled));
}

#[test]
fn cancelling_a_borrowed_ref_asks_its_owner() {
    let mut h = Harness::new(1.0);
    h.join();
    let d = h.driver();
    let owner = peer();
    h.st.cluster.learn_peer(owner);
    let id = ObjectId::for_return(TaskId::owned_by(crate::ids::OwnerTag::of_peer(&owner)), 1);
    h.add_refs(d, vec![id]);
    cancel(&mut h, d, id, false, true);
    let sent = h.peer_msgs();
    assert!(
        sent.iter().any(|(p, m)| *p == owner
            && matches!(m, PeerMsg::Cancel { task, force: false, recursive: true } if *task == id.task())),
        "{sent:?}"
    );
}
