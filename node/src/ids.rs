//! Identifiers: tasks, objects, actors, workers, functions and nodes.
//!
//! Ids are made by whoever creates the thing (a driver or a worker), without
//! asking the node: a task id is the owner's 8-byte [`OwnerTag`] followed by
//! 8 random bytes, and the `i`-th return of a task has the object id
//! `task id ‖ i` — so `f.remote()` can hand back its refs before the node has
//! even seen the task. The owner is the node the task was submitted to; it
//! keeps the task's lineage and its results, and any peer holding a ref finds
//! the owner from the ref's first 8 bytes (like Ray's ids, whose unique part is
//! 8 bytes as well). Actor ids start with their creating node's tag too.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Bytes in an [`ObjectId`].
pub const OBJECT_ID_LEN: usize = 20;

fn write_hex(f: &mut fmt::Formatter<'_>, bytes: &[u8]) -> fmt::Result {
    for b in bytes {
        write!(f, "{b:02x}")?;
    }
    Ok(())
}

/// Hex text of some bytes.
pub fn hex(bytes: &[u8]) -> String {
    struct H<'a>(&'a [u8]);
    impl fmt::Display for H<'_> {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write_hex(f, self.0)
        }
    }
    H(bytes).to_string()
}

macro_rules! id16 {
    ($(#[$m:meta])* $name:ident) => {
        $(#[$m])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        pub struct $name(pub [u8; 16]);

        impl $name {
            /// A fresh random id.
            pub fn random() -> Self {
                Self(rand::random())
            }

            /// Parse from exactly 16 bytes.
            pub fn from_slice(b: &[u8]) -> Option<Self> {
                Some(Self(b.try_into().ok()?))
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write_hex(f, &self.0)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write_hex(f, &self.0)
            }
        }
    };
}

id16!(
    /// A task (also: the creation task of an actor, and each actor method call).
    TaskId
);
id16!(
    /// An actor.
    ActorId
);

/// The node that owns an id: 8 bytes taken from its PeerId (the last 8 bytes
/// of an ed25519 PeerId are the last 8 bytes of its public key), or from its
/// random node id in laptop mode.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize)]
pub struct OwnerTag(pub [u8; 8]);

impl OwnerTag {
    /// The tag of a peer.
    pub fn of_peer(peer: &peer_gossip::PeerId) -> Self {
        let bytes = peer.to_bytes();
        let mut t = [0u8; 8];
        t.copy_from_slice(&bytes[bytes.len().saturating_sub(8)..]);
        Self(t)
    }

    /// The tag of a node that has no PeerId (laptop mode).
    pub fn of_node(node: &NodeId) -> Self {
        let mut t = [0u8; 8];
        t.copy_from_slice(&node.0[..8]);
        Self(t)
    }

    /// The owner of an id that starts with a tag.
    fn of_bytes(b: &[u8]) -> Self {
        let mut t = [0u8; 8];
        t.copy_from_slice(&b[..8]);
        Self(t)
    }
}

impl fmt::Debug for OwnerTag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_hex(f, &self.0)
    }
}

impl fmt::Display for OwnerTag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_hex(f, &self.0)
    }
}

/// 8 owner bytes, then 8 random ones.
fn owned_random(owner: OwnerTag) -> [u8; 16] {
    let mut b: [u8; 16] = rand::random();
    b[..8].copy_from_slice(&owner.0);
    b
}

impl TaskId {
    /// A fresh task id owned by `owner`.
    pub fn owned_by(owner: OwnerTag) -> Self {
        Self(owned_random(owner))
    }

    /// The node that owns this task and its results.
    pub fn owner(&self) -> OwnerTag {
        OwnerTag::of_bytes(&self.0)
    }
}

impl ActorId {
    /// A fresh actor id created by `owner`.
    pub fn owned_by(owner: OwnerTag) -> Self {
        Self(owned_random(owner))
    }

    /// The node that created this actor (it knows where the actor runs).
    pub fn owner(&self) -> OwnerTag {
        OwnerTag::of_bytes(&self.0)
    }
}
id16!(
    /// A function or class: the first 16 bytes of a hash of its pickled form.
    FnId
);
id16!(
    /// A worker process of one node.
    WorkerId
);
id16!(
    /// A node (a peer).
    NodeId
);

/// An object: the task that makes it plus the return index (index 0 is a `put`).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ObjectId(pub [u8; OBJECT_ID_LEN]);

impl ObjectId {
    /// The id of return `index` (1-based) of `task`; index 0 names a `put`.
    pub fn for_return(task: TaskId, index: u32) -> Self {
        let mut b = [0u8; OBJECT_ID_LEN];
        b[..16].copy_from_slice(&task.0);
        b[16..].copy_from_slice(&index.to_le_bytes());
        Self(b)
    }

    /// A fresh id for a `put` (tests; clients use [`ObjectId::for_put_by`]).
    pub fn for_put() -> Self {
        Self::for_return(TaskId::random(), 0)
    }

    /// A fresh id for a `put` by a client of node `owner`.
    pub fn for_put_by(owner: OwnerTag) -> Self {
        Self::for_return(TaskId::owned_by(owner), 0)
    }

    /// The node that owns this object.
    pub fn owner(&self) -> OwnerTag {
        OwnerTag::of_bytes(&self.0)
    }

    /// The task that makes this object.
    pub fn task(&self) -> TaskId {
        let mut t = [0u8; 16];
        t.copy_from_slice(&self.0[..16]);
        TaskId(t)
    }

    /// Parse from exactly [`OBJECT_ID_LEN`] bytes.
    pub fn from_slice(b: &[u8]) -> Option<Self> {
        Some(Self(b.try_into().ok()?))
    }
}

impl fmt::Debug for ObjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_hex(f, &self.0)
    }
}

impl fmt::Display for ObjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_hex(f, &self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn return_ids_name_their_task() {
        let t = TaskId::random();
        let o = ObjectId::for_return(t, 3);
        assert_eq!(o.task(), t);
        assert_ne!(o, ObjectId::for_return(t, 2));
        assert_eq!(ObjectId::from_slice(&o.0), Some(o));
        assert_eq!(ObjectId::from_slice(&o.0[..5]), None);
        assert_eq!(o.to_string().len(), 40);
    }

    #[test]
    fn ids_name_their_owner() {
        let owner = OwnerTag([1, 2, 3, 4, 5, 6, 7, 8]);
        let t = TaskId::owned_by(owner);
        assert_eq!(t.owner(), owner);
        assert_eq!(ObjectId::for_return(t, 2).owner(), owner);
        assert_eq!(ObjectId::for_put_by(owner).owner(), owner);
        assert_eq!(ActorId::owned_by(owner).owner(), owner);
        assert_ne!(TaskId::owned_by(owner), t, "the rest is random");
        let peer = peer_gossip::PeerId::random();
        assert_eq!(OwnerTag::of_peer(&peer), OwnerTag::of_peer(&peer));
    }
}
