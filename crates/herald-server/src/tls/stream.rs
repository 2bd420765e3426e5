//! A server TLS stream on rustls' unbuffered API that holds no TLS buffers while
//! idle.
//!
//! rustls' buffered connection (what tokio-rustls wraps) keeps a 4 KiB deframer
//! buffer for a connection's whole life. Here ciphertext is read into a per-thread
//! scratch buffer and decrypted there; a connection keeps only what could not be
//! finished — the start of a record, plaintext its reader has not taken yet,
//! ciphertext the socket has not taken yet — each in a `Vec` freed once empty.

use std::cell::Cell;
use std::future::poll_fn;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use rustls::ServerConfig;
use rustls::server::UnbufferedServerConnection;
use rustls::unbuffered::{ConnectionState, EncodeError, EncryptError};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Room for the largest TLS record (16 KiB of data, 2 KiB of expansion, a 5-byte
/// header): each read from the socket may complete any record.
const READ_SIZE: usize = 16 * 1024 + 2048 + 5;

/// Most plaintext taken per write: what one connection may hold as ciphertext for
/// a slow reader (as much as tokio-rustls buffered).
const WRITE_SIZE: usize = 64 * 1024;

thread_local! {
    /// Where ciphertext is read and decrypted, lent for one poll. Taken out of the
    /// cell, so a stream nested in another gets a buffer of its own.
    static READ_SCRATCH: Cell<Vec<u8>> = const { Cell::new(Vec::new()) };
    /// Where the slices of a vectored write are joined, so they travel in one
    /// record rather than one record each.
    static GATHER: Cell<Vec<u8>> = const { Cell::new(Vec::new()) };
}

/// Performs the server side of a TLS handshake on `io`.
///
/// The stream is boxed from the start: connection futures then hold a pointer,
/// not rustls' ~1 KB connection state, and the handshake never moves it.
pub async fn accept<S>(io: S, config: Arc<ServerConfig>) -> io::Result<Box<TlsStream<S>>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let conn = UnbufferedServerConnection::new(config).map_err(io::Error::other)?;
    let mut stream = Box::new(TlsStream {
        io,
        tls: Tls {
            conn,
            plaintext: Vec::new(),
            plaintext_pos: 0,
            outgoing: Vec::new(),
            outgoing_pos: 0,
            read_end: ReadEnd::Open,
            write_closed: false,
        },
        incoming: Vec::new(),
    });
    poll_fn(|cx| stream.poll_handshake(cx)).await?;
    Ok(stream)
}

/// A TLS server connection over `S`, after its handshake ([`accept`]).
pub struct TlsStream<S> {
    io: S,
    tls: Tls,
    /// Ciphertext of a record (or handshake message) not complete yet. rustls may
    /// have decrypted part of it in place, so it is kept as it is and handed back
    /// with the bytes that follow.
    incoming: Vec<u8>,
}

/// The connection state apart from the socket and `incoming`, so both can be
/// borrowed beside it.
struct Tls {
    conn: UnbufferedServerConnection,
    /// Decrypted data the reader has not taken yet, from `plaintext_pos`.
    plaintext: Vec<u8>,
    plaintext_pos: usize,
    /// Ciphertext the socket has not taken yet, from `outgoing_pos`.
    outgoing: Vec<u8>,
    outgoing_pos: usize,
    read_end: ReadEnd,
    /// close_notify is queued: nothing more may be written.
    write_closed: bool,
}

/// How the reading side ended, if it has.
#[derive(Clone, Copy, PartialEq, Eq)]
enum ReadEnd {
    Open,
    /// The peer sent close_notify: a clean end of data.
    CloseNotify,
    /// The socket ended without close_notify: the data may be truncated.
    Truncated,
    /// rustls refused what the peer sent.
    Failed,
}

/// What [`Tls::process`] did with its input.
struct Processed {
    /// Bytes at the front of the input that are done with.
    done: usize,
    /// Whether rustls did anything: took a record, queued output, delivered
    /// plaintext or saw close_notify. If not, it needs more input.
    progressed: bool,
}

/// What to encrypt once rustls can take application data.
#[derive(Clone, Copy)]
enum Outbound<'a> {
    Nothing,
    Data(&'a [u8]),
    CloseNotify,
}

impl<S> TlsStream<S> {
    /// The protocol the client and server agreed on with ALPN, if any.
    pub fn alpn_protocol(&self) -> Option<&[u8]> {
        self.tls.conn.alpn_protocol()
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> TlsStream<S> {
    fn poll_handshake(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            let flushed = self.poll_flush_outgoing(cx)?;
            // The last flight (TLS 1.2: the server's Finished) goes out before the
            // stream is handed over: its reader would not send it.
            if !self.tls.conn.is_handshaking() {
                return flushed.map(Ok);
            }
            if self.tls.read_end != ReadEnd::Open {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "TLS handshake ended early",
                )));
            }
            // Read even while a flight waits for the socket: the peer may be
            // waiting to send before it reads (a TLS 1.3 client's ChangeCipherSpec).
            ready!(self.poll_receive(cx, None))?;
        }
    }

    /// Reads ciphertext and runs it through rustls until rustls has done something
    /// with it (a record processed) or the socket ended; plaintext goes to `dst`
    /// and what does not fit to `plaintext`. Pending while the socket has nothing
    /// more, with the start of a record kept in `incoming`.
    fn poll_receive(
        &mut self,
        cx: &mut Context<'_>,
        dst: Option<&mut ReadBuf<'_>>,
    ) -> Poll<io::Result<()>> {
        let mut scratch = READ_SCRATCH.take();
        let result = self.receive_into(&mut scratch, cx, dst);
        READ_SCRATCH.set(scratch);
        result
    }

    fn receive_into(
        &mut self,
        scratch: &mut Vec<u8>,
        cx: &mut Context<'_>,
        mut dst: Option<&mut ReadBuf<'_>>,
    ) -> Poll<io::Result<()>> {
        let mut filled = self.incoming.len();
        if scratch.len() < filled + READ_SIZE {
            scratch.resize(filled + READ_SIZE, 0);
        }
        scratch[..filled].copy_from_slice(&self.incoming);
        let result = loop {
            let mut buf = ReadBuf::new(&mut scratch[filled..]);
            match Pin::new(&mut self.io).poll_read(cx, &mut buf) {
                Poll::Ready(Ok(())) => {}
                other => break other,
            }
            let read = buf.filled().len();
            if read == 0 {
                self.tls.read_end = ReadEnd::Truncated;
                break Poll::Ready(Ok(()));
            }
            filled += read;
            match self.tls.process(
                &mut scratch[..filled],
                dst.as_deref_mut(),
                Outbound::Nothing,
            ) {
                Ok(Processed { done, progressed }) => {
                    scratch.copy_within(done..filled, 0);
                    filled -= done;
                    if progressed {
                        break Poll::Ready(Ok(()));
                    }
                    // Only part of a record so far: read on, with room for the rest.
                    if scratch.len() < filled + READ_SIZE {
                        scratch.resize(filled + READ_SIZE, 0);
                    }
                }
                Err(e) => {
                    self.tls.read_end = ReadEnd::Failed;
                    filled = 0;
                    // Best effort: the alert rustls queued tells the peer why.
                    let _ = self.poll_flush_outgoing(cx);
                    break Poll::Ready(Err(e));
                }
            }
        };
        self.incoming = scratch[..filled].to_vec();
        result
    }

    /// Runs `send` through rustls with the connection's pending input.
    fn process_pending(&mut self, send: Outbound<'_>) -> io::Result<()> {
        let done = self.tls.process(&mut self.incoming, None, send)?.done;
        self.incoming.drain(..done);
        if self.incoming.is_empty() {
            self.incoming = Vec::new();
        }
        Ok(())
    }

    /// Writes `outgoing` until the socket has taken all of it, then frees it.
    fn poll_flush_outgoing(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let tls = &mut self.tls;
        while tls.outgoing_pos < tls.outgoing.len() {
            let written =
                ready!(Pin::new(&mut self.io).poll_write(cx, &tls.outgoing[tls.outgoing_pos..]))?;
            if written == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            tls.outgoing_pos += written;
        }
        tls.outgoing = Vec::new();
        tls.outgoing_pos = 0;
        Poll::Ready(Ok(()))
    }

    /// Encrypts `data` (at most [`WRITE_SIZE`], after `outgoing` was flushed) and
    /// starts sending it.
    fn send(&mut self, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        if self.tls.write_closed || self.tls.read_end == ReadEnd::Failed {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "TLS connection closed or failed",
            )));
        }
        if data.is_empty() {
            return Poll::Ready(Ok(0));
        }
        self.process_pending(Outbound::Data(data))?;
        // The data is ours now: a socket that takes none of it yet is no reason to
        // refuse it; the next write or flush waits for it instead.
        if let Poll::Ready(Err(e)) = self.poll_flush_outgoing(cx) {
            return Poll::Ready(Err(e));
        }
        Poll::Ready(Ok(data.len()))
    }
}

impl Tls {
    /// Feeds `incoming` to rustls until it needs more input. Handshake messages and
    /// alerts are appended to `outgoing`, application data goes to `dst` and what
    /// does not fit to `plaintext`, and `send` is encrypted into `outgoing` once
    /// rustls can take it.
    fn process(
        &mut self,
        incoming: &mut [u8],
        mut dst: Option<&mut ReadBuf<'_>>,
        send: Outbound<'_>,
    ) -> io::Result<Processed> {
        let mut done = 0;
        let mut progressed = false;
        loop {
            let status = self.conn.process_tls_records(&mut incoming[done..]);
            let mut discard = status.discard;
            let state = match status.state {
                Ok(state) => state,
                Err(e) => {
                    self.take_alert(&mut incoming[done..]);
                    return Err(io::Error::new(io::ErrorKind::InvalidData, e));
                }
            };
            let finished = match state {
                ConnectionState::BlockedHandshake | ConnectionState::Closed => {
                    if !matches!(send, Outbound::Nothing) {
                        return Err(io::ErrorKind::NotConnected.into());
                    }
                    true
                }
                ConnectionState::WriteTraffic(mut traffic) => {
                    match send {
                        Outbound::Nothing => {}
                        Outbound::Data(data) => {
                            append(&mut self.outgoing, |out| traffic.encrypt(data, out))?
                        }
                        Outbound::CloseNotify => {
                            append(&mut self.outgoing, |out| traffic.queue_close_notify(out))?
                        }
                    }
                    true
                }
                ConnectionState::ReadTraffic(mut records) => {
                    while let Some(record) = records.next_record() {
                        let record =
                            record.map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
                        discard += record.discard;
                        deliver(record.payload, &mut dst, &mut self.plaintext);
                    }
                    false
                }
                ConnectionState::EncodeTlsData(mut data) => {
                    append(&mut self.outgoing, |out| data.encode(out))?;
                    false
                }
                // `outgoing` holds it until the socket takes it.
                ConnectionState::TransmitTlsData(data) => {
                    data.done();
                    false
                }
                ConnectionState::PeerClosed => {
                    self.read_end = ReadEnd::CloseNotify;
                    false
                }
                // Early data is off (rustls' default), so nothing else comes.
                other => {
                    return Err(io::Error::other(format!("unexpected TLS state {other:?}")));
                }
            };
            done += discard;
            // Any other state means rustls took a record or has output; a record
            // may be taken but not yet done with (part of a handshake message).
            progressed |= !finished || discard > 0;
            if finished {
                break;
            }
        }
        // rustls ignores anything after close_notify, and so do we.
        if self.read_end == ReadEnd::CloseNotify {
            done = incoming.len();
        }
        Ok(Processed { done, progressed })
    }

    /// After an error rustls has queued an alert for the peer: moves it to
    /// `outgoing`. rustls hands out queued records before it parses input, so
    /// one call with the failed call's input returns the alert; a second would
    /// parse the bad input again.
    fn take_alert(&mut self, incoming: &mut [u8]) {
        if let Ok(ConnectionState::EncodeTlsData(mut data)) =
            self.conn.process_tls_records(incoming).state
        {
            let _ = append(&mut self.outgoing, |out| data.encode(out));
        }
    }

    /// Moves plaintext the reader has not taken yet into `buf`; false if there is
    /// none.
    fn take_plaintext(&mut self, buf: &mut ReadBuf<'_>) -> bool {
        if self.plaintext.is_empty() {
            return false;
        }
        let rest = &self.plaintext[self.plaintext_pos..];
        let n = rest.len().min(buf.remaining());
        buf.put_slice(&rest[..n]);
        self.plaintext_pos += n;
        if self.plaintext_pos == self.plaintext.len() {
            self.plaintext = Vec::new();
            self.plaintext_pos = 0;
        }
        true
    }
}

/// Hands a record's plaintext to the reader's buffer, keeping what does not fit.
fn deliver(payload: &[u8], dst: &mut Option<&mut ReadBuf<'_>>, rest: &mut Vec<u8>) {
    let n = dst
        .as_ref()
        .map_or(0, |dst| dst.remaining().min(payload.len()));
    if let Some(dst) = dst {
        dst.put_slice(&payload[..n]);
    }
    rest.extend_from_slice(&payload[n..]);
}

/// An error rustls returns when its output buffer is too small, with the size
/// it needs.
trait TooSmall: std::error::Error + Send + Sync + 'static {
    fn required_size(&self) -> Option<usize>;
}

impl TooSmall for EncodeError {
    fn required_size(&self) -> Option<usize> {
        match self {
            EncodeError::InsufficientSize(size) => Some(size.required_size),
            _ => None,
        }
    }
}

impl TooSmall for EncryptError {
    fn required_size(&self) -> Option<usize> {
        match self {
            EncryptError::InsufficientSize(size) => Some(size.required_size),
            _ => None,
        }
    }
}

/// Appends rustls' output to `out`. rustls writes nothing into a buffer that is
/// too small and says what it needs, so a first call with no room sizes the
/// allocation exactly.
fn append<E: TooSmall>(
    out: &mut Vec<u8>,
    mut write: impl FnMut(&mut [u8]) -> Result<usize, E>,
) -> io::Result<()> {
    let needed = match write(&mut []) {
        Ok(_) => return Ok(()),
        Err(e) => e.required_size().ok_or_else(|| io::Error::other(e))?,
    };
    let start = out.len();
    out.resize(start + needed, 0);
    let written = write(&mut out[start..]).map_err(io::Error::other)?;
    out.truncate(start + written);
    Ok(())
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for TlsStream<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.tls.take_plaintext(buf) || buf.remaining() == 0 {
                return Poll::Ready(Ok(()));
            }
            match this.tls.read_end {
                ReadEnd::Open => {}
                ReadEnd::CloseNotify => return Poll::Ready(Ok(())),
                ReadEnd::Truncated => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "peer closed connection without sending TLS close_notify",
                    )));
                }
                ReadEnd::Failed => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "TLS connection failed",
                    )));
                }
            }
            let before = buf.filled().len();
            ready!(this.poll_receive(cx, Some(buf)))?;
            if buf.filled().len() > before {
                return Poll::Ready(Ok(()));
            }
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for TlsStream<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        // Backpressure: at most one write's ciphertext waits for the socket.
        ready!(this.poll_flush_outgoing(cx))?;
        this.send(cx, &data[..data.len().min(WRITE_SIZE)])
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_flush_outgoing(cx))?;
        let mut slices = bufs.iter().filter(|b| !b.is_empty());
        let Some(first) = slices.next() else {
            return Poll::Ready(Ok(0));
        };
        if first.len() >= WRITE_SIZE || slices.next().is_none() {
            return this.send(cx, &first[..first.len().min(WRITE_SIZE)]);
        }
        let mut gather = GATHER.take();
        gather.clear();
        for buf in bufs {
            let take = buf.len().min(WRITE_SIZE - gather.len());
            gather.extend_from_slice(&buf[..take]);
        }
        let result = this.send(cx, &gather);
        GATHER.set(gather);
        result
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_flush_outgoing(cx))?;
        Pin::new(&mut this.io).poll_flush(cx)
    }

    /// Sends close_notify, then shuts the socket's sending side.
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.tls.write_closed {
            let queued = this.process_pending(Outbound::CloseNotify);
            this.tls.write_closed = true;
            queued?;
        }
        ready!(this.poll_flush_outgoing(cx))?;
        Pin::new(&mut this.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    use bytes::Buf;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
    use rustls::{ClientConfig, SupportedProtocolVersion};
    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream, duplex};
    use tokio::net::{TcpListener, TcpStream};
    use tokio_rustls::TlsConnector;
    use tokio_rustls::client::TlsStream as ClientStream;

    const TLS12: &[&SupportedProtocolVersion] = &[&rustls::version::TLS12];
    const TLS13: &[&SupportedProtocolVersion] = &[&rustls::version::TLS13];

    fn provider() -> Arc<rustls::crypto::CryptoProvider> {
        Arc::new(rustls::crypto::aws_lc_rs::default_provider())
    }

    /// A server and a client configuration for a fresh self-signed certificate;
    /// the client offers `alpn` and only `versions`.
    fn configs(
        versions: &[&'static SupportedProtocolVersion],
        alpn: &[&[u8]],
    ) -> (Arc<ServerConfig>, TlsConnector) {
        let certified = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let cert = CertificateDer::from(certified.cert.der().to_vec());
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
            certified.signing_key.serialize_der(),
        ));
        let mut server = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert.clone()], key)
            .unwrap();
        server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let mut roots = rustls::RootCertStore::empty();
        roots.add(cert).unwrap();
        let mut client = ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(versions)
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        client.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        (Arc::new(server), TlsConnector::from(Arc::new(client)))
    }

    /// A handshaken pair over an in-memory pipe holding at most `pipe` bytes each
    /// way (small pipes split records across reads and block writes).
    async fn pair(
        versions: &[&'static SupportedProtocolVersion],
        pipe: usize,
    ) -> (Box<TlsStream<DuplexStream>>, ClientStream<DuplexStream>) {
        let (mut server_config, connector) = configs(versions, &[b"http/1.1"]);
        if pipe < 1024 {
            // The handshake ends with the server sending TLS 1.3 session tickets,
            // which the client reads only when it reads data: they must fit in
            // the pipe.
            Arc::get_mut(&mut server_config).unwrap().send_tls13_tickets = 0;
        }
        let (server_io, client_io) = duplex(pipe);
        let server = tokio::spawn(accept(server_io, server_config));
        let name = "localhost".try_into().unwrap();
        let client = connector.connect(name, client_io).await.unwrap();
        (server.await.unwrap().unwrap(), client)
    }

    fn pattern(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect()
    }

    /// What an idle connection holds besides rustls' own state: nothing.
    fn assert_no_buffers<S>(stream: &TlsStream<S>) {
        assert_eq!(stream.incoming.capacity(), 0, "incoming ciphertext");
        assert_eq!(stream.tls.plaintext.capacity(), 0, "unread plaintext");
        assert_eq!(stream.tls.outgoing.capacity(), 0, "unsent ciphertext");
    }

    async fn large_transfers_both_ways(versions: &[&'static SupportedProtocolVersion]) {
        let (server, client) = pair(versions, 4096).await;
        let up = pattern(3 << 20, 1);
        let down = pattern(3 << 20, 2);
        let (mut server_read, mut server_write) = tokio::io::split(server);
        let (mut client_read, mut client_write) = tokio::io::split(client);
        let (received_up, received_down, (), ()) = tokio::join!(
            async {
                let mut got = Vec::new();
                server_read.read_to_end(&mut got).await.unwrap();
                got
            },
            async {
                let mut got = Vec::new();
                client_read.read_to_end(&mut got).await.unwrap();
                got
            },
            async {
                server_write.write_all(&down).await.unwrap();
                server_write.shutdown().await.unwrap();
            },
            async {
                client_write.write_all(&up).await.unwrap();
                client_write.shutdown().await.unwrap();
            },
        );
        assert!(received_up == up, "client → server data differs");
        assert!(received_down == down, "server → client data differs");
        let server = server_read.unsplit(server_write);
        assert_no_buffers(&server);
    }

    #[tokio::test]
    async fn large_transfers_both_ways_tls13() {
        large_transfers_both_ways(TLS13).await;
    }

    #[tokio::test]
    async fn large_transfers_both_ways_tls12() {
        large_transfers_both_ways(TLS12).await;
    }

    #[tokio::test]
    async fn one_byte_at_a_time() {
        // A pipe of one byte: every record arrives in pieces, the handshake too.
        for versions in [TLS12, TLS13] {
            let (mut server, mut client) = pair(versions, 1).await;
            let up = pattern(20_000, 3);
            let writer = tokio::spawn(async move {
                client.write_all(&up).await.unwrap();
                client.flush().await.unwrap();
                client
            });
            let mut got = vec![0; 20_000];
            server.read_exact(&mut got).await.unwrap();
            assert_eq!(got, pattern(20_000, 3));
            let mut client = writer.await.unwrap();
            let mut done = [0; 4];
            let (written, read) = tokio::join!(
                async {
                    server.write_all(b"done").await?;
                    server.flush().await
                },
                client.read_exact(&mut done),
            );
            written.unwrap();
            read.unwrap();
            assert_eq!(&done, b"done");
            assert_no_buffers(&server);
        }
    }

    #[tokio::test]
    async fn tiny_reads_keep_the_rest() {
        let (mut server, mut client) = pair(TLS13, 64 * 1024).await;
        let up = pattern(50_000, 4);
        client.write_all(&up).await.unwrap();
        client.flush().await.unwrap();
        let mut got = Vec::new();
        let mut byte = [0; 1];
        while got.len() < up.len() {
            let n = server.read(&mut byte).await.unwrap();
            assert_eq!(n, 1);
            got.push(byte[0]);
        }
        assert_eq!(got, up);
        assert_no_buffers(&server);
    }

    #[tokio::test]
    async fn many_small_writes_and_vectored_writes() {
        let (server, mut client) = pair(TLS13, 8 * 1024).await;
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            client.read_to_end(&mut got).await.unwrap();
            got
        });
        let mut server = server;
        let mut expected = Vec::new();
        for i in 0..5_000u32 {
            let line = format!("event {i}\n");
            server.write_all(line.as_bytes()).await.unwrap();
            expected.extend_from_slice(line.as_bytes());
        }
        for i in 0..1_000u32 {
            // A small header and a body, as a WebSocket frame is written.
            let body = pattern(i as usize * 7 % 300, i as u8);
            let header = (body.len() as u16).to_be_bytes();
            let mut chain = Buf::chain(&header[..], &body[..]);
            server.write_all_buf(&mut chain).await.unwrap();
            expected.extend_from_slice(&header);
            expected.extend_from_slice(&body);
        }
        server.shutdown().await.unwrap();
        assert!(reader.await.unwrap() == expected, "data differs");
        assert_no_buffers(&server);
    }

    #[tokio::test]
    async fn many_records_in_one_read() {
        let (mut server, mut client) = pair(TLS13, 1 << 20).await;
        for i in 0..200u8 {
            client.write_all(&[i; 10]).await.unwrap();
        }
        client.flush().await.unwrap();
        // All 200 records sit in the pipe: one socket read takes many of them.
        let mut got = vec![0; 2000];
        server.read_exact(&mut got).await.unwrap();
        let expected: Vec<u8> = (0..200u8).flat_map(|i| [i; 10]).collect();
        assert_eq!(got, expected);
        assert_no_buffers(&server);
    }

    #[tokio::test]
    async fn close_notify_both_ways() {
        for versions in [TLS12, TLS13] {
            let (mut server, mut client) = pair(versions, 4096).await;
            server.write_all(b"bye").await.unwrap();
            server.shutdown().await.unwrap();
            // tokio-rustls reports an end without close_notify as an error.
            let mut got = Vec::new();
            client.read_to_end(&mut got).await.unwrap();
            assert_eq!(got, b"bye");
            assert!(server.write_all(b"more").await.is_err());
            client.write_all(b"last").await.unwrap();
            client.shutdown().await.unwrap();
            let mut got = Vec::new();
            server.read_to_end(&mut got).await.unwrap();
            assert_eq!(got, b"last");
            assert_eq!(server.read(&mut [0; 8]).await.unwrap(), 0);
        }
    }

    #[tokio::test]
    async fn end_without_close_notify_is_unexpected_eof() {
        let (mut server, client) = pair(TLS13, 4096).await;
        drop(client.into_inner().0);
        let error = server.read(&mut [0; 8]).await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::UnexpectedEof);
    }

    #[tokio::test]
    async fn key_updates() {
        // A pipe that holds each round whole: one task writes, then reads.
        let (mut server, mut client) = pair(TLS13, 1 << 20).await;
        for round in 0..5u8 {
            client.get_mut().1.refresh_traffic_keys().unwrap();
            let up = pattern(40_000, round);
            client.write_all(&up).await.unwrap();
            client.flush().await.unwrap();
            let mut got = vec![0; up.len()];
            server.read_exact(&mut got).await.unwrap();
            assert_eq!(got, up);
            // The server answers the update with its own before its next data.
            server.write_all(&up).await.unwrap();
            server.flush().await.unwrap();
            client.read_exact(&mut got).await.unwrap();
            assert_eq!(got, up);
        }
    }

    #[tokio::test]
    async fn write_backpressure_keeps_the_data() {
        let (mut server, mut client) = pair(TLS13, 4096).await;
        let down = pattern(1 << 20, 5);
        let expected = down.clone();
        let writer = tokio::spawn(async move {
            server.write_all(&down).await.unwrap();
            server.flush().await.unwrap();
            server
        });
        // The client reads nothing yet: the writer must wait, not spin or drop.
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!writer.is_finished());
        let mut got = vec![0; expected.len()];
        client.read_exact(&mut got).await.unwrap();
        assert!(got == expected, "data differs");
        let server = writer.await.unwrap();
        assert_no_buffers(&server);
    }

    #[tokio::test]
    async fn alpn() {
        for (offered, agreed) in [
            (&[&b"h2"[..], b"http/1.1"][..], Some(&b"h2"[..])),
            (&[&b"http/1.1"[..]][..], Some(&b"http/1.1"[..])),
            (&[][..], None),
        ] {
            let (server_config, connector) = configs(TLS13, offered);
            let (server_io, client_io) = duplex(4096);
            let server = tokio::spawn(accept(server_io, server_config));
            let _client = connector
                .connect("localhost".try_into().unwrap(), client_io)
                .await
                .unwrap();
            let server = server.await.unwrap().unwrap();
            assert_eq!(server.alpn_protocol(), agreed);
        }
    }

    #[tokio::test]
    async fn handshake_errors() {
        let (server_config, _) = configs(TLS13, &[]);
        // Not TLS at all: refused with an error (and an alert), not a hang.
        let (server_io, mut client_io) = duplex(4096);
        let server = tokio::spawn(accept(server_io, server_config.clone()));
        client_io
            .write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        assert!(server.await.unwrap().is_err());
        // The client goes away mid-handshake.
        let (server_io, client_io) = duplex(4096);
        let server = tokio::spawn(accept(server_io, server_config));
        drop(client_io);
        let error = server.await.unwrap().err().unwrap();
        assert_eq!(error.kind(), io::ErrorKind::UnexpectedEof);
    }

    #[tokio::test]
    async fn over_tcp() {
        let (server_config, connector) = configs(TLS13, &[b"http/1.1"]);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (socket, _) = listener.accept().await.unwrap();
            let mut stream = accept(socket, server_config).await.unwrap();
            // Echo until the client closes.
            let mut buf = vec![0; 5000];
            loop {
                let n = stream.read(&mut buf).await.unwrap();
                if n == 0 {
                    break;
                }
                stream.write_all(&buf[..n]).await.unwrap();
            }
            stream.shutdown().await.unwrap();
            assert_no_buffers(&stream);
        });
        let socket = TcpStream::connect(addr).await.unwrap();
        let client = connector
            .connect("localhost".try_into().unwrap(), socket)
            .await
            .unwrap();
        let (mut read, mut write) = tokio::io::split(client);
        let up = pattern(2 << 20, 6);
        let (got, ()) = tokio::join!(
            async {
                let mut got = Vec::new();
                read.read_to_end(&mut got).await.unwrap();
                got
            },
            async {
                write.write_all(&up).await.unwrap();
                write.shutdown().await.unwrap();
            }
        );
        assert!(got == up, "echo differs");
        server.await.unwrap();
    }
}
