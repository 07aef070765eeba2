//! Cluster-wide listings (`peer list`, the dashboard): every peer in the
//! view is asked, the answer comes once all replied or the deadline passed,
//! late or unreadable peers are named, and a peer asked answers from its
//! own tables.

use serde_bytes::ByteBuf;
use serde_json::Value as Json;

use super::*;
use crate::cluster::GATHER_TIMEOUT;
use crate::event::{NetworkView, PeerView};
use crate::wire::local::{Listing, Query};

fn see(h: &mut Harness, peers: &[PeerId]) {
    let view = peers
        .iter()
        .map(|p| PeerView {
            peer: *p,
            addresses: Vec::new(),
            load: None,
            objects: 0,
            age: Duration::ZERO,
            link: None,
            rtt: None,
        })
        .collect();
    h.event(Event::View {
        listen: Vec::new(),
        peers: view,
        network: NetworkView::default(),
    });
}

fn state_queries(msgs: &[(PeerId, PeerMsg)]) -> Vec<(PeerId, u64, Listing)> {
    msgs.iter()
        .filter_map(|(p, m)| match m {
            PeerMsg::StateQuery { req, what } => Some((*p, *req, *what)),
            _ => None,
        })
        .collect()
}

fn reply_of(msgs: Vec<NodeMsg>, want: u64) -> Json {
    let answers: Vec<Json> = msgs
        .into_iter()
        .filter_map(|m| match m {
            NodeMsg::Reply {
                req,
                result: Ok(text),
            } if req == want => serde_json::from_str(&text).ok(),
            _ => None,
        })
        .collect();
    assert_eq!(answers.len(), 1, "one answer to request {want}");
    answers.into_iter().next().unwrap_or_default()
}

#[test]
fn a_cluster_listing_asks_every_peer_and_names_those_too_late() {
    let mut h = Harness::new(1.0);
    let me = h.join();
    let (fast, slow, garbled) = (peer(), peer(), peer());
    see(&mut h, &[fast, slow, garbled]);
    let d = h.driver();
    h.send(
        d,
        ClientMsg::Query {
            req: 7,
            query: Query::Cluster(Listing::Tasks),
        },
    );
    let asked = state_queries(&h.peer_msgs());
    let mut who: Vec<PeerId> = asked.iter().map(|(p, _, _)| *p).collect();
    who.sort();
    let mut want = vec![fast, slow, garbled];
    want.sort();
    assert_eq!(who, want, "every peer in the view is asked once");
    assert!(asked.iter().all(|(_, _, w)| *w == Listing::Tasks));
    let req = asked[0].1;
    assert!(h.recv(d).is_empty(), "no answer before the peers replied");

    let part = serde_json::json!({"node": fast.to_string(), "rows": [{"state": "FAILED"}]});
    h.st.handle_peer(
        fast,
        PeerMsg::StateReply {
            req,
            json: ByteBuf::from(part.to_string().into_bytes()),
        },
    );
    h.st.handle_peer(
        garbled,
        PeerMsg::StateReply {
            req,
            json: ByteBuf::from(b"{not json".to_vec()),
        },
    );
    // A reply nobody waits for (another request, or a peer not asked) changes nothing.
    h.st.handle_peer(
        peer(),
        PeerMsg::StateReply {
            req,
            json: ByteBuf::from(b"{}".to_vec()),
        },
    );
    h.pump();
    assert!(h.recv(d).is_empty(), "the slow peer is still waited for");

    h.advance(GATHER_TIMEOUT);
    let answer = reply_of(h.recv(d), 7);
    let nodes: Vec<&str> = answer["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["node"].as_str().unwrap())
        .collect();
    assert_eq!(nodes, vec![me.to_string(), fast.to_string()]);
    let mut missing: Vec<String> = answer["missing"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m.as_str().unwrap().to_string())
        .collect();
    missing.sort();
    let mut late = vec![slow.to_string(), garbled.to_string()];
    late.sort();
    assert_eq!(missing, late);
    h.advance(GATHER_TIMEOUT);
    assert!(h.recv(d).is_empty(), "answered once");
}

#[test]
fn a_peer_asked_answers_from_its_tables_and_a_gone_peer_ends_the_wait() {
    let mut h = Harness::new(1.0);
    let me = h.join();
    let asker = peer();
    h.st.handle_peer(
        asker,
        PeerMsg::StateQuery {
            req: 3,
            what: Listing::Peers,
        },
    );
    h.pump();
    let replies: Vec<Json> = h
        .peer_msgs()
        .into_iter()
        .filter_map(|(p, m)| match m {
            PeerMsg::StateReply { req: 3, json } if p == asker => {
                serde_json::from_slice(&json).ok()
            }
            _ => None,
        })
        .collect();
    assert_eq!(replies.len(), 1);
    assert_eq!(replies[0]["node"], me.to_string());
    assert_eq!(replies[0]["rows"][0]["node_id"], me.to_string());

    // The embedded driver's gather: a peer that goes away is no longer waited for.
    let other = peer();
    see(&mut h, &[other]);
    let id = h.st.driver_gather(Listing::Actors, h.now);
    h.pump();
    assert_eq!(state_queries(&h.peer_msgs()).len(), 1);
    assert!(h.gathers_done.is_empty());
    h.event(Event::PeerGone {
        peer: other,
        why: "test".into(),
    });
    let (done, answer) = h.gathers_done.pop().expect("answered when the peer went");
    assert_eq!(done, id);
    let answer: Json = serde_json::from_str(&answer).unwrap();
    assert_eq!(answer["missing"][0], other.to_string());
    assert_eq!(answer["nodes"].as_array().map(Vec::len), Some(1));
}

#[test]
fn runs_and_failures_are_listed_with_their_worker() {
    let mut h = Harness::new(1.0);
    let d = h.driver();
    let f = h.register(d, FN_BLOB);
    let (_, wc) = h.pool()[0];
    let (ok, bad) = (task(f, vec![]), task(f, vec![]));
    h.submit(d, &ok);
    h.returns(wc, ok.task, inline(b"1"));
    h.submit(d, &bad);
    let err = ErrorInfo::new(
        ErrorKind::Task,
        "f() raised ValueError: nope\n\nTraceback (most recent call last):\nValueError: nope",
    );
    h.done(wc, bad.task, Outcome::FailedFinal(err), 500);
    let rows = h.st.query(Query::List(Listing::Tasks));
    let rows = rows["rows"].as_array().unwrap();
    let finished: Vec<&Json> = rows.iter().filter(|r| r["state"] == "FINISHED").collect();
    assert_eq!(finished.len(), 1);
    assert_eq!(finished[0]["task_id"], ok.task.to_string());
    assert_eq!(finished[0]["worker_pid"], FAKE_PID);
    let failed: Vec<&Json> = rows.iter().filter(|r| r["state"] == "FAILED").collect();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0]["worker_pid"], FAKE_PID);
    assert!(
        failed[0]["error_message"]
            .as_str()
            .unwrap()
            .ends_with("ValueError: nope")
    );
    let timeline = h.st.query(Query::List(Listing::Timeline));
    let runs = timeline["rows"]["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 2);
    let start = runs[1]["start_time_us"].as_u64().unwrap();
    assert_eq!(
        runs[1]["end_time_us"].as_u64().unwrap() - start,
        500,
        "the run time the worker measured"
    );
}
