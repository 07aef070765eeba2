//! CPU lending while blocked in get, and pipelining of short tasks.

use super::*;

#[test]
fn a_worker_blocked_in_get_lends_its_cpu_and_takes_it_back() {
    let mut h = Harness::new(1.0);
    let d = h.driver();
    let f = h.register(d, FN_BLOB);
    let [(w1, w1c)] = h.pool()[..] else {
        unreachable!()
    };
    let outer = task(f, vec![]);
    let inner = task(f, vec![]);
    h.submit(d, &outer);
    h.recv(w1c);
    h.submit(d, &inner);
    assert_eq!(
        h.st.tasks.ready_list(),
        vec![inner.task],
        "no CPU for the inner task"
    );
    assert!(h.spawned().is_empty(), "the pool is at its size");
    assert_eq!(h.available_cpu(), 0.0);

    // The outer task gets the inner one's result: it blocks and lends its CPU.
    h.send(
        w1c,
        ClientMsg::Get {
            req: 1,
            ids: vec![ret(&inner)],
            timeout_ms: None,
        },
    );
    assert_eq!(h.st.workers[&w1].blocked, 1);
    assert_eq!(h.available_cpu(), 1.0);
    let [w2] = h.spawned()[..] else {
        panic!("a blocked worker allows one more")
    };
    let (w2c, msgs) = h.hello(Role::Worker(w2));
    assert_eq!(one_execution(&msgs).task, inner.task);
    assert_eq!(h.available_cpu(), 0.0);

    h.send(
        d,
        ClientMsg::Query {
            req: 3,
            query: Query::AvailableResources,
        },
    );
    let [
        NodeMsg::Reply {
            req: 3,
            result: Ok(json),
        },
    ] = &h.recv(d)[..]
    else {
        panic!("expected a reply")
    };
    let json: serde_json::Value = serde_json::from_str(json).expect("json");
    assert_eq!(json["CPU"], 0.0);

    h.returns(w2c, inner.task, inline(b"inner"));
    assert_eq!(
        h.recv(w1c),
        vec![NodeMsg::Values {
            req: 1,
            values: Some(vec![inline(b"inner")])
        }]
    );
    assert_eq!(h.st.workers[&w1].blocked, 0);
    assert_eq!(h.available_cpu(), 0.0, "the outer task has its CPU again");
    assert_eq!(h.st.workers.idle_list(), vec![w2]);
    h.returns(w1c, outer.task, inline(b"outer"));
    assert_eq!(h.available_cpu(), 1.0);
}

#[test]
fn nested_gets_lend_the_cpu_once_and_a_timeout_takes_it_back() {
    let mut h = Harness::new(1.0);
    let d = h.driver();
    let f = h.register(d, FN_BLOB);
    let [(w, wc)] = h.pool()[..] else {
        unreachable!()
    };
    let a = task(f, vec![]);
    h.submit(d, &a);
    h.recv(wc);
    let pending = ObjectId::for_put();
    h.add_refs(d, vec![pending]);
    for req in 1..=2 {
        h.send(
            wc,
            ClientMsg::Wait {
                req,
                ids: vec![pending],
                num_returns: 1,
                // The first ends first.
                timeout_ms: Some(if req == 1 { 10 } else { 10_000 }),
                fetch_local: true,
            },
        );
    }
    assert_eq!(h.st.workers[&w].blocked, 2);
    assert_eq!(h.available_cpu(), 1.0);
    let first = *h.timers().iter().min().expect("deadlines");
    h.fire(first);
    assert_eq!(h.st.workers[&w].blocked, 1);
    assert_eq!(h.available_cpu(), 1.0, "still blocked in the other wait");
    h.send(
        d,
        ClientMsg::PutInline {
            contained: vec![],
            id: pending,
            blob: ByteBuf::from(b"v".to_vec()),
        },
    );
    assert_eq!(h.st.workers[&w].blocked, 0);
    assert_eq!(h.available_cpu(), 0.0);
    assert_eq!(
        h.recv(wc),
        vec![
            NodeMsg::Ready {
                req: 1,
                indices: vec![]
            },
            NodeMsg::Ready {
                req: 2,
                indices: vec![0]
            }
        ]
    );
}

/// Run three tasks of `f` one after the other, each reported at `run_us`.
fn teach_run_time(h: &mut Harness, d: ConnId, wc: ConnId, f: FnId, run_us: u64) {
    for _ in 0..3 {
        let t = task(f, vec![]);
        h.submit(d, &t);
        assert_eq!(one_execution(&h.recv(wc)).task, t.task);
        h.done(wc, t.task, Outcome::Returns(vec![inline(b"r")]), run_us);
    }
}

#[test]
fn short_tasks_are_pipelined_to_busy_workers_and_revoked_when_they_block() {
    let mut h = Harness::new(1.0);
    let d = h.driver();
    let f = h.register(d, FN_BLOB);
    let [(w1, w1c)] = h.pool()[..] else {
        unreachable!()
    };
    teach_run_time(&mut h, d, w1c, f, 50);
    assert_eq!(h.st.tasks.mean_run_time(&f).unwrap().1, 3);
    assert!(h.st.tasks.mean_run_time(&f).unwrap().0 < 200.0);

    let t: Vec<TaskSpec> = (0..4).map(|_| task(f, vec![])).collect();
    for s in &t[..3] {
        h.submit(d, s);
    }
    let sent: Vec<TaskId> = executions(&h.recv(w1c)).iter().map(|e| e.task).collect();
    assert_eq!(sent, vec![t[0].task, t[1].task, t[2].task]);
    assert!(h.st.tasks.ready_list().is_empty());
    assert_eq!(h.st.workers[&w1].queued.len(), 2);
    assert_eq!(h.available_cpu(), 0.0, "queued tasks hold nothing extra");
    assert!(h.spawned().is_empty());

    // The first finishes: the next queued one inherits its slot.
    h.done(w1c, t[0].task, Outcome::Returns(vec![inline(b"0")]), 50);
    assert_eq!(h.st.workers[&w1].busy, Some(t[1].task));
    assert!(h.st.workers.idle_list().is_empty());
    assert_eq!(h.available_cpu(), 0.0);
    h.submit(d, &t[3]);
    assert_eq!(one_execution(&h.recv(w1c)).task, t[3].task);

    // The running one blocks in get: the queued ones come back.
    let p = ObjectId::for_put();
    h.add_refs(d, vec![p]);
    h.send(
        w1c,
        ClientMsg::Get {
            req: 1,
            ids: vec![p],
            timeout_ms: None,
        },
    );
    assert_eq!(
        h.recv(w1c),
        vec![NodeMsg::Revoke {
            tasks: vec![t[2].task, t[3].task]
        }]
    );
    assert_eq!(h.st.tasks.ready_list(), vec![t[2].task, t[3].task]);
    assert!(h.st.workers[&w1].queued.is_empty());
    assert!(
        [&t[2], &t[3]]
            .iter()
            .all(|s| h.st.tasks[&s.task].state == TaskState::Queued)
    );
    assert_eq!(h.available_cpu(), 1.0);
    let [w2] = h.spawned()[..] else {
        panic!("a worker to replace the blocked one")
    };
    let (w2c, msgs) = h.hello(Role::Worker(w2));
    let execs: Vec<TaskId> = executions(&msgs).iter().map(|e| e.task).collect();
    assert_eq!(execs, vec![t[2].task, t[3].task], "run and pipelined there");

    // The get returns: the blocked task takes its CPU again, for a while oversubscribed.
    h.send(
        d,
        ClientMsg::PutInline {
            contained: vec![],
            id: p,
            blob: ByteBuf::from(b"p".to_vec()),
        },
    );
    assert!(matches!(&h.recv(w1c)[..], [NodeMsg::Values { req: 1, .. }]));
    assert_eq!(h.available_cpu(), -1.0);
    h.returns(w1c, t[1].task, inline(b"1"));
    h.returns(w2c, t[2].task, inline(b"2"));
    h.returns(w2c, t[3].task, inline(b"3"));
    assert_eq!(h.available_cpu(), 1.0);
    assert!(h.st.tasks.is_empty());
}

#[test]
fn pipelining_depth_follows_the_function_run_time() {
    let mut h = Harness::new(1.0);
    let d = h.driver();
    let medium = h.register(d, FN_BLOB);
    let unknown = h.register(d, b"another function");
    let [(w, wc)] = h.pool()[..] else {
        unreachable!()
    };
    teach_run_time(&mut h, d, wc, medium, 500);

    // Under 1 ms: one task queued behind the running one.
    let t: Vec<TaskSpec> = (0..3).map(|_| task(medium, vec![])).collect();
    for s in &t {
        h.submit(d, s);
    }
    assert_eq!(executions(&h.recv(wc)).len(), 2);
    assert_eq!(h.st.tasks.ready_list(), vec![t[2].task]);
    for s in &t {
        h.returns(wc, s.task, inline(b"r"));
    }
    h.recv(wc);
    assert_eq!(h.st.workers.idle_list(), vec![w]);

    // A function never timed is never queued behind anything.
    let u: Vec<TaskSpec> = (0..2).map(|_| task(unknown, vec![])).collect();
    for s in &u {
        h.submit(d, s);
    }
    assert_eq!(executions(&h.recv(wc)).len(), 1);
    assert_eq!(h.st.tasks.ready_list(), vec![u[1].task]);
}
