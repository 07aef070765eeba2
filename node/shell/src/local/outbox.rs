//! Outgoing frames to one connection, batched, written without a thread hop
//! when possible.
//!
//! A sender (the engine, under its lock, carrying out the core's commands)
//! first tries to write its frame straight to the non-blocking socket when
//! nothing is queued before it: the common case of one task handed to one
//! idle worker costs a single `write`, with no wake-up of another thread.
//! Whatever does not go out at once is queued, and the connection's writer
//! task writes everything that accumulated in one syscall — so submitting
//! 10,000 tasks costs a handful of writes, not 10,000.

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::Mutex;
use serde::Serialize;
use tokio::io::AsyncWriteExt;
use tokio::sync::Notify;

use peer_node_core::wire::codec;

struct Queue {
    buf: Vec<u8>,
    /// The writer task holds bytes taken from `buf` that it has not finished writing.
    writer_busy: bool,
    /// A non-blocking handle on the same socket for direct writes.
    direct: Option<UnixStream>,
}

/// A connection's queue of encoded frames.
pub struct Outbox {
    queue: Mutex<Queue>,
    notify: Notify,
    closed: AtomicBool,
}

impl Outbox {
    /// An outbox; `direct` (a non-blocking duplicate of the socket) enables direct writes.
    pub fn new(direct: Option<UnixStream>) -> Self {
        Self {
            queue: Mutex::new(Queue {
                buf: Vec::new(),
                writer_busy: false,
                direct,
            }),
            notify: Notify::new(),
            closed: AtomicBool::new(false),
        }
    }

    /// Queue (or write at once) one message.
    pub fn send<T: Serialize>(&self, msg: &T) {
        self.send_inner(msg, true);
    }

    /// Queue one message for the writer task, never writing it here: for
    /// messages the receiver will not read at once anyway (tasks queued behind
    /// a running one), so a burst goes out in a few large writes.
    pub fn send_queued<T: Serialize>(&self, msg: &T) {
        self.send_inner(msg, false);
    }

    fn send_inner<T: Serialize>(&self, msg: &T, direct_ok: bool) {
        if self.closed.load(Ordering::Relaxed) {
            return;
        }
        let mut q = self.queue.lock();
        let start = q.buf.len();
        codec::encode_into(msg, &mut q.buf);
        if direct_ok && start == 0 && !q.writer_busy {
            let Queue { buf, direct, .. } = &mut *q;
            if let Some(stream) = direct {
                match stream.write(buf) {
                    Ok(n) if n == buf.len() => {
                        buf.clear();
                        return;
                    }
                    Ok(n) => {
                        buf.drain(..n);
                    }
                    Err(_) => {} // WouldBlock or a dead peer: the writer task sorts it out
                }
            }
        }
        drop(q);
        self.notify.notify_one();
    }

    /// Stop the writer after it flushed what is queued.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Relaxed);
        self.notify.notify_one();
    }

    /// Write queued frames to `w` until closed or the peer goes away.
    pub async fn run_writer(&self, mut w: impl tokio::io::AsyncWrite + Unpin) {
        let mut out = Vec::new();
        loop {
            self.notify.notified().await;
            loop {
                {
                    let mut q = self.queue.lock();
                    if q.buf.is_empty() {
                        q.writer_busy = false;
                        break;
                    }
                    std::mem::swap(&mut out, &mut q.buf);
                    q.writer_busy = true;
                }
                if let Err(e) = w.write_all(&out).await {
                    tracing::debug!("connection write failed: {e}");
                    self.queue.lock().writer_busy = false;
                    return;
                }
                out.clear();
                if out.capacity() > 1 << 20 {
                    out = Vec::new();
                }
            }
            if self.closed.load(Ordering::Relaxed) {
                let _ = w.shutdown().await;
                return;
            }
        }
    }
}
