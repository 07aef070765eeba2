//! The node's Unix socket: accepting local clients and running one reader
//! and one writer task per connection.
//!
//! - reader: frame → the core ([`Event::Client`]) under the lock; a
//!   malformed or oversized frame, or one the core refuses, closes that
//!   connection only (logged), never the node;
//! - writer: drains the connection's [`Outbox`].

use std::sync::Arc;
use std::time::Duration;

use tokio::net::{UnixListener, UnixStream};

use peer_node_core::Event;
use peer_node_core::wire::codec::FrameError;
use peer_node_core::wire::local::ClientMsg;

use crate::engine::Shared;
use crate::frames;
use crate::local::outbox::Outbox;

/// Duplicating a tokio socket into a std one that shares its file description.
trait DupStream {
    fn as_raw_fd_dup(&self) -> std::io::Result<std::os::unix::net::UnixStream>;
}

impl DupStream for UnixStream {
    fn as_raw_fd_dup(&self) -> std::io::Result<std::os::unix::net::UnixStream> {
        use std::os::fd::AsFd;
        let fd = self.as_fd().try_clone_to_owned()?;
        Ok(std::os::unix::net::UnixStream::from(fd))
    }
}

/// How long a new connection may take to say Hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

/// Accept connections until the node stops.
pub async fn accept_loop(listener: UnixListener, shared: Arc<Shared>) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let shared = Arc::clone(&shared);
                tokio::spawn(serve_connection(stream, shared));
            }
            Err(e) => {
                tracing::warn!("accepting a connection failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn serve_connection(stream: UnixStream, shared: Arc<Shared>) {
    // A duplicate of the (already non-blocking) socket for direct writes.
    let direct = stream
        .as_raw_fd_dup()
        .map_err(|e| tracing::debug!("no direct writes on this connection: {e}"))
        .ok();
    let (mut rd, wr) = stream.into_split();
    let outbox = Arc::new(Outbox::new(direct));
    let conn = {
        let mut e = shared.engine.lock();
        let id = e.core.open_conn();
        e.io.conns.insert(id, Arc::clone(&outbox));
        id
    };
    let writer = {
        let outbox = Arc::clone(&outbox);
        tokio::spawn(async move { outbox.run_writer(wr).await })
    };
    let mut buf = Vec::new();
    let mut first = true;
    loop {
        let msg = if first {
            first = false;
            match tokio::time::timeout(HELLO_TIMEOUT, frames::read_async(&mut rd, &mut buf)).await {
                Ok(r) => r,
                Err(_) => {
                    tracing::warn!("closing a connection that sent no Hello in {HELLO_TIMEOUT:?}");
                    break;
                }
            }
        } else {
            frames::read_async::<ClientMsg>(&mut rd, &mut buf).await
        };
        match msg {
            Ok(msg) => {
                let mut e = shared.engine.lock();
                e.handle(Event::Client { conn, msg });
                if e.io.dropped.remove(&conn) {
                    break;
                }
            }
            Err(FrameError::Closed) => break,
            Err(err) => {
                tracing::warn!("closing connection {conn}: {err}");
                shared.handle(Event::BadFrame);
                break;
            }
        }
        if buf.capacity() > 4 << 20 {
            buf = Vec::new();
        }
    }
    {
        let mut e = shared.engine.lock();
        e.handle(Event::Closed { conn });
        e.io.conns.remove(&conn);
        e.io.dropped.remove(&conn);
    }
    outbox.close();
    let _ = writer.await;
}
