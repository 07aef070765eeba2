//! One frame payload of `PeerMsg` (what another node sends on a `/peer/node/1.0.0` stream): `codec::decode` must not panic or
//! over-allocate, and what it accepts must survive a round trip.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| peer_fuzz::targets::peer_msg(data));
