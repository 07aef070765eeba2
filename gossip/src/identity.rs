//! The node's persistent ed25519 identity: a keypair in `<state dir>/identity.key` (mode 0600),
//! whose public half is the node's [`PeerId`].

use std::path::{Path, PathBuf};

use libp2p::PeerId;
use libp2p::identity::Keypair;

use crate::{GossipError, secret};

/// File name of the identity inside a state directory.
pub const IDENTITY_FILE: &str = "identity.key";

/// A node's keypair. `Debug` shows only the [`PeerId`].
#[derive(Clone)]
pub struct Identity {
    keypair: Keypair,
}

impl Identity {
    /// A fresh identity that lives only in memory (tests, throwaway probes).
    pub fn generate() -> Self {
        Self {
            keypair: Keypair::generate_ed25519(),
        }
    }

    /// Loads `<state_dir>/identity.key`, creating it (and the directory) on first use.
    pub fn load_or_create(state_dir: &Path) -> Result<Self, GossipError> {
        let path = state_dir.join(IDENTITY_FILE);
        if let Some(bytes) = secret::read(&path)? {
            return Self::decode(&path, &bytes);
        }
        let fresh = Self::generate();
        let encoded =
            fresh
                .keypair
                .to_protobuf_encoding()
                .map_err(|e| GossipError::InvalidIdentity {
                    path: path.clone(),
                    reason: format!("cannot encode a fresh keypair: {e}"),
                })?;
        if secret::create(&path, &encoded)? {
            return Ok(fresh);
        }
        // Another process created it first: use theirs.
        let bytes = secret::read(&path)?.unwrap_or_default();
        Self::decode(&path, &bytes)
    }

    /// The identity's peer id.
    pub fn peer_id(&self) -> PeerId {
        self.keypair.public().to_peer_id()
    }

    pub(crate) fn keypair(&self) -> &Keypair {
        &self.keypair
    }

    fn decode(path: &Path, bytes: &[u8]) -> Result<Self, GossipError> {
        let invalid = |reason: String| GossipError::InvalidIdentity {
            path: PathBuf::from(path),
            reason,
        };
        let keypair = Keypair::from_protobuf_encoding(bytes).map_err(|e| invalid(e.to_string()))?;
        if keypair.clone().try_into_ed25519().is_err() {
            return Err(invalid("not an ed25519 key".into()));
        }
        Ok(Self { keypair })
    }
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Identity({})", self.peer_id())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn persists_across_loads() {
        let dir = tempfile::tempdir().unwrap();
        let first = Identity::load_or_create(dir.path()).unwrap();
        let again = Identity::load_or_create(dir.path()).unwrap();
        assert_eq!(first.peer_id(), again.peer_id());
        assert_ne!(first.peer_id(), Identity::generate().peer_id());
    }

    #[test]
    fn corrupt_file_is_an_error_not_a_new_identity() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(IDENTITY_FILE), b"not protobuf").unwrap();
        let err = Identity::load_or_create(dir.path()).unwrap_err();
        assert!(matches!(err, GossipError::InvalidIdentity { .. }), "{err}");
        assert!(err.to_string().contains("move it away"));
    }
}
