//! A gossipsub payload as it arrives from the network: decoding and validating it must not panic
//! or over-allocate, and a message it accepts must re-encode (as the node would publish it) to
//! bytes no longer than the payload, which decode to the same message again.
#![no_main]

use libfuzzer_sys::fuzz_target;
use peer_gossip::fuzz_reencode_message;

// Linked for its global allocator.
use peer_fuzz as _;

fuzz_target!(|data: &[u8]| {
    if let Ok(encoded) = fuzz_reencode_message(data) {
        assert!(encoded.len() <= data.len(), "re-encoding grew the message");
        let again = fuzz_reencode_message(&encoded)
            .unwrap_or_else(|e| panic!("a re-encoded message is refused: {e}"));
        assert_eq!(again, encoded, "encoding is not stable");
    }
});
