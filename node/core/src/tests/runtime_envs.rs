//! Workers of runtime environments: a task runs only on a worker started for
//! its environment; a full pool makes room by letting an idle worker of
//! another environment go.

use std::sync::Arc;

use super::*;
use crate::ids::EnvKey;
use crate::wire::local::RuntimeEnv;

fn env(n: u8) -> Arc<RuntimeEnv> {
    Arc::new(RuntimeEnv {
        key: EnvKey([n; 16]),
        setup: format!("{{\"env\": {n}}}"),
    })
}

fn in_env(fn_id: FnId, e: &Arc<RuntimeEnv>) -> TaskSpec {
    TaskSpec {
        runtime_env: Some(Arc::clone(e)),
        ..task(fn_id, vec![])
    }
}

#[test]
fn a_task_in_an_environment_gets_a_worker_of_its_own_and_keeps_it() {
    let mut h = Harness::new(2.0);
    let d = h.driver();
    let workers = h.pool();
    let f = h.register(d, b"f");
    let e = env(7);

    // The pool is full of idle plain workers: one leaves, one for the environment starts.
    let t1 = in_env(f, &e);
    h.submit(d, &t1);
    let left: Vec<ConnId> = workers
        .iter()
        .filter(|(_, c)| h.recv(*c).contains(&NodeMsg::Exit))
        .map(|(_, c)| *c)
        .collect();
    assert_eq!(left.len(), 1, "one idle plain worker makes room");
    let spawned = h.spawned();
    assert_eq!(spawned.len(), 1);
    assert_eq!(h.spawned_env[&spawned[0]], Some(e.key));
    let (ew, rest) = h.hello(Role::Worker(spawned[0]));
    let exec = one_execution(&rest);
    assert_eq!(exec.task, t1.task);
    assert_eq!(exec.runtime_env.as_deref(), Some(&*e));

    // A plain task runs on the plain worker that stayed, never on the environment's.
    let stayed = workers
        .iter()
        .map(|(_, c)| *c)
        .find(|c| !left.contains(c))
        .unwrap();
    let plain = task(f, vec![]);
    h.submit(d, &plain);
    let exec = one_execution(&h.recv(stayed));
    assert_eq!((exec.task, exec.runtime_env), (plain.task, None));

    // The leaving worker exits: nobody replaces it.
    h.event(Event::Closed { conn: left[0] });
    assert!(
        h.spawned().is_empty(),
        "a worker that made room is not replaced"
    );

    // The environment's next task reuses its worker once it is free.
    h.returns(ew, t1.task, inline(b"1"));
    let t2 = in_env(f, &e);
    h.submit(d, &t2);
    assert_eq!(one_execution(&h.recv(ew)).task, t2.task);
    assert!(h.spawned().is_empty());
}

#[test]
fn tasks_of_two_environments_never_share_a_worker() {
    let mut h = Harness::new(1.0);
    let d = h.driver();
    let workers = h.pool();
    let f = h.register(d, b"f");
    let (a, b) = (env(1), env(2));
    let ta = in_env(f, &a);
    h.submit(d, &ta);
    assert!(h.recv(workers[0].1).contains(&NodeMsg::Exit));
    let wa = h.spawned();
    assert_eq!(h.spawned_env[&wa[0]], Some(a.key));
    let (ca, rest) = h.hello(Role::Worker(wa[0]));
    assert_eq!(one_execution(&rest).task, ta.task);

    // B waits while A's worker is busy (one CPU), then A's idle worker makes room for B's.
    let tb = in_env(f, &b);
    h.submit(d, &tb);
    assert!(h.spawned().is_empty());
    h.returns(ca, ta.task, inline(b"a"));
    assert!(h.recv(ca).contains(&NodeMsg::Exit));
    let wb = h.spawned();
    assert_eq!(h.spawned_env[&wb[0]], Some(b.key));
    let (_, rest) = h.hello(Role::Worker(wb[0]));
    let exec = one_execution(&rest);
    assert_eq!(
        (exec.task, exec.runtime_env.map(|e| e.key)),
        (tb.task, Some(b.key))
    );
}
