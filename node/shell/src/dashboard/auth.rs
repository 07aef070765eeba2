//! Who may read the dashboard: anyone on a loopback address; off loopback,
//! only requests that carry the token derived from the cluster key (in the
//! `token` query parameter, as the printed URL has it, or an
//! `Authorization: Bearer` header).

use std::net::SocketAddr;

use sha2::{Digest, Sha256};

/// The dashboard token of a cluster key (hex): 32 hex characters of
/// SHA-256 over a fixed label and the key, so the token reveals nothing of
/// the key and differs from every other use of it.
pub fn token_for_key(key_hex: &str) -> String {
    let mut h = Sha256::new();
    h.update(b"peer dashboard token v1\0");
    h.update(key_hex.trim().to_ascii_lowercase().as_bytes());
    peer_node_core::ids::hex(&h.finalize()[..16])
}

/// A fresh random token (a node with no cluster key bound off loopback).
pub fn random_token() -> String {
    peer_node_core::ids::hex(&rand::random::<[u8; 16]>())
}

/// What a bound dashboard asks of its requests.
#[derive(Debug, Clone)]
pub struct Access {
    /// None: every request is let in (loopback).
    token: Option<String>,
}

impl Access {
    /// Loopback addresses need no token; others need `token`.
    pub fn for_address(addr: SocketAddr, token: String) -> Access {
        Access {
            token: (!addr.ip().is_loopback()).then_some(token),
        }
    }

    /// The token requests must carry, if any.
    pub fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }

    /// Whether a request with this query string and headers may read.
    pub fn allows(&self, query: Option<&str>, authorization: Option<&str>) -> bool {
        let Some(want) = &self.token else {
            return true;
        };
        let from_query = query.into_iter().flat_map(|q| q.split('&')).find_map(|kv| {
            let (k, v) = kv.split_once('=')?;
            (k == "token").then_some(v)
        });
        let from_header = authorization
            .and_then(|a| a.strip_prefix("Bearer "))
            .map(str::trim);
        [from_query, from_header]
            .into_iter()
            .flatten()
            .any(|given| same(given.as_bytes(), want.as_bytes()))
    }
}

/// Compare without stopping at the first difference.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_needs_no_token_and_others_need_the_right_one() {
        let token = token_for_key("ab12");
        assert_eq!(token.len(), 32);
        assert_eq!(token, token_for_key("AB12"));
        let local = Access::for_address("127.0.0.1:8265".parse().unwrap(), token.clone());
        assert!(local.allows(None, None));
        let open = Access::for_address("10.0.0.5:8265".parse().unwrap(), token.clone());
        assert!(!open.allows(None, None));
        assert!(!open.allows(Some("token=nope"), None));
        assert!(open.allows(Some(&format!("x=1&token={token}")), None));
        assert!(open.allows(None, Some(&format!("Bearer {token}"))));
    }
}
