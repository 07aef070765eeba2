//! Errors of the object store: one enum for the arena, the allocator and the object table.

use std::path::PathBuf;

/// Everything that can go wrong in the object store. Messages are lowercase and say what to do next.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The object does not fit: not in the free space left even after compaction (and, for
    /// `create_or_spill`, after spilling every unpinned object), or the file system holding the
    /// arena cannot back the pages it would use.
    #[error(
        "object store full: cannot allocate {requested} bytes ({used} of {capacity} bytes in use; \
         {pinned} bytes in {pinned_objects} pinned objects that live readers hold); raise \
         object_store_memory or free references"
    )]
    Full {
        requested: u64,
        capacity: u64,
        used: u64,
        /// Bytes of objects with at least one pin.
        pinned: u64,
        /// Objects with at least one pin.
        pinned_objects: u64,
    },
    /// The object is bigger than the whole store and can never fit.
    #[error(
        "object of {requested} bytes is larger than the whole object store ({capacity} bytes); \
         raise object_store_memory"
    )]
    TooLarge { requested: u64, capacity: u64 },
    /// `create` of a key that is already in the store.
    #[error("object already exists in the store")]
    AlreadyExists,
    /// The key is not in the store (or was deleted).
    #[error("object not found in the store")]
    NotFound,
    /// `seal` or `abort` of an object that is already sealed.
    #[error("object is already sealed")]
    AlreadySealed,
    /// `pin` of an object that is still being written.
    #[error("object is not sealed yet")]
    NotSealed,
    /// `release` of an object whose pin count is already zero.
    #[error("object is not pinned; each release must match one pin")]
    NotPinned,
    /// A range that does not lie inside the arena.
    #[error("range at offset {offset} of {len} bytes is outside the arena of {arena} bytes")]
    OutOfBounds { offset: u64, len: u64, arena: u64 },
    /// The directory for the arena file cannot hold it.
    #[error(
        "not enough space in {} for the object store: wanted {wanted} bytes, {free} free; \
         lower object_store_memory or free space there",
        dir.display()
    )]
    NoSpace {
        dir: PathBuf,
        wanted: u64,
        free: u64,
    },
    /// A system call failed.
    #[error("{context}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

impl StoreError {
    /// Wraps an I/O error with what was being done.
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        StoreError::Io {
            context: context.into(),
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_message_is_actionable() {
        let e = StoreError::Full {
            requested: 10,
            capacity: 100,
            used: 96,
            pinned: 64,
            pinned_objects: 1,
        };
        let msg = e.to_string();
        assert!(msg.starts_with("object store full"), "{msg}");
        assert!(msg.contains("64 bytes in 1 pinned objects"), "{msg}");
        assert!(
            msg.contains("raise object_store_memory or free references"),
            "{msg}"
        );
    }

    #[test]
    fn io_error_keeps_its_source() {
        let e = StoreError::io(
            "opening x",
            std::io::Error::from(std::io::ErrorKind::NotFound),
        );
        assert_eq!(e.to_string(), "opening x");
        assert!(std::error::Error::source(&e).is_some());
    }
}
