//! This node's GPU devices and which running work holds which of them.
//!
//! `GPU` is counted in [`Resources`] like any resource; this table adds the
//! device ids behind the count. A task or actor that asks for GPUs gets a
//! [`GpuGrant`]: whole devices for a request of 1 or more (which must then
//! be whole, as in Ray), or a share of one device for a fraction. Fractions
//! pack: a share goes to the fullest device it still fits on, so two
//! `num_gpus=0.5` tasks share one device before another is touched.
//!
//! What the node tells other peers as its free `GPU` is [`GpuDevices::placement_free`]:
//! the wholly free devices plus the largest free share of a partly used
//! one. A request of `g` fits a device layout exactly when `g` is at most
//! that number (for a fraction, some device has that much left; for a
//! whole `g`, that many devices are wholly free), so placement and bids,
//! which compare counts, account for device ids without knowing them.

use crate::core::Core;
use crate::ids::WorkerId;
use crate::local::workers::WorkerKind;
use crate::resources::{Resources, UNITS_PER_ONE};

/// The resource name devices are counted under.
pub const GPU: &str = "GPU";

/// Shares of specific devices held by one task or actor: `(device index, units)`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct GpuGrant(Vec<(usize, i64)>);

impl GpuGrant {
    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Units granted in all.
    pub(crate) fn units(&self) -> i64 {
        self.0.iter().map(|(_, u)| u).sum()
    }
}

/// The devices of this node with what is free on each, in units.
#[derive(Debug, Clone, Default)]
pub(crate) struct GpuDevices {
    ids: Vec<String>,
    free: Vec<i64>,
}

impl GpuDevices {
    /// Devices named by `ids` (as `CUDA_VISIBLE_DEVICES` names them), all free.
    pub(crate) fn new(ids: Vec<String>) -> Self {
        let free = vec![UNITS_PER_ONE; ids.len()];
        Self { ids, free }
    }

    /// Each device's id and free share.
    pub(crate) fn devices(&self) -> impl Iterator<Item = (&str, f64)> {
        self.ids
            .iter()
            .zip(&self.free)
            .map(|(id, f)| (id.as_str(), *f as f64 / UNITS_PER_ONE as f64))
    }

    /// How many devices there are.
    pub(crate) fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether a request of `units` could be granted now.
    pub(crate) fn fits(&self, units: i64) -> bool {
        self.choose(units).is_some()
    }

    /// Whether a request of `units` could ever be granted on these devices.
    pub(crate) fn could_ever_fit(&self, units: i64) -> bool {
        units <= 0
            || (units <= UNITS_PER_ONE && !self.ids.is_empty())
            || (units % UNITS_PER_ONE == 0 && units / UNITS_PER_ONE <= self.ids.len() as i64)
    }

    /// Grant `units` (nothing for none); None when it does not fit now.
    pub(crate) fn assign(&mut self, units: i64) -> Option<GpuGrant> {
        let picked = self.choose(units)?;
        for (dev, share) in &picked {
            self.free[*dev] -= share;
        }
        Some(GpuGrant(picked))
    }

    /// Give a grant back.
    pub(crate) fn give_back(&mut self, grant: GpuGrant) {
        for (dev, share) in grant.0 {
            if let Some(f) = self.free.get_mut(dev) {
                *f = (*f + share).min(UNITS_PER_ONE);
            }
        }
    }

    /// The device ids a grant names, in device order.
    pub(crate) fn ids_of(&self, grant: &GpuGrant) -> Vec<String> {
        grant
            .0
            .iter()
            .filter_map(|(dev, _)| self.ids.get(*dev).cloned())
            .collect()
    }

    /// Free `GPU` as placement should see it: wholly free devices plus the
    /// largest free share of a partly used one.
    pub(crate) fn placement_free(&self) -> f64 {
        let whole = self.free.iter().filter(|f| **f == UNITS_PER_ONE).count() as i64;
        let partial = self
            .free
            .iter()
            .copied()
            .filter(|f| *f < UNITS_PER_ONE)
            .max()
            .unwrap_or(0);
        (whole * UNITS_PER_ONE + partial) as f64 / UNITS_PER_ONE as f64
    }

    /// Units free over all devices (what `available` should count).
    pub(crate) fn free_units(&self) -> i64 {
        self.free.iter().sum()
    }

    /// Where `units` would go: whole free devices (lowest index first) for a
    /// whole request, or the fullest device that still has room for a share.
    fn choose(&self, units: i64) -> Option<Vec<(usize, i64)>> {
        if units <= 0 {
            return Some(Vec::new());
        }
        if units < UNITS_PER_ONE {
            let dev = (0..self.free.len())
                .filter(|d| self.free[*d] >= units)
                .min_by_key(|d| (self.free[*d], *d))?;
            return Some(vec![(dev, units)]);
        }
        if units % UNITS_PER_ONE != 0 {
            return None;
        }
        let want = (units / UNITS_PER_ONE) as usize;
        let whole: Vec<(usize, i64)> = (0..self.free.len())
            .filter(|d| self.free[*d] == UNITS_PER_ONE)
            .take(want)
            .map(|d| (d, UNITS_PER_ONE))
            .collect();
        (whole.len() == want).then_some(whole)
    }
}

impl Core {
    /// Whether work that needs `demand` could start here now: enough of
    /// every resource, and GPU devices to match.
    pub(crate) fn fits_here(&self, demand: &Resources) -> bool {
        self.available.fits(demand) && self.gpus.fits(demand.units(GPU))
    }

    /// Whether work that needs `demand` could ever start here.
    pub(crate) fn could_ever_fit_here(&self, demand: &Resources) -> bool {
        self.total.fits(demand) && self.gpus.could_ever_fit(demand.units(GPU))
    }

    /// Take `demand` for work starting now; the grant names its devices.
    pub(crate) fn take_resources(&mut self, demand: &Resources) -> GpuGrant {
        self.available.take(demand);
        self.gpus.assign(demand.units(GPU)).unwrap_or_default()
    }

    /// The GPU device ids worker `wid` holds: its task's, or its actor's.
    pub(crate) fn gpu_ids_of(&self, wid: WorkerId) -> Vec<String> {
        let Some(w) = self.workers.get(&wid) else {
            return Vec::new();
        };
        let grant = match w.kind {
            WorkerKind::Task => &w.gpus,
            WorkerKind::Actor(aid) => match self.actors.get(&aid) {
                Some(a) => &a.gpus,
                None => return Vec::new(),
            },
        };
        self.gpus.ids_of(grant)
    }

    /// Give back what work held.
    pub(crate) fn give_resources(&mut self, held: &Resources, grant: GpuGrant) {
        self.available.give(held);
        self.gpus.give_back(grant);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn devices(n: usize) -> GpuDevices {
        GpuDevices::new((0..n).map(|i| i.to_string()).collect())
    }

    const HALF: i64 = UNITS_PER_ONE / 2;

    #[test]
    fn halves_pack_onto_one_device_before_the_next() {
        let mut d = devices(2);
        let a = d.assign(HALF).unwrap();
        let b = d.assign(HALF).unwrap();
        assert_eq!(d.ids_of(&a), ["0"]);
        assert_eq!(d.ids_of(&b), ["0"]);
        let c = d.assign(HALF).unwrap();
        assert_eq!(d.ids_of(&c), ["1"]);
        assert_eq!(d.placement_free(), 0.5);
        assert!(!d.fits(UNITS_PER_ONE), "no device is wholly free");
        d.give_back(a);
        d.give_back(b);
        assert_eq!(d.placement_free(), 1.5);
        assert_eq!(d.ids_of(&d.clone().assign(UNITS_PER_ONE).unwrap()), ["0"]);
    }

    #[test]
    fn whole_requests_take_distinct_whole_devices() {
        let mut d = GpuDevices::new(vec!["2".into(), "3".into()]);
        let a = d.assign(UNITS_PER_ONE).unwrap();
        let b = d.assign(UNITS_PER_ONE).unwrap();
        assert_eq!(
            (d.ids_of(&a), d.ids_of(&b)),
            (vec!["2".into()], vec!["3".into()])
        );
        assert!(d.assign(UNITS_PER_ONE).is_none());
        d.give_back(b);
        let mut d2 = devices(4);
        let two = d2.assign(2 * UNITS_PER_ONE).unwrap();
        assert_eq!(d2.ids_of(&two), ["0", "1"]);
        assert_eq!(d2.free_units(), 2 * UNITS_PER_ONE);
    }

    #[test]
    fn a_fraction_over_one_never_fits() {
        let d = devices(4);
        assert!(!d.fits(UNITS_PER_ONE + HALF));
        assert!(!d.could_ever_fit(UNITS_PER_ONE + HALF));
        assert!(d.could_ever_fit(4 * UNITS_PER_ONE));
        assert!(!d.could_ever_fit(5 * UNITS_PER_ONE));
        assert!(d.fits(0));
    }

    #[test]
    fn placement_free_is_exact_for_fractions_and_whole_requests() {
        // Device 0 has 0.3 left, device 1 0.6: a 0.5 share fits (on 1),
        // 0.7 does not, and no whole device is free.
        let mut d = devices(2);
        d.assign(7_000).unwrap();
        d.assign(4_000).unwrap();
        assert_eq!(d.placement_free(), 0.6);
        assert!(d.fits(5_000) && !d.fits(7_000) && !d.fits(UNITS_PER_ONE));
    }
}
