use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// The data of a publication: JSON, or opaque bytes.
///
/// JSON payloads are validated once on entry and kept as their bytes with every raw
/// line break turned into a space (outside strings a line break is only whitespace, and
/// inside strings JSON forbids it), so they embed unchanged into one SSE `data:` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Payload {
    /// A valid JSON value, without raw line breaks.
    Json(Bytes),
    /// Arbitrary bytes; sent as base64 in the `b64data` field on text transports.
    Binary(Bytes),
}

/// Why a payload was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PayloadError {
    /// `data` is not valid JSON.
    #[error("data is not valid JSON: {0}")]
    InvalidJson(String),
    /// `b64data` is not valid base64.
    #[error("b64data is not valid base64")]
    InvalidBase64,
}

impl Payload {
    /// Validates `raw` as one JSON value and keeps it as a single line.
    pub fn json(raw: &[u8]) -> Result<Self, PayloadError> {
        serde_json::from_slice::<serde::de::IgnoredAny>(raw)
            .map_err(|e| PayloadError::InvalidJson(e.to_string()))?;
        let trimmed = raw.trim_ascii();
        if trimmed.iter().any(|b| *b == b'\n' || *b == b'\r') {
            let single_line: Vec<u8> = trimmed
                .iter()
                .map(|b| if *b == b'\n' || *b == b'\r' { b' ' } else { *b })
                .collect();
            Ok(Payload::Json(Bytes::from(single_line)))
        } else {
            Ok(Payload::Json(Bytes::copy_from_slice(trimmed)))
        }
    }

    /// Decodes base64 (standard alphabet, padded) into a binary payload.
    pub fn from_base64(encoded: &str) -> Result<Self, PayloadError> {
        BASE64
            .decode(encoded)
            .map(|bytes| Payload::Binary(Bytes::from(bytes)))
            .map_err(|_| PayloadError::InvalidBase64)
    }

    /// Size of the payload as stored, in bytes.
    pub fn len(&self) -> usize {
        match self {
            Payload::Json(b) | Payload::Binary(b) => b.len(),
        }
    }

    /// Whether the payload has no bytes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The base64 text of a binary payload (`None` for JSON).
    pub fn to_base64(&self) -> Option<String> {
        match self {
            Payload::Json(_) => None,
            Payload::Binary(bytes) => Some(BASE64.encode(bytes)),
        }
    }

    /// Appends `"data":<json>` or `"b64data":"<base64>"` to a JSON object being written.
    pub fn write_json_field(&self, out: &mut Vec<u8>) {
        match self {
            Payload::Json(json) => {
                out.extend_from_slice(b"\"data\":");
                out.extend_from_slice(json);
            }
            Payload::Binary(bytes) => {
                out.extend_from_slice(b"\"b64data\":\"");
                let start = out.len();
                out.resize(
                    start + base64::encoded_len(bytes.len(), true).unwrap_or(0),
                    0,
                );
                let written = BASE64
                    .encode_slice(bytes, &mut out[start..])
                    .expect("buffer sized by encoded_len");
                out.truncate(start + written);
                out.push(b'"');
            }
        }
    }
}

/// A position in a channel's stream: the epoch names one continuous history, the
/// offset counts publications inside it (the first publication has offset 1).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
pub struct StreamPosition {
    /// Offset of the latest publication seen.
    pub offset: u64,
    /// Identifier of the history the offset belongs to.
    pub epoch: String,
}

/// One message published to a channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publication {
    /// Position of the publication inside its channel's epoch.
    pub offset: u64,
    /// What was published.
    pub data: Payload,
    /// The publishing client, when a client (not the server API) published.
    pub info: Option<std::sync::Arc<ClientInfo>>,
}

/// Who a client is, as presence, join/leave and client publications report it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientInfo {
    /// The connection's unique id.
    pub client: std::sync::Arc<str>,
    /// The user id (`sub` of the token; empty for anonymous).
    pub user: std::sync::Arc<str>,
    /// Connection info from the connection token (raw JSON).
    pub conn_info: Option<Bytes>,
    /// Channel info from the subscription token (raw JSON).
    pub chan_info: Option<Bytes>,
}

impl Publication {
    /// Encodes `{"channel":…,"offset":…,"epoch":…,"data":…}`, the JSON object that SSE
    /// events carry.
    pub fn to_json(&self, channel: &str, epoch: &str) -> Vec<u8> {
        let mut out = Vec::with_capacity(48 + channel.len() + epoch.len() + self.data.len());
        out.extend_from_slice(b"{\"channel\":");
        write_json_string(&mut out, channel);
        out.extend_from_slice(b",\"offset\":");
        out.extend_from_slice(self.offset.to_string().as_bytes());
        out.extend_from_slice(b",\"epoch\":");
        write_json_string(&mut out, epoch);
        out.push(b',');
        self.data.write_json_field(&mut out);
        out.push(b'}');
        out
    }
}

/// Appends `s` as a JSON string literal.
pub(crate) fn write_json_string(out: &mut Vec<u8>, s: &str) {
    serde_json::to_writer(out, s).expect("writing a string to a Vec cannot fail");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_payload_is_validated_and_kept_on_one_line() {
        let p = Payload::json(b" {\n  \"a\": \"x\\ny\"\r\n}\n").unwrap();
        assert_eq!(
            p,
            Payload::Json(Bytes::from_static(b"{   \"a\": \"x\\ny\"  }"))
        );
        assert!(matches!(
            Payload::json(b"{\"a\":"),
            Err(PayloadError::InvalidJson(_))
        ));
        assert!(matches!(
            Payload::json(b""),
            Err(PayloadError::InvalidJson(_))
        ));
        assert!(Payload::json(b"\"esc\\u0041ped\"").is_ok());
    }

    #[test]
    fn publication_json_marks_binary_as_base64() {
        let text = Publication {
            offset: 7,
            data: Payload::json(b"{\"n\":1}").unwrap(),
            info: None,
        };
        assert_eq!(
            String::from_utf8(text.to_json("news", "ab")).unwrap(),
            r#"{"channel":"news","offset":7,"epoch":"ab","data":{"n":1}}"#
        );
        let binary = Publication {
            offset: 8,
            data: Payload::Binary(Bytes::from_static(&[0, 255, 10])),
            info: None,
        };
        let json: serde_json::Value = serde_json::from_slice(&binary.to_json("a\"b", "e")).unwrap();
        assert_eq!(json["channel"], "a\"b");
        assert_eq!(json["b64data"], "AP8K");
        assert_eq!(
            Payload::from_base64("AP8K").unwrap(),
            Payload::Binary(Bytes::from_static(&[0, 255, 10]))
        );
        assert_eq!(Payload::from_base64("*"), Err(PayloadError::InvalidBase64));
    }
}
