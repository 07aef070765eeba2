//! Outgoing frames to one connection, batched.
//!
//! Senders (the scheduler, under the state lock) append encoded frames to a
//! buffer and wake the connection's writer task, which writes everything that
//! accumulated in one syscall. Submitting 10,000 tasks thus costs a handful of
//! writes, not 10,000.

use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::Mutex;
use serde::Serialize;
use tokio::io::AsyncWriteExt;
use tokio::sync::Notify;

use crate::codec;

/// A connection's queue of encoded frames.
#[derive(Default)]
pub struct Outbox {
    buf: Mutex<Vec<u8>>,
    notify: Notify,
    closed: AtomicBool,
}

impl Outbox {
    /// Queue one message.
    pub fn send<T: Serialize>(&self, msg: &T) {
        if self.closed.load(Ordering::Relaxed) {
            return;
        }
        codec::encode_into(msg, &mut self.buf.lock());
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
            std::mem::swap(&mut out, &mut self.buf.lock());
            if !out.is_empty() {
                if let Err(e) = w.write_all(&out).await {
                    tracing::debug!("connection write failed: {e}");
                    return;
                }
                out.clear();
                if out.capacity() > 1 << 20 {
                    out = Vec::new();
                }
            }
            if self.closed.load(Ordering::Relaxed) && self.buf.lock().is_empty() {
                let _ = w.shutdown().await;
                return;
            }
        }
    }
}
