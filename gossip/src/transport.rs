//! The transport and the swarm: TCP, wrapped in pnet with the cluster key, then noise and yamux.
//!
//! pnet alone gives no signal when keys differ: each side just reads garbage, and the dial ends
//! in "unexpected end of file" or a handshake timeout depending on what the garbage looked like.
//! So right after the pnet handshake both sides send [`KEY_CHECK`] through the encrypted stream
//! and compare what they receive: with different keys it decrypts to something else and both
//! sides fail at once with [`KeyCheckError::Mismatch`].
//!
//! QUIC is deliberately not used. pnet can only wrap a byte stream, and QUIC brings its own TLS,
//! so a QUIC listener would accept handshakes from anyone with the address: membership would then
//! have to be proven by a separate protocol after the connection is up, while identify, Kademlia
//! and gossipsub already run on it. Multi-peer clusters always have a key, so QUIC stays off and
//! the key is checked before a single libp2p byte is exchanged.

use std::error::Error;
use std::io;
use std::time::Duration;

use libp2p::futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use libp2p::core::muxing::StreamMuxerBox;
use libp2p::core::transport::{Boxed, Transport as _};
use libp2p::core::upgrade::Version;
use libp2p::identity::Keypair;
use libp2p::pnet::{PnetConfig, PnetError, PnetOutput, PreSharedKey};
use libp2p::{PeerId, Swarm, SwarmBuilder, noise, tcp, yamux};

use crate::behaviour::Behaviour;
use crate::{Config, GossipError};

/// Time allowed for the whole connection upgrade (pnet, noise, yamux).
const UPGRADE_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections nobody keeps alive (outside every gossipsub mesh, no running query) close after
/// this long; the view tolerates that (see `view`).
const IDLE_CONNECTION_TIMEOUT: Duration = Duration::from_secs(60);

/// Sent by both sides through the fresh pnet stream; arrives intact only if the keys match.
const KEY_CHECK: &[u8; 8] = b"peer/k1\n";
/// How a key mismatch reads in errors and logs (also used to recognise it in error chains).
pub(crate) const KEY_MISMATCH: &str = "cluster key mismatch: the remote holds a different key";

/// Why the pnet stage of a connection failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum KeyCheckError {
    #[error("pnet handshake failed: {0}")]
    Pnet(#[from] PnetError),
    #[error("key check failed: {0}")]
    Io(#[from] io::Error),
    #[error("{KEY_MISMATCH}")]
    Mismatch,
}

/// The pnet handshake followed by the key check.
async fn pnet_handshake<S>(socket: S, psk: PreSharedKey) -> Result<PnetOutput<S>, KeyCheckError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut stream = PnetConfig::new(psk).handshake(socket).await?;
    stream.write_all(KEY_CHECK).await?;
    stream.flush().await?;
    let mut received = [0u8; KEY_CHECK.len()];
    stream.read_exact(&mut received).await?;
    if &received != KEY_CHECK {
        return Err(KeyCheckError::Mismatch);
    }
    Ok(stream)
}

/// TCP → pnet(key) + key check → multistream-select → noise → yamux.
fn tcp_pnet(
    keypair: &Keypair,
    psk: PreSharedKey,
) -> Result<Boxed<(PeerId, StreamMuxerBox)>, Box<dyn Error + Send + Sync>> {
    let noise = noise::Config::new(keypair)?;
    Ok(tcp::tokio::Transport::new(tcp::Config::new().nodelay(true))
        .and_then(move |socket, _| pnet_handshake(socket, psk))
        .upgrade(Version::V1Lazy)
        .authenticate(noise)
        .multiplex(yamux::Config::default())
        .timeout(UPGRADE_TIMEOUT)
        .map(|(peer, muxer), _| (peer, StreamMuxerBox::new(muxer)))
        .boxed())
}

/// Builds the swarm for `config`. Must run inside a tokio runtime.
pub(crate) fn swarm(config: &Config) -> Result<Swarm<Behaviour>, GossipError> {
    let setup = |e: &dyn std::fmt::Display| GossipError::Setup(e.to_string());
    let psk = config.key.psk();
    let swarm = SwarmBuilder::with_existing_identity(config.identity.keypair().clone())
        .with_tokio()
        .with_other_transport(|keypair| tcp_pnet(keypair, psk))
        .map_err(|e| setup(&e))?
        .with_behaviour(|keypair| Behaviour::new(keypair, config))
        .map_err(|e| setup(&e))?
        .with_swarm_config(|c| c.with_idle_connection_timeout(IDLE_CONNECTION_TIMEOUT))
        .build();
    Ok(swarm)
}
