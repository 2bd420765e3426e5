//! Opening a byte stream to a server: TCP from a chosen source address, then TLS
//! when the endpoint speaks it.

use std::net::{IpAddr, SocketAddr};

use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpSocket;
use tokio_rustls::TlsConnector;

use crate::target::Endpoint;

/// A byte stream: a TCP socket, or TLS over one.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// Opens streams to one endpoint.
pub struct Dialer {
    endpoint: Endpoint,
    tls: Option<(TlsConnector, ServerName<'static>)>,
}

impl Dialer {
    /// A dialer for `endpoint` (with its TLS configuration, if it speaks TLS).
    pub fn new(endpoint: Endpoint) -> Result<Dialer, String> {
        let tls = if endpoint.tls {
            let config = crate::tls::client_config().map_err(|e| format!("TLS: {e}"))?;
            let name = ServerName::try_from(endpoint.host.clone())
                .map_err(|e| format!("{}: not a TLS server name: {e}", endpoint.host))?;
            Some((TlsConnector::from(config), name))
        } else {
            None
        };
        Ok(Dialer { endpoint, tls })
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
        Ok(match &self.tls {
            Some((connector, name)) => Box::new(
                connector
                    .connect(name.clone(), tcp)
                    .await
                    .map_err(|e| format!("TLS handshake: {e}"))?,
            ),
            None => Box::new(tcp),
        })
    }
}
