//! Tasks and actors no node could ever run stay pending, and their driver is
//! told in Ray's words once per resource shape: an attached driver by an
//! Output message, the embedded driver on this process's stdout, the owner
//! of a task received from a peer through that peer; in a cluster only once
//! the task has fit nowhere for a grace period.

use super::*;
use crate::event::PeerLoad;
use crate::local::infeasible::INFEASIBLE_GRACE;

const RAY_WORDS: &str = "Error: No available node types can fulfill resource request";

fn needing(fn_id: FnId, extra: &[(&str, f64)]) -> TaskSpec {
    let mut t = task(fn_id, vec![]);
    t.resources
        .extend(extra.iter().map(|(k, v)| (k.to_string(), *v)));
    t
}

/// The lines printed for a driver in `msgs` (stdout only).
fn printed(msgs: &[NodeMsg]) -> Vec<String> {
    msgs.iter()
        .filter_map(|m| match m {
            NodeMsg::Output { stream: 1, data } => Some(String::from_utf8_lossy(data).into_owned()),
            _ => None,
        })
        .collect()
}

fn load(cpus: f64, resources: &[(&str, f64)]) -> PeerLoad {
    PeerLoad {
        cpus_total: cpus,
        cpus_free: cpus,
        resources: resources
            .iter()
            .map(|(k, v)| (k.to_string(), *v, *v))
            .collect(),
        ..Default::default()
    }
}

#[test]
fn an_attached_driver_is_told_once_per_shape_and_the_task_stays_pending() {
    let mut h = Harness::new(2.0);
    let d = h.driver();
    let f = h.register(d, FN_BLOB);
    h.pool();
    let nope = needing(f, &[("nope", 1.0)]);
    h.submit(d, &nope);
    let lines = printed(&h.recv(d));
    assert_eq!(
        lines,
        vec![format!(
            "(autoscaler +0s) {RAY_WORDS} {{'CPU': 1.0, 'nope': 1.0}}. Add suitable node types \
             to this cluster to resolve this issue.\n"
        )]
    );
    // The same shape again says nothing; another shape does.
    h.submit(d, &needing(f, &[("nope", 1.0)]));
    assert!(printed(&h.recv(d)).is_empty());
    h.submit(d, &needing(f, &[("GPU", 8.0)]));
    let lines = printed(&h.recv(d));
    assert_eq!(lines.len(), 1);
    assert!(lines[0].contains("{'CPU': 1.0, 'GPU': 8.0}"), "{lines:?}");
    // It is still pending: a get with a timeout times out, and nothing more is said.
    assert_eq!(h.st.tasks[&nope.task].state, TaskState::Queued);
    h.send(
        d,
        ClientMsg::Get {
            req: 3,
            ids: vec![ret(&nope)],
            timeout_ms: Some(10),
        },
    );
    let [deadline] = h.timers()[..] else {
        panic!("one deadline")
    };
    h.fire(deadline);
    assert_eq!(
        h.recv(d),
        vec![NodeMsg::Values {
            req: 3,
            values: None
        }]
    );
    // A task that fits is not held up and says nothing.
    let fits = task(f, vec![]);
    h.submit(d, &fits);
    assert!(printed(&h.recv(d)).is_empty());
    assert!(matches!(
        h.st.tasks[&fits.task].state,
        TaskState::Running(_)
    ));
}

#[test]
fn a_second_driver_is_told_too_and_an_actor_that_fits_nowhere_is_reported() {
    let mut h = Harness::new(1.0);
    let (d1, d2) = (h.driver(), h.driver());
    let f = h.register(d1, FN_BLOB);
    h.pool();
    h.submit(d1, &needing(f, &[("nope", 1.0)]));
    h.submit(d2, &needing(f, &[("nope", 1.0)]));
    assert_eq!(printed(&h.recv(d1)).len(), 1);
    assert_eq!(
        printed(&h.recv(d2)).len(),
        1,
        "each driver hears of its own"
    );

    let class = h.register(d1, CLASS_BLOB);
    let mut actor = actor_spec(class, None, 0);
    actor.resources = vec![("GPU".into(), 1.0)];
    h.submit(d1, &actor);
    let lines = printed(&h.recv(d1));
    assert_eq!(lines.len(), 1);
    assert!(lines[0].contains("{'GPU': 1.0}"), "{lines:?}");
}

#[test]
fn the_embedded_driver_reads_it_on_stdout() {
    let mut h = Harness::new(1.0);
    let d = h.driver();
    let f = h.register(d, FN_BLOB);
    h.pool();
    let t = needing(f, &[("GPU", 1.0)]);
    h.st.driver_submit(t.clone(), h.now).expect("submitted");
    h.pump();
    assert_eq!(h.prints.len(), 1);
    let (stream, line) = &h.prints[0];
    assert_eq!(*stream, 1, "Ray prints its autoscaler's events on stdout");
    assert!(
        line.contains(RAY_WORDS) && line.contains("'GPU': 1.0"),
        "{line}"
    );
    assert!(h.st.tasks.contains(&t.task));
}

#[test]
fn in_a_cluster_the_word_waits_for_the_view_and_a_peer_that_fits_silences_it() {
    let mut h = Harness::new(2.0);
    h.join();
    let d = h.driver();
    let f = h.register(d, FN_BLOB);
    h.pool();
    h.st.update_view(vec![(peer(), load(4.0, &[]))]);
    let t = needing(f, &[("GPU", 1.0)]);
    h.submit(d, &t);
    assert!(
        printed(&h.recv(d)).is_empty(),
        "not yet: the view may lack peers"
    );
    assert_eq!(h.st.tasks[&t.task].state, TaskState::Placing);
    let due = h.timers();
    assert!(due.contains(&(h.now + INFEASIBLE_GRACE)), "{due:?}");
    h.advance(INFEASIBLE_GRACE);
    let lines = printed(&h.recv(d));
    assert_eq!(lines.len(), 1);
    assert!(lines[0].contains("(autoscaler +2s)") && lines[0].contains("'GPU': 1.0"));

    // Another shape, but a peer that has it joins within the grace: no word.
    let u = needing(f, &[("TPU", 1.0)]);
    h.submit(d, &u);
    h.st.update_view(vec![
        (peer(), load(4.0, &[])),
        (peer(), load(1.0, &[("TPU", 1.0)])),
    ]);
    h.advance(INFEASIBLE_GRACE);
    assert!(printed(&h.recv(d)).is_empty());
    assert_ne!(h.st.tasks[&u.task].state, TaskState::Queued);
}

#[test]
fn a_lone_member_waits_out_the_grace_too() {
    let mut h = Harness::new(1.0);
    h.join();
    let d = h.driver();
    let f = h.register(d, FN_BLOB);
    h.pool();
    let t = needing(f, &[("nope", 1.0)]);
    h.submit(d, &t);
    assert!(printed(&h.recv(d)).is_empty());
    h.advance(INFEASIBLE_GRACE);
    assert_eq!(printed(&h.recv(d)).len(), 1);
    assert_eq!(h.st.tasks[&t.task].state, TaskState::Queued);
}

#[test]
fn a_task_received_from_a_peer_is_reported_to_its_owners_driver() {
    let mut owner = Harness::new(1.0);
    let owner_id = owner.join();
    let mut guest = Harness::new(1.0);
    let guest_id = guest.join();
    // The owner believes the guest has a GPU; the guest has none, and sees no peer with one.
    owner
        .st
        .update_view(vec![(guest_id, load(1.0, &[("GPU", 1.0)]))]);
    guest.st.update_view(vec![(owner_id, load(1.0, &[]))]);
    let d = owner.driver();
    let f = owner.register(d, FN_BLOB);
    owner.pool();
    guest.pool();
    let t = needing(f, &[("GPU", 1.0)]);
    owner.submit(d, &t);
    let msgs = owner.peer_msgs();
    let round = msgs
        .iter()
        .find_map(|(_, m)| match m {
            PeerMsg::BidRequest { round, .. } => Some(*round),
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
    for (to, msg) in owner.peer_msgs() {
        assert_eq!(to, guest_id);
        guest.st.handle_peer(owner_id, msg);
    }
    guest.pump();
    assert!(guest.st.tasks.contains(&t.task), "the guest took the task");
    guest.advance(INFEASIBLE_GRACE);
    let told: Vec<PeerMsg> = guest
        .peer_msgs()
        .into_iter()
        .filter(|(to, m)| *to == owner_id && matches!(m, PeerMsg::Output { .. }))
        .map(|(_, m)| m)
        .collect();
    assert_eq!(told.len(), 1, "the owner hears of it");
    for m in told {
        owner.st.handle_peer(guest_id, m);
    }
    let lines = printed(&owner.recv(d));
    assert_eq!(lines.len(), 1);
    assert!(lines[0].contains(RAY_WORDS) && lines[0].contains("'GPU': 1.0"));
}
