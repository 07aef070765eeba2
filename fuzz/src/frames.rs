//! The framed readers of `peer_node::core::wire::codec` driven over a byte slice, several frames in a row:
//! the blocking reader, the async one (which the node's socket, peer streams and pull streams
//! use) and `split_frames` (the client's socket reader) must read the same messages and stop at
//! the same error, each message must pass [`roundtrip::check`], and all of them framed again
//! must read back the same.

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use peer_node::core::wire::codec::{self, FrameError};
use peer_node::frames;

use crate::roundtrip::{self, Message, same};

/// The messages read (each with its payload length) and the error that ended the reading.
struct Read<T> {
    messages: Vec<(T, usize)>,
    end: FrameError,
}

fn read_blocking<T: Message>(data: &[u8]) -> Read<T> {
    let mut rest = data;
    let mut messages = Vec::new();
    loop {
        let before = rest.len();
        match codec::read_blocking::<T>(&mut rest) {
            Ok(msg) => messages.push((msg, before - rest.len() - 4)),
            Err(end) => return Read { messages, end },
        }
    }
}

fn read_async<T: Message>(data: &[u8]) -> Read<T> {
    let mut rest = data;
    let mut buf = Vec::new();
    let mut messages = Vec::new();
    loop {
        let before = rest.len();
        match ready(frames::read_async::<T>(&mut rest, &mut buf)) {
            Ok(msg) => messages.push((msg, before - rest.len() - 4)),
            Err(end) => return Read { messages, end },
        }
    }
}

/// Polls a future that cannot wait (it only reads a byte slice) to its end.
fn ready<F: Future>(future: F) -> F::Output {
    match pin!(future).poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(out) => out,
        Poll::Pending => panic!("reading from a byte slice waited"),
    }
}

/// What an ending error says, with i/o errors reduced to their kind (the two readers word them
/// differently).
fn describe(end: &FrameError) -> String {
    match end {
        FrameError::Io(e) => format!("i/o error: {:?}", e.kind()),
        other => other.to_string(),
    }
}

/// Reads `data` as a stream of frames of `T` and checks everything in the module doc.
pub fn check<T: Message>(data: &[u8]) {
    let blocking = read_blocking::<T>(data);
    for (msg, len) in &blocking.messages {
        roundtrip::check(msg, *len);
    }
    let not_blocking = read_async::<T>(data);
    assert_eq!(
        blocking.messages.len(),
        not_blocking.messages.len(),
        "blocking and async readers read different numbers of frames"
    );
    for ((a, len_a), (b, len_b)) in blocking.messages.iter().zip(&not_blocking.messages) {
        assert!(
            same(a, b) && len_a == len_b,
            "blocking read {a:?}, async {b:?}"
        );
    }
    assert_eq!(describe(&blocking.end), describe(&not_blocking.end));

    match codec::split_frames::<T>(data) {
        Ok((messages, used)) => {
            assert!(
                matches!(blocking.end, FrameError::Closed | FrameError::Io(_)),
                "split_frames read to the end where the blocking reader stopped at {}",
                blocking.end
            );
            assert_eq!(messages.len(), blocking.messages.len());
            let want: usize = blocking.messages.iter().map(|(_, len)| len + 4).sum();
            assert_eq!(used, want, "split_frames used a different number of bytes");
            for ((a, _), b) in blocking.messages.iter().zip(&messages) {
                assert!(same(a, b), "blocking read {a:?}, split_frames {b:?}");
            }
        }
        Err(end) => assert_eq!(describe(&end), describe(&blocking.end)),
    }

    let mut again = Vec::new();
    for (msg, _) in &blocking.messages {
        codec::encode_into(msg, &mut again);
    }
    let reread = read_blocking::<T>(&again);
    assert!(matches!(reread.end, FrameError::Closed), "{}", reread.end);
    assert_eq!(reread.messages.len(), blocking.messages.len());
    for ((a, _), (b, _)) in blocking.messages.iter().zip(&reread.messages) {
        assert!(same(a, b), "{a:?} framed again read back as {b:?}");
    }
}

#[cfg(test)]
mod tests {
    use peer_node::core::wire::local::ClientMsg;

    use super::*;

    #[test]
    fn reads_frames_in_a_row_up_to_the_error() {
        let mut data = codec::encode(&ClientMsg::Shutdown);
        codec::encode_into(&ClientMsg::Release { ids: Vec::new() }, &mut data);
        data.extend_from_slice(&[9, 0, 0, 0, 1]);
        check::<ClientMsg>(&data);
        for read in [read_blocking::<ClientMsg>(&data), read_async(&data)] {
            assert_eq!(read.messages.len(), 2);
            assert_eq!(
                describe(&read.end),
                "connection closed",
                "a frame cut short"
            );
        }
        let huge = [0xff; 4];
        let read = read_async::<ClientMsg>(&huge);
        assert!(matches!(read.end, FrameError::TooLarge { .. }));
    }
}
