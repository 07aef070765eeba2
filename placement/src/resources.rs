//! Resource amounts (a small map of name → amount with "CPU" built in) and the "does it fit" test.

use crate::error::PlacementError;

/// Name of the built-in CPU resource.
pub const CPU: &str = "CPU";

/// Slack for float comparisons, so that 0.1 + 0.2 CPUs still fit into 0.3.
const EPSILON: f64 = 1e-9;

/// A set of resource amounts: what a peer has (capacity or free now) or what a task needs.
///
/// CPU is a field of its own so the common case (a task that needs CPUs only) never allocates;
/// custom resources ("GPU", "memory", a label such as "region:eu") live in a short list kept
/// sorted by name. A missing resource counts as zero.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Resources {
    cpu: f64,
    custom: Vec<(Box<str>, f64)>,
}

impl Resources {
    /// No resources at all: needs nothing, or has nothing.
    pub fn none() -> Self {
        Self::default()
    }

    /// `n` CPUs and nothing else (cannot fail: any whole number of CPUs is valid).
    pub fn cpus(n: u32) -> Self {
        Self {
            cpu: f64::from(n),
            custom: Vec::new(),
        }
    }

    /// Sets `name` to `amount` (replacing what was there); `"CPU"` sets the CPU amount.
    pub fn with(mut self, name: &str, amount: f64) -> Result<Self, PlacementError> {
        self.set(name, amount)?;
        Ok(self)
    }

    /// Sets `name` to `amount` in place; an amount of zero removes a custom resource.
    pub fn set(&mut self, name: &str, amount: f64) -> Result<(), PlacementError> {
        if name.is_empty() {
            return Err(PlacementError::EmptyName);
        }
        if !amount.is_finite() || amount < 0.0 {
            return Err(PlacementError::InvalidAmount {
                name: name.to_owned(),
                amount,
            });
        }
        if name == CPU {
            self.cpu = amount;
            return Ok(());
        }
        match self.custom.binary_search_by(|(n, _)| (**n).cmp(name)) {
            Ok(i) if amount == 0.0 => {
                self.custom.remove(i);
            }
            Ok(i) => self.custom[i].1 = amount,
            Err(_) if amount == 0.0 => {}
            Err(i) => self.custom.insert(i, (name.into(), amount)),
        }
        Ok(())
    }

    /// The CPU amount.
    pub fn cpu(&self) -> f64 {
        self.cpu
    }

    /// The amount of `name` (zero when absent).
    pub fn get(&self, name: &str) -> f64 {
        if name == CPU {
            return self.cpu;
        }
        self.custom
            .binary_search_by(|(n, _)| (**n).cmp(name))
            .map_or(0.0, |i| self.custom[i].1)
    }

    /// Every non-zero amount, CPU first, then custom resources by name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, f64)> {
        std::iter::once((CPU, self.cpu))
            .filter(|(_, a)| *a > 0.0)
            .chain(self.custom.iter().map(|(n, a)| (&**n, *a)))
    }

    /// Whether `demand` fits into these (available) amounts, resource by resource.
    pub fn fits(&self, demand: &Resources) -> bool {
        demand.cpu <= self.cpu + EPSILON
            && demand
                .custom
                .iter()
                .all(|(name, need)| *need <= self.get(name) + EPSILON)
    }

    /// Takes `demand` out of these amounts if it fits; returns whether it did.
    pub fn take(&mut self, demand: &Resources) -> bool {
        if !self.fits(demand) {
            return false;
        }
        self.cpu = (self.cpu - demand.cpu).max(0.0);
        for (name, need) in &demand.custom {
            if let Ok(i) = self.custom.binary_search_by(|(n, _)| (**n).cmp(name)) {
                self.custom[i].1 = (self.custom[i].1 - need).max(0.0);
            }
        }
        true
    }

    /// Gives `amount` back (the inverse of [`Resources::take`]).
    pub fn give(&mut self, amount: &Resources) {
        self.cpu += amount.cpu;
        for (name, more) in &amount.custom {
            match self.custom.binary_search_by(|(n, _)| (**n).cmp(name)) {
                Ok(i) => self.custom[i].1 += more,
                Err(i) => self.custom.insert(i, (name.clone(), *more)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_is_built_in_and_custom_resources_are_sorted() {
        let r = Resources::cpus(4)
            .with("GPU", 1.0)
            .unwrap()
            .with("A", 2.0)
            .unwrap();
        assert_eq!(r.cpu(), 4.0);
        assert_eq!(r.get(CPU), 4.0);
        assert_eq!(r.get("GPU"), 1.0);
        assert_eq!(r.get("missing"), 0.0);
        let names: Vec<_> = r.iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["CPU", "A", "GPU"]);
    }

    #[test]
    fn bad_amounts_and_names_are_rejected() {
        assert!(matches!(
            Resources::none().with("GPU", -1.0),
            Err(PlacementError::InvalidAmount { .. })
        ));
        assert!(Resources::none().with(CPU, f64::NAN).is_err());
        assert_eq!(
            Resources::none().with("", 1.0),
            Err(PlacementError::EmptyName)
        );
    }

    #[test]
    fn fits_checks_every_resource() {
        let have = Resources::cpus(2).with("GPU", 1.0).unwrap();
        assert!(have.fits(&Resources::cpus(2)));
        assert!(!have.fits(&Resources::cpus(3)));
        assert!(have.fits(&Resources::cpus(1).with("GPU", 1.0).unwrap()));
        assert!(!have.fits(&Resources::none().with("TPU", 1.0).unwrap()));
        let fractions = Resources::none().with(CPU, 0.3).unwrap();
        assert!(fractions.fits(&Resources::none().with(CPU, 0.1 + 0.2).unwrap()));
    }

    #[test]
    fn take_and_give_are_inverse() {
        let mut free = Resources::cpus(2).with("GPU", 1.0).unwrap();
        let need = Resources::cpus(1).with("GPU", 1.0).unwrap();
        assert!(free.take(&need));
        assert_eq!(free.get("GPU"), 0.0);
        assert!(!free.take(&need), "the GPU is gone");
        free.give(&need);
        assert_eq!(free, Resources::cpus(2).with("GPU", 1.0).unwrap());
    }

    #[test]
    fn zero_removes_a_custom_resource() {
        let r = Resources::cpus(1)
            .with("GPU", 1.0)
            .unwrap()
            .with("GPU", 0.0)
            .unwrap();
        assert_eq!(r, Resources::cpus(1));
    }
}
