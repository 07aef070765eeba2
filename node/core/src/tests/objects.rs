//! Objects: handle counts, holds, pins and stored values.

use super::*;

#[test]
fn inline_objects_are_freed_with_their_last_handle_and_not_before() {
    let mut h = Harness::new(1.0);
    let d = h.driver();
    let put = |h: &mut Harness, id: ObjectId| {
        h.send(
            d,
            ClientMsg::PutInline {
                contained: vec![],
                id,
                blob: ByteBuf::from(b"v".to_vec()),
            },
        );
    };

    // Two handles: freed with the second DecRefs.
    let p = ObjectId::for_put();
    h.add_refs(d, vec![p, p]);
    put(&mut h, p);
    h.send(d, ClientMsg::DecRefs { ids: vec![p] });
    assert!(is_ready(&h.st, &p));
    h.send(d, ClientMsg::DecRefs { ids: vec![p] });
    assert!(!h.st.objects.contains(&p));
    // A later get reads it as lost.
    assert_eq!(
        error_kind(&h.get_now(d, &[p])[0]),
        Some(ErrorKind::ObjectLost)
    );

    // A value that arrives before its first handle is kept.
    let q = ObjectId::for_put();
    put(&mut h, q);
    assert!(is_ready(&h.st, &q));

    // A pending object is not freed when its handles go; it is when its value comes.
    let r = ObjectId::for_put();
    h.add_refs(d, vec![r]);
    h.send(d, ClientMsg::DecRefs { ids: vec![r] });
    assert!(h.st.objects.contains(&r));
    put(&mut h, r);
    assert!(!h.st.objects.contains(&r));

    // A serialized ref keeps its object.
    let e = ObjectId::for_put();
    h.add_refs(d, vec![e]);
    put(&mut h, e);
    h.send(d, ClientMsg::Escaped { ids: vec![e] });
    h.send(d, ClientMsg::DecRefs { ids: vec![e] });
    assert!(is_ready(&h.st, &e));
}

#[test]
fn task_arguments_are_held_until_the_task_is_over() {
    let mut h = Harness::new(1.0);
    let d = h.driver();
    let f = h.register(d, FN_BLOB);
    let [(_, wc)] = h.pool()[..] else {
        unreachable!()
    };
    let blocker = task(f, vec![]);
    h.submit(d, &blocker);
    h.recv(wc);

    let arg = ObjectId::for_put();
    h.add_refs(d, vec![arg]);
    h.send(
        d,
        ClientMsg::PutInline {
            contained: vec![],
            id: arg,
            blob: ByteBuf::from(b"arg".to_vec()),
        },
    );
    h.add_refs(d, vec![ret(&blocker)]);
    let user = task(f, vec![arg, arg]);
    h.submit(d, &user);
    assert_eq!(h.st.objects[&arg].holds, 2);
    h.send(d, ClientMsg::DecRefs { ids: vec![arg] });
    assert!(is_ready(&h.st, &arg), "held by a queued task");

    h.returns(wc, blocker.task, inline(b"b"));
    let e = one_execution(&h.recv(wc));
    assert_eq!(e.deps, vec![inline(b"arg"), inline(b"arg")]);
    assert!(is_ready(&h.st, &arg), "held by a running task");
    // The task's own return gets a handle, then the task ends.
    h.add_refs(d, vec![ret(&user)]);
    h.returns(wc, user.task, inline(b"u"));
    assert!(!h.st.objects.contains(&arg));
    assert!(is_ready(&h.st, &ret(&user)));
    h.send(
        d,
        ClientMsg::DecRefs {
            ids: vec![ret(&user), ret(&blocker)],
        },
    );
    assert!(h.st.objects.is_empty());
}

#[test]
fn stored_objects_are_pinned_per_value_sent_and_freed_after_the_last_release() {
    let mut h = Harness::new(1.0);
    let d = h.driver();
    let empty = h.st.store.stats();
    assert_eq!(empty.used, 0);

    let s = ObjectId::for_put();
    h.send(
        d,
        ClientMsg::Create {
            req: 1,
            id: s,
            len: 1000,
        },
    );
    let [
        NodeMsg::Created {
            req: 1,
            result: Ok(Reserved::Write { offset }),
        },
    ] = h.recv(d)[..]
    else {
        panic!("expected Created")
    };
    assert!(h.st.conns[&d].unsealed.contains(&s));
    assert_eq!(h.st.store.stats().num_objects, 1);
    assert_eq!(h.st.store.stats().pinned_bytes, 0);
    h.add_refs(d, vec![s]);
    h.send(
        d,
        ClientMsg::Seal {
            id: s,
            contained: vec![],
        },
    );
    assert!(h.st.conns[&d].unsealed.is_empty());
    let stored = Value::Stored { offset, len: 1000 };
    assert_eq!(h.get_now(d, &[s]), vec![stored.clone()]);
    assert_eq!(h.get_now(d, &[s]), vec![stored]);
    assert_eq!(h.st.conns[&d].pins[&s], 2);
    let stats = h.st.store.stats();
    assert_eq!(stats.num_pinned, 1);
    assert!(stats.pinned_bytes >= 1000);

    h.send(d, ClientMsg::Release { ids: vec![s] });
    assert_eq!(h.st.conns[&d].pins[&s], 1);
    assert_eq!(h.st.store.stats().num_pinned, 1);
    // The last handle goes while the client still reads it: the store keeps it.
    h.send(d, ClientMsg::DecRefs { ids: vec![s] });
    assert!(!h.st.objects.contains(&s));
    assert_eq!(h.st.store.stats().num_objects, 1);
    assert!(!h.store.contains(&s), "hidden from new readers");
    h.send(d, ClientMsg::Release { ids: vec![s] });
    assert!(!h.st.conns[&d].pins.contains_key(&s));
    assert_eq!(h.st.store.stats(), empty);
    // Releasing what it does not hold changes nothing.
    h.send(d, ClientMsg::Release { ids: vec![s] });
    assert_eq!(h.st.store.stats(), empty);

    // A closing connection gives back its pins and aborts what it never sealed.
    let t = ObjectId::for_put();
    h.send(
        d,
        ClientMsg::Create {
            req: 2,
            id: t,
            len: 64,
        },
    );
    h.recv(d);
    h.add_refs(d, vec![t]);
    h.send(
        d,
        ClientMsg::Seal {
            id: t,
            contained: vec![],
        },
    );
    let d2 = h.driver();
    h.get_now(d2, &[t]);
    h.get_now(d2, &[t]);
    h.send(
        d2,
        ClientMsg::Create {
            req: 3,
            id: ObjectId::for_put(),
            len: 4096,
        },
    );
    assert_eq!(h.st.store.stats().num_objects, 2);
    assert_eq!(h.st.store.stats().num_pinned, 1);
    h.st.conn_closed(d2);
    assert_eq!(h.st.store.stats().num_pinned, 0);
    assert_eq!(h.st.store.stats().num_objects, 1);
    h.send(d, ClientMsg::DecRefs { ids: vec![t] });
    assert_eq!(h.st.store.stats(), empty);

    // Too large for the store: an error, not a crash.
    h.send(
        d,
        ClientMsg::Create {
            req: 4,
            id: ObjectId::for_put(),
            len: 1 << 40,
        },
    );
    let [
        NodeMsg::Created {
            req: 4,
            result: Err(ref err),
        },
    ] = h.recv(d)[..]
    else {
        panic!("expected an error")
    };
    assert_eq!(err.kind, ErrorKind::StoreFull);
}

#[test]
fn stored_returns_are_sealed_and_pinned_for_the_tasks_that_read_them() {
    let mut h = Harness::new(1.0);
    let d = h.driver();
    let f = h.register(d, FN_BLOB);
    let [(_, wc)] = h.pool()[..] else {
        unreachable!()
    };
    let a = task(f, vec![]);
    let b = task(f, vec![ret(&a)]);
    h.submit(d, &a);
    h.submit(d, &b);
    h.add_refs(d, vec![ret(&a)]);
    h.recv(wc);
    // The worker writes a's large return into the store itself.
    h.send(
        wc,
        ClientMsg::Create {
            req: 1,
            id: ret(&a),
            len: 200_000,
        },
    );
    let [
        NodeMsg::Created {
            result: Ok(Reserved::Write { offset }),
            ..
        },
    ] = h.recv(wc)[..]
    else {
        panic!("expected Created")
    };
    let stored = Value::Stored {
        offset,
        len: 200_000,
    };
    h.returns(wc, a.task, stored.clone());
    assert!(h.st.conns[&wc].unsealed.is_empty());
    assert!(h.store.contains(&ret(&a)));
    let e = one_execution(&h.recv(wc));
    assert_eq!(e.task, b.task);
    assert_eq!(e.deps, vec![stored]);
    assert_eq!(h.st.conns[&wc].pins[&ret(&a)], 1);
    h.returns(wc, b.task, inline(b"b"));
    h.send(d, ClientMsg::DecRefs { ids: vec![ret(&a)] });
    assert!(!h.st.objects.contains(&ret(&a)));
    assert_eq!(
        h.st.store.stats().num_objects,
        1,
        "the worker still reads it"
    );
    h.send(wc, ClientMsg::Release { ids: vec![ret(&a)] });
    assert_eq!(h.st.store.stats().num_objects, 0);
    assert_eq!(h.st.store.stats().used, 0);

    // A task that fails after creating its return in the store gives the space back.
    let c = task(f, vec![]);
    h.submit(d, &c);
    h.recv(wc);
    h.send(
        wc,
        ClientMsg::Create {
            req: 2,
            id: ret(&c),
            len: 500,
        },
    );
    h.recv(wc);
    h.done(
        wc,
        c.task,
        Outcome::Failed(ErrorInfo::new(ErrorKind::Task, "late failure")),
        10,
    );
    assert_eq!(h.st.store.stats().used, 0);
}

#[test]
fn a_rejected_task_drops_the_arguments_it_wrote_into_the_store() {
    let mut h = Harness::new(1.0);
    let d = h.driver();
    let f = h.register(d, FN_BLOB);
    let bad = TaskSpec {
        resources: vec![("CPU".into(), -1.0)],
        ..task(f, vec![])
    };
    let args_id = crate::wire::local::args_object_id(bad.task);
    h.send(
        d,
        ClientMsg::Create {
            req: 7,
            id: args_id,
            len: 4096,
        },
    );
    h.recv(d);
    assert_eq!(h.st.store.stats().num_objects, 1);
    let bad = TaskSpec {
        args: Value::Stored {
            offset: 0,
            len: 4096,
        },
        ..bad
    };
    h.submit(d, &bad);
    assert!(!h.st.tasks.contains(&bad.task), "the task was rejected");
    assert_eq!(
        h.st.store.stats().num_objects,
        0,
        "its arguments were dropped"
    );
    assert!(h.st.conns[&d].unsealed.is_empty());
}
