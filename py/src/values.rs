//! Values across the boundary: serialized Python values into inline blobs or
//! the store, and node values back into `(kind, payload)` tuples.

use std::sync::Arc;

use peer_node_core::ids::ObjectId;
use peer_node_core::wire::blob::{self, Layout};
use peer_node_core::wire::local::{INLINE_MAX, Reserved, Value};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyMemoryView, PySlice, PyTuple};
use serde_bytes::ByteBuf;

use crate::buffer::{PinnedBuffer, RawBuf};
use crate::errors::{ErrorInfo, node_err, wire_err};
use crate::runtime::Runtime;

pub const VALUE_INLINE: u8 = 0;
pub const VALUE_STORED: u8 = 1;
pub const VALUE_ERROR: u8 = 2;

/// Borrow the out-of-band buffers of a pickle.
pub fn raw_buffers(buffers: &Bound<'_, PyAny>) -> PyResult<Vec<RawBuf>> {
    buffers.try_iter()?.map(|b| RawBuf::get(&b?)).collect()
}

/// Encode a serialized value for object `id`: inline when small, else written
/// into the store (unsealed; the caller seals it or hands it to the node).
pub fn encode_value(
    py: Python<'_>,
    rt: &Runtime,
    id: ObjectId,
    pickle: &[u8],
    bufs: &[RawBuf],
) -> PyResult<Value> {
    let slices: Vec<&[u8]> = bufs.iter().map(|b| b.as_slice()).collect();
    let lens: Vec<usize> = slices.iter().map(|s| s.len()).collect();
    let layout = Layout::new(pickle.len(), &lens);
    if layout.total <= INLINE_MAX {
        return Ok(Value::Inline(ByteBuf::from(blob::encode(pickle, &slices))));
    }
    let offset = match py
        .detach(|| rt.node.create_object(id, layout.total as u64))
        .map_err(node_err)?
        .map_err(wire_err)?
    {
        Reserved::Write { offset } => offset,
        // Another run of the task that makes this object already stored it.
        Reserved::Present { offset, len } => return Ok(Value::Stored { offset, len }),
    };
    let header = layout.header();
    let mut parts: Vec<(u64, &[u8])> = Vec::with_capacity(slices.len() + 2);
    parts.push((offset, &header));
    parts.push((offset + layout.pickle.start as u64, pickle));
    for (range, s) in layout.buffers.iter().zip(&slices) {
        parts.push((offset + range.start as u64, s));
    }
    let arena = Arc::clone(rt.arena());
    py.detach(|| arena.write_parts(&parts))
        .map_err(|e| PyValueError::new_err(format!("writing object {id} into the store: {e}")))?;
    Ok(Value::Stored {
        offset,
        len: layout.total as u64,
    })
}

/// A node value as the `(kind, payload)` tuple the Python side decodes.
/// Stored values arrive pinned; the PinnedBuffer takes over the pin.
pub fn value_to_py(
    py: Python<'_>,
    rt: &Arc<Runtime>,
    id: ObjectId,
    v: Value,
) -> PyResult<Py<PyAny>> {
    let t = match v {
        Value::Inline(b) => (VALUE_INLINE, PyBytes::new(py, &b).into_any()),
        Value::Stored { offset, len } => {
            let pb = PinnedBuffer::new(Arc::clone(rt), id, offset, len)?;
            (VALUE_STORED, Bound::new(py, pb)?.into_any())
        }
        Value::Error(e) => (
            VALUE_ERROR,
            Bound::new(py, ErrorInfo::from_wire(py, &e))?.into_any(),
        ),
    };
    Ok(PyTuple::new(py, [t.0.into_pyobject(py)?.into_any(), t.1])?
        .into_any()
        .unbind())
}

/// Split an encoded blob (bytes or PinnedBuffer) into zero-copy views of its
/// pickle and buffers.
pub fn decode<'py>(
    py: Python<'py>,
    value: &Bound<'py, PyAny>,
) -> PyResult<(Bound<'py, PyAny>, Bound<'py, PyList>)> {
    let layout = if let Ok(b) = value.cast::<PyBytes>() {
        blob::parse(b.as_bytes())
    } else if let Ok(p) = value.cast::<PinnedBuffer>() {
        blob::parse(p.get().as_slice())
    } else {
        return Err(PyValueError::new_err(
            "decode() takes bytes or a PinnedBuffer",
        ));
    }
    .map_err(|e| PyValueError::new_err(format!("corrupt object: {e}")))?;
    let mv = PyMemoryView::from(value)?;
    let slice = |r: &std::ops::Range<usize>| -> PyResult<Bound<'py, PyAny>> {
        mv.get_item(PySlice::new(py, r.start as isize, r.end as isize, 1))
    };
    let pickle = slice(&layout.pickle)?;
    let bufs = PyList::empty(py);
    for r in &layout.buffers {
        bufs.append(slice(r)?)?;
    }
    Ok((pickle, bufs))
}
