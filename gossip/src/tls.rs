//! The secure channel of every connection: TLS 1.3 as libp2p specifies it (`/tls/1.0.0`: a
//! self-signed certificate carrying the host key's signature, no SNI, ALPN `libp2p`), with
//! AES-GCM chosen first.
//!
//! libp2p-tls's own configuration offers ChaCha20-Poly1305 first, and the server takes the
//! client's order, so two libp2p-tls peers speak ChaCha20 — on this project's machines 1.2 GB/s
//! per core, against 5.5–6.7 GB/s for AES-GCM with AES-NI (aws-lc-rs, 16 KiB records), and the
//! cipher was the largest cost of moving an object between peers. Noise, libp2p's other secure
//! channel, only speaks ChaCha20. So this module builds the rustls configurations itself, with
//! the same certificates (`libp2p::tls::certificate`) and the same checks as libp2p-tls's
//! verifier: exactly one certificate, which must parse as a libp2p certificate (self-signed,
//! with a valid host-key signature over its public key), and a handshake signature under it.
//! The remote's PeerId is the one its certificate names, and a dialer that expects a PeerId
//! gets an error if another answers (the swarm checks that).
//!
//! Both ends list AES-128-GCM, AES-256-GCM, ChaCha20-Poly1305 and the server picks by its own
//! order, so a libp2p-tls peer that prefers ChaCha20 still gets AES-GCM here.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use libp2p::PeerId;
use libp2p::core::upgrade::{InboundConnectionUpgrade, OutboundConnectionUpgrade, UpgradeInfo};
use libp2p::futures::future::BoxFuture;
use libp2p::futures::{AsyncRead, AsyncWrite, FutureExt};
use libp2p::identity::Keypair;
use libp2p::tls::certificate;
use rustls::client::ResolvesClientCert;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::crypto::aws_lc_rs::cipher_suite::{
    TLS13_AES_128_GCM_SHA256, TLS13_AES_256_GCM_SHA384, TLS13_CHACHA20_POLY1305_SHA256,
};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::ResolvesServerCert;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::sign::CertifiedKey;
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, OtherError, SignatureScheme,
};

/// The libp2p protocol name of TLS.
const PROTOCOL: &str = "/tls/1.0.0";
/// The ALPN libp2p's TLS specification requires.
const ALPN: &[u8] = b"libp2p";

/// Why a TLS configuration could not be made or a TLS handshake failed.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("making the TLS certificate: {0}")]
    Certificate(#[from] certificate::GenError),
    #[error("TLS configuration: {0}")]
    Config(#[from] rustls::Error),
    #[error("TLS handshake: {0}")]
    Handshake(#[from] std::io::Error),
    #[error("the remote's TLS certificate: {0}")]
    Remote(#[from] certificate::ParseError),
}

/// The TLS upgrade: [`Tls::new`] once per swarm; cloned for each connection.
#[derive(Clone)]
pub struct Tls {
    server: Arc<rustls::ServerConfig>,
    client: Arc<rustls::ClientConfig>,
}

impl Tls {
    /// Configurations for the host key `keypair` (one certificate, made here, for all
    /// connections; its own key pair is fresh and unrelated to the host key, as the spec asks).
    pub fn new(keypair: &Keypair) -> Result<Self, TlsError> {
        let (cert, key) = certificate::generate(keypair)?;
        let provider = provider();
        let signer = provider.key_provider.load_private_key(key)?;
        // Not `with_single_cert`: rustls would parse the certificate with webpki, which
        // refuses libp2p's critical extension (the verifier below checks it instead).
        let ours = Arc::new(OurCertificate(Arc::new(CertifiedKey::new(
            vec![cert],
            signer,
        ))));
        let verifier = Arc::new(Libp2pVerifier);
        let mut server = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_client_cert_verifier(verifier.clone())
            .with_cert_resolver(ours.clone());
        server.ignore_client_order = true;
        server.alpn_protocols = vec![ALPN.to_vec()];
        let mut client = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_client_cert_resolver(ours);
        client.alpn_protocols = vec![ALPN.to_vec()];
        // The spec: no SNI (the server's name is its PeerId, checked through the certificate).
        client.enable_sni = false;
        Ok(Tls {
            server: Arc::new(server),
            client: Arc::new(client),
        })
    }
}

impl Tls {
    /// The client side's configuration (for direct connections, `direct.rs`).
    pub(crate) fn client_config(&self) -> Arc<rustls::ClientConfig> {
        Arc::clone(&self.client)
    }

    /// The server side's configuration (for direct connections, `direct.rs`).
    pub(crate) fn server_config(&self) -> Arc<rustls::ServerConfig> {
        Arc::clone(&self.server)
    }
}

/// aws-lc-rs with the AEADs in the order this module wants them negotiated.
fn provider() -> Arc<CryptoProvider> {
    let mut provider = rustls::crypto::aws_lc_rs::default_provider();
    provider.cipher_suites = vec![
        TLS13_AES_128_GCM_SHA256,
        TLS13_AES_256_GCM_SHA384,
        TLS13_CHACHA20_POLY1305_SHA256,
    ];
    Arc::new(provider)
}

/// This node's certificate, for every handshake on either end.
#[derive(Debug)]
struct OurCertificate(Arc<CertifiedKey>);

impl ResolvesClientCert for OurCertificate {
    fn resolve(&self, _: &[&[u8]], _: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(&self.0))
    }

    fn has_certs(&self) -> bool {
        true
    }
}

impl ResolvesServerCert for OurCertificate {
    fn resolve(&self, _: rustls::server::ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(&self.0))
    }
}

/// The PeerId the remote's (single, already verified) certificate names.
pub(crate) fn remote_peer(state: &rustls::CommonState) -> Result<PeerId, TlsError> {
    match state.peer_certificates() {
        Some([cert]) => Ok(certificate::parse(cert)?.peer_id()),
        _ => Err(TlsError::Handshake(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "the remote did not present exactly one certificate",
        ))),
    }
}

impl UpgradeInfo for Tls {
    type Info = &'static str;
    type InfoIter = std::iter::Once<Self::Info>;

    fn protocol_info(&self) -> Self::InfoIter {
        std::iter::once(PROTOCOL)
    }
}

impl<C> InboundConnectionUpgrade<C> for Tls
where
    C: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    type Output = (PeerId, futures_rustls::TlsStream<C>);
    type Error = TlsError;
    type Future = BoxFuture<'static, Result<Self::Output, Self::Error>>;

    fn upgrade_inbound(self, socket: C, _: Self::Info) -> Self::Future {
        async move {
            let stream = futures_rustls::TlsAcceptor::from(self.server)
                .accept(socket)
                .await?;
            let peer = remote_peer(stream.get_ref().1)?;
            Ok((peer, stream.into()))
        }
        .boxed()
    }
}

impl<C> OutboundConnectionUpgrade<C> for Tls
where
    C: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    type Output = (PeerId, futures_rustls::TlsStream<C>);
    type Error = TlsError;
    type Future = BoxFuture<'static, Result<Self::Output, Self::Error>>;

    fn upgrade_outbound(self, socket: C, _: Self::Info) -> Self::Future {
        async move {
            // With SNI off the name is not sent; rustls still wants one.
            let name = ServerName::IpAddress(IpAddr::V4(Ipv4Addr::UNSPECIFIED).into());
            let stream = futures_rustls::TlsConnector::from(self.client)
                .connect(name, socket)
                .await?;
            let peer = remote_peer(stream.get_ref().1)?;
            Ok((peer, stream.into()))
        }
        .boxed()
    }
}

/// libp2p-tls's certificate checks, for both ends (see the module doc).
#[derive(Debug)]
struct Libp2pVerifier;

impl Libp2pVerifier {
    fn presented(
        end_entity: &CertificateDer,
        intermediates: &[CertificateDer],
    ) -> Result<(), rustls::Error> {
        if !intermediates.is_empty() {
            return Err(rustls::Error::General(
                "libp2p TLS requires exactly one certificate".into(),
            ));
        }
        certificate::parse(end_entity).map_err(invalid)?;
        Ok(())
    }

    fn signed(
        cert: &CertificateDer,
        dss: &DigitallySignedStruct,
        message: &[u8],
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        certificate::parse(cert)
            .map_err(invalid)?
            .verify_signature(dss.scheme, message, dss.signature())
            .map_err(invalid)?;
        Ok(HandshakeSignatureValid::assertion())
    }

    fn schemes() -> Vec<SignatureScheme> {
        vec![
            SignatureScheme::ECDSA_NISTP384_SHA384,
            SignatureScheme::ECDSA_NISTP256_SHA256,
            SignatureScheme::ED25519,
            SignatureScheme::RSA_PSS_SHA512,
            SignatureScheme::RSA_PSS_SHA384,
            SignatureScheme::RSA_PSS_SHA256,
            SignatureScheme::RSA_PKCS1_SHA512,
            SignatureScheme::RSA_PKCS1_SHA384,
            SignatureScheme::RSA_PKCS1_SHA256,
        ]
    }
}

fn invalid(e: impl std::error::Error + Send + Sync + 'static) -> rustls::Error {
    rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(e))))
}

/// TLS 1.2 is not offered (the configurations allow TLS 1.3 only).
fn no_tls12() -> Result<HandshakeSignatureValid, rustls::Error> {
    Err(rustls::Error::General("TLS 1.2 is not offered".into()))
}

impl ServerCertVerifier for Libp2pVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer,
        intermediates: &[CertificateDer],
        _: &ServerName,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Self::presented(end_entity, intermediates)?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        no_tls12()
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Self::signed(cert, dss, message)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        Self::schemes()
    }
}

impl ClientCertVerifier for Libp2pVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer,
        intermediates: &[CertificateDer],
        _: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Self::presented(end_entity, intermediates)?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        no_tls12()
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Self::signed(cert, dss, message)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        Self::schemes()
    }
}

#[cfg(test)]
mod tests {
    use libp2p::futures::{AsyncReadExt, AsyncWriteExt};
    use tokio_util::compat::{Compat, TokioAsyncReadCompatExt};

    use super::*;

    type Pipe = Compat<tokio::io::DuplexStream>;

    /// A TLS handshake between `dialer` and `listener` over an in-memory pipe.
    async fn handshake<D, L>(
        dialer: D,
        listener: L,
    ) -> (Result<D::Output, D::Error>, Result<L::Output, L::Error>)
    where
        D: OutboundConnectionUpgrade<Pipe, Info = &'static str>,
        L: InboundConnectionUpgrade<Pipe, Info = &'static str>,
    {
        let (a, b) = tokio::io::duplex(1 << 16);
        tokio::join!(
            dialer.upgrade_outbound(a.compat(), PROTOCOL),
            listener.upgrade_inbound(b.compat(), PROTOCOL)
        )
    }

    #[tokio::test]
    async fn both_ends_learn_each_others_peer_id_and_speak_aes_gcm() {
        let (dk, lk) = (Keypair::generate_ed25519(), Keypair::generate_ed25519());
        let (d, l) = handshake(Tls::new(&dk).unwrap(), Tls::new(&lk).unwrap()).await;
        let (seen_by_dialer, mut ds) = d.unwrap();
        let (seen_by_listener, mut ls) = l.unwrap();
        assert_eq!(seen_by_dialer, lk.public().to_peer_id());
        assert_eq!(seen_by_listener, dk.public().to_peer_id());
        let suite = ds.get_ref().1.negotiated_cipher_suite().unwrap().suite();
        assert_eq!(suite, rustls::CipherSuite::TLS13_AES_128_GCM_SHA256);
        ds.write_all(b"ping").await.unwrap();
        ds.flush().await.unwrap();
        let mut got = [0u8; 4];
        ls.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"ping");
    }

    #[tokio::test]
    async fn a_plain_libp2p_tls_dialer_that_prefers_chacha20_gets_aes_gcm() {
        let (dk, lk) = (Keypair::generate_ed25519(), Keypair::generate_ed25519());
        let plain = libp2p::tls::Config::new(&dk).unwrap();
        let (d, l) = handshake(plain, Tls::new(&lk).unwrap()).await;
        let (seen_by_dialer, _) = d.unwrap();
        let (seen_by_listener, ls) = l.unwrap();
        assert_eq!(seen_by_dialer, lk.public().to_peer_id());
        assert_eq!(seen_by_listener, dk.public().to_peer_id());
        let suite = ls.get_ref().1.negotiated_cipher_suite().unwrap().suite();
        assert_eq!(suite, rustls::CipherSuite::TLS13_AES_128_GCM_SHA256);
    }

    #[test]
    fn a_certificate_altered_in_one_byte_is_refused() {
        let (cert, _) = certificate::generate(&Keypair::generate_ed25519()).unwrap();
        assert!(Libp2pVerifier::presented(&cert, &[]).is_ok());
        let mut bytes = cert.as_ref().to_vec();
        let last = bytes.len() - 1;
        bytes[last] ^= 1; // inside the certificate's self-signature
        let altered = CertificateDer::from(bytes);
        assert!(Libp2pVerifier::presented(&altered, &[]).is_err());
        assert!(Libp2pVerifier::presented(&cert, std::slice::from_ref(&cert)).is_err());
    }
}
