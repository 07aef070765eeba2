//! An encoded object blob (header, pickle, buffers), as it arrives inline in a message or from
//! a peer's store: `blob::parse` must not panic or over-allocate, it must accept only the layout
//! `blob::encode` makes (every section inside the blob, in order, aligned, nothing to spare), and
//! the sections encoded again must parse back to the same contents.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| peer_fuzz::targets::blob(data));
