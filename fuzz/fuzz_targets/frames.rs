//! A byte stream of length-prefixed frames, as a socket or a peer stream delivers it: the first
//! byte picks the message type the stream carries, the rest is read frame after frame by both
//! framed readers of `peer_node::core::wire::codec` (see `peer_fuzz::frames`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| peer_fuzz::targets::frames(data));
