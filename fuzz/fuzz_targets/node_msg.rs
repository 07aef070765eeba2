//! One frame payload of `NodeMsg` (what a node sends its local clients on its Unix socket): `codec::decode` must not panic or
//! over-allocate, and what it accepts must survive a round trip.
#![no_main]

use libfuzzer_sys::fuzz_target;
use peer_node::core::wire::codec;
use peer_node::core::wire::local::NodeMsg;

fuzz_target!(|data: &[u8]| {
    if let Ok(msg) = codec::decode::<NodeMsg>(data) {
        peer_fuzz::roundtrip::check(&msg, data.len());
    }
});
