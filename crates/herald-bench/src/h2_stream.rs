//! One HTTP/2 stream as a byte stream: the response's DATA frames in, the request's
//! DATA frames out. The clients' SSE and WebSocket code reads and writes it like a
//! socket, whatever HTTP version carries it.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes};
use h2::{RecvStream, SendStream};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// An open HTTP/2 stream.
pub struct H2Stream {
    recv: RecvStream,
    /// `None` once the request has ended its side (an SSE `GET`).
    send: Option<SendStream<Bytes>>,
    /// What the reader has not taken of the last DATA frame.
    data: Bytes,
}

impl H2Stream {
    /// The stream of a response `recv`; `send` carries the request's body, if it
    /// has one.
    pub fn new(recv: RecvStream, send: Option<SendStream<Bytes>>) -> H2Stream {
        H2Stream {
            recv,
            send,
            data: Bytes::new(),
        }
    }
}

impl AsyncRead for H2Stream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        // An empty DATA frame must not look like the end of the stream.
        while self.data.is_empty() {
            match ready!(self.recv.poll_data(cx)) {
                Some(Ok(data)) => self.data = data,
                Some(Err(e)) => return Poll::Ready(Err(io::Error::other(e))),
                None => return Poll::Ready(Ok(())),
            }
        }
        let n = self.data.len().min(buf.remaining());
        buf.put_slice(&self.data[..n]);
        self.data.advance(n);
        // The window reopens only as the reader takes bytes, so a stream held
        // unread (idle) buffers at most one window.
        self.recv
            .flow_control()
            .release_capacity(n)
            .map_err(io::Error::other)?;
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for H2Stream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let Some(send) = self.send.as_mut() else {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        };
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        send.reserve_capacity(buf.len());
        let mut capacity = send.capacity();
        while capacity == 0 {
            capacity = match ready!(send.poll_capacity(cx)) {
                Some(Ok(n)) => n,
                Some(Err(e)) => return Poll::Ready(Err(io::Error::other(e))),
                None => return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into())),
            };
        }
        let n = capacity.min(buf.len());
        send.send_data(Bytes::copy_from_slice(&buf[..n]), false)
            .map_err(io::Error::other)?;
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        // The connection's task writes queued DATA frames by itself.
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        if let Some(mut send) = self.send.take() {
            send.send_data(Bytes::new(), true)
                .map_err(io::Error::other)?;
        }
        Poll::Ready(Ok(()))
    }
}
