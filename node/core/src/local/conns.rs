//! Local connections: who is on the other end (a worker, a driver, the
//! CLI), and what each holds, so that it is released when the connection
//! goes: pins on stored objects, objects it created and has not sealed, and
//! its processes' `ObjectRef` handles.

use rustc_hash::{FxHashMap, FxHashSet};

use crate::ids::{ConnId, ObjectId};
use crate::wire::local::Role;

/// One local connection.
#[derive(Debug, Default)]
pub(crate) struct Conn {
    pub(crate) role: Option<Role>,
    pub(crate) pid: u32,
    /// Pins this client holds on stored objects.
    pub(crate) pins: FxHashMap<ObjectId, u32>,
    /// Objects it created in the store and has not sealed yet.
    pub(crate) unsealed: FxHashSet<ObjectId>,
    /// `ObjectRef` handles alive in that process, released if it dies.
    pub(crate) refs: FxHashMap<ObjectId, u32>,
}

/// The node's local connections.
#[derive(Debug)]
pub(crate) struct Conns {
    entries: FxHashMap<ConnId, Conn>,
    next: ConnId,
}

impl Default for Conns {
    fn default() -> Self {
        Self {
            entries: FxHashMap::default(),
            next: 1,
        }
    }
}

#[cfg(test)]
impl std::ops::Index<&ConnId> for Conns {
    type Output = Conn;
    fn index(&self, id: &ConnId) -> &Conn {
        &self.entries[id]
    }
}

impl Conns {
    /// A new connection that has not said Hello yet.
    pub(crate) fn open(&mut self) -> ConnId {
        let id = self.next;
        self.next += 1;
        self.entries.insert(id, Conn::default());
        id
    }

    /// The process on the other end (0 before it said Hello).
    pub(crate) fn pid(&self, id: ConnId) -> u32 {
        self.entries.get(&id).map_or(0, |c| c.pid)
    }

    pub(crate) fn contains(&self, id: ConnId) -> bool {
        self.entries.contains_key(&id)
    }

    pub(crate) fn get_mut(&mut self, id: ConnId) -> Option<&mut Conn> {
        self.entries.get_mut(&id)
    }

    pub(crate) fn remove(&mut self, id: ConnId) -> Option<Conn> {
        self.entries.remove(&id)
    }

    pub(crate) fn ids(&self) -> Vec<ConnId> {
        self.entries.keys().copied().collect()
    }

    pub(crate) fn values(&self) -> impl Iterator<Item = &Conn> {
        self.entries.values()
    }

    /// The role a connection said it has.
    pub(crate) fn role(&self, id: ConnId) -> Option<Role> {
        self.entries.get(&id).and_then(|c| c.role)
    }

    /// One more pin of `id` held by `conn`.
    pub(crate) fn add_pin(&mut self, conn: ConnId, id: ObjectId) {
        if let Some(c) = self.entries.get_mut(&conn) {
            *c.pins.entry(id).or_insert(0) += 1;
        }
    }

    /// One pin of `id` dropped by `conn`: false when it held none (a client
    /// releasing what it never had), and for an unknown connection.
    pub(crate) fn drop_pin(&mut self, conn: ConnId, id: &ObjectId) -> Option<bool> {
        let c = self.entries.get_mut(&conn)?;
        Some(match c.pins.get_mut(id) {
            Some(n) if *n > 1 => {
                *n -= 1;
                true
            }
            Some(_) => {
                c.pins.remove(id);
                true
            }
            None => false,
        })
    }

    /// One more handle of `id` in `conn`'s process.
    pub(crate) fn add_ref(&mut self, conn: ConnId, id: ObjectId) {
        if let Some(c) = self.entries.get_mut(&conn) {
            *c.refs.entry(id).or_insert(0) += 1;
        }
    }

    /// One handle of `id` dropped by `conn`'s process: false when it
    /// registered none (not its to release).
    pub(crate) fn drop_ref(&mut self, conn: ConnId, id: &ObjectId) -> bool {
        let Some(c) = self.entries.get_mut(&conn) else {
            return true;
        };
        match c.refs.get_mut(id) {
            Some(n) if *n > 1 => {
                *n -= 1;
                true
            }
            Some(_) => {
                c.refs.remove(id);
                true
            }
            None => false,
        }
    }

    /// `conn` created `id` in the store and writes it now.
    pub(crate) fn note_unsealed(&mut self, conn: ConnId, id: ObjectId) {
        if let Some(c) = self.entries.get_mut(&conn) {
            c.unsealed.insert(id);
        }
    }

    /// `conn` sealed (or gave up) `id`; true when it had created it.
    pub(crate) fn forget_unsealed(&mut self, conn: ConnId, id: &ObjectId) -> bool {
        self.entries
            .get_mut(&conn)
            .is_some_and(|c| c.unsealed.remove(id))
    }
}
