//! Errors of the node library.

use std::io;

use peer_node_core::wire::codec::FrameError;

/// A node call's result.
pub type NodeResult<T> = Result<T, NodeError>;

/// What can go wrong starting or talking to a node.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("object store: {0}")]
    Store(#[from] peer_objstore::StoreError),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
    #[error("connection to the node: {0}")]
    Frame(#[from] FrameError),
    #[error("the node sent an unexpected message: {0}")]
    Protocol(String),
    #[error("{0}")]
    Rejected(String),
    #[error("the node has shut down")]
    ShutDown,
}

impl NodeError {
    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> Self {
        NodeError::Io {
            context: context.into(),
            source,
        }
    }
}
