//! Identifiers: tasks, objects, actors, workers, functions, nodes and peers.
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

/// A local connection (a worker, an attached driver or the CLI), numbered by the core.
pub type ConnId = u64;
/// A pending get or wait.
pub type WaitId = u64;
/// A named-actor lookup of the embedded driver.
pub type LookupId = u64;

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
            /// A fresh random id (clients; the core draws ids from its own seeded rng).
            pub fn random() -> Self {
                Self(rand::random())
            }

            /// A fresh id drawn from `rng`.
            pub fn from_rng(rng: &mut impl rand::Rng) -> Self {
                Self(rng.random())
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
    /// The tag of a peer: the last 8 bytes of its id.
    pub fn of_peer(peer: &PeerId) -> Self {
        let bytes = peer.as_bytes();
        let mut t = [0u8; 8];
        let tail = &bytes[bytes.len().saturating_sub(8)..];
        t[8 - tail.len()..].copy_from_slice(tail);
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
id16!(
    /// A runtime environment (`runtime_env`): a hash of what it sets up (its
    /// packages' content hashes, variables and requirements), so workers
    /// made for one serve every task that asks for the same environment.
    EnvKey
);

/// The return index of an actor's handle object ([`ObjectId::for_actor`]);
/// `u32::MAX` names a task's stored arguments (`wire::local::args_object_id`).
const ACTOR_HANDLE_INDEX: u32 = u32::MAX - 1;

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

    /// The object every handle of actor `actor` holds a ref to: once no ref
    /// to it is left anywhere, the actor ends (unless it is detached).
    pub fn for_actor(actor: ActorId) -> Self {
        Self::for_return(TaskId(actor.0), ACTOR_HANDLE_INDEX)
    }

    /// The actor whose handles hold this object, if it is one.
    pub fn actor(&self) -> Option<ActorId> {
        (self.0[16..] == ACTOR_HANDLE_INDEX.to_le_bytes()).then(|| ActorId(self.task().0))
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

/// The largest multihash digest a peer id may carry (libp2p's `Multihash<64>`).
const PEER_DIGEST_MAX: usize = 64;
/// The largest public key inlined into an identity-hash peer id (libp2p's rule).
const PEER_INLINE_KEY_MAX: usize = 42;
const MULTIHASH_IDENTITY: u8 = 0x00;
const MULTIHASH_SHA2_256: u8 = 0x12;

/// Why bytes are not a peer id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a peer id: {0}")]
pub struct PeerIdError(&'static str);

/// Another node of the cluster, by its libp2p peer id: a multihash (identity
/// or sha2-256) of its public key, held as bytes so that the core needs no
/// libp2p. It parses and prints exactly like `libp2p::PeerId` (base58), and
/// the shell converts between the two at its edge.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerId {
    len: u8,
    bytes: [u8; 2 + PEER_DIGEST_MAX],
}

impl PeerId {
    /// Parse the bytes of a peer id, accepting what `libp2p::PeerId::from_bytes` accepts.
    pub fn from_bytes(b: &[u8]) -> Result<PeerId, PeerIdError> {
        let (&code, rest) = b.split_first().ok_or(PeerIdError("no bytes"))?;
        let (&size, digest) = rest.split_first().ok_or(PeerIdError("no digest length"))?;
        // Both accepted codes and every accepted size are one-byte varints: a
        // byte with its high bit set is another code or a non-minimal varint.
        let size = usize::from(size);
        let limit = match code {
            MULTIHASH_IDENTITY => PEER_INLINE_KEY_MAX,
            MULTIHASH_SHA2_256 => PEER_DIGEST_MAX,
            _ => return Err(PeerIdError("unsupported multihash code")),
        };
        if size > limit {
            return Err(PeerIdError("digest too long"));
        }
        if digest.len() != size {
            return Err(PeerIdError("digest length does not match"));
        }
        let mut bytes = [0u8; 2 + PEER_DIGEST_MAX];
        bytes[..b.len()].copy_from_slice(b);
        Ok(PeerId {
            len: b.len() as u8,
            bytes,
        })
    }

    /// A peer id that inlines `digest` (an identity multihash), as libp2p makes
    /// for ed25519 keys; the simulator and tests use it to make peers.
    pub fn from_identity_digest(digest: &[u8]) -> Result<PeerId, PeerIdError> {
        let size = u8::try_from(digest.len()).map_err(|_| PeerIdError("digest too long"))?;
        let mut b = Vec::with_capacity(2 + digest.len());
        b.extend_from_slice(&[MULTIHASH_IDENTITY, size]);
        b.extend_from_slice(digest);
        PeerId::from_bytes(&b)
    }

    /// A peer id drawn from `rng` (36 inlined bytes, the size of an ed25519 key).
    pub fn from_rng(rng: &mut impl rand::Rng) -> PeerId {
        let digest: [u8; 36] = rng.random();
        match PeerId::from_identity_digest(&digest) {
            Ok(p) => p,
            Err(e) => unreachable!("36 bytes always make a peer id: {e}"),
        }
    }

    /// The bytes of the id (what `libp2p::PeerId::to_bytes` gives).
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

impl fmt::Display for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&bs58::encode(self.as_bytes()).into_string())
    }
}

impl fmt::Debug for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PeerId({self})")
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
        let peer = PeerId::from_identity_digest(&[9; 36]).unwrap();
        assert_eq!(OwnerTag::of_peer(&peer), OwnerTag([9; 8]));
    }

    #[test]
    fn peer_ids_parse_like_libp2p() {
        // An ed25519 peer id: identity multihash of 36 bytes of protobuf public key.
        let mut bytes = vec![0x00, 36];
        bytes.extend_from_slice(&[7; 36]);
        let p = PeerId::from_bytes(&bytes).unwrap();
        assert_eq!(p.as_bytes(), &bytes[..]);
        assert_eq!(p.to_string(), bs58::encode(&bytes).into_string());
        let mut sha = vec![0x12, 32];
        sha.extend_from_slice(&[1; 32]);
        assert!(PeerId::from_bytes(&sha).is_ok());
        // Unknown codes, oversized inline keys, wrong lengths, non-minimal varints.
        assert!(PeerId::from_bytes(&[0x13, 1, 0]).is_err());
        let mut long = vec![0x00, 43];
        long.extend_from_slice(&[0; 43]);
        assert!(PeerId::from_bytes(&long).is_err());
        assert!(PeerId::from_bytes(&[0x00, 2, 1]).is_err());
        assert!(PeerId::from_bytes(&[0x00, 1, 1, 1]).is_err());
        assert!(PeerId::from_bytes(&[0x80, 0x00, 0]).is_err());
        assert!(PeerId::from_bytes(&[]).is_err());
    }
}
