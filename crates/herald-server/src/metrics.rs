//! Prometheus metrics, served at `/metrics`.

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Transport of a client connection.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub enum Transport {
    /// Server-Sent Events (`/events`).
    Sse,
    /// WebSocket with the Centrifuge protocol (`/connection/websocket`).
    WebSocket,
    /// HTTP streaming with bidirectional emulation (`/connection/http_stream`).
    HttpStream,
    /// SSE with bidirectional emulation (`/connection/sse`).
    SseEmulation,
    /// Unidirectional WebSocket (`/connection/uni_websocket`).
    UniWebSocket,
    /// Unidirectional SSE (`/connection/uni_sse`).
    UniSse,
    /// Unidirectional HTTP streaming (`/connection/uni_http_stream`).
    UniHttpStream,
}

impl Transport {
    /// Every transport.
    const ALL: [Transport; 7] = [
        Transport::Sse,
        Transport::WebSocket,
        Transport::HttpStream,
        Transport::SseEmulation,
        Transport::UniWebSocket,
        Transport::UniSse,
        Transport::UniHttpStream,
    ];
}

impl EncodeLabelValue for Transport {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> std::fmt::Result {
        use std::fmt::Write as _;
        encoder.write_str(match self {
            Transport::Sse => "sse",
            Transport::WebSocket => "websocket",
            Transport::HttpStream => "http_stream",
            Transport::SseEmulation => "sse_emulation",
            Transport::UniWebSocket => "uni_websocket",
            Transport::UniSse => "uni_sse",
            Transport::UniHttpStream => "uni_http_stream",
        })
    }
}

/// HTTP version a connection arrived on.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub enum HttpVersion {
    /// HTTP/1.1, plain or TLS.
    Http1,
    /// HTTP/2, h2c or TLS.
    Http2,
}

impl EncodeLabelValue for HttpVersion {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> std::fmt::Result {
        use std::fmt::Write as _;
        encoder.write_str(match self {
            HttpVersion::Http1 => "1.1",
            HttpVersion::Http2 => "2",
        })
    }
}

/// Labels of connection metrics.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConnectionLabels {
    /// The transport.
    pub transport: Transport,
    /// The HTTP version.
    pub http_version: HttpVersion,
}

/// Labels of disconnect metrics.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    /// Why the server ended the connection (`slow`, `shutdown`, `disconnect`,
    /// `write_timeout`, `client_closed`).
    pub reason: &'static str,
}

/// Labels of per-transport byte counters.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TransportLabels {
    /// The transport.
    pub transport: Transport,
}

/// Labels of server API requests.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ApiLabels {
    /// The API method, or `unknown`.
    pub method: String,
    /// `ok` or the error code.
    pub result: String,
}

/// Every metric Herald exports.
pub struct Metrics {
    registry: Registry,
    /// Open client connections.
    connections: Family<ConnectionLabels, Gauge>,
    /// Client connections accepted since start.
    connections_total: Family<ConnectionLabels, Counter>,
    /// Publications accepted (server API and clients).
    pub publications: Counter,
    /// Publications written to client connections.
    pub deliveries: Counter,
    /// Connections ended by the server, by reason.
    pub disconnects: Family<ReasonLabels, Counter>,
    /// Bytes written to clients, by transport.
    bytes_written: Family<TransportLabels, Counter>,
    /// Writes to clients (each one batch of frames), by transport: deliveries per
    /// write is how well `write_coalesce` batches.
    writes: Family<TransportLabels, Counter>,
    /// Server API requests.
    pub api_requests: Family<ApiLabels, Counter>,
    /// The series of each transport and HTTP version, looked up once: counting a
    /// write then takes no lock and hashes nothing.
    series: Vec<ConnectionSeries>,
}

/// The metrics of the connections of one transport over one HTTP version.
struct ConnectionSeries {
    open: Gauge,
    accepted: Counter,
    writes: Counter,
    bytes_written: Counter,
}

/// Where a transport's and HTTP version's series are in `Metrics::series`.
fn series_index(transport: Transport, http_version: HttpVersion) -> usize {
    transport as usize * 2 + http_version as usize
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("herald");
        let metrics = Metrics {
            connections: Family::default(),
            connections_total: Family::default(),
            publications: Counter::default(),
            deliveries: Counter::default(),
            disconnects: Family::default(),
            bytes_written: Family::default(),
            writes: Family::default(),
            api_requests: Family::default(),
            registry: Registry::default(),
            series: Vec::new(),
        };
        registry.register(
            "connections",
            "Open client connections",
            metrics.connections.clone(),
        );
        registry.register(
            "connections_accepted",
            "Client connections accepted since start",
            metrics.connections_total.clone(),
        );
        registry.register(
            "publications",
            "Publications accepted",
            metrics.publications.clone(),
        );
        registry.register(
            "deliveries",
            "Publications written to client connections",
            metrics.deliveries.clone(),
        );
        registry.register(
            "disconnects",
            "Client connections ended by the server, by reason",
            metrics.disconnects.clone(),
        );
        registry.register(
            "bytes_written",
            "Bytes written to clients",
            metrics.bytes_written.clone(),
        );
        registry.register(
            "writes",
            "Writes to clients, each one batch of frames",
            metrics.writes.clone(),
        );
        registry.register(
            "api_requests",
            "Server API requests",
            metrics.api_requests.clone(),
        );
        let series = Transport::ALL
            .into_iter()
            .flat_map(|transport| {
                [HttpVersion::Http1, HttpVersion::Http2].map(|http_version| {
                    let labels = ConnectionLabels {
                        transport,
                        http_version,
                    };
                    let by_transport = TransportLabels { transport };
                    ConnectionSeries {
                        open: metrics.connections.get_or_create(&labels).clone(),
                        accepted: metrics.connections_total.get_or_create(&labels).clone(),
                        writes: metrics.writes.get_or_create(&by_transport).clone(),
                        bytes_written: metrics.bytes_written.get_or_create(&by_transport).clone(),
                    }
                })
            })
            .collect();
        Metrics {
            registry,
            series,
            ..metrics
        }
    }
}

impl Metrics {
    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }

    /// Open client connections, over every transport and HTTP version.
    pub fn open_connections(&self) -> i64 {
        self.series.iter().map(|series| series.open.get()).sum()
    }

    /// Counts a connection of `transport` over `http_version` opening.
    pub fn connection_opened(&self, transport: Transport, http_version: HttpVersion) {
        let series = &self.series[series_index(transport, http_version)];
        series.open.inc();
        series.accepted.inc();
    }

    /// Counts a connection of `transport` over `http_version` closing.
    pub fn connection_closed(&self, transport: Transport, http_version: HttpVersion) {
        self.series[series_index(transport, http_version)]
            .open
            .dec();
    }

    /// Counts a server-side disconnect.
    pub fn disconnected(&self, reason: &'static str) {
        self.disconnects
            .get_or_create(&ReasonLabels { reason })
            .inc();
    }

    /// Counts one write of `bytes` to a client of `transport`.
    pub fn wrote(&self, transport: Transport, bytes: usize) {
        // Both HTTP versions share the transport's write counters.
        let series = &self.series[series_index(transport, HttpVersion::Http1)];
        series.writes.inc();
        series.bytes_written.inc_by(bytes as u64);
    }
}
