//! Chunks being sent to peers straight out of pulls still in progress here: the core lets
//! such a send read the object's place ([`PullSource::Partial`](peer_node_core::PullSource))
//! only until the pull reports its end, after which the space may be freed. So a pull that
//! has fetched everything (or failed) first stops new sends, waits for those under way to
//! finish (each is bounded by the pull's chunk timeout), then reports its end.
//!
//! Kept in the engine's I/O (`Io::partial_sends`), so a send is counted under the same lock
//! as the core's answer that allowed it.

use std::sync::Arc;

use peer_node_core::ids::ObjectId;
use rustc_hash::FxHashMap;
use tokio::sync::Notify;

/// Sends under way per object being pulled here.
#[derive(Debug, Default)]
pub struct PartialSends(FxHashMap<ObjectId, Sends>);

#[derive(Debug, Default)]
struct Sends {
    count: usize,
    /// Set once the pull is ending; notified when the last send does.
    ending: Option<Arc<Notify>>,
}

impl PartialSends {
    /// Counts a new send out of `id`'s place; `false` (no send) once its pull is ending.
    pub fn start(&mut self, id: ObjectId) -> bool {
        let sends = self.0.entry(id).or_default();
        if sends.ending.is_some() {
            return false;
        }
        sends.count += 1;
        true
    }

    /// A send [`start`](Self::start)ed out of `id`'s place is over.
    pub fn end(&mut self, id: ObjectId) {
        let std::collections::hash_map::Entry::Occupied(mut entry) = self.0.entry(id) else {
            return;
        };
        let sends = entry.get_mut();
        sends.count = sends.count.saturating_sub(1);
        if sends.count == 0 {
            match &sends.ending {
                Some(ended) => ended.notify_one(),
                None => {
                    entry.remove();
                }
            }
        }
    }

    /// `id`'s pull is ending: no send starts from now on, and what to wait on for those
    /// under way (`None` if there are none).
    pub fn finish(&mut self, id: ObjectId) -> Option<Arc<Notify>> {
        let sends = self.0.entry(id).or_default();
        let ended = Arc::clone(sends.ending.get_or_insert_with(Default::default));
        // `notify_one` keeps its permit if the last send ends before anyone waits.
        (sends.count > 0).then_some(ended)
    }

    /// `id`'s pull has reported its end: forget it (a later pull of it starts afresh).
    pub fn forget(&mut self, id: ObjectId) {
        self.0.remove(&id);
    }

    #[cfg(test)]
    fn tracked(&self) -> usize {
        self.0.len()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn id(n: u8) -> ObjectId {
        ObjectId([n; peer_node_core::ids::OBJECT_ID_LEN])
    }

    #[test]
    fn sends_that_end_before_the_pull_leave_nothing_behind() {
        let mut s = PartialSends::default();
        assert!(s.start(id(1)));
        assert!(s.start(id(1)));
        s.end(id(1));
        s.end(id(1));
        assert_eq!(s.tracked(), 0);
        assert!(s.finish(id(1)).is_none(), "nothing to wait for");
        assert!(!s.start(id(1)), "no send once the pull is ending");
        s.forget(id(1));
        assert!(s.start(id(1)), "a later pull of the object serves again");
    }

    #[tokio::test]
    async fn an_ending_pull_waits_for_the_sends_under_way_and_starts_none() {
        let mut s = PartialSends::default();
        assert!(s.start(id(1)));
        assert!(s.start(id(1)));
        assert!(s.start(id(2)));
        let ended = s.finish(id(1)).expect("two sends under way");
        assert!(!s.start(id(1)));
        assert!(s.start(id(2)), "other objects are not held up");
        s.end(id(1));
        let wait = tokio::time::timeout(Duration::from_millis(50), ended.notified()).await;
        assert!(wait.is_err(), "one send is still under way");
        s.end(id(1));
        // The last send ended before anyone waited again: the permit is kept.
        tokio::time::timeout(Duration::from_secs(5), ended.notified())
            .await
            .expect("the last send's end is seen");
    }
}
