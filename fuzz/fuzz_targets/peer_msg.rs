//! One frame payload of `PeerMsg` (what another node sends on a `/peer/node/1.0.0` stream): `codec::decode` must not panic or
//! over-allocate, and what it accepts must survive a round trip.
#![no_main]

use libfuzzer_sys::fuzz_target;
use peer_node::core::wire::codec;
use peer_node::core::wire::peer::PeerMsg;

fuzz_target!(|data: &[u8]| {
    if let Ok(msg) = codec::decode::<PeerMsg>(data) {
        peer_fuzz::roundtrip::check(&msg, data.len());
    }
});
