//! One frame payload of `ClientMsg` (what a local client (worker, driver, CLI) sends the node on its Unix socket): `codec::decode` must not panic or
//! over-allocate, and what it accepts must survive a round trip.
#![no_main]

use libfuzzer_sys::fuzz_target;
use peer_node::core::wire::codec;
use peer_node::core::wire::local::ClientMsg;

fuzz_target!(|data: &[u8]| {
    if let Ok(msg) = codec::decode::<ClientMsg>(data) {
        peer_fuzz::roundtrip::check(&msg, data.len());
    }
});
