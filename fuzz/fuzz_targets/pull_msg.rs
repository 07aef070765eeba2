//! One frame payload of a pull stream (`/peer/pull/2.0.0`, or a direct connection), read as
//! each of its messages: the `PullRequest` a serving node reads, the `PullReply` a pulling node
//! reads, and the `DirectOffer` a pulling node reads on `/peer/direct/1.0.0`. No decode may
//! panic or over-allocate, and what they accept must survive a round trip.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| peer_fuzz::targets::pull_msg(data));
