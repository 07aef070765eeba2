//! Exceptions raised by the native layer, and the mapping from node errors.

use peer_node::NodeError;
use peer_node_core::wire::local::{ErrorInfo as WireError, ErrorKind};
use pyo3::exceptions::{PyConnectionError, PyException, PyValueError};
use pyo3::prelude::*;

pyo3::create_exception!(
    _native,
    PeerNativeError,
    PyException,
    "Base of the errors raised by the native layer."
);
pyo3::create_exception!(
    _native,
    NativeStoreFullError,
    PeerNativeError,
    "The object store has no room for the object."
);
pyo3::create_exception!(
    _native,
    NativeNotInitializedError,
    PeerNativeError,
    "No runtime: call peer.init() first."
);

/// An error value: what failed, in words, plus an optional pickled payload.
#[pyclass(module = "peer._native", frozen, get_all)]
pub struct ErrorInfo {
    pub kind: String,
    pub message: String,
    pub blob: Option<Py<pyo3::types::PyBytes>>,
}

impl ErrorInfo {
    pub fn from_wire(py: Python<'_>, e: &WireError) -> Self {
        Self {
            kind: e.kind.as_str().to_string(),
            message: e.message.clone(),
            blob: e
                .blob
                .as_ref()
                .map(|b| pyo3::types::PyBytes::new(py, b).unbind()),
        }
    }
}

#[pymethods]
impl ErrorInfo {
    fn __repr__(&self) -> String {
        format!(
            "ErrorInfo(kind={:?}, message={:?})",
            self.kind, self.message
        )
    }
}

/// A node error as a Python exception.
pub fn node_err(e: NodeError) -> PyErr {
    match e {
        NodeError::Rejected(msg) => PyValueError::new_err(msg),
        NodeError::Store(s) => NativeStoreFullError::new_err(s.to_string()),
        NodeError::Io { .. } | NodeError::Frame(_) | NodeError::ShutDown => {
            PyConnectionError::new_err(e.to_string())
        }
        NodeError::Protocol(_) => PeerNativeError::new_err(e.to_string()),
    }
}

/// A store error sent back by the node (a full store).
pub fn wire_err(e: WireError) -> PyErr {
    match e.kind {
        ErrorKind::StoreFull => NativeStoreFullError::new_err(e.message),
        _ => PeerNativeError::new_err(e.message),
    }
}
