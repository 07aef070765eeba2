//! A direct connection once its TLS 1.3 handshake is done, on either end: the session's
//! traffic secrets are taken out of rustls and its records protected here, so bulk bytes are
//! never copied on the way: a record's ciphertext is read straight into the caller's buffer
//! (an object's place in the store) and opened there, and a record is sealed straight out of
//! the caller's bytes (the object's place) into the buffer that goes to the socket.
//!
//! rustls's buffered connection copies every record's plaintext into buffers of its own
//! (twice on the way in), which after the cipher was the largest cost of moving an object.
//! Nothing else changes: the records are TLS 1.3's (RFC 8446 §5.2), opened by rustls's own
//! `MessageDecrypter` for the suite, and sealed with the AEAD rustls uses (aws-lc-rs) under
//! rustls's own nonce for each sequence number, which carry on from the handshake.
//!
//! - A record whose ciphertext fits in the caller's buffer is read into it and opened in
//!   place; nothing of it is returned before its tag checked out. Smaller reads (the frames
//!   in front of a chunk) go through a buffer of one record.
//! - Application data is returned; an empty record is skipped (a few in a row at most); a
//!   `close_notify` alert ends the stream; a `NewSessionTicket` is ignored; anything else
//!   (another alert, a key update) fails the connection, as does any error: a stream that
//!   failed once fails every later call.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::ops::Range;

use aws_lc_rs::aead::{self, Aad, LessSafeKey, UnboundKey};
use rustls::crypto::cipher::{InboundOpaqueMessage, Iv, MessageDecrypter, Nonce};
use rustls::{ConnectionTrafficSecrets, ContentType, ExtractedSecrets, ProtocolVersion};

/// Bytes of a record header.
const HEADER: usize = 5;
/// Largest plaintext of one record.
const MAX_FRAGMENT: usize = 16 * 1024;
/// Largest ciphertext of one record TLS 1.3 allows.
const MAX_CIPHERTEXT: usize = MAX_FRAGMENT + 256;
/// Empty application-data records accepted in a row.
const MAX_EMPTY_IN_A_ROW: u32 = 32;
/// `NewSessionTicket`'s handshake message type.
const NEW_SESSION_TICKET: u8 = 4;
/// Bytes of the AEAD tag.
const TAG: usize = 16;
/// Records sealed into one buffer before it is written to the socket (64 KiB, as rustls
/// does: more leaves the buffer colder by the time the kernel copies it).
const RECORDS_PER_WRITE: usize = 4;

/// An established TLS 1.3 session, its records sealed and opened here.
pub struct Records {
    socket: TcpStream,
    sealer: LessSafeKey,
    tx_iv: Iv,
    decrypter: Box<dyn MessageDecrypter>,
    tx_seq: u64,
    rx_seq: u64,
    /// The next record's header, or the part of it read so far.
    head: [u8; HEADER],
    head_len: usize,
    /// The last record opened in `scratch`, and the part of its plaintext not returned yet.
    scratch: Vec<u8>,
    plain: Range<usize>,
    /// Records sealed and not written yet: the first `out_len` bytes of `out` (which only
    /// grows, so its bytes are not cleared for every record).
    out: Vec<u8>,
    out_len: usize,
    closed: bool,
    failed: Option<String>,
}

impl std::fmt::Debug for Records {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Records")
    }
}

fn invalid(why: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, why.into())
}

impl Records {
    /// Takes over a session on `socket` whose handshake is done and that has nothing left to
    /// send or to read: `suite` as negotiated, `secrets` as rustls hands them out
    /// (`dangerous_extract_secrets`, with secret extraction enabled in its config).
    pub fn new(
        socket: TcpStream,
        suite: Option<rustls::SupportedCipherSuite>,
        secrets: Result<ExtractedSecrets, rustls::Error>,
    ) -> io::Result<Self> {
        let Some(rustls::SupportedCipherSuite::Tls13(suite)) = suite else {
            return Err(invalid("direct connections speak TLS 1.3 only"));
        };
        let secrets = secrets.map_err(|e| invalid(format!("taking over the session: {e}")))?;
        let ((tx_seq, tx), (rx_seq, rx)) = (secrets.tx, secrets.rx);
        let (rx_key, rx_iv) = match rx {
            ConnectionTrafficSecrets::Aes128Gcm { key, iv }
            | ConnectionTrafficSecrets::Aes256Gcm { key, iv }
            | ConnectionTrafficSecrets::Chacha20Poly1305 { key, iv } => (key, iv),
            _ => return Err(invalid("no record layer here for the negotiated suite")),
        };
        let (algorithm, tx_key, tx_iv) = match tx {
            ConnectionTrafficSecrets::Aes128Gcm { key, iv } => (&aead::AES_128_GCM, key, iv),
            ConnectionTrafficSecrets::Aes256Gcm { key, iv } => (&aead::AES_256_GCM, key, iv),
            ConnectionTrafficSecrets::Chacha20Poly1305 { key, iv } => {
                (&aead::CHACHA20_POLY1305, key, iv)
            }
            _ => return Err(invalid("no record layer here for the negotiated suite")),
        };
        let key = UnboundKey::new(algorithm, tx_key.as_ref())
            .map_err(|_| invalid("the session's key does not fit its cipher"))?;
        Ok(Records {
            socket,
            sealer: LessSafeKey::new(key),
            tx_iv,
            decrypter: suite.aead_alg.decrypter(rx_key, rx_iv),
            tx_seq,
            rx_seq,
            head: [0; HEADER],
            head_len: 0,
            scratch: Vec::new(),
            plain: 0..0,
            out: Vec::new(),
            out_len: 0,
            closed: false,
            failed: None,
        })
    }

    /// The TCP socket under the session.
    pub fn socket(&self) -> &TcpStream {
        &self.socket
    }

    fn check(&self) -> io::Result<()> {
        match &self.failed {
            Some(why) => Err(io::Error::new(io::ErrorKind::BrokenPipe, why.clone())),
            None => Ok(()),
        }
    }

    /// Reads the next record's header (or the rest of it); `None` at a clean end of stream.
    fn read_header(&mut self) -> io::Result<Option<usize>> {
        while self.head_len < HEADER {
            match self.socket.read(&mut self.head[self.head_len..]) {
                Ok(0) if self.head_len == 0 => return Ok(None),
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(n) => self.head_len += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.head_len = 0;
        let [typ, major, minor, hi, lo] = self.head;
        if typ != u8::from(ContentType::ApplicationData) || [major, minor] != [3, 3] {
            return Err(invalid(format!("not a TLS 1.3 record: {:?}", self.head)));
        }
        let len = usize::from(u16::from_be_bytes([hi, lo]));
        if len > MAX_CIPHERTEXT {
            return Err(invalid(format!("a record of {len} bytes")));
        }
        Ok(Some(len))
    }

    /// Opens the record whose `len` bytes of ciphertext are at the start of `buf`: its content
    /// type and plaintext length (the plaintext is then at the start of `buf`).
    fn open(&mut self, buf: &mut [u8]) -> io::Result<(ContentType, usize)> {
        let msg =
            InboundOpaqueMessage::new(ContentType::ApplicationData, ProtocolVersion::TLSv1_2, buf);
        let plain = self
            .decrypter
            .decrypt(msg, self.rx_seq)
            .map_err(|e| invalid(format!("a record failed to open: {e}")))?;
        self.rx_seq += 1;
        Ok((plain.typ, plain.payload.len()))
    }

    /// What a record that is not application data means: `Ok(true)` if it ends the stream,
    /// `Ok(false)` to go on to the next one.
    fn control(typ: ContentType, plain: &[u8]) -> io::Result<bool> {
        match (typ, plain) {
            (ContentType::Handshake, [NEW_SESSION_TICKET, ..]) => Ok(false),
            (ContentType::Alert, [_, 0]) => Ok(true),
            (ContentType::Alert, [_, desc]) => Err(invalid(format!("the peer sent alert {desc}"))),
            _ => Err(invalid(format!("unexpected {typ:?} record"))),
        }
    }

    fn read_records(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut empty = 0;
        loop {
            if !self.plain.is_empty() {
                let n = self.plain.len().min(buf.len());
                buf[..n].copy_from_slice(&self.scratch[self.plain.start..self.plain.start + n]);
                self.plain.start += n;
                return Ok(n);
            }
            if self.closed {
                return Ok(0);
            }
            let Some(len) = self.read_header()? else {
                return Err(invalid("the connection closed without close_notify"));
            };
            let (typ, plain) = if buf.len() >= len + HEADER {
                // Straight into the caller's buffer, with as much of the next header as came.
                let mut got = 0;
                while got < len {
                    match self.socket.read(&mut buf[got..len + HEADER]) {
                        Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                        Ok(n) => got += n,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(e),
                    }
                }
                let extra = got - len;
                self.head[..extra].copy_from_slice(&buf[len..got]);
                self.head_len = extra;
                let (typ, plain) = self.open(&mut buf[..len])?;
                if typ == ContentType::ApplicationData && plain > 0 {
                    return Ok(plain);
                }
                if typ != ContentType::ApplicationData {
                    self.closed = Self::control(typ, &buf[..plain])?;
                }
                (typ, plain)
            } else {
                let mut scratch = std::mem::take(&mut self.scratch);
                scratch.resize(len, 0);
                let opened = self
                    .socket
                    .read_exact(&mut scratch)
                    .and_then(|()| self.open(&mut scratch));
                self.scratch = scratch;
                let (typ, plain) = opened?;
                if typ == ContentType::ApplicationData {
                    self.plain = 0..plain;
                } else {
                    self.closed = Self::control(typ, &self.scratch[..plain])?;
                }
                (typ, plain)
            };
            if typ == ContentType::ApplicationData && plain == 0 {
                empty += 1;
                if empty > MAX_EMPTY_IN_A_ROW {
                    return Err(invalid("empty records without end"));
                }
            }
        }
    }
}

impl Read for Records {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.check()?;
        if buf.is_empty() {
            return Ok(0);
        }
        self.read_records(buf).inspect_err(|e| {
            self.failed = Some(e.to_string());
        })
    }
}

impl Records {
    /// Seals one record of `typ` holding `plain` (at most [`MAX_FRAGMENT`] bytes) onto `out`,
    /// reading `plain` where it is.
    fn seal(&mut self, typ: ContentType, plain: &[u8]) -> io::Result<()> {
        let n = plain.len();
        let len = n + 1 + TAG;
        let header = [
            u8::from(ContentType::ApplicationData),
            3,
            3,
            (len >> 8) as u8,
            len as u8,
        ];
        let start = self.out_len;
        let end = start + HEADER + len;
        if self.out.len() < end {
            self.out.resize(end, 0);
        }
        self.out[start..start + HEADER].copy_from_slice(&header);
        let (body, type_and_tag) = self.out[start + HEADER..end].split_at_mut(n);
        let nonce = aead::Nonce::assume_unique_for_key(Nonce::new(&self.tx_iv, self.tx_seq).0);
        self.sealer
            .seal_out_of_place_scatter(
                nonce,
                Aad::from(header),
                plain,
                body,
                &[u8::from(typ)],
                type_and_tag,
            )
            .map_err(|_| invalid("sealing a record failed"))?;
        self.tx_seq += 1;
        self.out_len = end;
        Ok(())
    }

    /// Writes what is sealed.
    fn send(&mut self) -> io::Result<()> {
        let sent = self.socket.write_all(&self.out[..self.out_len]);
        self.out_len = 0;
        sent
    }

    /// Seals all of `buf` and sends it.
    fn write_records(&mut self, buf: &[u8]) -> io::Result<()> {
        for batch in buf.chunks(MAX_FRAGMENT * RECORDS_PER_WRITE) {
            for piece in batch.chunks(MAX_FRAGMENT) {
                self.seal(ContentType::ApplicationData, piece)?;
            }
            self.send()?;
        }
        Ok(())
    }

    /// Sends `close_notify`: the other end reads the end of the stream.
    pub fn close(&mut self) -> io::Result<()> {
        self.check()?;
        self.seal(ContentType::Alert, &[1, 0])
            .and_then(|()| self.send())
            .inspect_err(|e| self.failed = Some(e.to_string()))
    }
}

impl Write for Records {
    /// Seals all of `buf` (in records of at most 16 KiB) and sends it.
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.check()?;
        self.write_records(buf)
            .inspect_err(|e| self.failed = Some(e.to_string()))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
