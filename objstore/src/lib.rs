//! Per-node shared-memory object store.
//!
//! The node owns a [`Store`]: one [`Arena`] (a file in `/dev/shm`, mapped shared) carved up by an
//! [`Allocator`] into 64-byte aligned objects, plus a table of which key lives where, whether it is
//! sealed, and how many readers pin it. Client processes [`Arena::open`] the same file and read
//! sealed objects in place at `(offset, len)`, without copying.
//!
//! - `arena` — the mapping and the only `unsafe` in the crate;
//! - `alloc` — pure free-list bookkeeping;
//! - `store` — create / seal / get / pin / release / delete, LRU clock, on-demand reservation;
//! - `compact` — sliding unpinned objects down when holes are too small (the fragmentation cure);
//! - `spill` — least recently used objects to files and back;
//! - `error` — [`StoreError`].

mod alloc;
mod arena;
mod compact;
mod error;
mod spill;
mod store;

pub use alloc::{ALIGN, Allocator};
pub use arena::{Arena, RESERVE_SLACK, WARM_LIMIT, default_capacity};
pub use error::StoreError;
pub use spill::Spilled;
pub use store::{Allocation, Store, StoreStats};
#[cfg(test)]
mod cost_tests;
