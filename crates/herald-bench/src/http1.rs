//! HTTP/1.1 responses as the benchmark's clients read them: the head (status and
//! the few headers that matter) and chunked bodies, decoded in place.

/// Most bytes of a response head.
pub const MAX_HEAD: usize = 16 * 1024;
/// Longest chunk-size line (with extensions) accepted.
const MAX_CHUNK_LINE: usize = 1024;

/// What a complete response head says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    /// Bytes of the head, up to and with the blank line.
    pub len: usize,
    /// Status code.
    pub status: u16,
    /// `Transfer-Encoding: chunked`.
    pub chunked: bool,
    /// `Content-Length`, if given.
    pub content_length: Option<usize>,
    /// `Connection: close`.
    pub close: bool,
}

/// Parses the head at the start of `buffer`: `None` until it is complete. `check`
/// sees the headers (e.g. to verify `Sec-WebSocket-Accept`).
pub fn parse_head(
    buffer: &[u8],
    check: impl FnOnce(u16, &[httparse::Header<'_>]) -> Result<(), String>,
) -> Result<Option<Head>, String> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut response = httparse::Response::new(&mut headers);
    let len = match response.parse(buffer) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buffer.len() >= MAX_HEAD => {
            return Err(format!("no complete response head in {MAX_HEAD} bytes"));
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(format!("malformed response head: {e}")),
    };
    let header = |name: &str| {
        response
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| String::from_utf8_lossy(h.value).trim().to_ascii_lowercase())
    };
    let content_length = match header("content-length") {
        Some(value) => Some(
            value
                .parse()
                .map_err(|_| format!("bad content-length {value:?}"))?,
        ),
        None => None,
    };
    let head = Head {
        len,
        status: response.code.unwrap_or(0),
        chunked: header("transfer-encoding").is_some_and(|v| v.ends_with("chunked")),
        content_length,
        close: header("connection").is_some_and(|v| v.contains("close")),
    };
    check(head.status, response.headers)?;
    Ok(Some(head))
}

/// Reads the head of a response to a request just sent and requires `status`;
/// returns the head and the bytes read after it.
pub async fn read_head<R: tokio::io::AsyncRead + Unpin>(
    io: &mut R,
    status: u16,
    check: impl Fn(&[httparse::Header<'_>]) -> Result<(), String>,
) -> Result<(Head, Vec<u8>), String> {
    use tokio::io::AsyncReadExt as _;
    let mut buffer = Vec::with_capacity(2048);
    loop {
        let read = io
            .read_buf(&mut buffer)
            .await
            .map_err(|e| format!("read: {e}"))?;
        if read == 0 {
            return Err(format!("closed before the {status} response"));
        }
        // Headers are checked only on the expected status: a refusal is
        // reported as such, with its body.
        let checked = |got: u16, headers: &[httparse::Header<'_>]| {
            if got == status {
                check(headers)
            } else {
                Ok(())
            }
        };
        let Some(head) = parse_head(&buffer, checked)? else {
            continue;
        };
        if head.status != status {
            let body = String::from_utf8_lossy(&buffer[head.len..]);
            return Err(format!("HTTP {}: {}", head.status, body.trim()));
        }
        let rest = buffer.split_off(head.len);
        return Ok((head, rest));
    }
}

/// Decodes a chunked body in place, as it arrives.
#[derive(Debug, Clone, Default)]
pub struct Dechunker {
    state: State,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum State {
    /// Expecting a chunk-size line.
    #[default]
    Size,
    /// Inside a chunk's data, this many bytes left.
    Data(u64),
    /// Expecting the CRLF after a chunk's data.
    DataEnd,
    /// After the last chunk: trailer lines up to a blank one.
    Trailer,
    /// The body is complete.
    Done,
}

impl Dechunker {
    /// Decodes the raw bytes after `buffer[..*decoded]` (which is body data already
    /// decoded), moving the data they hold down to extend that prefix; bytes that
    /// cannot be decoded yet stay after it.
    pub fn decode(&mut self, buffer: &mut Vec<u8>, decoded: &mut usize) -> Result<(), String> {
        let (mut read, mut write) = (*decoded, *decoded);
        loop {
            let rest = &buffer[read..];
            match self.state {
                State::Size | State::Trailer => {
                    let Some(end) = rest.windows(2).position(|w| w == b"\r\n") else {
                        if rest.len() > MAX_CHUNK_LINE {
                            return Err("a chunk-size line that does not end".into());
                        }
                        break;
                    };
                    let line = &rest[..end];
                    read += end + 2;
                    self.state = match self.state {
                        State::Size => match chunk_size(line)? {
                            0 => State::Trailer,
                            size => State::Data(size),
                        },
                        _ if line.is_empty() => State::Done,
                        _ => State::Trailer,
                    };
                }
                State::Data(left) => {
                    let take = rest.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                    if take == 0 {
                        break;
                    }
                    buffer.copy_within(read..read + take, write);
                    read += take;
                    write += take;
                    self.state = match left - take as u64 {
                        0 => State::DataEnd,
                        left => State::Data(left),
                    };
                }
                State::DataEnd => {
                    if rest.len() < 2 {
                        break;
                    }
                    if &rest[..2] != b"\r\n" {
                        return Err("chunk data not followed by CRLF".into());
                    }
                    read += 2;
                    self.state = State::Size;
                }
                State::Done => break,
            }
        }
        buffer.copy_within(read.., write);
        buffer.truncate(buffer.len() - (read - write));
        *decoded = write;
        Ok(())
    }

    /// Whether the last chunk and the trailer have been read.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }
}

/// The size of a chunk-size line (hex, optionally followed by `;extensions`).
fn chunk_size(line: &[u8]) -> Result<u64, String> {
    let hex = line.split(|&b| b == b';').next().unwrap_or_default();
    std::str::from_utf8(hex)
        .ok()
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .ok_or_else(|| format!("bad chunk size {:?}", String::from_utf8_lossy(line)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_refusal_is_reported_with_its_status_not_as_a_failed_check() {
        let mut refused: &[u8] = b"HTTP/1.1 502 Bad Gateway\r\ncontent-length: 5\r\n\r\nproxy";
        let error = read_head(&mut refused, 101, |_| Err("checked".into()))
            .await
            .unwrap_err();
        assert_eq!(error, "HTTP 502: proxy");
        let mut switched: &[u8] = b"HTTP/1.1 101 Switching Protocols\r\n\r\n";
        let error = read_head(&mut switched, 101, |_| Err("checked".into()))
            .await
            .unwrap_err();
        assert_eq!(error, "checked");
    }

    #[test]
    fn parses_heads() {
        let ok = |_: u16, _: &[httparse::Header<'_>]| Ok(());
        assert_eq!(parse_head(b"HTTP/1.1 200 OK\r\n", ok).unwrap(), None);
        let head =
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: Close\r\n\r\n5\r\n";
        assert_eq!(
            parse_head(head, ok).unwrap(),
            Some(Head {
                len: head.len() - 3,
                status: 200,
                chunked: true,
                content_length: None,
                close: true,
            })
        );
        let refused = b"HTTP/1.1 403 Forbidden\r\ncontent-length: 6\r\n\r\ndenied";
        let head = parse_head(refused, ok).unwrap().unwrap();
        assert_eq!((head.status, head.content_length), (403, Some(6)));
        assert!(parse_head(b"HTTP/1.1 200 OK\r\ncontent-length: x\r\n\r\n", ok).is_err());
        assert!(parse_head(b"nonsense\r\n\r\n", ok).is_err());
    }

    #[test]
    fn decodes_chunks_as_they_arrive() {
        let body = b"5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\nx-trailer: 1\r\n\r\nNEXT";
        // Byte by byte: the decoded prefix grows; what is undecodable waits.
        let mut dechunker = Dechunker::default();
        let (mut buffer, mut decoded) = (Vec::new(), 0);
        for &byte in body {
            buffer.push(byte);
            dechunker.decode(&mut buffer, &mut decoded).unwrap();
        }
        assert!(dechunker.is_done());
        assert_eq!(&buffer[..decoded], b"hello, world");
        assert_eq!(&buffer[decoded..], b"NEXT");

        // All at once, with data already decoded in front.
        let mut dechunker = Dechunker::default();
        let mut buffer = b"ab".to_vec();
        buffer.extend_from_slice(&body[..12]); // "5\r\nhello\r\n7;"
        let mut decoded = 2;
        dechunker.decode(&mut buffer, &mut decoded).unwrap();
        assert_eq!(&buffer[..decoded], b"abhello");
        assert_eq!(&buffer[decoded..], b"7;");

        let mut bad = b"zz\r\n".to_vec();
        assert!(Dechunker::default().decode(&mut bad, &mut 0).is_err());
        let mut bad = b"1\r\nabc".to_vec();
        assert!(Dechunker::default().decode(&mut bad, &mut 0).is_err());
    }
}
