//! One frame payload of `NodeMsg` (what a node sends its local clients on its Unix socket): `codec::decode` must not panic or
//! over-allocate, and what it accepts must survive a round trip.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| peer_fuzz::targets::node_msg(data));
