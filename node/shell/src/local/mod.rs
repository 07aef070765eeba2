//! This machine's side of the node: the Unix socket its local clients
//! (workers, attached drivers, the CLI) connect to, the client those
//! processes use, the worker fork server, and the shared-memory store.
//!
//! - [`server`]: accepting connections, one reader and one writer each;
//! - [`outbox`]: a connection's batched, direct-when-possible writes;
//! - [`client`]: the blocking client of a node's socket ([`Client`](crate::Client));
//! - [`spawner`]: the fork server that starts worker processes;
//! - [`store`]: the core's object store over `peer-objstore`'s arena;
//! - [`socket`]: the node's directories and its owner-only socket.

pub mod client;
pub mod outbox;
pub mod server;
pub mod socket;
pub mod spawner;
pub mod store;
