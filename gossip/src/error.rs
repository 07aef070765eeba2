//! Errors of the gossip crate: [`GossipError`] for the API and [`ConnectError`] for a failed dial.

use std::io;
use std::path::PathBuf;

use libp2p::Multiaddr;

use crate::messages::MessageError;

/// Everything that can go wrong when setting up or driving the gossip layer.
#[derive(Debug, thiserror::Error)]
pub enum GossipError {
    /// Reading or writing a key or identity file failed.
    #[error("cannot access {path}: {source}")]
    File {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A key file or key string is not a valid cluster key.
    #[error("invalid cluster key{}: {reason}", describe_origin(.origin))]
    InvalidKey {
        /// Where the key came from (a file path), if from a file.
        origin: Option<PathBuf>,
        /// What is wrong with it.
        reason: String,
    },
    /// The identity file exists but does not hold an ed25519 keypair.
    #[error("invalid identity file {path}: {reason}; move it away to create a new identity")]
    InvalidIdentity {
        /// The identity file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A [`Config`](crate::Config) value is out of range.
    #[error("invalid gossip configuration: {0}")]
    InvalidConfig(String),
    /// [`new`](crate::new) was called outside a tokio runtime.
    #[error("peer-gossip must be started from within a tokio runtime")]
    NoRuntime,
    /// The swarm could not be built.
    #[error("cannot set up the network stack: {0}")]
    Setup(String),
    /// Listening on a configured address failed.
    #[error("cannot listen on {address}: {reason}")]
    Listen {
        /// The address.
        address: Multiaddr,
        /// Why (port in use, address not local, unsupported protocol...).
        reason: String,
    },
    /// The peer does not speak the protocol a stream was opened with.
    #[error("{peer} does not speak {protocol}")]
    Unsupported {
        /// The peer.
        peer: libp2p::PeerId,
        /// The protocol.
        protocol: libp2p::StreamProtocol,
    },
    /// A stream to a peer could not be opened.
    #[error("cannot open a stream to {peer}: {reason}")]
    Stream {
        /// The peer.
        peer: libp2p::PeerId,
        /// Why (unreachable, connection reset).
        reason: String,
    },
    /// Incoming streams of this protocol already have a receiver.
    #[error("incoming streams of {0} are already being accepted")]
    StreamTaken(libp2p::StreamProtocol),
    /// A dial failed; see [`ConnectError`].
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// A message built locally is over the wire limits.
    #[error("message rejected: {0}")]
    Message(#[from] MessageError),
    /// The event loop has stopped (shut down, or its task was dropped).
    #[error("the gossip event loop has stopped")]
    Stopped,
}

fn describe_origin(origin: &Option<PathBuf>) -> String {
    match origin {
        Some(path) => format!(" in {}", path.display()),
        None => String::new(),
    }
}

/// Why an outgoing connection failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConnectError {
    /// The remote holds a different cluster key (found by the key proof right after TLS).
    #[error("{address} uses a different cluster key: check --key on both peers")]
    KeyMismatch {
        /// The address that was dialed.
        address: Multiaddr,
    },
    /// Any other failure: unreachable, refused, wrong peer id, timeout.
    #[error("cannot connect to {address}: {reason}")]
    Failed {
        /// The address that was dialed (or "unknown" when libp2p did not say).
        address: Multiaddr,
        /// libp2p's description of the failure.
        reason: String,
    },
}

impl ConnectError {
    /// The address whose dial failed.
    pub fn address(&self) -> &Multiaddr {
        match self {
            ConnectError::KeyMismatch { address } | ConnectError::Failed { address, .. } => address,
        }
    }
}
