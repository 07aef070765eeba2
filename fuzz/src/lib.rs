//! What the fuzz targets share: the capped global allocator (installed for every target that
//! links this crate), the round trip check of a decoded message, and the framed readers driven
//! over a byte slice.
//!
//! Each target feeds libFuzzer's bytes to one decoder of bytes from a socket or a peer, and
//! fails (a panic, or an abort from the allocator) when the decoder panics, asks for one
//! allocation over `peer_node::core::wire::codec::MAX_FRAME`, or accepts something that does not survive a
//! re-encode.

pub mod alloc;
pub mod frames;
pub mod roundtrip;
pub mod targets;
