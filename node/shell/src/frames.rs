//! Reading length-prefixed frames from async streams (the Unix socket, peer
//! streams), with the core codec's limits: the length is checked before
//! anything is allocated and the buffer grows only as bytes arrive.

use std::io;

use peer_node_core::wire::codec::{FrameError, MAX_FRAME, PREALLOC_MAX, check_len_max, decode};
use serde::de::DeserializeOwned;

/// Read one message from a tokio reader.
pub async fn read_async<T: DeserializeOwned>(
    r: &mut (impl tokio::io::AsyncRead + Unpin),
    buf: &mut Vec<u8>,
) -> Result<T, FrameError> {
    read_async_max(r, buf, MAX_FRAME).await
}

/// Read one message of at most `max` bytes from a tokio reader (protocols
/// whose messages are small refuse large frames before reading them).
pub async fn read_async_max<T: DeserializeOwned>(
    r: &mut (impl tokio::io::AsyncRead + Unpin),
    buf: &mut Vec<u8>,
    max: usize,
) -> Result<T, FrameError> {
    use tokio::io::AsyncReadExt;
    let mut header = [0u8; 4];
    if let Err(e) = r.read_exact(&mut header).await {
        return Err(if e.kind() == io::ErrorKind::UnexpectedEof {
            FrameError::Closed
        } else {
            FrameError::Io(e)
        });
    }
    let len = check_len_max(header, max)?;
    buf.clear();
    if buf.capacity() > PREALLOC_MAX {
        // Do not keep a large frame's buffer for the connection's life.
        buf.shrink_to(PREALLOC_MAX);
    }
    // Grown as bytes arrive: a header alone cannot make us allocate its claim.
    buf.reserve(len.min(PREALLOC_MAX));
    (&mut *r).take(len as u64).read_to_end(buf).await?;
    if buf.len() < len {
        return Err(FrameError::Closed);
    }
    decode(buf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use peer_node_core::wire::codec::encode;
    use peer_node_core::wire::local::{ClientMsg, Role};

    #[test]
    fn async_reads_check_their_limits() {
        let msg = ClientMsg::Hello {
            role: Role::Driver,
            pid: 7,
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        // A header claiming 200 MiB with 10 bytes behind it: the connection
        // ended, and nothing near the claim was allocated.
        let mut lying = (200u32 << 20).to_le_bytes().to_vec();
        lying.extend_from_slice(&[0; 10]);
        let mut buf = Vec::new();
        let got = rt.block_on(read_async::<ClientMsg>(&mut &lying[..], &mut buf));
        assert!(matches!(got, Err(FrameError::Closed)));
        assert!(buf.capacity() <= PREALLOC_MAX, "{}", buf.capacity());
        // A protocol's own, smaller limit refuses the header before any payload is read.
        let small = encode(&msg);
        let got = rt.block_on(read_async_max::<ClientMsg>(&mut &small[..], &mut buf, 2));
        assert!(
            matches!(got, Err(FrameError::TooLarge { max: 2, .. })),
            "{got:?}"
        );
        let got = rt.block_on(read_async_max::<ClientMsg>(&mut &small[..], &mut buf, 64));
        assert_eq!(got.unwrap(), msg);
    }
}
