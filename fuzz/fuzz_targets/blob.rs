//! An encoded object blob (header, pickle, buffers), as it arrives inline in a message or from
//! a peer's store: `blob::parse` must not panic or over-allocate, it must accept only the layout
//! `blob::encode` makes (every section inside the blob, in order, aligned, nothing to spare), and
//! the sections encoded again must parse back to the same contents.
#![no_main]

use libfuzzer_sys::fuzz_target;
use peer_node::core::wire::blob::{self, ALIGN, Layout};

// Linked for its global allocator.
use peer_fuzz as _;

fuzz_target!(|data: &[u8]| {
    let Ok(layout) = blob::parse(data) else {
        return;
    };
    assert_eq!(layout.total, data.len());
    assert_eq!(layout.pickle.start, 24 + 16 * layout.buffers.len());
    let pickle = &data[layout.pickle.clone()];
    let buffers: Vec<&[u8]> = layout.buffers.iter().map(|r| &data[r.clone()]).collect();
    let lens: Vec<usize> = buffers.iter().map(|b| b.len()).collect();
    assert_eq!(
        layout,
        Layout::new(pickle.len(), &lens),
        "a layout encode would not make"
    );

    let encoded = blob::encode(pickle, &buffers);
    let again = blob::parse(&encoded).unwrap_or_else(|e| panic!("re-encoded blob refused: {e}"));
    assert_eq!(again, Layout::new(pickle.len(), &lens));
    assert_eq!(&encoded[again.pickle.clone()], pickle);
    for (range, buffer) in again.buffers.iter().zip(&buffers) {
        assert_eq!(range.start % ALIGN, 0);
        assert_eq!(&encoded[range.clone()], *buffer);
    }
});
