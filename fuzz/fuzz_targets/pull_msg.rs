//! One frame payload of a pull stream (`/peer/pull/1.0.0`), read as both of its messages: the
//! `PullRequest` a serving node reads and the `PullReply` a pulling node reads. Neither decode
//! may panic or over-allocate, and what they accept must survive a round trip.
#![no_main]

use libfuzzer_sys::fuzz_target;
use peer_node::core::wire::codec;
use peer_node::core::wire::peer::{PullReply, PullRequest};

fuzz_target!(|data: &[u8]| {
    if let Ok(request) = codec::decode::<PullRequest>(data) {
        peer_fuzz::roundtrip::check(&request, data.len());
    }
    if let Ok(reply) = codec::decode::<PullReply>(data) {
        peer_fuzz::roundtrip::check(&reply, data.len());
    }
});
