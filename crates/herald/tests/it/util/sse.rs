//! A small Server-Sent Events reader over a response body, parsing the way the
//! WHATWG `EventSource` does: `event`, `data` (joined with `\n`), `id` and `retry`
//! fields; comment lines (`: ping`) ignored; a blank line dispatches the event.

use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use serde_json::Value;

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// The `event:` type (`message` when absent).
    pub event: String,
    /// The `data:` lines, joined with `\n`.
    pub data: String,
    /// The `id:` field of this event, if it had one.
    pub id: Option<String>,
}

impl Event {
    /// The data parsed as JSON (every Herald event carries JSON).
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.data).unwrap_or_else(|e| {
            panic!(
                "{} event data is not JSON ({e}): {:?}",
                self.event, self.data
            )
        })
    }
}

type Body = Pin<Box<dyn Stream<Item = reqwest::Result<Bytes>> + Send>>;

/// An open event stream.
pub struct EventStream {
    body: Body,
    /// Bytes received; those before `parsed` were already read as lines.
    buffer: Vec<u8>,
    parsed: usize,
    /// Fields of the event being assembled.
    event: Option<String>,
    data: Option<String>,
    id: Option<String>,
    /// The stream's last event id, as a browser keeps it for `Last-Event-ID`.
    last_id: Option<String>,
    /// The last `retry:` value.
    retry: Option<u64>,
    ended: bool,
    what: String,
}

impl EventStream {
    /// Reads events from `response`'s body; `what` names the stream in messages.
    pub fn new(response: reqwest::Response, what: String) -> EventStream {
        EventStream {
            body: Box::pin(response.bytes_stream()),
            buffer: Vec::new(),
            parsed: 0,
            event: None,
            data: None,
            id: None,
            last_id: None,
            retry: None,
            ended: false,
            what,
        }
    }

    /// The last event id seen, as a browser would send it in `Last-Event-ID`.
    pub fn last_id(&self) -> String {
        self.last_id
            .clone()
            .unwrap_or_else(|| panic!("{}: no event carried an id", self.what))
    }

    /// The last `retry:` value, in milliseconds.
    pub fn retry(&self) -> Option<u64> {
        self.retry
    }

    /// The next event, `None` when the stream ended, or `Err` after `timeout`.
    pub async fn try_next_event(
        &mut self,
        timeout: Duration,
    ) -> Result<Option<Event>, tokio::time::error::Elapsed> {
        tokio::time::timeout(timeout, self.read_event()).await
    }

    /// The next event; panics if none comes within `timeout` or the stream ends.
    pub async fn next_event(&mut self, timeout: Duration) -> Event {
        match self.try_next_event(timeout).await {
            Ok(Some(event)) => event,
            Ok(None) => panic!(
                "{}: the stream ended while an event was expected",
                self.what
            ),
            Err(_) => panic!("{}: no event within {timeout:?}", self.what),
        }
    }

    /// The next event, which must be of type `kind`; returns its JSON data.
    pub async fn expect(&mut self, kind: &str) -> Value {
        let event = self.next_event(super::PROMPTLY).await;
        assert_eq!(
            event.event, kind,
            "{}: expected a {kind} event, got {event:?}",
            self.what
        );
        assert!(
            event.id.as_deref().is_some_and(|id| !id.is_empty()),
            "{}: every Herald event carries an id (the resume token): {event:?}",
            self.what
        );
        event.json()
    }

    /// The next event, which must be the publication at `offset` in `channel`;
    /// returns its JSON data.
    pub async fn expect_publication(&mut self, channel: &str, offset: u64) -> Value {
        let publication = self.expect("publication").await;
        assert_eq!(
            (
                publication["channel"].as_str(),
                publication["offset"].as_u64()
            ),
            (Some(channel), Some(offset)),
            "{}: expected the publication at offset {offset} of {channel:?}, got {publication}",
            self.what
        );
        publication
    }

    /// Checks that no event arrives for a short while (the stream may stay open).
    pub async fn expect_quiet(&mut self) {
        if let Ok(next) = self.try_next_event(super::QUIET).await {
            panic!("{}: expected no event, got {next:?}", self.what);
        }
    }

    /// Checks that the stream ends within `timeout` with no further event.
    pub async fn expect_end(&mut self, timeout: Duration) {
        match self.try_next_event(timeout).await {
            Ok(None) => {}
            Ok(Some(event)) => panic!("{}: expected the end, got {event:?}", self.what),
            Err(_) => panic!("{}: still open after {timeout:?}", self.what),
        }
    }

    /// Reads until an event is dispatched or the body ends. Cancel-safe: all state
    /// lives in `self`, and a chunk is only taken from the body once it arrived.
    async fn read_event(&mut self) -> Option<Event> {
        loop {
            while let Some(length) = self.buffer[self.parsed..].iter().position(|&b| b == b'\n') {
                let mut line = &self.buffer[self.parsed..self.parsed + length];
                self.parsed += length + 1;
                if let Some(stripped) = line.strip_suffix(b"\r") {
                    line = stripped;
                }
                let line = String::from_utf8(line.to_vec())
                    .unwrap_or_else(|e| panic!("{}: a line is not UTF-8: {e}", self.what));
                if let Some(event) = self.line(&line) {
                    return Some(event);
                }
            }
            self.buffer.drain(..self.parsed);
            self.parsed = 0;
            if self.ended {
                return None;
            }
            match self.body.next().await {
                Some(Ok(chunk)) => self.buffer.extend_from_slice(&chunk),
                // A reset or aborted stream ends it, as it does for a browser.
                Some(Err(_)) | None => self.ended = true,
            }
        }
    }

    /// Interprets one line; returns an event when the line dispatches one.
    fn line(&mut self, line: &str) -> Option<Event> {
        if line.is_empty() {
            let event = self.event.take();
            let id = self.id.take();
            // Per the spec, an event without data is not dispatched.
            let data = self.data.take()?;
            return Some(Event {
                event: event.unwrap_or_else(|| "message".into()),
                data,
                id,
            });
        }
        if line.starts_with(':') {
            return None;
        }
        let (field, value) = match line.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (line, ""),
        };
        match field {
            "event" => self.event = Some(value.to_owned()),
            "data" => match &mut self.data {
                Some(data) => {
                    data.push('\n');
                    data.push_str(value);
                }
                None => self.data = Some(value.to_owned()),
            },
            "id" if !value.contains('\0') => {
                self.id = Some(value.to_owned());
                self.last_id = Some(value.to_owned());
            }
            "retry" => self.retry = value.parse().ok().or(self.retry),
            _ => {}
        }
        None
    }
}
