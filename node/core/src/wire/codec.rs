//! Length-prefixed postcard frames: a 4-byte little-endian length, then the
//! message. The length is checked against [`MAX_FRAME`] before anything is
//! allocated, and the payload buffer grows only as bytes actually arrive, so a
//! peer can neither make us allocate more than that nor make a bare header
//! cost its claimed size.
//!
//! This module reads only from blocking readers and byte slices; the shell's
//! async readers (`peer_node::frames`) share its limits and [`decode`].

use std::io::{self, Read};

use serde::{Serialize, de::DeserializeOwned};

/// The largest frame accepted (256 MiB): values above
/// [`crate::wire::local::INLINE_MAX`] go through the store, so real frames are far
/// smaller.
pub const MAX_FRAME: usize = 256 * 1024 * 1024;

/// Most bytes reserved for a frame before its payload arrives (larger frames
/// grow their buffer as the bytes come, so a lying header costs nothing).
pub const PREALLOC_MAX: usize = 64 * 1024;

/// Why a frame could not be read.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("frame of {len} bytes exceeds the {max} byte limit")]
    TooLarge { len: usize, max: usize },
    #[error("malformed frame: {0}")]
    Malformed(#[from] postcard::Error),
    #[error("malformed frame: {0} bytes after the message")]
    TrailingBytes(usize),
    #[error("connection closed")]
    Closed,
    #[error("i/o error on the connection: {0}")]
    Io(#[from] io::Error),
}

/// Append one framed message to `out`.
pub fn encode_into<T: Serialize>(msg: &T, out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&[0; 4]);
    // Serializing our own message types into a Vec cannot fail.
    let mut out_vec = std::mem::take(out);
    out_vec = postcard::to_extend(msg, out_vec)
        .unwrap_or_else(|e| unreachable!("postcard encoding of an in-memory message failed: {e}"));
    let len = (out_vec.len() - start - 4) as u32;
    out_vec[start..start + 4].copy_from_slice(&len.to_le_bytes());
    *out = out_vec;
}

/// One framed message as a new buffer.
pub fn encode<T: Serialize>(msg: &T) -> Vec<u8> {
    let mut v = Vec::with_capacity(64);
    encode_into(msg, &mut v);
    v
}

/// Check a frame header; returns the payload length.
pub fn check_len(header: [u8; 4]) -> Result<usize, FrameError> {
    check_len_max(header, MAX_FRAME)
}

/// Check a frame header against a protocol's own limit `max` (at most [`MAX_FRAME`]).
pub fn check_len_max(header: [u8; 4], max: usize) -> Result<usize, FrameError> {
    let len = u32::from_le_bytes(header) as usize;
    let max = max.min(MAX_FRAME);
    if len > max {
        return Err(FrameError::TooLarge { len, max });
    }
    Ok(len)
}

/// Decode a frame payload: exactly one message, nothing after it.
pub fn decode<T: DeserializeOwned>(payload: &[u8]) -> Result<T, FrameError> {
    let (msg, rest) = postcard::take_from_bytes(payload)?;
    if !rest.is_empty() {
        return Err(FrameError::TrailingBytes(rest.len()));
    }
    Ok(msg)
}

/// The complete frames at the start of `buf`, decoded, and how many bytes
/// they took; an incomplete last frame is left for when more bytes arrive.
/// For readers that gather bytes themselves (the client's socket reader).
pub fn split_frames<T: DeserializeOwned>(buf: &[u8]) -> Result<(Vec<T>, usize), FrameError> {
    let mut msgs = Vec::new();
    let mut at = 0;
    while let Some(header) = buf[at..].first_chunk::<4>() {
        let len = check_len(*header)?;
        let Some(payload) = buf.get(at + 4..at + 4 + len) else {
            break;
        };
        msgs.push(decode(payload)?);
        at += 4 + len;
    }
    Ok((msgs, at))
}

/// Read one message from a blocking reader.
pub fn read_blocking<T: DeserializeOwned>(r: &mut impl Read) -> Result<T, FrameError> {
    read_blocking_max(r, MAX_FRAME)
}

/// Read one message of at most `max` bytes from a blocking reader.
pub fn read_blocking_max<T: DeserializeOwned>(
    r: &mut impl Read,
    max: usize,
) -> Result<T, FrameError> {
    let mut header = [0u8; 4];
    if let Err(e) = r.read_exact(&mut header) {
        return Err(if e.kind() == io::ErrorKind::UnexpectedEof {
            FrameError::Closed
        } else {
            FrameError::Io(e)
        });
    }
    let len = check_len_max(header, max)?;
    // Grown as bytes arrive: a header alone cannot make us allocate its claim.
    let mut payload = Vec::with_capacity(len.min(PREALLOC_MAX));
    r.take(len as u64).read_to_end(&mut payload)?;
    if payload.len() < len {
        return Err(FrameError::Closed);
    }
    decode(&payload)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::local::{ClientMsg, Role};

    #[test]
    fn roundtrip_and_limits() {
        let msg = ClientMsg::Hello {
            role: Role::Driver,
            pid: 7,
        };
        let mut buf = encode(&msg);
        encode_into(&ClientMsg::Shutdown, &mut buf);
        let mut r = &buf[..];
        assert_eq!(read_blocking::<ClientMsg>(&mut r).unwrap(), msg);
        assert_eq!(
            read_blocking::<ClientMsg>(&mut r).unwrap(),
            ClientMsg::Shutdown
        );
        assert!(matches!(
            read_blocking::<ClientMsg>(&mut r),
            Err(FrameError::Closed)
        ));

        let huge = [0xff, 0xff, 0xff, 0xff];
        assert!(matches!(
            read_blocking::<ClientMsg>(&mut &huge[..]),
            Err(FrameError::TooLarge { .. })
        ));
        // A header claiming 200 MiB with 10 bytes behind it: the connection
        // ended, and nothing near the claim was allocated.
        let mut lying = (200u32 << 20).to_le_bytes().to_vec();
        lying.extend_from_slice(&[0; 10]);
        assert!(matches!(
            read_blocking::<ClientMsg>(&mut &lying[..]),
            Err(FrameError::Closed)
        ));
        let mut trailing = encode(&ClientMsg::Shutdown);
        trailing[0] += 2;
        trailing.extend_from_slice(&[0, 0]);
        assert!(matches!(
            read_blocking::<ClientMsg>(&mut &trailing[..]),
            Err(FrameError::TrailingBytes(2))
        ));

        let garbage = [3, 0, 0, 0, 0xee, 0xee, 0xee];
        assert!(matches!(
            read_blocking::<ClientMsg>(&mut &garbage[..]),
            Err(FrameError::Malformed(_))
        ));
    }
}
