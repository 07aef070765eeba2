//! One frame payload of `ClientMsg` (what a local client (worker, driver, CLI) sends the node on its Unix socket): `codec::decode` must not panic or
//! over-allocate, and what it accepts must survive a round trip.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| peer_fuzz::targets::client_msg(data));
