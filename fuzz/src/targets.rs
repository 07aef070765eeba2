//! The fuzz targets' checks, one function per target (`fuzz_targets/<name>.rs` feeds
//! libFuzzer's bytes to `<name>` here), so that `cargo test` can replay stored inputs through
//! them too (`tests` below): the seeds committed in `seeds/<name>` (a merged corpus of earlier
//! fuzzing runs), and the local `corpus/<name>` and `artifacts/<name>` where `fuzz/run` left
//! them. A deterministic check of every decoder on what fuzzing found, on every test run,
//! without a fuzzing build.

use peer_gossip::fuzz_reencode_message;
use peer_node::core::wire::blob::{self, ALIGN, Layout};
use peer_node::core::wire::codec;
use peer_node::core::wire::local::{ClientMsg, NodeMsg};
use peer_node::core::wire::peer::{DirectOffer, PeerMsg, PullReply, PullRequest};

use crate::frames::check;

/// An encoded object blob (header, pickle, buffers), as it arrives inline in a message or from
/// a peer's store: `blob::parse` must not panic or over-allocate, it must accept only the layout
/// `blob::encode` makes (every section inside the blob, in order, aligned, nothing to spare), and
/// the sections encoded again must parse back to the same contents.
pub fn blob(data: &[u8]) {
    let Ok(layout) = blob::parse(data) else {
        return;
    };
    assert_eq!(layout.total, data.len());
    assert_eq!(layout.pickle.start, 24 + 16 * layout.buffers.len());
    let pickle = &data[layout.pickle.clone()];
    let buffers: Vec<&[u8]> = layout.buffers.iter().map(|r| &data[r.clone()]).collect();
    let lens: Vec<usize> = buffers.iter().map(|b| b.len()).collect();
    assert_eq!(
        layout,
        Layout::new(pickle.len(), &lens),
        "a layout encode would not make"
    );

    let encoded = blob::encode(pickle, &buffers);
    let again = blob::parse(&encoded).unwrap_or_else(|e| panic!("re-encoded blob refused: {e}"));
    assert_eq!(again, Layout::new(pickle.len(), &lens));
    assert_eq!(&encoded[again.pickle.clone()], pickle);
    for (range, buffer) in again.buffers.iter().zip(&buffers) {
        assert_eq!(range.start % ALIGN, 0);
        assert_eq!(&encoded[range.clone()], *buffer);
    }
}

/// One frame payload of `ClientMsg` (what a local client (worker, driver, CLI) sends the node on its Unix socket): `codec::decode` must not panic or
/// over-allocate, and what it accepts must survive a round trip.
pub fn client_msg(data: &[u8]) {
    if let Ok(msg) = codec::decode::<ClientMsg>(data) {
        crate::roundtrip::check(&msg, data.len());
    }
}

/// A byte stream of length-prefixed frames, as a socket or a peer stream delivers it: the first
/// byte picks the message type the stream carries, the rest is read frame after frame by both
/// framed readers of `peer_node::core::wire::codec` (see `peer_fuzz::frames`).
pub fn frames(data: &[u8]) {
    let Some((&kind, stream)) = data.split_first() else {
        return;
    };
    match kind % 5 {
        0 => check::<ClientMsg>(stream),
        1 => check::<NodeMsg>(stream),
        2 => check::<PeerMsg>(stream),
        3 => check::<PullRequest>(stream),
        _ => check::<PullReply>(stream),
    }
}

/// A gossipsub payload as it arrives from the network: decoding and validating it must not panic
/// or over-allocate, and a message it accepts must re-encode (as the node would publish it) to
/// bytes no longer than the payload, which decode to the same message again.
pub fn gossip_message(data: &[u8]) {
    if let Ok(encoded) = fuzz_reencode_message(data) {
        assert!(encoded.len() <= data.len(), "re-encoding grew the message");
        let again = fuzz_reencode_message(&encoded)
            .unwrap_or_else(|e| panic!("a re-encoded message is refused: {e}"));
        assert_eq!(again, encoded, "encoding is not stable");
    }
}

/// One frame payload of `NodeMsg` (what a node sends its local clients on its Unix socket): `codec::decode` must not panic or
/// over-allocate, and what it accepts must survive a round trip.
pub fn node_msg(data: &[u8]) {
    if let Ok(msg) = codec::decode::<NodeMsg>(data) {
        crate::roundtrip::check(&msg, data.len());
    }
}

/// One frame payload of `PeerMsg` (what another node sends on a `/peer/node/1.0.0` stream): `codec::decode` must not panic or
/// over-allocate, and what it accepts must survive a round trip.
pub fn peer_msg(data: &[u8]) {
    if let Ok(msg) = codec::decode::<PeerMsg>(data) {
        crate::roundtrip::check(&msg, data.len());
    }
}

/// One frame payload of a pull stream (`/peer/pull/2.0.0`, or a direct connection), read as
/// each of its messages: the `PullRequest` a serving node reads, the `PullReply` a pulling node
/// reads, and the `DirectOffer` a pulling node reads on `/peer/direct/1.0.0`. No decode may
/// panic or over-allocate, and what they accept must survive a round trip.
pub fn pull_msg(data: &[u8]) {
    if let Ok(request) = codec::decode::<PullRequest>(data) {
        crate::roundtrip::check(&request, data.len());
    }
    if let Ok(reply) = codec::decode::<PullReply>(data) {
        crate::roundtrip::check(&reply, data.len());
    }
    if let Ok(offer) = codec::decode::<DirectOffer>(data) {
        crate::roundtrip::check(&offer, data.len());
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    /// Every stored input of a target (its seeds, and the local corpus and findings if any)
    /// through its check.
    fn replay(target: &str, check: fn(&[u8])) {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let seeds = std::fs::read_dir(root.join("seeds").join(target)).map_or(0, |d| d.count());
        assert!(seeds > 0, "no seeds committed for {target}");
        let mut inputs = 0;
        for dir in ["seeds", "corpus", "artifacts"] {
            let Ok(entries) = std::fs::read_dir(root.join(dir).join(target)) else {
                continue;
            };
            for entry in entries {
                let path = entry.unwrap().path();
                if path.is_file() {
                    check(&std::fs::read(&path).unwrap());
                    inputs += 1;
                }
            }
        }
        assert!(inputs >= seeds);
    }

    #[test]
    fn blob_corpus() {
        replay("blob", super::blob);
    }

    #[test]
    fn client_msg_corpus() {
        replay("client_msg", super::client_msg);
    }

    #[test]
    fn frames_corpus() {
        replay("frames", super::frames);
    }

    #[test]
    fn gossip_message_corpus() {
        replay("gossip_message", super::gossip_message);
    }

    #[test]
    fn node_msg_corpus() {
        replay("node_msg", super::node_msg);
    }

    #[test]
    fn peer_msg_corpus() {
        replay("peer_msg", super::peer_msg);
    }

    #[test]
    fn pull_msg_corpus() {
        replay("pull_msg", super::pull_msg);
    }
}
