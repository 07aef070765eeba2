//! Direct connections: TLS 1.3 over a plain TCP socket beside libp2p's connections, for bulk
//! bytes (large object pulls) that should not pay for yamux's 16 KiB frames, its window
//! updates and the node runtime's wake-ups on every frame.
//!
//! The channel is the one every libp2p connection of this node has (`tls.rs`: the same
//! certificate, the same verifier, AES-GCM first): both ends prove their host keys, and the
//! dialer checks that the PeerId it expects answered. It carries no cluster-key proof of its
//! own: a direct connection is only worth anything with a ticket that the serving node handed
//! out over an admitted libp2p link. The dialer sends the ticket first thing over the session;
//! the server (the node's `admit` says whether it is good) answers with one byte, and only
//! then do both ends take the session out of rustls and protect its records themselves
//! (`records.rs`), so none is left in rustls's buffers.
//!
//! Blocking I/O on purpose: each direct connection is driven by one thread, which reads TLS
//! records straight into the caller's buffer (an object's place in the store) or seals them
//! straight out of it, so bulk bytes never queue behind, or delay, control messages on the
//! node's runtime.

use std::io::{self, Read, Write};
use std::net::{IpAddr, Shutdown, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use libp2p::identity::Keypair;
use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId};
use rustls::pki_types::ServerName;
use rustls::{ClientConnection, ServerConnection, StreamOwned};

use crate::Identity;
use crate::records::Records;
use crate::tls::{Tls, TlsError, remote_peer};

/// The IP of `addr` if it is a plain TCP address (`/ip4|ip6/…/tcp/…`, not through a relay).
pub fn tcp_ip(addr: &Multiaddr) -> Option<IpAddr> {
    let relayed = addr.iter().any(|p| matches!(p, Protocol::P2pCircuit));
    let tcp = addr.iter().any(|p| matches!(p, Protocol::Tcp(_)));
    let ip = addr.iter().find_map(|p| match p {
        Protocol::Ip4(ip) => Some(IpAddr::V4(ip)),
        Protocol::Ip6(ip) => Some(IpAddr::V6(ip)),
        _ => None,
    });
    ip.filter(|_| tcp && !relayed)
}

/// The IP addresses of the plain TCP addresses in `addrs` (relayed and wildcard ones left
/// out), in order, each once: where a peer's direct listener may be reached.
pub fn direct_ips(addrs: &[Multiaddr]) -> Vec<IpAddr> {
    let mut ips = Vec::new();
    for ip in addrs.iter().filter_map(tcp_ip) {
        if !ip.is_unspecified() && !ips.contains(&ip) {
            ips.push(ip);
        }
    }
    ips
}

/// How long a direct connection's handshake may take.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Makes and accepts direct connections for one node (cheap to clone).
#[derive(Clone)]
pub struct DirectTls {
    /// As the node's libp2p connections have it, and the session's secrets handed to the
    /// record layer once the handshake is done (`records.rs`).
    client: Arc<rustls::ClientConfig>,
    /// As the node's libp2p connections have it, less session tickets (a client has no use
    /// for them, and none is then sent after the handshake), and the session's secrets
    /// handed to the record layer once the client is admitted.
    server: Arc<rustls::ServerConfig>,
}

impl std::fmt::Debug for DirectTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DirectTls")
    }
}

/// The byte a server sends once it admitted a client's ticket and took over the session.
const ADMITTED: u8 = 1;

impl DirectTls {
    /// The TLS configuration of this node's identity (as its libp2p connections use).
    pub fn new(identity: &Identity) -> Result<Self, TlsError> {
        Self::from_keypair(identity.keypair())
    }

    fn from_keypair(keypair: &Keypair) -> Result<Self, TlsError> {
        let tls = Tls::new(keypair)?;
        let mut client = (*tls.client_config()).clone();
        client.enable_secret_extraction = true;
        let mut server = (*tls.server_config()).clone();
        server.send_tls13_tickets = 0;
        server.enable_secret_extraction = true;
        Ok(DirectTls {
            client: Arc::new(client),
            server: Arc::new(server),
        })
    }

    /// TLS as the client on `socket` (a connected, blocking TCP socket): fails unless the
    /// server proves it is `expected` and admits `ticket` (within [`HANDSHAKE_TIMEOUT`]).
    pub fn connect(
        &self,
        socket: TcpStream,
        expected: PeerId,
        ticket: &[u8; 16],
    ) -> Result<DirectStream, TlsError> {
        // With SNI off the name is not sent; rustls still wants one.
        let name = ServerName::IpAddress(std::net::IpAddr::from([0, 0, 0, 0]).into());
        let mut conn = ClientConnection::new(Arc::clone(&self.client), name)?;
        let mut socket = socket;
        let before = bound_by_handshake_timeout(&socket)?;
        handshake(&mut conn, &mut socket)?;
        let remote = remote_peer(&conn)?;
        if remote != expected {
            return Err(TlsError::Handshake(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!("expected {expected}, {remote} answered"),
            )));
        }
        // The server sends nothing before it admits us (no session tickets), so nothing of
        // the session is left in rustls's buffers.
        let suite = conn.negotiated_cipher_suite();
        let mut records = Records::new(socket, suite, conn.dangerous_extract_secrets())
            .map_err(TlsError::Handshake)?;
        let mut admitted = [0u8; 1];
        records
            .write_all(ticket)
            .and_then(|()| records.read_exact(&mut admitted))
            .map_err(|e| {
                TlsError::Handshake(io::Error::new(
                    e.kind(),
                    format!("the server did not admit the ticket: {e}"),
                ))
            })?;
        if admitted != [ADMITTED] {
            return Err(TlsError::Handshake(io::Error::new(
                io::ErrorKind::InvalidData,
                "the server did not admit the ticket",
            )));
        }
        records.socket().set_read_timeout(before.0)?;
        records.socket().set_write_timeout(before.1)?;
        Ok(DirectStream(Box::new(records)))
    }

    /// TLS as the server on `socket` (accepted, blocking): the client's PeerId and the
    /// stream, once `admit` said yes to the 16-byte ticket the client sent first (within
    /// [`HANDSHAKE_TIMEOUT`]; a ticket refused fails with `PermissionDenied`).
    pub fn accept(
        &self,
        socket: TcpStream,
        admit: impl FnOnce(PeerId, &[u8; 16]) -> bool,
    ) -> Result<(PeerId, DirectStream), TlsError> {
        let conn = ServerConnection::new(Arc::clone(&self.server))?;
        let mut stream = StreamOwned::new(conn, socket);
        let before = bound_by_handshake_timeout(&stream.sock)?;
        handshake(&mut stream.conn, &mut stream.sock)?;
        let remote = remote_peer(&stream.conn)?;
        let mut ticket = [0u8; 16];
        stream.read_exact(&mut ticket)?;
        if !admit(remote, &ticket) {
            return Err(TlsError::Handshake(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!("{remote} sent no good ticket"),
            )));
        }
        // The client sends nothing more until it is admitted: the session is whole here.
        let pending = stream
            .conn
            .process_new_packets()
            .map_err(|e| TlsError::Handshake(io::Error::new(io::ErrorKind::InvalidData, e)))?;
        if pending.plaintext_bytes_to_read() > 0 || pending.tls_bytes_to_write() > 0 {
            return Err(TlsError::Handshake(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{remote} sent more than its ticket before it was admitted"),
            )));
        }
        let StreamOwned { conn, sock } = stream;
        let suite = conn.negotiated_cipher_suite();
        let mut records = Records::new(sock, suite, conn.dangerous_extract_secrets())
            .map_err(TlsError::Handshake)?;
        records.write_all(&[ADMITTED])?;
        records.socket().set_read_timeout(before.0)?;
        records.socket().set_write_timeout(before.1)?;
        Ok((remote, DirectStream(Box::new(records))))
    }
}

/// Bounds every read and write on `socket` by [`HANDSHAKE_TIMEOUT`] (for the handshake and
/// the ticket), returning the timeouts it had, to put back once the session is set up.
fn bound_by_handshake_timeout(
    socket: &TcpStream,
) -> io::Result<(Option<Duration>, Option<Duration>)> {
    let before = (socket.read_timeout()?, socket.write_timeout()?);
    socket.set_read_timeout(Some(HANDSHAKE_TIMEOUT))?;
    socket.set_write_timeout(Some(HANDSHAKE_TIMEOUT))?;
    Ok(before)
}

/// Runs a handshake to its end on a blocking socket whose reads and writes are bounded (the
/// whole is bounded by [`HANDSHAKE_TIMEOUT`] too).
fn handshake<S: rustls::SideData>(
    conn: &mut rustls::ConnectionCommon<S>,
    socket: &mut TcpStream,
) -> Result<(), TlsError> {
    let deadline = std::time::Instant::now() + HANDSHAKE_TIMEOUT;
    while conn.is_handshaking() {
        if std::time::Instant::now() > deadline {
            return Err(TlsError::Handshake(io::Error::new(
                io::ErrorKind::TimedOut,
                "the handshake took too long",
            )));
        }
        conn.complete_io(socket)?;
    }
    // Flush what the handshake left to send (the client's Finished).
    while conn.wants_write() {
        conn.write_tls(socket)?;
    }
    Ok(())
}

/// An established direct connection: plaintext in and out, its records protected by
/// `records.rs`.
pub struct DirectStream(Box<Records>);

impl std::fmt::Debug for DirectStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DirectStream")
    }
}

impl DirectStream {
    /// The TCP socket under the TLS session (for timeouts, and for a clone that can shut it
    /// down from another thread to end a blocked read).
    pub fn socket(&self) -> &TcpStream {
        self.0.socket()
    }

    /// Sets how long one read and one write may block.
    pub fn set_timeouts(&self, read: Duration, write: Duration) -> io::Result<()> {
        self.socket().set_read_timeout(Some(read))?;
        self.socket().set_write_timeout(Some(write))
    }

    /// Says the stream ends here (`close_notify`): the other end reads its end.
    pub fn close(&mut self) -> io::Result<()> {
        self.0.close()
    }

    /// Ends the connection in both directions (a blocked read returns).
    pub fn shutdown(&self) {
        let _ = self.socket().shutdown(Shutdown::Both);
    }
}

impl Read for DirectStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf)
    }
}

impl Write for DirectStream {
    /// Seals all of `buf` and sends it: the bytes are read where they are, not copied.
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

#[cfg(test)]
mod tests {
    use std::net::TcpListener;

    use super::*;

    const TICKET: [u8; 16] = *b"a ticket 16 long";

    fn pair() -> (Keypair, Keypair) {
        (Keypair::generate_ed25519(), Keypair::generate_ed25519())
    }

    #[test]
    fn direct_ips_are_the_plain_tcp_ones_once_each() {
        let addrs: Vec<Multiaddr> = [
            "/ip4/10.0.0.2/tcp/7700",
            "/ip4/10.0.0.2/tcp/7701",
            "/ip4/0.0.0.0/tcp/7700",
            "/ip4/10.0.0.3/udp/7700/quic-v1",
            "/ip4/10.0.0.4/tcp/7700/p2p/12D3KooWGNS1bTxKLMy5Z3ZpYfmhZuV7sLLdCuAdn2UdGmcHxTDE/p2p-circuit",
            "/ip6/::1/tcp/7700",
        ]
        .iter()
        .map(|a| a.parse().unwrap())
        .collect();
        let want: Vec<IpAddr> = vec!["10.0.0.2".parse().unwrap(), "::1".parse().unwrap()];
        assert_eq!(direct_ips(&addrs), want);
    }

    #[test]
    fn both_ends_learn_each_other_and_bytes_cross_both_ways() {
        let (a, b) = pair();
        let (a_id, b_id) = (a.public().to_peer_id(), b.public().to_peer_id());
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let (socket, _) = listener.accept().unwrap();
            let (client, mut stream) = DirectTls::from_keypair(&b)
                .unwrap()
                .accept(socket, |_, t| t == &TICKET)
                .unwrap();
            let mut got = vec![0u8; 5 << 20];
            stream.read_exact(&mut got).unwrap();
            stream.write_all(&got[..7]).unwrap();
            stream.flush().unwrap();
            (client, got)
        });
        let socket = TcpStream::connect(addr).unwrap();
        let mut stream = DirectTls::from_keypair(&a)
            .unwrap()
            .connect(socket, b_id, &TICKET)
            .unwrap();
        let sent: Vec<u8> = (0..5u32 << 20).map(|i| (i % 251) as u8).collect();
        stream.write_all(&sent).unwrap();
        stream.flush().unwrap();
        let mut back = [0u8; 7];
        stream.read_exact(&mut back).unwrap();
        let (client, got) = server.join().unwrap();
        assert_eq!(client, a_id);
        assert!(got == sent);
        assert_eq!(&back, &sent[..7]);
    }

    /// A server that sends `data` then `close_notify`, and a client connected to it through
    /// `relay` (a thread that copies bytes both ways, and may change them); what the client
    /// read, and how its reading ended.
    fn fetch_through(
        data: Vec<u8>,
        relay: impl FnOnce(TcpStream, TcpStream) + Send + 'static,
        reads: &[usize],
    ) -> (Vec<u8>, io::Result<usize>) {
        let (a, b) = pair();
        let b_id = b.public().to_peer_id();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let (socket, _) = listener.accept().unwrap();
            let admit = |_: PeerId, t: &[u8; 16]| t == &TICKET;
            let Ok((_, mut stream)) = DirectTls::from_keypair(&b).unwrap().accept(socket, admit)
            else {
                return;
            };
            let _ = stream.write_all(&data).and_then(|()| stream.close());
        });
        let front = TcpListener::bind("127.0.0.1:0").unwrap();
        let front_addr = front.local_addr().unwrap();
        let relayer = std::thread::spawn(move || {
            let (client_side, _) = front.accept().unwrap();
            relay(client_side, TcpStream::connect(addr).unwrap());
        });
        let socket = TcpStream::connect(front_addr).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut stream = DirectTls::from_keypair(&a)
            .unwrap()
            .connect(socket, b_id, &TICKET)
            .unwrap();
        let mut got = Vec::new();
        let mut sizes = reads.iter().copied().cycle();
        let end = loop {
            let mut buf = vec![0u8; sizes.next().unwrap()];
            match stream.read(&mut buf) {
                Ok(0) => break Ok(0),
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) => break Err(e),
            }
        };
        drop(stream);
        server.join().unwrap();
        relayer.join().unwrap();
        (got, end)
    }

    /// Copies bytes both ways; from the server, byte `flip` (if any) is changed on the way.
    fn relay(flip: Option<usize>) -> impl FnOnce(TcpStream, TcpStream) + Send + 'static {
        move |client: TcpStream, server: TcpStream| {
            let (mut c_in, mut s_out) = (client.try_clone().unwrap(), server.try_clone().unwrap());
            let up = std::thread::spawn(move || {
                let _ = io::copy(&mut c_in, &mut s_out);
                let _ = s_out.shutdown(Shutdown::Write);
            });
            let (mut s_in, mut c_out) = (server, client);
            let mut seen = 0usize;
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                let n = match s_in.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                if let Some(at) = flip.filter(|at| (seen..seen + n).contains(at)) {
                    buf[at - seen] ^= 0x40;
                }
                seen += n;
                if c_out.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            let _ = c_out.shutdown(Shutdown::Both);
            let _ = up.join();
        }
    }

    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i % 253) as u8).collect()
    }

    #[test]
    fn records_read_into_large_and_small_buffers_carry_every_byte_and_end_cleanly() {
        let data = pattern(3 << 20);
        // Large reads take records straight into the buffer; the small ones in between
        // (and a buffer of one byte) go through the record buffer.
        let reads = [1 << 20, 7, 300_000, 1, 16 * 1024 + 4, 16 * 1024 + 100];
        let (got, end) = fetch_through(data.clone(), relay(None), &reads);
        assert!(got == data, "{} of {} bytes", got.len(), data.len());
        assert_eq!(end.unwrap(), 0, "close_notify ends the stream");
    }

    #[test]
    fn a_changed_byte_fails_the_read_and_nothing_after_it_is_returned() {
        let data = pattern(2 << 20);
        // Well past the handshake, inside the data.
        let (got, end) = fetch_through(data.clone(), relay(Some(1 << 20)), &[1 << 20, 64]);
        let err = end.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{err}");
        assert!(got.len() < (1 << 20), "{} bytes returned", got.len());
        assert!(got == data[..got.len()], "what was returned is intact");
    }

    #[test]
    fn a_ticket_the_server_does_not_admit_ends_the_connection_on_both_sides() {
        let (a, b) = pair();
        let b_id = b.public().to_peer_id();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let (socket, _) = listener.accept().unwrap();
            let tls = DirectTls::from_keypair(&b).unwrap();
            tls.accept(socket, |_, t| t == &TICKET).map(|_| ())
        });
        let socket = TcpStream::connect(addr).unwrap();
        let err = DirectTls::from_keypair(&a)
            .unwrap()
            .connect(socket, b_id, b"not the ticket!!")
            .unwrap_err();
        assert!(err.to_string().contains("did not admit"), "{err}");
        let refused = server.join().unwrap().unwrap_err();
        assert!(refused.to_string().contains("no good ticket"), "{refused}");
    }

    #[test]
    fn a_dialer_refuses_a_server_that_is_not_the_peer_it_expects() {
        let (a, b) = pair();
        let stranger = Keypair::generate_ed25519().public().to_peer_id();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let (socket, _) = listener.accept().unwrap();
            // The server's side may finish before the client refuses; either way no bytes.
            let _ = DirectTls::from_keypair(&b)
                .unwrap()
                .accept(socket, |_, _| true);
        });
        let socket = TcpStream::connect(addr).unwrap();
        let err = DirectTls::from_keypair(&a)
            .unwrap()
            .connect(socket, stranger, &TICKET)
            .unwrap_err();
        assert!(err.to_string().contains("answered"), "{err}");
        server.join().unwrap();
    }

    #[test]
    fn a_client_that_speaks_no_tls_gets_an_error_not_a_hang() {
        let (_, b) = pair();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let client = std::thread::spawn(move || {
            let mut socket = TcpStream::connect(addr).unwrap();
            socket.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
            let mut sink = Vec::new();
            let _ = socket.read_to_end(&mut sink);
        });
        let (socket, _) = listener.accept().unwrap();
        assert!(
            DirectTls::from_keypair(&b)
                .unwrap()
                .accept(socket, |_, _| true)
                .is_err()
        );
        client.join().unwrap();
    }
}
