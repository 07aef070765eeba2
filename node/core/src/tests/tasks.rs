//! Tasks: dispatch, dependencies, errors, returns, gets, waits and worker crashes.

use super::*;

#[test]
fn task_without_deps_runs_on_an_idle_worker_and_the_fn_blob_goes_once() {
    let mut h = Harness::new(1.0);
    let d = h.driver();
    let f = h.register(d, FN_BLOB);
    let [(w, wc)] = h.pool()[..] else {
        unreachable!()
    };
    assert_eq!(h.st.workers.idle_list(), vec![w]);

    let a = task(f, vec![]);
    h.submit(d, &a);
    let e = one_execution(&h.recv(wc));
    assert_eq!(e.task, a.task);
    assert_eq!(e.kind, TaskKind::Normal);
    assert_eq!(e.fn_blob.as_deref().map(|b| &b[..]), Some(FN_BLOB));
    assert_eq!(e.args, a.args);
    assert!(e.deps.is_empty() && e.dep_ids.is_empty());
    assert_eq!(e.num_returns, 1);
    assert_eq!(h.st.tasks[&a.task].state, TaskState::Running(w));
    assert_eq!(h.available_cpu(), 0.0);
    assert!(h.st.workers.idle_list().is_empty());

    h.returns(wc, a.task, inline(b"one"));
    assert_eq!(h.available_cpu(), 1.0);
    assert_eq!(h.st.workers.idle_list(), vec![w]);
    assert!(h.st.tasks.is_empty());
    assert_eq!(h.get_now(d, &[ret(&a)]), vec![inline(b"one")]);

    let b = task(f, vec![]);
    h.submit(d, &b);
    let e = one_execution(&h.recv(wc));
    assert_eq!(e.task, b.task);
    assert_eq!(e.fn_blob, None, "the worker already has the function");
    assert_eq!(h.st.stats.tasks_submitted, 2);
    assert_eq!(h.st.stats.tasks_finished, 1);
    assert!(h.spawned().is_empty(), "no extra worker for a fitting pool");
}

#[test]
fn task_of_an_unregistered_function_fails_and_frees_its_worker() {
    let mut h = Harness::new(1.0);
    let d = h.driver();
    let [(w, wc)] = h.pool()[..] else {
        unreachable!()
    };
    let a = task(FnId::random(), vec![]);
    h.submit(d, &a);
    assert!(h.recv(wc).is_empty(), "nothing to run");
    let v = h.get_now(d, &[ret(&a)]);
    assert_eq!(error_kind(&v[0]), Some(ErrorKind::Task));
    assert_eq!(h.available_cpu(), 1.0);
    assert_eq!(h.st.workers.idle_list(), vec![w]);
}

#[test]
fn dependent_task_runs_after_its_dependency_with_its_value() {
    let mut h = Harness::new(2.0);
    let d = h.driver();
    let f = h.register(d, FN_BLOB);
    let workers = h.pool();
    let a = task(f, vec![]);
    let b = task(f, vec![ret(&a)]);
    h.submit(d, &a);
    h.submit(d, &b);

    let mut ran_a = None;
    for &(_, c) in &workers {
        for e in executions(&h.recv(c)) {
            assert_eq!(e.task, a.task, "b must wait for a");
            ran_a = Some(c);
        }
    }
    let ran_a = ran_a.expect("a was dispatched");
    assert_eq!(h.st.tasks[&b.task].state, TaskState::Waiting);
    assert_eq!(h.st.tasks[&b.task].missing, 1);
    assert_eq!(h.available_cpu(), 1.0, "a waiting task holds no CPU");

    h.returns(ran_a, a.task, inline(b"A"));
    let execs: Vec<Execution> = workers
        .iter()
        .flat_map(|&(_, c)| executions(&h.recv(c)))
        .collect();
    let [e] = &execs[..] else {
        panic!("expected b to run once, got {execs:?}")
    };
    assert_eq!(e.task, b.task);
    assert_eq!(e.dep_ids, vec![ret(&a)]);
    assert_eq!(e.deps, vec![inline(b"A")]);
    // b holds a's value while it runs.
    assert_eq!(h.st.objects[&ret(&a)].holds, 1);
}

#[test]
fn a_task_error_flows_to_dependents_without_running_them() {
    let mut h = Harness::new(1.0);
    let d = h.driver();
    let f = h.register(d, FN_BLOB);
    let [(w, wc)] = h.pool()[..] else {
        unreachable!()
    };
    let a = task(f, vec![]);
    let b = task(f, vec![ret(&a)]);
    let c = task(f, vec![ret(&b)]);
    for t in [&a, &b, &c] {
        h.submit(d, t);
    }
    assert_eq!(one_execution(&h.recv(wc)).task, a.task);

    let boom = ErrorInfo {
        kind: ErrorKind::Task,
        message: "ValueError: boom".into(),
        blob: Some(ByteBuf::from(b"pickled exception".to_vec())),
    };
    h.done(wc, a.task, Outcome::Failed(boom.clone()), 10);
    assert!(h.recv(wc).is_empty(), "neither b nor c may run");
    assert!(h.st.tasks.is_empty());
    assert_eq!(h.st.workers.idle_list(), vec![w]);
    assert_eq!(h.available_cpu(), 1.0);
    for id in [ret(&a), ret(&b), ret(&c)] {
        assert_eq!(h.get_now(d, &[id]), vec![Value::Error(boom.clone())]);
    }
    // A get of several failed objects raises the first one's error.
    let vals = h.get_now(d, &[ret(&a), ret(&b), ret(&c)]);
    assert_eq!(vals, vec![Value::Error(boom.clone())]);

    // A task submitted on an argument that already failed fails at once.
    let late = task(f, vec![ret(&a)]);
    h.submit(d, &late);
    assert!(h.recv(wc).is_empty());
    assert_eq!(h.get_now(d, &[ret(&late)]), vec![Value::Error(boom)]);
    // And one on an argument the node never heard of reads as lost.
    let orphan = task(f, vec![ObjectId::for_put()]);
    h.submit(d, &orphan);
    let v = h.get_now(d, &[ret(&orphan)]);
    assert_eq!(error_kind(&v[0]), Some(ErrorKind::ObjectLost));
}

#[test]
fn num_returns_names_each_return_and_a_wrong_count_is_an_error() {
    let mut h = Harness::new(1.0);
    let d = h.driver();
    let f = h.register(d, FN_BLOB);
    let [(_, wc)] = h.pool()[..] else {
        unreachable!()
    };
    let a = TaskSpec {
        num_returns: 3,
        ..task(f, vec![])
    };
    let ids: Vec<ObjectId> = a.return_ids().collect();
    assert_eq!(
        ids,
        (1..=3)
            .map(|i| ObjectId::for_return(a.task, i))
            .collect::<Vec<_>>()
    );
    assert!(ids.iter().all(|id| id.task() == a.task));
    h.submit(d, &a);
    assert!(ids.iter().all(|id| !is_ready(&h.st, id)));
    assert_eq!(one_execution(&h.recv(wc)).num_returns, 3);
    let vals = vec![inline(b"x"), inline(b"y"), inline(b"z")];
    h.done(wc, a.task, Outcome::Returns(vals.clone()), 10);
    assert_eq!(h.get_now(d, &ids), vals);

    let b = TaskSpec {
        num_returns: 2,
        ..task(f, vec![])
    };
    h.submit(d, &b);
    h.recv(wc);
    h.done(wc, b.task, Outcome::Returns(vec![inline(b"only one")]), 10);
    let bids: Vec<ObjectId> = b.return_ids().collect();
    for v in h.get_now(d, &bids) {
        let Value::Error(e) = v else {
            panic!("expected an error, got {v:?}")
        };
        assert_eq!(e.kind, ErrorKind::Task);
        assert!(e.message.contains("returned 1 values but num_returns is 2"));
    }
}

#[test]
fn get_is_answered_when_ready_and_expires_with_none() {
    let mut h = Harness::new(1.0);
    let d = h.driver();
    let f = h.register(d, FN_BLOB);
    let [(_, wc)] = h.pool()[..] else {
        unreachable!()
    };
    let a = task(f, vec![]);
    h.submit(d, &a);
    h.recv(wc);
    h.send(
        d,
        ClientMsg::Get {
            req: 7,
            ids: vec![ret(&a)],
            timeout_ms: None,
        },
    );
    assert!(h.recv(d).is_empty());
    assert!(h.timers().is_empty(), "no deadline without timeout");
    h.returns(wc, a.task, inline(b"A"));
    assert_eq!(
        h.recv(d),
        vec![NodeMsg::Values {
            req: 7,
            values: Some(vec![inline(b"A")])
        }]
    );
    assert!(h.st.waits.is_empty());

    let b = task(f, vec![]);
    h.submit(d, &b);
    h.recv(wc);
    let before = h.now;
    h.send(
        d,
        ClientMsg::Get {
            req: 8,
            ids: vec![ret(&a), ret(&b)],
            timeout_ms: Some(50),
        },
    );
    assert!(h.recv(d).is_empty());
    let [deadline] = h.timers()[..] else {
        panic!("a deadline for the timer")
    };
    assert!(deadline >= before + Duration::from_millis(50));
    h.fire(deadline);
    assert_eq!(
        h.recv(d),
        vec![NodeMsg::Values {
            req: 8,
            values: None
        }]
    );
    // Expiring twice, or the value arriving later, sends nothing more.
    h.fire(deadline);
    h.returns(wc, b.task, inline(b"B"));
    assert!(h.recv(d).is_empty());
    assert!(h.st.waits.is_empty());

    // A get with a timeout on ready objects is answered at once, with no timer.
    assert_eq!(
        h.get_now(d, &[ret(&b), ret(&a)]),
        vec![inline(b"B"), inline(b"A")]
    );
    assert!(h.timers().is_empty());
}

#[test]
fn wait_returns_indices_in_completion_order_and_at_most_num_returns() {
    let mut h = Harness::new(3.0);
    let d = h.driver();
    let f = h.register(d, FN_BLOB);
    let workers = h.pool();
    let specs: Vec<TaskSpec> = (0..3).map(|_| task(f, vec![])).collect();
    let mut runs_on = rustc_hash::FxHashMap::default();
    for s in &specs {
        h.submit(d, s);
        for &(_, c) in &workers {
            for e in executions(&h.recv(c)) {
                runs_on.insert(e.task, c);
            }
        }
    }
    assert_eq!(runs_on.len(), 3);
    let ids: Vec<ObjectId> = specs.iter().map(ret).collect();
    h.send(
        d,
        ClientMsg::Wait {
            req: 1,
            ids: ids.clone(),
            num_returns: 2,
            timeout_ms: None,
            fetch_local: true,
        },
    );
    assert!(h.recv(d).is_empty());
    for i in [2, 0, 1] {
        let t = specs[i].task;
        h.returns(runs_on[&t], t, inline(&[i as u8]));
        if i == 2 {
            assert!(h.recv(d).is_empty(), "one of two is not enough");
        }
    }
    assert_eq!(
        h.recv(d),
        vec![NodeMsg::Ready {
            req: 1,
            indices: vec![2, 0]
        }]
    );

    let mut wait_now = |req, num_returns| {
        h.send(
            d,
            ClientMsg::Wait {
                req,
                ids: ids.clone(),
                num_returns,
                timeout_ms: Some(1000),
                fetch_local: true,
            },
        );
        h.recv(d)
    };
    assert_eq!(
        wait_now(2, 1),
        vec![NodeMsg::Ready {
            req: 2,
            indices: vec![0]
        }]
    );
    assert_eq!(
        wait_now(3, 10),
        vec![NodeMsg::Ready {
            req: 3,
            indices: vec![0, 1, 2]
        }]
    );

    // A wait that times out returns what was ready by then.
    let late = task(f, vec![]);
    h.submit(d, &late);
    h.send(
        d,
        ClientMsg::Wait {
            req: 4,
            ids: vec![ret(&late), ids[1]],
            num_returns: 2,
            timeout_ms: Some(5),
            fetch_local: true,
        },
    );
    assert!(h.recv(d).is_empty());
    let [deadline] = h.timers()[..] else {
        panic!("a deadline")
    };
    h.fire(deadline);
    assert_eq!(
        h.recv(d),
        vec![NodeMsg::Ready {
            req: 4,
            indices: vec![1]
        }]
    );
}

#[test]
fn worker_death_retries_the_task_then_fails_it_as_crashed() {
    let mut h = Harness::new(1.0);
    let d = h.driver();
    let f = h.register(d, FN_BLOB);
    let [(_, w1c)] = h.pool()[..] else {
        unreachable!()
    };
    let a = TaskSpec {
        max_retries: 1,
        ..task(f, vec![])
    };
    h.submit(d, &a);
    assert_eq!(one_execution(&h.recv(w1c)).task, a.task);

    h.st.conn_closed(w1c);
    assert_eq!(h.st.stats.tasks_retried, 1);
    assert_eq!(h.st.stats.workers_died, 1);
    assert_eq!(h.st.tasks.ready_list(), vec![a.task]);
    assert_eq!(h.st.tasks[&a.task].state, TaskState::Queued);
    assert_eq!(h.available_cpu(), 1.0);
    let [w2] = h.spawned()[..] else {
        panic!("the pool replaces its dead worker")
    };
    let (w2c, msgs) = h.hello(Role::Worker(w2));
    let e = one_execution(&msgs);
    assert_eq!(e.task, a.task);
    assert!(e.fn_blob.is_some(), "a new worker needs the function");

    h.st.conn_closed(w2c);
    assert!(h.st.tasks.is_empty());
    assert_eq!(h.st.stats.tasks_retried, 1);
    let v = h.get_now(d, &[ret(&a)]);
    let Value::Error(err) = &v[0] else {
        panic!("expected an error, got {v:?}")
    };
    assert_eq!(err.kind, ErrorKind::WorkerCrashed);
    assert!(err.message.contains("after 1 retries"));
    assert_eq!(h.available_cpu(), 1.0);
    assert_eq!(h.spawned().len(), 1, "replaced again");

    // max_retries -1 retries forever.
    let forever = TaskSpec {
        max_retries: -1,
        ..task(f, vec![])
    };
    h.submit(d, &forever);
    for round in 0..5 {
        let w = h.st.workers.ids().first().copied().expect("a worker");
        let (wc, msgs) = h.hello(Role::Worker(w));
        assert_eq!(one_execution(&msgs).task, forever.task, "round {round}");
        h.st.conn_closed(wc);
        assert_eq!(h.st.tasks.ready_list(), vec![forever.task]);
        assert_eq!(h.spawned().len(), 1);
    }
    assert_eq!(h.st.stats.tasks_retried, 6);
}

#[test]
fn without_a_fork_server_tasks_and_actors_fail_instead_of_waiting() {
    let mut h = Harness::new(2.0);
    let d = h.driver();
    let f = h.register(d, FN_BLOB);
    let class = h.register(d, CLASS_BLOB);
    // The fork server dies before any worker connected.
    h.st.spawner_failed("python not found".into());
    assert!(
        h.st.workers.is_empty(),
        "workers that can never come are forgotten"
    );

    let t = task(f, vec![]);
    h.submit(d, &t);
    let v = h.get_now(d, &[ret(&t)]);
    assert_eq!(error_kind(&v[0]), Some(ErrorKind::WorkerCrashed));
    let Value::Error(err) = &v[0] else {
        unreachable!()
    };
    assert!(err.message.contains("python not found"), "{}", err.message);

    let create = actor_spec(class, None, 3);
    h.submit(d, &create);
    let m = method(&create, "m", vec![]);
    h.submit(d, &m);
    let v = h.get_now(d, &[ret(&m)]);
    assert!(
        matches!(
            error_kind(&v[0]),
            Some(ErrorKind::WorkerCrashed | ErrorKind::ActorDied)
        ),
        "{v:?}"
    );
    assert!(h.st.tasks.ready_list().is_empty());
}
