//! Raw memory across the Python boundary; the only module of this crate with
//! `unsafe`.
//!
//! - [`PinnedBuffer`] exports a read-only PEP 3118 buffer over an object in
//!   the shared-memory store and releases the store pin when it is collected;
//! - [`RawBuf`] borrows the bytes of any contiguous Python buffer (pickle
//!   protocol 5 out-of-band buffers) so Rust can copy them into the store.

use std::os::raw::c_int;
use std::sync::Arc;

use peer_node_core::ids::ObjectId;
use pyo3::exceptions::PyBufferError;
use pyo3::ffi;
use pyo3::prelude::*;

use crate::runtime::Runtime;

/// A read-only buffer over an object in the shared-memory store. While it or
/// any view made from it lives, the object stays pinned.
#[pyclass(module = "peer._native", frozen)]
pub struct PinnedBuffer {
    ptr: usize,
    len: usize,
    id: ObjectId,
    runtime: Arc<Runtime>,
}

impl PinnedBuffer {
    /// Wrap `len` bytes at `offset` of the runtime's arena. The caller holds
    /// one pin on `id`, which this buffer takes over.
    pub fn new(runtime: Arc<Runtime>, id: ObjectId, offset: u64, len: u64) -> PyResult<Self> {
        let arena = runtime.arena();
        let end = offset.checked_add(len).filter(|&e| e <= arena.len() as u64);
        if end.is_none() {
            runtime.node.release(&[id]);
            return Err(PyBufferError::new_err(format!(
                "object {id} at {offset}+{len} lies outside the store ({} bytes)",
                arena.len()
            )));
        }
        let ptr = arena.base_ptr() as usize + offset as usize;
        Ok(Self {
            ptr,
            len: len as usize,
            id,
            runtime,
        })
    }

    /// The bytes (valid while `self` lives: the pin keeps them unchanged).
    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: `ptr..ptr+len` was bounds-checked against the arena mapping, which
        // `self.runtime` keeps mapped; the object is sealed and pinned, so nobody
        // writes or reuses those bytes while `self` lives.
        unsafe { std::slice::from_raw_parts(self.ptr as *const u8, self.len) }
    }
}

#[pymethods]
impl PinnedBuffer {
    fn __len__(&self) -> usize {
        self.len
    }

    /// # Safety
    /// Called by CPython with a valid `view` to fill.
    unsafe fn __getbuffer__(
        slf: Bound<'_, Self>,
        view: *mut ffi::Py_buffer,
        flags: c_int,
    ) -> PyResult<()> {
        let (ptr, len) = {
            let me = slf.get();
            (me.ptr, me.len)
        };
        // SAFETY: `view` is the struct CPython asked us to fill; PyBuffer_FillInfo
        // takes a new reference to `slf` (so the memory outlives every view) and
        // refuses writable requests because readonly=1.
        let rc = unsafe {
            ffi::PyBuffer_FillInfo(
                view,
                slf.as_ptr(),
                ptr as *mut std::os::raw::c_void,
                len as ffi::Py_ssize_t,
                1,
                flags,
            )
        };
        if rc != 0 {
            return Err(PyErr::fetch(slf.py()));
        }
        Ok(())
    }

    /// # Safety
    /// Called by CPython; nothing to free (PyBuffer_FillInfo allocated nothing).
    unsafe fn __releasebuffer__(&self, _view: *mut ffi::Py_buffer) {}

    fn __repr__(&self) -> String {
        format!("PinnedBuffer(object={}, len={})", self.id, self.len)
    }
}

impl Drop for PinnedBuffer {
    fn drop(&mut self) {
        self.runtime.node.release(&[self.id]);
    }
}

/// The bytes of a contiguous Python buffer, borrowed for as long as this lives.
pub struct RawBuf {
    view: Box<ffi::Py_buffer>,
}

// SAFETY: the exporter keeps the memory valid and unmoved until
// PyBuffer_Release; we only read it (possibly from copy threads while the GIL
// is released) and release it in Drop with the GIL held.
unsafe impl Send for RawBuf {}
// SAFETY: as above; shared access is read-only.
unsafe impl Sync for RawBuf {}

impl RawBuf {
    /// Borrow `obj`'s buffer as plain contiguous bytes. Pickle buffers are
    /// first turned into their raw byte view (`PickleBuffer.raw()`).
    pub fn get(obj: &Bound<'_, PyAny>) -> PyResult<RawBuf> {
        let raw = match obj.getattr("raw") {
            Ok(raw_fn) if obj.get_type().name()?.to_str()? == "PickleBuffer" => raw_fn.call0()?,
            _ => obj.clone(),
        };
        let mut view: Box<ffi::Py_buffer> = Box::new(
            // SAFETY: Py_buffer is a plain C struct for which all-zero is a valid
            // "empty" value; PyObject_GetBuffer fills it.
            unsafe { std::mem::zeroed() },
        );
        // SAFETY: `raw` is a live object and `view` points to writable storage.
        let rc = unsafe { ffi::PyObject_GetBuffer(raw.as_ptr(), &mut *view, ffi::PyBUF_SIMPLE) };
        if rc != 0 {
            return Err(PyErr::fetch(obj.py()));
        }
        Ok(RawBuf { view })
    }

    pub fn as_slice(&self) -> &[u8] {
        if self.view.len == 0 || self.view.buf.is_null() {
            return &[];
        }
        // SAFETY: PyBUF_SIMPLE guarantees `len` contiguous bytes at `buf`, valid
        // until PyBuffer_Release in Drop.
        unsafe { std::slice::from_raw_parts(self.view.buf as *const u8, self.view.len as usize) }
    }
}

impl Drop for RawBuf {
    fn drop(&mut self) {
        Python::attach(|_py| {
            // SAFETY: `view` was filled by a successful PyObject_GetBuffer and is
            // released exactly once, with the GIL held.
            unsafe { ffi::PyBuffer_Release(&mut *self.view) };
        });
    }
}
