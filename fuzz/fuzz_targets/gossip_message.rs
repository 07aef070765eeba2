//! A gossipsub payload as it arrives from the network: decoding and validating it must not panic
//! or over-allocate, and a message it accepts must re-encode (as the node would publish it) to
//! bytes no longer than the payload, which decode to the same message again.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| peer_fuzz::targets::gossip_message(data));
