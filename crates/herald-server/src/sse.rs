//! The SSE transport: `GET /events?channel=a&channel=b`, a plain `text/event-stream`
//! any `EventSource` opens. Framing and event types are in `herald_protocol::sse`.

use std::sync::Arc;

use bytes::Bytes;
use herald_core::{Control, Outbox, Resume, SubscriberTag, WireFormat};
use herald_protocol::sse::{self, RecoveryFailure};
use herald_protocol::{ErrorCode, ResumeToken, ResumeTokenError, StreamPosition};
use http::header::{self, HeaderMap, HeaderValue};
use rand::Rng;
use tokio::time::Instant;

use crate::drain::Listed;
use crate::http_util::Refusal;
use crate::metrics::{HttpVersion, Transport};
use crate::routes::{Context, authorize_read, identify};

/// An open SSE stream: its subscriptions, each channel's position, and its outbox.
/// Dropping it unsubscribes everything.
pub struct SseStream {
    ctx: Arc<Context>,
    outbox: Arc<Outbox>,
    /// Canonical (sorted, deduplicated) channel list; index = delivery slot.
    channels: Box<[Box<str>]>,
    positions: Box<[StreamPosition]>,
    user: Option<Box<str>>,
    version: HttpVersion,
    /// Events prepared at open (retry, connected, recovery), sent first.
    opening: Option<Bytes>,
    finished: bool,
    /// Whether the last write carried events that had waited for their tick: the
    /// stream is busy, so the next wait sleeps to the next tick rather than being
    /// woken by the first event that comes (see `ClientSession::wait`).
    streaming: bool,
    /// Where the outbox is listed for the drain to close (`None`: closed already).
    listed: Option<Listed>,
    next_heartbeat: Instant,
}

impl SseStream {
    /// Authenticates, authorizes and subscribes a stream request; on refusal, the
    /// response to send instead.
    pub async fn open(
        ctx: &Arc<Context>,
        request: &http::request::Parts,
        version: HttpVersion,
    ) -> Result<SseStream, Refusal> {
        if ctx.draining() {
            return Err(Refusal::new(
                ErrorCode::NotAvailable,
                "server is shutting down; reconnect",
            ));
        }
        let query = request.uri.query();
        let mut channels: Vec<Box<str>> = crate::http_util::query_values(query, "channel")
            .map(|c| Box::from(c.as_ref()))
            .collect();
        channels.sort();
        channels.dedup();
        if channels.is_empty() {
            return Err(Refusal::new(
                ErrorCode::BadRequest,
                "at least one channel query parameter is required",
            ));
        }
        if channels.len() > ctx.config.max_channels_per_stream {
            return Err(Refusal::new(
                ErrorCode::LimitExceeded,
                format!(
                    "a stream carries at most {} channels",
                    ctx.config.max_channels_per_stream
                ),
            ));
        }
        let identity = identify(ctx, &request.headers, query).await?;
        for channel in &channels {
            authorize_read(ctx, &identity, channel)?;
        }
        let last_event_id = request
            .headers
            .get("last-event-id")
            // Non-ASCII bytes cannot be a Herald id; keep them so decoding reports
            // the id as malformed instead of silently starting fresh.
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .or_else(|| {
                crate::http_util::query_values(query, "last-event-id")
                    .next()
                    .map(Into::into)
            })
            .filter(|id| !id.is_empty());
        let resume_from = last_event_id.map(|id| ResumeToken::decode(&id, &channels));

        let outbox = Outbox::new(ctx.config.client_queue_max_bytes);
        let mut stream = SseStream {
            ctx: Arc::clone(ctx),
            outbox,
            positions: vec![StreamPosition::default(); channels.len()].into(),
            channels: channels.into(),
            user: identity.user().map(Box::from),
            version,
            opening: None,
            finished: false,
            streaming: false,
            listed: None,
            next_heartbeat: Instant::now() + ctx.config.heartbeat,
        };
        stream.listed = ctx.open_outboxes.add(&stream.outbox);
        stream.count_connection();
        if let Some(user) = &stream.user {
            ctx.node
                .hub()
                .add_user_connection(user, None, &stream.outbox);
        }
        stream.subscribe_all(resume_from).await?;
        Ok(stream)
    }

    /// Subscribes every channel, resuming from the token when one was given, and
    /// prepares the opening events.
    async fn subscribe_all(
        &mut self,
        resume_from: Option<Result<ResumeToken, ResumeTokenError>>,
    ) -> Result<(), Refusal> {
        let (since, token_failure) = match resume_from {
            None => (None, None),
            Some(Ok(token)) => (Some(token.positions), None),
            Some(Err(ResumeTokenError::Malformed)) => {
                (None, Some(RecoveryFailure::MalformedLastEventId))
            }
            Some(Err(ResumeTokenError::OtherChannels)) => {
                (None, Some(RecoveryFailure::OtherChannels))
            }
        };
        let mut failures = Vec::new();
        let mut recovered = Vec::new();
        for slot in 0..self.channels.len() {
            let channel = &self.channels[slot];
            let from = since.as_ref().map(|positions| &positions[slot]);
            let resume = self
                .ctx
                .node
                .subscribe(
                    channel,
                    &self.outbox,
                    SubscriberTag {
                        slot: slot as u32,
                        format: WireFormat::Sse,
                        join_leave: false,
                    },
                    from,
                )
                .await
                .map_err(|e| Refusal::new(e.code(), e.to_string()))?;
            match resume {
                Resume::Fresh { position } => {
                    self.positions[slot] = position.clone();
                    if let Some(reason) = token_failure {
                        failures.push((slot, reason, position));
                    }
                }
                Resume::Recovered {
                    publications,
                    position,
                } => {
                    self.positions[slot] = from.cloned().unwrap_or_default();
                    recovered.push((slot, publications, position));
                }
                Resume::Failed { reason, position } => {
                    self.positions[slot] = from.cloned().unwrap_or_else(|| position.clone());
                    failures.push((slot, reason, position));
                }
            }
        }

        let mut out = sse::retry(rand::rng().random_range(3000..5000)).to_vec();
        let listed: Vec<(&str, &StreamPosition)> = self
            .channels
            .iter()
            .map(|c| &**c)
            .zip(self.positions.iter())
            .collect();
        out.extend_from_slice(&sse::connected_body(&listed));
        self.write_id(&mut out);
        for (slot, reason, position) in failures {
            out.extend_from_slice(&sse::recovery_failed_body(
                &self.channels[slot],
                reason,
                &position,
            ));
            self.positions[slot] = position;
            self.write_id(&mut out);
        }
        for (slot, publications, position) in recovered {
            for publication in &publications {
                out.extend_from_slice(&sse::publication_body(
                    &self.channels[slot],
                    &position.epoch,
                    publication,
                ));
                self.positions[slot].offset = publication.offset;
                self.write_id(&mut out);
            }
            self.positions[slot] = position;
        }
        self.opening = Some(Bytes::from(out));
        Ok(())
    }

    /// Headers of the 200 response.
    pub fn response_headers(&self) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/event-stream"),
        );
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
        headers
    }

    /// The opening events, for a transport that writes them with its response head
    /// (one write instead of two); `next_chunk` then starts with what follows.
    pub fn take_opening(&mut self) -> Option<Bytes> {
        let opening = self.opening.take()?;
        Some(self.wrote(opening))
    }

    /// The next bytes to write: queued events, a heartbeat, or the closing
    /// `disconnect` event; `None` once the stream is over.
    pub async fn next_chunk(&mut self) -> Option<Bytes> {
        if let Some(opening) = self.opening.take() {
            return Some(self.wrote(opening));
        }
        if self.finished {
            return None;
        }
        let mut ticked = false;
        loop {
            let mut out = Vec::new();
            let mut delivered = 0;
            let (channels, positions) = (&self.channels, &mut self.positions);
            let taken = self.outbox.drain(|deliveries| {
                // Sized once: each event and its `id:` line.
                let id = sse::resume_id_max_len(positions);
                let size = deliveries.clone().map(|d| d.frame.len() + id);
                out.reserve_exact(size.sum());
                for delivery in deliveries {
                    let slot = delivery.slot as usize;
                    // At the live/history seam a publication may come twice.
                    if delivery.offset <= positions[slot].offset {
                        continue;
                    }
                    positions[slot].offset = delivery.offset;
                    out.extend_from_slice(&delivery.frame);
                    sse::write_resume_id(channels, positions, &mut out);
                    delivered += 1;
                }
            });
            self.ctx.metrics.deliveries.inc_by(delivered);
            // Streams have fixed channels: of the server API's instructions only
            // a disconnect applies.
            let disconnect = taken
                .controls
                .into_iter()
                .find_map(|control| match control {
                    Control::Disconnect { code, reason } => Some((code, reason)),
                    _ => None,
                });
            if let Some((code, reason)) = disconnect {
                let reconnect = herald_protocol::centrifuge::reconnects(u32::from(code));
                out.extend_from_slice(&sse::disconnect_body(u32::from(code), &reason, reconnect));
                self.write_id(&mut out);
                self.finished = true;
                self.ctx.metrics.disconnected("disconnect");
                return Some(self.wrote(Bytes::from(out)));
            }
            if let Some(reason) = taken.closed {
                out.extend_from_slice(&sse::disconnect_body(reason.code(), reason.as_str(), true));
                self.write_id(&mut out);
                self.finished = true;
                self.ctx.metrics.disconnected(reason.as_str());
                return Some(self.wrote(Bytes::from(out)));
            }
            if !out.is_empty() {
                self.streaming = ticked;
                return Some(self.wrote(Bytes::from(out)));
            }
            if std::mem::take(&mut self.streaming) {
                // Busy: more is likely queued by the next tick; sleeping until then
                // saves a wake-up per write. A tick that finds nothing
                // ends the streaming.
                let next_write = self.next_write();
                if next_write < self.next_heartbeat {
                    crate::ticks::until(next_write).await;
                    ticked = true;
                    continue;
                }
            }
            tokio::select! {
                _ = self.outbox.ready() => {
                    // Lets a busy stream batch: what arrives before the next tick
                    // goes out with this in one write.
                    let next_write = self.next_write();
                    ticked = next_write > Instant::now();
                    if ticked {
                        crate::ticks::until(next_write).await;
                    }
                }
                _ = tokio::time::sleep_until(self.next_heartbeat) => {
                    return Some(self.wrote(Bytes::from_static(sse::HEARTBEAT)));
                }
            }
        }
    }

    /// When the stream may write next: the tick after its last write (which set
    /// the heartbeat deadline), see `write_coalesce`.
    fn next_write(&self) -> Instant {
        let config = &self.ctx.config;
        let last_write = self.next_heartbeat - config.heartbeat;
        crate::coalesce::next_write(last_write, config.write_coalesce)
    }

    /// Ends the stream's id line with the current resume token.
    fn write_id(&self, out: &mut Vec<u8>) {
        sse::write_resume_id(&self.channels, &self.positions, out);
    }

    /// Accounts for bytes about to be written and pushes the heartbeat back.
    fn wrote(&mut self, chunk: Bytes) -> Bytes {
        self.next_heartbeat = Instant::now() + self.ctx.config.heartbeat;
        self.ctx.metrics.wrote(Transport::Sse, chunk.len());
        chunk
    }

    fn count_connection(&self) {
        self.ctx
            .metrics
            .connection_opened(Transport::Sse, self.version);
    }
}

impl Drop for SseStream {
    fn drop(&mut self) {
        if let Some(listed) = self.listed.take() {
            self.ctx.open_outboxes.remove(listed);
        }
        for channel in &self.channels {
            self.ctx.node.unsubscribe(channel, &self.outbox);
        }
        if let Some(user) = &self.user {
            self.ctx
                .node
                .hub()
                .remove_user_connection(user, &self.outbox);
        }
        self.ctx
            .metrics
            .connection_closed(Transport::Sse, self.version);
    }
}
