//! Resource accounting: named amounts (`CPU`, `GPU`, custom), in fixed point
//! so that fractions such as 0.5 CPU add and subtract exactly.

use std::collections::BTreeMap;

/// Fixed-point units in one whole resource (Ray's granularity).
pub const UNITS_PER_ONE: i64 = 10_000;
const SCALE: f64 = UNITS_PER_ONE as f64;

/// A set of named resource amounts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resources(BTreeMap<String, i64>);

impl Resources {
    /// From (name, amount) pairs; zero amounts are dropped, repeated names add up.
    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, f64)>) -> Self {
        let mut m = BTreeMap::new();
        for (k, v) in pairs {
            let units = (v * SCALE).round() as i64;
            if units != 0 {
                *m.entry(k.to_string()).or_insert(0) += units;
            }
        }
        Self(m)
    }

    /// Amount of one resource.
    pub fn get(&self, name: &str) -> f64 {
        self.0.get(name).copied().unwrap_or(0) as f64 / SCALE
    }

    /// Amount of one resource in fixed-point units.
    pub fn units(&self, name: &str) -> i64 {
        self.0.get(name).copied().unwrap_or(0)
    }

    /// Whether `self` has at least `need` of everything.
    pub fn fits(&self, need: &Resources) -> bool {
        need.0
            .iter()
            .all(|(k, v)| self.0.get(k).copied().unwrap_or(0) >= *v)
    }

    /// Take `need` (may go negative for resources given back by blocked workers).
    pub fn take(&mut self, need: &Resources) {
        for (k, v) in &need.0 {
            *self.0.entry(k.clone()).or_insert(0) -= v;
        }
    }

    /// Give `need` back.
    pub fn give(&mut self, need: &Resources) {
        for (k, v) in &need.0 {
            *self.0.entry(k.clone()).or_insert(0) += v;
        }
    }

    /// Only the CPU part.
    pub fn cpu_only(&self) -> Resources {
        Resources(
            self.0
                .iter()
                .filter(|(k, _)| k.as_str() == "CPU")
                .map(|(k, v)| (k.clone(), *v))
                .collect(),
        )
    }

    /// As (name, amount) pairs.
    pub fn to_map(&self) -> BTreeMap<String, f64> {
        self.0
            .iter()
            .map(|(k, v)| (k.clone(), *v as f64 / SCALE))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fractional_accounting_is_exact() {
        let mut avail = Resources::from_pairs([("CPU", 2.0), ("GPU", 1.0)]);
        let half = Resources::from_pairs([("CPU", 0.5)]);
        for _ in 0..4 {
            assert!(avail.fits(&half));
            avail.take(&half);
        }
        assert!(!avail.fits(&half));
        assert_eq!(avail.get("CPU"), 0.0);
        avail.give(&half);
        assert_eq!(avail.get("CPU"), 0.5);
        assert!(!avail.fits(&Resources::from_pairs([("TPU", 1.0)])));
        assert!(avail.fits(&Resources::default()));
    }
}
