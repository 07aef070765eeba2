//! The placement policy of a peer, as pure code: views and bids in, decisions out.
//!
//! No I/O, no clock, no async: the node feeds it its gossip view and the bids it receives, and the
//! simulator feeds it simulated ones, so both run this very code. Randomness comes from the
//! caller's [`rand::Rng`], so a decision is reproducible from a seed.
//!
//! - [`resources`]: resource amounts (`"CPU"` built in) and whether a task fits;
//! - [`load`]: what a peer publishes ([`Load`]) and answers a probe with ([`Bid`]);
//! - [`view`]: the local view of other peers ([`View`], [`PeerTable`]);
//! - [`sample`]: drawing candidates (distinct, fitting, holders of large inputs first);
//! - [`placer`]: the strategies (random, choices on the view, bids, batch bids, late binding).

#![forbid(unsafe_code)]

pub mod error;
pub mod load;
pub mod placer;
pub mod resources;
pub mod sample;
pub mod view;

pub use error::PlacementError;
pub use load::{Bid, Load};
pub use placer::{Config, Placer, Request, Reservations, Strategy};
pub use resources::{CPU, Resources};
pub use view::{PeerEntry, PeerTable, View};

/// Directory of this crate's sources when it was compiled, so that a dependent (the simulator)
/// can prove which copy of the policy it was built from.
pub const SOURCE_DIR: &str = env!("CARGO_MANIFEST_DIR");
