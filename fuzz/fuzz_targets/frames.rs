//! A byte stream of length-prefixed frames, as a socket or a peer stream delivers it: the first
//! byte picks the message type the stream carries, the rest is read frame after frame by both
//! framed readers of `peer_node::core::wire::codec` (see `peer_fuzz::frames`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use peer_fuzz::frames::check;
use peer_node::core::wire::local::{ClientMsg, NodeMsg};
use peer_node::core::wire::peer::{PeerMsg, PullReply, PullRequest};

fuzz_target!(|data: &[u8]| {
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
});
