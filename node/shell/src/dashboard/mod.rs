//! The dashboard any peer can serve (`peer up --dashboard`,
//! `init(dashboard=True)`): one self-contained page and a few read-only
//! JSON endpoints, over hyper, on the node's runtime and off its hot path.
//!
//! - `GET /`: the page (`page.html`, no build step, no CDN; plain SVG);
//! - `GET /api/events`: server-sent events, a cluster-wide overview each
//!   second (gathered from every peer by the core, `cluster::gather`);
//! - `GET /api/overview`, `/api/list/{peers,tasks,actors,objects}`,
//!   `/api/timeline` (Chrome trace events): the same on request;
//! - nothing else: no endpoint takes input beyond its path and the token,
//!   and none runs code;
//! - off loopback every request needs the token ([`auth`]).

pub mod auth;
mod server;

use std::net::SocketAddr;
use std::sync::Arc;

use crate::engine::Shared;
use crate::error::NodeError;

pub use server::UPDATE_EVERY;

/// The dashboard's default address (Ray's port).
pub const DEFAULT_ADDR: &str = "127.0.0.1:8265";

/// A dashboard being served.
#[derive(Debug, Clone)]
pub struct Dashboard {
    pub addr: SocketAddr,
    /// The page's URL, with the token when one is needed.
    pub url: String,
}

/// Bind `addr` and serve the dashboard on the current tokio runtime.
/// `key_hex`: the cluster key the token derives from (a random token when
/// there is none and the address is not loopback).
pub fn start(
    shared: Arc<Shared>,
    addr: SocketAddr,
    key_hex: Option<&str>,
) -> Result<Dashboard, NodeError> {
    let std_listener = std::net::TcpListener::bind(addr)
        .map_err(|e| NodeError::io("binding the dashboard address", e))?;
    std_listener
        .set_nonblocking(true)
        .map_err(|e| NodeError::io("binding the dashboard address", e))?;
    let bound = std_listener
        .local_addr()
        .map_err(|e| NodeError::io("binding the dashboard address", e))?;
    let listener = tokio::net::TcpListener::from_std(std_listener)
        .map_err(|e| NodeError::io("registering the dashboard socket", e))?;
    let token = key_hex.map_or_else(auth::random_token, auth::token_for_key);
    let access = auth::Access::for_address(bound, token);
    let url = match access.token() {
        Some(t) => format!("http://{bound}/?token={t}"),
        None => format!("http://{bound}/"),
    };
    tokio::spawn(server::serve(listener, shared, access));
    Ok(Dashboard { addr: bound, url })
}
