//! The framed readers of `peer_node::codec` driven over a byte slice, several frames in a row:
//! the blocking reader and the async one (which the node's socket, peer streams and pull
//! streams use) must read the same messages and stop at the same error, each message must pass
//! [`roundtrip::check`], and all of them framed again must read back the same.
//!
//! The async reader zero-fills the whole length a header claims (up to `MAX_FRAME`) before it
//! reads a byte, which would slow the target from tens of thousands of runs a second to about
//! a hundred; so a stream with a frame that claims more than [`CLAIM_SLACK`] bytes past the end
//! of the input goes through the blocking reader only (which allocates the claim without
//! touching it).

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use peer_node::codec::{self, FrameError};

use crate::roundtrip::{self, Message, same};

/// How far past the end of the input a frame may claim to reach and still be read by both
/// readers.
pub const CLAIM_SLACK: usize = 64 * 1024;

/// Whether a frame of `data` claims more than [`CLAIM_SLACK`] bytes past its end (frames after
/// one over `MAX_FRAME`, which both readers refuse at once, are never read).
fn claims_far_past_end(data: &[u8]) -> bool {
    let mut rest = data;
    while let Some((header, after)) = rest.split_first_chunk::<4>() {
        let Ok(len) = codec::check_len(*header) else {
            return false;
        };
        if len > after.len() {
            return len - after.len() > CLAIM_SLACK;
        }
        rest = &after[len..];
    }
    false
}

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
        match ready(codec::read_async::<T>(&mut rest, &mut buf)) {
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
    if !claims_far_past_end(data) {
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
    use peer_node::protocol::ClientMsg;

    use super::*;

    #[test]
    fn reads_frames_in_a_row_up_to_the_error() {
        let mut data = codec::encode(&ClientMsg::Shutdown);
        codec::encode_into(&ClientMsg::Release { ids: Vec::new() }, &mut data);
        data.extend_from_slice(&[9, 0, 0, 0, 1]);
        check::<ClientMsg>(&data);
        for read in [read_blocking::<ClientMsg>(&data), read_async(&data)] {
            assert_eq!(read.messages.len(), 2);
            assert_eq!(describe(&read.end), "i/o error: UnexpectedEof");
        }
        let huge = [0xff; 4];
        let read = read_async::<ClientMsg>(&huge);
        assert!(matches!(read.end, FrameError::TooLarge { .. }));
    }

    #[test]
    fn finds_claims_far_past_the_end() {
        let mut data = codec::encode(&ClientMsg::Shutdown);
        assert!(!claims_far_past_end(&data));
        data.extend_from_slice(&((CLAIM_SLACK + 1) as u32).to_le_bytes());
        assert!(claims_far_past_end(&data));
        data.push(0);
        assert!(
            !claims_far_past_end(&data),
            "exactly the slack past the end"
        );
        let too_large = [&[0xff; 4][..], &(u32::MAX).to_le_bytes()].concat();
        assert!(!claims_far_past_end(&too_large));
    }
}
