//! Gets fail fast: a get of a local process is answered by the first of its
//! objects that fails, without waiting for the others (as Ray's `get`
//! raises), takes no pins, and leaves nothing behind on the objects still
//! pending; waits and peers' gets still wait.

use super::*;
use crate::local::waits::{Awaited, Target};

fn boom(what: &str) -> ErrorInfo {
    ErrorInfo {
        kind: ErrorKind::Task,
        message: format!("ValueError: {what}"),
        blob: Some(ByteBuf::from(what.as_bytes().to_vec())),
    }
}

/// A node with two workers, a driver, and two tasks running (one on each).
struct Two {
    h: Harness,
    d: ConnId,
    /// (task, the worker connection running it)
    runs: Vec<(TaskSpec, ConnId)>,
}

fn two_running() -> Two {
    let mut h = Harness::new(2.0);
    let d = h.driver();
    let f = h.register(d, FN_BLOB);
    let workers = h.pool();
    let mut runs = Vec::new();
    for _ in 0..2 {
        let t = task(f, vec![]);
        h.submit(d, &t);
        h.add_refs(d, vec![ret(&t)]);
        let on = workers
            .iter()
            .find(|(_, c)| !executions(&h.recv(*c)).is_empty())
            .map(|(_, c)| *c)
            .expect("each task runs on a worker");
        runs.push((t, on));
    }
    Two { h, d, runs }
}

/// The objects that still list wait entries.
fn waited_on(st: &Core) -> usize {
    st.objects
        .iter_entries()
        .filter(|(_, e)| !e.waiters.is_empty())
        .count()
}

#[test]
fn a_get_raises_the_first_failure_without_waiting_for_a_hanging_task() {
    let Two { mut h, d, runs } = two_running();
    let (hangs, hc) = (runs[0].0.clone(), runs[0].1);
    let (fails, fc) = (runs[1].0.clone(), runs[1].1);
    h.send(
        d,
        ClientMsg::Get {
            req: 1,
            ids: vec![ret(&hangs), ret(&fails)],
            timeout_ms: None,
        },
    );
    assert!(h.recv(d).is_empty());
    assert_eq!(waited_on(&h.st), 2);

    h.done(fc, fails.task, Outcome::Failed(boom("fails")), 10);
    assert_eq!(
        h.recv(d),
        vec![NodeMsg::Values {
            req: 1,
            values: Some(vec![Value::Error(boom("fails"))]),
        }],
        "answered by the failure alone, before the hanging task ends"
    );
    assert!(h.st.waits.is_empty());
    assert_eq!(waited_on(&h.st), 0, "the pending object forgot the get");

    // The hanging task ending later sends nothing more.
    h.returns(hc, hangs.task, inline(b"late"));
    assert!(h.recv(d).is_empty());
    assert!(is_ready(&h.st, &ret(&hangs)));
    // And its value is there for the next get.
    assert_eq!(h.get_now(d, &[ret(&hangs)]), vec![inline(b"late")]);
}

#[test]
fn the_first_failed_object_in_the_get_order_is_the_one_raised() {
    let mut h = Harness::new(1.0);
    let d = h.driver();
    let f = h.register(d, FN_BLOB);
    let [(_, wc)] = h.pool()[..] else {
        unreachable!()
    };
    // a and b fail in that order; a get of [pending, b, a] made after both
    // names b, the first failed in its order (Ray's `get` raises the first
    // error of its list).
    let (a, b) = (task(f, vec![]), task(f, vec![]));
    for t in [&a, &b] {
        h.submit(d, t);
        h.add_refs(d, vec![ret(t)]);
    }
    h.done(wc, a.task, Outcome::Failed(boom("a")), 10);
    h.done(wc, b.task, Outcome::Failed(boom("b")), 10);
    let pending = task(f, vec![]);
    h.submit(d, &pending);
    assert_eq!(
        h.get_now(d, &[ret(&pending), ret(&b), ret(&a)]),
        vec![Value::Error(boom("b"))]
    );
    assert_eq!(
        h.get_now(d, &[ret(&a), ret(&b)]),
        vec![Value::Error(boom("a"))]
    );
    assert!(h.st.waits.is_empty());
    assert_eq!(waited_on(&h.st), 0);
    // An unknown object reads as lost, which is a failure too.
    let v = h.get_now(d, &[ret(&pending), ObjectId::for_put()]);
    assert_eq!(v.len(), 1);
    assert_eq!(error_kind(&v[0]), Some(ErrorKind::ObjectLost));
}

#[test]
fn a_failed_get_pins_none_of_its_stored_values() {
    let mut h = Harness::new(1.0);
    let d = h.driver();
    let f = h.register(d, FN_BLOB);
    let [(_, wc)] = h.pool()[..] else {
        unreachable!()
    };
    let s = ObjectId::for_put();
    h.send(
        d,
        ClientMsg::Create {
            req: 1,
            id: s,
            len: 1000,
        },
    );
    h.recv(d);
    h.add_refs(d, vec![s]);
    h.send(
        d,
        ClientMsg::Seal {
            id: s,
            contained: vec![],
        },
    );
    let a = task(f, vec![]);
    h.submit(d, &a);
    h.done(wc, a.task, Outcome::Failed(boom("a")), 10);
    assert_eq!(h.get_now(d, &[s, ret(&a)]), vec![Value::Error(boom("a"))]);
    assert!(h.st.conns[&d].pins.is_empty());
    assert_eq!(h.st.store.stats().num_pinned, 0);
}

#[test]
fn waits_are_not_fail_fast() {
    let Two { mut h, d, runs } = two_running();
    let (hangs, hc) = (runs[0].0.clone(), runs[0].1);
    let (fails, fc) = (runs[1].0.clone(), runs[1].1);
    let ids = vec![ret(&hangs), ret(&fails)];
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
    h.done(fc, fails.task, Outcome::Failed(boom("fails")), 10);
    assert!(h.recv(d).is_empty(), "an error is one ready object of two");
    h.send(
        d,
        ClientMsg::Wait {
            req: 2,
            ids,
            num_returns: 1,
            timeout_ms: None,
            fetch_local: true,
        },
    );
    assert_eq!(
        h.recv(d),
        vec![NodeMsg::Ready {
            req: 2,
            indices: vec![1]
        }]
    );
    h.returns(hc, hangs.task, inline(b"done"));
    assert_eq!(
        h.recv(d),
        vec![NodeMsg::Ready {
            req: 1,
            indices: vec![1, 0]
        }]
    );
    assert!(h.st.waits.is_empty());
}

#[test]
fn a_worker_blocked_in_a_get_that_fails_takes_its_cpu_back() {
    let mut h = Harness::new(2.0);
    let d = h.driver();
    let f = h.register(d, FN_BLOB);
    let workers = h.pool();
    let outer = task(f, vec![]);
    h.submit(d, &outer);
    let (ow, oc) = *workers
        .iter()
        .find(|(_, c)| !executions(&h.recv(*c)).is_empty())
        .expect("the outer task runs");
    let (_, ic) = *workers
        .iter()
        .find(|(w, _)| *w != ow)
        .expect("a second worker");
    let (hangs, fails) = (task(f, vec![]), task(f, vec![]));
    h.submit(oc, &hangs);
    h.submit(oc, &fails);
    assert_eq!(one_execution(&h.recv(ic)).task, hangs.task);
    h.send(
        oc,
        ClientMsg::Get {
            req: 5,
            ids: vec![ret(&hangs), ret(&fails)],
            timeout_ms: None,
        },
    );
    assert_eq!(h.st.workers[&ow].blocked, 1, "it lends its CPU");
    // The lent CPU runs `fails` on a new worker.
    let [w3] = h.spawned()[..] else {
        panic!("a blocked worker allows one more")
    };
    let (w3c, msgs) = h.hello(Role::Worker(w3));
    assert_eq!(one_execution(&msgs).task, fails.task);
    h.done(w3c, fails.task, Outcome::Failed(boom("fails")), 10);
    assert_eq!(
        h.recv(oc),
        vec![NodeMsg::Values {
            req: 5,
            values: Some(vec![Value::Error(boom("fails"))]),
        }]
    );
    assert_eq!(h.st.workers[&ow].blocked, 0, "it has its CPU again");
    assert_eq!(waited_on(&h.st), 0);
    h.returns(ic, hangs.task, inline(b"late"));
    assert!(h.recv(oc).is_empty());
}

#[test]
fn the_embedded_drivers_get_is_signalled_by_the_first_failure() {
    let Two { mut h, d: _, runs } = two_running();
    let (hangs, hc) = (runs[0].0.clone(), runs[0].1);
    let (fails, fc) = (runs[1].0.clone(), runs[1].1);
    let ids = vec![ret(&hangs), ret(&fails)];
    assert_eq!(h.st.driver_values(&ids), None);
    let wid =
        h.st.driver_begin_wait(ids.clone(), ids.len(), Awaited::Values, h.now);
    h.pump();
    assert!(h.waits_done.is_empty());
    h.done(fc, fails.task, Outcome::Failed(boom("fails")), 10);
    assert_eq!(h.waits_done, vec![wid], "the get is over");
    // The driver thread collects it: the error alone.
    h.st.driver_end_wait(wid);
    assert_eq!(
        h.st.driver_values(&ids),
        Some(vec![Value::Error(boom("fails"))])
    );
    assert!(h.st.waits.is_empty());
    assert_eq!(waited_on(&h.st), 0);
    h.returns(hc, hangs.task, inline(b"late"));
    assert_eq!(h.waits_done, vec![wid], "signalled once");
}

#[test]
fn a_peers_get_waits_for_every_value() {
    let Two { mut h, d: _, runs } = two_running();
    let (hangs, hc) = (runs[0].0.clone(), runs[0].1);
    let (fails, fc) = (runs[1].0.clone(), runs[1].1);
    let target = Target::Peer {
        peer: peer(),
        free_after: false,
    };
    let ids = vec![ret(&hangs), ret(&fails)];
    let wid = h.st.begin_wait(ids, 2, Awaited::Values, target, None, None);
    h.done(fc, fails.task, Outcome::Failed(boom("fails")), 10);
    assert!(
        h.st.waits.get(&wid).is_some_and(|w| !w.failed),
        "a peer moves values; it raises nothing"
    );
    h.returns(hc, hangs.task, inline(b"done"));
    assert!(
        h.st.waits.get(&wid).is_none(),
        "answered once both are there"
    );
}
