//! Drawing candidate peers from a view: distinct, able to run the task, holders of its large
//! inputs first, the rest uniformly at random.

use rand::Rng;

use crate::resources::Resources;
use crate::view::View;

/// Random draws tried before falling back to a scan (so that a peer with a rare resource is
/// still found when random draws keep missing it).
const EXTRA_DRAWS: usize = 32;

/// Fills `out` with up to `count` distinct positions of peers in `view` that could ever run
/// `demand`, never `exclude` (usually the local peer).
///
/// Peers among `holders` (those that already hold the task's large inputs) come first, chosen at
/// random when there are more than `count`; the rest are drawn uniformly. Fewer than `count`
/// positions come back only when fewer peers fit; none means the task fits nowhere in the view.
/// Costs O(count) expected draws; a full scan of the view happens only when random draws keep
/// failing, i.e. when few peers fit.
pub fn sample_candidates<V: View, R: Rng + ?Sized>(
    view: &V,
    demand: &Resources,
    holders: &[V::Peer],
    exclude: Option<V::Peer>,
    count: usize,
    rng: &mut R,
    out: &mut Vec<usize>,
) {
    out.clear();
    let n = view.len();
    if n == 0 || count == 0 {
        return;
    }
    let excluded = exclude.and_then(|p| view.position(p));
    let usable = |i: usize, out: &[usize]| {
        Some(i) != excluded && !out.contains(&i) && view.can_ever_fit(i, demand)
    };

    // Holders first: reservoir sampling keeps a uniform subset when there are too many.
    let mut seen = 0usize;
    for &holder in holders {
        let Some(i) = view.position(holder) else {
            continue;
        };
        if !usable(i, out) {
            continue;
        }
        seen += 1;
        if out.len() < count {
            out.push(i);
        } else {
            let j = rng.random_range(0..seen);
            if j < count {
                out[j] = i;
            }
        }
    }

    // Then uniform draws with rejection.
    let mut draws = 4 * count + EXTRA_DRAWS;
    while out.len() < count && draws > 0 {
        draws -= 1;
        let i = rng.random_range(0..n);
        if usable(i, out) {
            out.push(i);
        }
    }

    // Few peers fit: scan the whole view from a random start.
    if out.len() < count {
        let start = rng.random_range(0..n);
        for k in 0..n {
            let i = (start + k) % n;
            if usable(i, out) {
                out.push(i);
                if out.len() == count {
                    break;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::Load;
    use crate::view::PeerTable;
    use rand::SeedableRng;
    use rand::rngs::SmallRng;

    fn table(n: u32) -> PeerTable<u32> {
        let mut t = PeerTable::new();
        for p in 0..n {
            t.upsert(
                p,
                Resources::cpus(4),
                Load {
                    queue_len: 0,
                    free_cpu: 4.0,
                    total_cpu: 4.0,
                },
            );
        }
        t
    }

    #[test]
    fn candidates_are_distinct_and_never_the_excluded_peer() {
        let t = table(5);
        let mut rng = SmallRng::seed_from_u64(1);
        let mut out = Vec::new();
        for _ in 0..200 {
            sample_candidates(&t, &Resources::cpus(1), &[], Some(2), 4, &mut rng, &mut out);
            assert_eq!(out.len(), 4);
            let mut sorted = out.clone();
            sorted.sort_unstable();
            sorted.dedup();
            assert_eq!(sorted.len(), 4);
            assert!(!out.iter().any(|&i| t.peer(i) == 2));
        }
    }

    #[test]
    fn only_peers_that_fit_are_drawn_even_when_rare() {
        let mut t = table(1000);
        t.upsert(
            777,
            Resources::cpus(4).with("GPU", 1.0).unwrap(),
            t.get(777).unwrap().load,
        );
        let gpu = Resources::cpus(1).with("GPU", 1.0).unwrap();
        let mut rng = SmallRng::seed_from_u64(2);
        let mut out = Vec::new();
        sample_candidates(&t, &gpu, &[], None, 2, &mut rng, &mut out);
        assert_eq!(out.iter().map(|&i| t.peer(i)).collect::<Vec<_>>(), [777]);
        sample_candidates(&t, &Resources::cpus(5), &[], None, 2, &mut rng, &mut out);
        assert!(
            out.is_empty(),
            "a task that fits nowhere gets no candidates"
        );
    }

    #[test]
    fn holders_come_first() {
        let t = table(100);
        let mut rng = SmallRng::seed_from_u64(3);
        let mut out = Vec::new();
        sample_candidates(
            &t,
            &Resources::cpus(1),
            &[42, 43, 44],
            None,
            2,
            &mut rng,
            &mut out,
        );
        assert_eq!(out.len(), 2);
        assert!(out.iter().all(|&i| [42, 43, 44].contains(&t.peer(i))));
        sample_candidates(&t, &Resources::cpus(1), &[42], None, 2, &mut rng, &mut out);
        assert_eq!(t.peer(out[0]), 42);
        assert_ne!(t.peer(out[1]), 42);
    }

    #[test]
    fn same_seed_same_candidates() {
        let t = table(50);
        let draw = |seed| {
            let mut rng = SmallRng::seed_from_u64(seed);
            let mut out = Vec::new();
            sample_candidates(&t, &Resources::cpus(1), &[], None, 6, &mut rng, &mut out);
            out
        };
        assert_eq!(draw(9), draw(9));
        assert_ne!(draw(9), draw(10));
    }
}
