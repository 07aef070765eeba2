//! Errors of the placement policy: bad resource amounts and bad policy settings.

/// What can be wrong in what a caller hands the policy. Messages are lowercase and say what to fix.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PlacementError {
    /// A resource amount that is negative, NaN or infinite.
    #[error("resource {name:?} has amount {amount}; amounts must be finite and not negative")]
    InvalidAmount { name: String, amount: f64 },
    /// A resource with an empty name.
    #[error("resource names must not be empty")]
    EmptyName,
    /// A policy asked to sample no candidates at all.
    #[error("the number of choices must be at least 1 (got {0})")]
    NoChoices(usize),
}
