//! `ObjectRefBase`: an object id that counts as a live handle while it exists.

use std::sync::{Arc, Weak};

use peer_node_core::ids::{OBJECT_ID_LEN, ObjectId};
use pyo3::basic::CompareOp;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::runtime::{self, Runtime};

/// Native part of `peer.ObjectRef`.
#[pyclass(module = "peer._native", subclass, frozen)]
pub struct ObjectRefBase {
    pub id: ObjectId,
    runtime: Weak<Runtime>,
}

impl ObjectRefBase {
    pub fn parse_id(b: &[u8]) -> PyResult<ObjectId> {
        ObjectId::from_slice(b).ok_or_else(|| {
            PyValueError::new_err(format!(
                "an object id has {OBJECT_ID_LEN} bytes, got {}",
                b.len()
            ))
        })
    }
}

#[pymethods]
impl ObjectRefBase {
    #[new]
    #[pyo3(signature = (id, *_args, **_kwargs))]
    fn new(
        id: &[u8],
        _args: &Bound<'_, pyo3::types::PyTuple>,
        _kwargs: Option<&Bound<'_, pyo3::types::PyDict>>,
    ) -> PyResult<Self> {
        let id = Self::parse_id(id)?;
        let rt = runtime::current_opt();
        if let Some(rt) = &rt {
            rt.node.add_refs(&[id]);
        }
        Ok(Self {
            id,
            runtime: rt.as_ref().map_or_else(Weak::new, Arc::downgrade),
        })
    }

    /// The id's bytes.
    fn binary<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, &self.id.0)
    }

    /// The id as hex text.
    fn hex(&self) -> String {
        self.id.to_string()
    }

    fn __hash__(&self) -> u64 {
        let mut h = [0u8; 8];
        h.copy_from_slice(&self.id.0[..8]);
        u64::from_le_bytes(h) ^ u64::from(self.id.0[16])
    }

    fn __richcmp__(&self, other: &Bound<'_, PyAny>, op: CompareOp) -> Py<PyAny> {
        let py = other.py();
        let Ok(other) = other.cast::<ObjectRefBase>() else {
            return py.NotImplemented();
        };
        let eq = self.id == other.get().id;
        match op {
            CompareOp::Eq => eq
                .into_pyobject(py)
                .map(|b| b.to_owned().into_any().unbind()),
            CompareOp::Ne => (!eq)
                .into_pyobject(py)
                .map(|b| b.to_owned().into_any().unbind()),
            _ => return py.NotImplemented(),
        }
        .unwrap_or_else(|_| py.NotImplemented())
    }
}

impl Drop for ObjectRefBase {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.upgrade() {
            rt.node.dec_refs(&[self.id]);
        }
    }
}
