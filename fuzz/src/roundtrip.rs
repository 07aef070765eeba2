//! The round trip every decoded message must survive: framed again with the node's own
//! `codec::encode`, it decodes to the same value and encodes to the same bytes, and the new
//! payload is no longer than the one it was decoded from, so whatever a node accepts it can also
//! send on within the frame limit.

use std::fmt::Debug;

use peer_node::core::wire::codec;
use serde::{Serialize, de::DeserializeOwned};

/// A message type the targets decode.
pub trait Message: Serialize + DeserializeOwned + PartialEq + Debug {}

impl<T: Serialize + DeserializeOwned + PartialEq + Debug> Message for T {}

/// Equal values. A NaN (which postcard carries bit for bit) is unequal to itself, so values that
/// differ under `==` are compared by their Debug text too.
pub fn same<T: PartialEq + Debug>(a: &T, b: &T) -> bool {
    a == b || format!("{a:?}") == format!("{b:?}")
}

/// Checks the round trip of `value`, decoded from a payload of `payload_len` bytes.
pub fn check<T: Message>(value: &T, payload_len: usize) {
    let frame = codec::encode(value);
    let header = [frame[0], frame[1], frame[2], frame[3]];
    let len = codec::check_len(header)
        .unwrap_or_else(|e| panic!("re-encoded {value:?} is not a valid frame: {e}"));
    assert_eq!(len, frame.len() - 4, "frame header of {value:?}");
    assert!(
        len <= payload_len,
        "{value:?} decoded from {payload_len} bytes re-encodes to {len}"
    );
    let again: T = codec::decode(&frame[4..])
        .unwrap_or_else(|e| panic!("re-encoded {value:?} does not decode: {e}"));
    assert!(same(value, &again), "{value:?} came back as {again:?}");
    assert_eq!(
        codec::encode(&again),
        frame,
        "encoding of {value:?} is not stable"
    );
}

#[cfg(test)]
mod tests {
    use peer_node::core::wire::local::{ClientMsg, Role};

    use super::*;

    #[test]
    fn a_decoded_message_passes() {
        let msg = ClientMsg::Hello {
            role: Role::Driver,
            pid: 300,
        };
        check(&msg, codec::encode(&msg).len() - 4);
    }

    #[test]
    #[should_panic(expected = "re-encodes to")]
    fn a_payload_shorter_than_its_encoding_fails() {
        check(&ClientMsg::Shutdown, 0);
    }

    #[test]
    fn nan_is_the_same_as_itself() {
        assert!(same(&f64::NAN, &f64::NAN));
        assert!(!same(&1.0, &2.0));
    }
}
