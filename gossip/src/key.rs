//! The cluster pre-shared key: 32 random bytes every member holds. Each connection proves both
//! sides hold it right after TLS (see `transport`), so a peer without it cannot send a single
//! libp2p message.
//!
//! On disk and on the command line the key is 64 hex characters (a file may also use the
//! `/key/swarm/psk/1.0.0/` format of go-libp2p's `swarm.key`).

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use libp2p::pnet::PreSharedKey;
use rand::TryRngCore;

use crate::{GossipError, secret};

/// Length of a key in bytes.
const KEY_LEN: usize = 32;

/// A cluster's pre-shared key. `Debug` and [`fingerprint`](Self::fingerprint) never show the key.
#[derive(Clone, PartialEq, Eq)]
pub struct ClusterKey([u8; KEY_LEN]);

impl ClusterKey {
    /// A fresh key from the operating system's random source.
    pub fn generate() -> Result<Self, GossipError> {
        let mut bytes = [0u8; KEY_LEN];
        rand::rngs::OsRng
            .try_fill_bytes(&mut bytes)
            .map_err(|e| GossipError::InvalidKey {
                origin: None,
                reason: format!("no randomness from the operating system: {e}"),
            })?;
        Ok(Self(bytes))
    }

    /// Parses 64 hex characters (surrounding whitespace ignored).
    pub fn from_hex(text: &str) -> Result<Self, GossipError> {
        parse_hex(text.trim())
            .map(Self)
            .ok_or_else(|| invalid(None, "expected 64 hex characters (32 bytes)"))
    }

    /// Reads a key file: 64 hex characters, or go-libp2p's `swarm.key` format.
    pub fn load(path: &Path) -> Result<Self, GossipError> {
        let bytes = secret::read(path)?.ok_or_else(|| GossipError::File {
            path: path.to_owned(),
            source: std::io::ErrorKind::NotFound.into(),
        })?;
        Self::decode_file(path, &bytes)
    }

    /// Loads the key at `path`, creating a fresh one (mode 0600) if the file does not exist.
    /// Returns the key and whether it was just created.
    pub fn load_or_create(path: &Path) -> Result<(Self, bool), GossipError> {
        if let Some(bytes) = secret::read(path)? {
            return Ok((Self::decode_file(path, &bytes)?, false));
        }
        let key = Self::generate()?;
        let created = secret::create(path, format!("{}\n", key.to_hex()).as_bytes())?;
        if created {
            Ok((key, true))
        } else {
            Ok((Self::load(path)?, false))
        }
    }

    /// Interprets a command-line argument: 64 hex characters are the key itself, anything else
    /// is the path of a key file.
    pub fn from_arg(arg: &str) -> Result<Self, GossipError> {
        match parse_hex(arg.trim()) {
            Some(bytes) => Ok(Self(bytes)),
            None => Self::load(Path::new(arg)),
        }
    }

    /// The key as 64 lowercase hex characters, for a join command.
    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// A short, non-secret fingerprint (derived by hashing) to compare keys in logs.
    pub fn fingerprint(&self) -> String {
        let full = self.psk().fingerprint().to_string();
        full.chars().take(16).collect()
    }

    /// The key's bytes (for the key proof of each connection).
    pub(crate) fn bytes(&self) -> [u8; KEY_LEN] {
        self.0
    }

    pub(crate) fn psk(&self) -> PreSharedKey {
        PreSharedKey::new(self.0)
    }

    fn decode_file(path: &Path, bytes: &[u8]) -> Result<Self, GossipError> {
        let text = std::str::from_utf8(bytes).map_err(|_| invalid(Some(path), "not text"))?;
        if text.trim_start().starts_with("/key/swarm/psk/") {
            let psk = PreSharedKey::from_str(text.trim())
                .map_err(|e| invalid(Some(path), &format!("bad swarm.key format: {e}")))?;
            // `to_key_file` ends with the key's hex on the last line.
            let hex = psk.to_key_file();
            let last = hex.lines().last().unwrap_or_default();
            return parse_hex(last)
                .map(Self)
                .ok_or_else(|| invalid(Some(path), "bad swarm.key"));
        }
        parse_hex(text.trim())
            .map(Self)
            .ok_or_else(|| invalid(Some(path), "expected 64 hex characters (32 bytes)"))
    }
}

impl fmt::Debug for ClusterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ClusterKey(fingerprint {})", self.fingerprint())
    }
}

fn invalid(origin: Option<&Path>, reason: &str) -> GossipError {
    GossipError::InvalidKey {
        origin: origin.map(PathBuf::from),
        reason: reason.to_owned(),
    }
}

fn parse_hex(text: &str) -> Option<[u8; KEY_LEN]> {
    let digits = text.as_bytes();
    if digits.len() != 2 * KEY_LEN {
        return None;
    }
    let mut out = [0u8; KEY_LEN];
    for (byte, pair) in out.iter_mut().zip(digits.chunks_exact(2)) {
        let hi = (pair[0] as char).to_digit(16)?;
        let lo = (pair[1] as char).to_digit(16)?;
        *byte = (hi * 16 + lo) as u8;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip_and_rejects() {
        let key = ClusterKey::generate().unwrap();
        assert_eq!(ClusterKey::from_hex(&key.to_hex()).unwrap(), key);
        assert_eq!(
            ClusterKey::from_hex(&format!("  {}\n", key.to_hex())).unwrap(),
            key
        );
        for bad in [
            "",
            "abc",
            &"zz".repeat(32),
            &"0".repeat(63),
            &"é".repeat(32),
        ] {
            assert!(matches!(
                ClusterKey::from_hex(bad),
                Err(GossipError::InvalidKey { .. })
            ));
        }
    }

    #[test]
    fn load_or_create_persists_one_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cluster.key");
        let (first, created) = ClusterKey::load_or_create(&path).unwrap();
        assert!(created);
        let (again, created) = ClusterKey::load_or_create(&path).unwrap();
        assert!(!created);
        assert_eq!(first, again);
        assert_eq!(ClusterKey::load(&path).unwrap(), first);
        assert_eq!(ClusterKey::from_arg(path.to_str().unwrap()).unwrap(), first);
        assert_eq!(ClusterKey::from_arg(&first.to_hex()).unwrap(), first);
    }

    #[test]
    fn swarm_key_format_and_garbage_files() {
        let dir = tempfile::tempdir().unwrap();
        let key = ClusterKey::generate().unwrap();
        let swarm = dir.path().join("swarm.key");
        std::fs::write(&swarm, key.psk().to_key_file()).unwrap();
        assert_eq!(ClusterKey::load(&swarm).unwrap(), key);

        let garbage = dir.path().join("garbage.key");
        std::fs::write(&garbage, [0xff, 0xfe, 0x00]).unwrap();
        assert!(matches!(
            ClusterKey::load(&garbage),
            Err(GossipError::InvalidKey { .. })
        ));
        assert!(matches!(
            ClusterKey::load(&dir.path().join("missing")),
            Err(GossipError::File { .. })
        ));
    }

    #[test]
    fn fingerprint_and_debug_hide_the_key() {
        let key = ClusterKey::generate().unwrap();
        let other = ClusterKey::generate().unwrap();
        assert_eq!(key.fingerprint().len(), 16);
        assert_ne!(key.fingerprint(), other.fingerprint());
        assert!(!format!("{key:?}").contains(&key.to_hex()));
        assert!(!key.to_hex().contains(&key.fingerprint()));
    }
}
