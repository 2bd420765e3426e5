//! Opening a byte stream to a server: TCP from a chosen source address, then TLS
//! when the endpoint speaks it, with the HTTP version agreed by ALPN.

use std::net::{IpAddr, SocketAddr};

use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpSocket;
use tokio_rustls::TlsConnector;

use crate::target::{Endpoint, HttpVersion};

/// A byte stream: a TCP socket, TLS over one, or an HTTP/2 stream.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// Opens streams to one endpoint.
pub struct Dialer {
    endpoint: Endpoint,
    tls: Option<(TlsConnector, ServerName<'static>)>,
    /// The ALPN protocol a TLS handshake must agree on.
    alpn: &'static [u8],
}

impl Dialer {
    /// A dialer for `endpoint` (with its TLS configuration, if it speaks TLS) whose
    /// streams carry `http`. Over TLS the server must agree to it by ALPN; in
    /// cleartext HTTP/2 is spoken with prior knowledge (h2c).
    pub fn new(endpoint: Endpoint, http: HttpVersion) -> Result<Dialer, String> {
        let alpn: &[u8] = match http {
            HttpVersion::Http1 => b"http/1.1",
            HttpVersion::Http2 => b"h2",
        };
        let tls = if endpoint.tls {
            let config = crate::tls::client_config(alpn).map_err(|e| format!("TLS: {e}"))?;
            let name = ServerName::try_from(endpoint.host.clone())
                .map_err(|e| format!("{}: not a TLS server name: {e}", endpoint.host))?;
            Some((TlsConnector::from(config), name))
        } else {
            None
        };
        Ok(Dialer {
            endpoint,
            tls,
            alpn,
        })
    }

    /// A stream from `source` (the kernel chooses when `None`), with TLS if the
    /// endpoint speaks it; Nagle is off, as for any latency-sensitive client.
    pub async fn dial(&self, source: Option<IpAddr>) -> Result<Box<dyn Io>, String> {
        let addr = self.endpoint.addr;
        let socket = if addr.is_ipv4() {
            TcpSocket::new_v4()
        } else {
            TcpSocket::new_v6()
        }
        .map_err(|e| format!("socket: {e}"))?;
        if let Some(ip) = source {
            socket
                .bind(SocketAddr::new(ip, 0))
                .map_err(|e| format!("bind {ip}: {e}"))?;
        }
        let tcp = socket
            .connect(addr)
            .await
            .map_err(|e| format!("connect {addr}: {e}"))?;
        tcp.set_nodelay(true)
            .map_err(|e| format!("TCP_NODELAY: {e}"))?;
        let Some((connector, name)) = &self.tls else {
            return Ok(Box::new(tcp));
        };
        let tls = connector
            .connect(name.clone(), tcp)
            .await
            .map_err(|e| format!("TLS handshake: {e}"))?;
        // A server without ALPN speaks HTTP/1.1; HTTP/2 needs its explicit `h2`.
        let agreed = tls.get_ref().1.alpn_protocol();
        if self.alpn == b"h2" && agreed != Some(self.alpn) {
            return Err(format!(
                "TLS: the server did not agree to h2 by ALPN (it chose {:?})",
                agreed.map(String::from_utf8_lossy)
            ));
        }
        Ok(Box::new(tls))
    }
}
