//! The core's timers: it asks for a wake-up at an instant
//! ([`Command::Timer`](peer_node_core::Command::Timer)); this task sleeps
//! until the earliest one and delivers [`Event::Timer`].

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::Arc;
use std::time::Instant;

use peer_node_core::Event;
use tokio::sync::mpsc;

use crate::engine::Shared;

/// Deliver timer events until the node stops.
pub async fn run_timers(mut rx: mpsc::UnboundedReceiver<Instant>, shared: Arc<Shared>) {
    let mut heap: BinaryHeap<Reverse<Instant>> = BinaryHeap::new();
    loop {
        let next = heap.peek().map(|Reverse(t)| *t);
        tokio::select! {
            item = rx.recv() => match item {
                Some(t) => heap.push(Reverse(t)),
                None => return,
            },
            _ = async {
                match next {
                    Some(t) => tokio::time::sleep_until(t.into()).await,
                    None => std::future::pending::<()>().await,
                }
            } => {
                let now = Instant::now();
                while heap.peek().is_some_and(|Reverse(t)| *t <= now) {
                    heap.pop();
                }
                shared.handle(Event::Timer);
            }
        }
    }
}
