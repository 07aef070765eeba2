//! GPU devices: each task or actor that asks for GPUs is sent the ids of the
//! devices it holds, fractions pack onto one device, and ids come back.

use super::*;

/// A node with `cpus` CPUs and GPU devices `ids`.
fn gpu_node(cpus: f64, ids: &[&str]) -> Harness {
    let mut c = config(cpus, None);
    c.gpu_ids = ids.iter().map(|s| s.to_string()).collect();
    Harness::with_config(c)
}

fn needing_gpus(f: FnId, gpus: f64) -> TaskSpec {
    let mut t = task(f, vec![]);
    t.resources = vec![("CPU".into(), 1.0), ("GPU".into(), gpus)];
    t
}

#[test]
fn whole_gpu_tasks_get_distinct_devices_and_give_them_back() {
    let mut h = gpu_node(4.0, &["2", "3"]);
    assert_eq!(h.st.total.get("GPU"), 2.0);
    let d = h.driver();
    let f = h.register(d, FN_BLOB);
    let workers = h.pool();
    let tasks: Vec<TaskSpec> = (0..3).map(|_| needing_gpus(f, 1.0)).collect();
    for t in &tasks {
        h.submit(d, t);
    }
    let mut running = Vec::new();
    for (_, c) in &workers {
        for e in executions(&h.recv(*c)) {
            running.push((*c, e.task, e.gpu_ids));
        }
    }
    let mut ids: Vec<Vec<String>> = running.iter().map(|r| r.2.clone()).collect();
    ids.sort();
    assert_eq!(
        ids,
        [vec!["2".to_string()], vec!["3".to_string()]],
        "two devices, two tasks"
    );
    assert_eq!(
        h.st.tasks.ready_list(),
        vec![tasks[2].task],
        "the third waits for a device"
    );

    // The one on device 3 ends: the third task gets device 3.
    let (c, t, _) = running.iter().find(|r| r.2 == ["3"]).unwrap().clone();
    h.returns(c, t, inline(b"1"));
    let third: Vec<Execution> = workers
        .iter()
        .flat_map(|(_, c)| executions(&h.recv(*c)))
        .collect();
    assert_eq!(third.len(), 1);
    assert_eq!(
        (third[0].task, third[0].gpu_ids.clone()),
        (tasks[2].task, vec!["3".into()])
    );
}

#[test]
fn half_gpu_tasks_pair_up_on_one_device_and_cpu_tasks_get_none() {
    let mut h = gpu_node(4.0, &["0", "1"]);
    let d = h.driver();
    let f = h.register(d, FN_BLOB);
    let workers = h.pool();
    let halves = [needing_gpus(f, 0.5), needing_gpus(f, 0.5)];
    let plain = task(f, vec![]);
    for t in halves.iter().chain([&plain]) {
        h.submit(d, t);
    }
    let execs: Vec<Execution> = workers
        .iter()
        .flat_map(|(_, c)| executions(&h.recv(*c)))
        .collect();
    let ids_of = |t: &TaskSpec| {
        execs
            .iter()
            .find(|e| e.task == t.task)
            .unwrap()
            .gpu_ids
            .clone()
    };
    assert_eq!(ids_of(&halves[0]), ["0"]);
    assert_eq!(ids_of(&halves[1]), ["0"]);
    assert!(ids_of(&plain).is_empty());
    // Device 1 is still wholly free: placement sees one GPU free.
    assert_eq!(h.st.load().resources, vec![("GPU".into(), 2.0, 1.0)]);
    assert!(h.st.fits_here(&crate::resources::Resources::from_pairs([("GPU", 1.0)])));
    assert!(
        !h.st
            .fits_here(&crate::resources::Resources::from_pairs([("GPU", 2.0)]))
    );
}

#[test]
fn an_actor_holds_its_devices_for_every_call_until_it_dies() {
    let mut h = gpu_node(2.0, &["0", "1"]);
    let d = h.driver();
    let class = h.register(d, CLASS_BLOB);
    let mut create = actor_spec(class, None, 0);
    create.resources = vec![("GPU".into(), 1.0)];
    create_actor(&mut h, d, &create);
    h.recv(d);
    let [aw] = h.spawned()[..] else {
        panic!("one worker for the actor")
    };
    let (ac, msgs) = h.hello(Role::Worker(aw));
    assert_eq!(one_execution(&msgs).gpu_ids, ["0"]);
    h.returns(ac, create.task, inline(b"None"));
    let call = method(&create, "step", vec![]);
    h.submit(d, &call);
    assert_eq!(one_execution(&h.recv(ac)).gpu_ids, ["0"]);
    assert_eq!(h.st.gpus.placement_free(), 1.0);

    // Its process dies (no restarts): the device is free again.
    h.event(Event::Closed { conn: ac });
    assert_eq!(h.st.gpus.placement_free(), 2.0);
}

#[test]
fn a_gpu_amount_in_resources_stands_for_devices_from_zero() {
    let mut c = config(1.0, None);
    c.resources = vec![("GPU".into(), 3.0)];
    let h = Harness::with_config(c);
    assert_eq!(h.st.total.get("GPU"), 3.0);
    assert_eq!(h.st.gpus.len(), 3);
}
