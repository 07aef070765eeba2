//! The event queue: a binary heap ordered by time, ties broken by insertion order, so a run is
//! deterministic. Events are small `Copy` values; pushing or popping allocates nothing once the
//! heap has grown to its working size.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use crate::dist::Nanos;

/// Something that happens at a point of simulated time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// The next job arrives at a random peer.
    JobArrival,
    /// A peer publishes its load over gossip.
    Publish { peer: u32 },
    /// A task (task `task` of job `job`) reaches `peer` and joins its queue.
    TaskArrives { peer: u32, job: u32, task: u32 },
    /// A task of `job` finishes on `peer`.
    TaskDone { peer: u32, job: u32 },
    /// A probe of probe round `round` reaches `peer`, which records its bid in slot `slot`.
    Probe { peer: u32, round: u32, slot: u32 },
    /// All bids of `round` are back at the submitting peer.
    BidsIn { round: u32 },
    /// A reservation for `job` reaches `peer`.
    Reservation { peer: u32, job: u32 },
    /// `peer`'s request for a task of `job` reaches the job's submitting peer.
    Claim { peer: u32, job: u32 },
    /// The answer to a claim reaches `peer`: task `task` of `job`, or none (`task == NO_TASK`).
    Claimed { peer: u32, job: u32, task: u32 },
}

/// `Claimed::task` when every task of the job was claimed already.
pub const NO_TASK: u32 = u32::MAX;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    time: Nanos,
    seq: u64,
    event: Event,
}

impl Ord for Entry {
    fn cmp(&self, other: &Self) -> Ordering {
        // Reversed: BinaryHeap is a max-heap, the earliest (then first-pushed) event must win.
        other.time.cmp(&self.time).then(other.seq.cmp(&self.seq))
    }
}

impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Pending events, earliest first.
#[derive(Debug, Default)]
pub struct EventQueue {
    heap: BinaryHeap<Entry>,
    seq: u64,
}

impl EventQueue {
    /// An empty queue.
    pub fn new() -> Self {
        Self::default()
    }

    /// Schedules `event` at `time`.
    pub fn push(&mut self, time: Nanos, event: Event) {
        self.seq += 1;
        self.heap.push(Entry {
            time,
            seq: self.seq,
            event,
        });
    }

    /// The earliest event (first pushed among equal times).
    pub fn pop(&mut self) -> Option<(Nanos, Event)> {
        self.heap.pop().map(|e| (e.time, e.event))
    }

    /// Events pending.
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    /// Whether nothing is pending.
    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn earliest_first_then_insertion_order() {
        let mut q = EventQueue::new();
        q.push(5, Event::Publish { peer: 1 });
        q.push(3, Event::Publish { peer: 2 });
        q.push(5, Event::Publish { peer: 3 });
        q.push(3, Event::Publish { peer: 4 });
        let order: Vec<_> = std::iter::from_fn(|| q.pop()).collect();
        let peers: Vec<_> = order
            .iter()
            .map(|(_, e)| match e {
                Event::Publish { peer } => *peer,
                _ => unreachable!("only publishes were pushed"),
            })
            .collect();
        assert_eq!(peers, [2, 4, 1, 3]);
        assert!(q.is_empty());
    }

    #[test]
    fn events_stay_small() {
        assert!(std::mem::size_of::<Event>() <= 16);
    }
}
