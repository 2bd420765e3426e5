//! The Centrifuge client protocol (v2, JSON) as a transport-neutral session: the
//! transport feeds it incoming frames and writes what it returns.
//!
//! One session per connection: `connect` first (within the connect timeout), then
//! subscriptions, publishes, presence, history, token refreshes. Publications reach
//! the session through its outbox as pushes encoded once per publication; the
//! session drops duplicates at the live/history seam by offset, exactly as SSE does.

use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use herald_auth::{Claims, ReadGrants};
use herald_core::{
    ChannelOptions, ClientInfo, CloseReason, Control, Outbox, Resume, SubscriberTag, WireFormat,
    channel_users,
};
use herald_protocol::centrifuge::{self as proto, Codec, Command, DisconnectCode, Reply, Request};
use herald_protocol::{ErrorCode, ErrorReply, Payload, StreamPosition};
use tokio::time::{Instant, Sleep};

use crate::drain::Listed;
use crate::metrics::{HttpVersion, Transport};
use crate::routes::Context;

/// What the transport should do next: write `frame` (newline-separated protocol
/// messages), then close with `close` when set.
#[derive(Debug, Default)]
pub struct Output {
    /// Bytes to send as one message.
    pub frame: Option<Vec<u8>>,
    /// Close the connection after the frame.
    pub close: Option<Disconnect>,
}

impl Output {
    /// Appends `next` (its messages after this output's, its close instead of
    /// none), so both go out in one write.
    pub fn append(&mut self, next: Output) {
        if let Some(more) = next.frame {
            match &mut self.frame {
                Some(frame) if !frame.is_empty() => {
                    frame.push(b'\n');
                    frame.extend_from_slice(&more);
                }
                _ => self.frame = Some(more),
            }
        }
        if next.close.is_some() {
            self.close = next.close;
        }
    }
}

/// What [`ClientSession::wait`] found to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wake {
    /// The outbox has pushes, instructions, or was closed.
    Queue,
    /// The connect, ping or pong deadline passed.
    Timer,
}

/// Why the server closes a connection; the WebSocket close code and reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disconnect {
    /// The protocol's disconnect code (also the WebSocket close code).
    pub code: u16,
    /// Why, for humans and SDK logs.
    pub reason: String,
}

impl Disconnect {
    fn from_code(code: DisconnectCode) -> Self {
        Disconnect {
            code: code.code(),
            reason: code.reason().to_owned(),
        }
    }
}

/// One subscription of the session.
struct Subscription {
    slot: u32,
    channel: Arc<str>,
    position: StreamPosition,
    info: ClientInfo,
}

/// The identity established by `connect`.
struct Connected {
    info: ClientInfo,
    /// What the token allows reading; the rest of its claims served at connect.
    grants: ReadGrants,
    /// Unix time the connection's credentials expire, if they do.
    expires_at: Option<u64>,
}

/// How the session's transport carries the protocol.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Mode {
    /// Commands and replies both ways on one connection (WebSocket).
    #[default]
    Bidirectional,
    /// Bidirectional emulation (`/connection/http_stream`, `/connection/sse`):
    /// replies and pushes go down a stream, commands arrive through
    /// `POST /emulation` naming `session`. The connect result carries `session`
    /// and this node's id, which the SDK sends back with every command.
    Emulation {
        /// The id `POST /emulation` requests route by.
        session: Arc<str>,
    },
    /// Unidirectional (`/connection/uni_*`): the client sends a bare connect
    /// request once ([`ClientSession::connect_unidirectional`]) and then only
    /// receives. The connect result travels as a `connect` push, every push is a
    /// bare push object (no `{"push":…}` envelope), pings (`{}`) expect no pong,
    /// and commands are refused.
    Unidirectional {
        /// Session id reported in the connect push (as Centrifugo does).
        session: Arc<str>,
    },
}

impl Mode {
    fn is_unidirectional(&self) -> bool {
        matches!(self, Mode::Unidirectional { .. })
    }
}

/// A client protocol session.
pub struct ClientSession {
    ctx: Arc<Context>,
    mode: Mode,
    transport: Transport,
    http_version: HttpVersion,
    outbox: Arc<Outbox>,
    /// Where the outbox is listed for the drain to close (`None`: closed already).
    listed: Option<Listed>,
    connected: Option<Connected>,
    subscriptions: Vec<Subscription>,
    next_slot: u32,
    /// When the client must have sent `connect`, or the next ping is due.
    next_ping: Instant,
    /// Set while a ping waits for its pong.
    pong_deadline: Option<Instant>,
    /// Queued messages wait until then, to go out together (`write_coalesce`).
    next_write: Instant,
    /// Whether the last write carried messages that had waited for their tick:
    /// the connection is busy, so the next wait sleeps to the next tick rather
    /// than being woken by the first message that comes.
    streaming: bool,
    /// The session's timer, for its ping/pong/connect deadline: registered once and
    /// moved when that changes, so a wait re-arms no timer. (Write ticks are
    /// waited for with the thread's tick list, see `ticks`.)
    timer: Pin<Box<Sleep>>,
}

impl ClientSession {
    /// A new bidirectional session on a connection of `transport` over `version`.
    pub fn new(ctx: Arc<Context>, transport: Transport, version: HttpVersion) -> Self {
        Self::with_mode(ctx, transport, version, Mode::Bidirectional)
    }

    /// A new session whose transport carries the protocol as `mode` says.
    pub fn with_mode(
        ctx: Arc<Context>,
        transport: Transport,
        version: HttpVersion,
        mode: Mode,
    ) -> Self {
        ctx.metrics.connection_opened(transport, version);
        let outbox = Outbox::new(ctx.config.client_queue_max_bytes);
        let listed = ctx.open_outboxes.add(&outbox);
        let next_ping = Instant::now() + ctx.config.client_connect_timeout;
        ClientSession {
            outbox,
            listed,
            ctx,
            mode,
            transport,
            http_version: version,
            connected: None,
            subscriptions: Vec::new(),
            next_slot: 0,
            next_ping,
            pong_deadline: None,
            next_write: Instant::now(),
            streaming: false,
            timer: Box::pin(tokio::time::sleep_until(next_ping)),
        }
    }

    /// How long a write may block before the client counts as gone.
    pub fn write_timeout(&self) -> Duration {
        self.ctx.config.write_timeout
    }

    /// Counts a server-side disconnect the transport decided on.
    pub fn count_disconnect(&self, reason: &'static str) {
        self.ctx.metrics.disconnected(reason);
    }

    /// Handles one incoming message: one or more newline-separated commands.
    /// A unidirectional session takes no commands: it closes with `bad request`.
    pub async fn handle_frame(&mut self, frame: &[u8]) -> Output {
        if self.mode.is_unidirectional() {
            return self.close(DisconnectCode::BadRequest);
        }
        let commands = match CODEC.decode_commands(frame) {
            Ok(commands) => commands,
            Err(e) => {
                tracing::debug!(error = %e, "malformed client command");
                return self.close(DisconnectCode::BadRequest);
            }
        };
        let mut out = Vec::new();
        for command in commands {
            if command.is_pong() {
                self.pong_deadline = None;
                continue;
            }
            match self.handle_command(command).await {
                Ok(Some(reply)) => CODEC.append_reply(&mut out, &reply),
                Ok(None) => {}
                Err(code) => {
                    let mut output = self.close(code);
                    output.frame = (!out.is_empty()).then_some(out);
                    return output;
                }
            }
        }
        Output {
            frame: (!out.is_empty()).then_some(out),
            close: None,
        }
    }

    /// Waits for what the server has to send on its own: pushes, pings, or a
    /// disconnect (slow client, shutdown, server API, missing pong, expiry).
    ///
    /// Not cancel-safe once it has taken the queue: where the wait races other
    /// work, use [`ClientSession::wait`] and [`ClientSession::output`].
    pub async fn next_output(&mut self) -> Output {
        loop {
            let wake = self.wait().await;
            if let Some(output) = self.output(wake).await {
                return output;
            }
        }
    }

    /// Waits until the session has something to do: queued pushes or instructions
    /// (once `write_coalesce` has passed since the last write, so a busy connection
    /// batches), or its ping/pong/connect deadline. Cancel-safe: nothing is taken
    /// from the queue here.
    pub async fn wait(&mut self) -> Wake {
        let mut ticked = false;
        loop {
            let due = self.pong_deadline.unwrap_or(self.next_ping);
            if self.outbox.has_pending() {
                let now = Instant::now();
                if now >= due {
                    // A connection with something queued at every tick still pings.
                    return Wake::Timer;
                }
                if self.next_write > now {
                    crate::ticks::until(self.next_write).await;
                    ticked = true;
                }
                self.streaming = ticked;
                return Wake::Queue;
            }
            if std::mem::take(&mut self.streaming) && self.next_write < due {
                // Busy: more is likely queued by the next tick. Sleeping until then,
                // unregistered from the outbox, saves a wake-up per write; a tick
                // that finds nothing ends the streaming.
                crate::ticks::until(self.next_write).await;
                ticked = true;
                continue;
            }
            self.set_timer(due);
            tokio::select! {
                biased;
                () = self.outbox.ready() => {}
                () = self.timer.as_mut() => return Wake::Timer,
            }
        }
    }

    /// Moves the timer to `at` unless it is set there (then it may have fired
    /// already, and fires at once again: `at` has passed).
    fn set_timer(&mut self, at: Instant) {
        if self.timer.deadline() != at {
            self.timer.as_mut().reset(at);
        }
    }

    /// What to send for `wake`; `None` when it came to nothing (every queued
    /// publication was a duplicate or for a channel since left).
    pub async fn output(&mut self, wake: Wake) -> Option<Output> {
        if wake == Wake::Timer {
            return Some(self.on_timer());
        }
        let mut out = Vec::new();
        let mut delivered = 0;
        let unidirectional = self.mode.is_unidirectional();
        let subscriptions = &mut self.subscriptions;
        let taken = self.outbox.drain(|deliveries| {
            // Sized once: each message and its separator, and room for the
            // transport's frame header (see `ws_frame::write_frame`).
            let size = deliveries.clone().map(|d| d.frame.len() + 1);
            out.reserve_exact(size.sum::<usize>() + 10);
            for delivery in deliveries {
                let Some(subscription) = subscriptions.iter_mut().find(|s| s.slot == delivery.slot)
                else {
                    continue; // unsubscribed since it was queued
                };
                if delivery.offset != 0 {
                    // At the live/history seam a publication may come twice.
                    if delivery.offset <= subscription.position.offset {
                        continue;
                    }
                    subscription.position.offset = delivery.offset;
                    delivered += 1;
                }
                // The encoded push (`{"push":…}`, shared by every subscriber) as
                // this session's transport carries pushes.
                let message = match unidirectional {
                    true => bare_push(&delivery.frame),
                    false => &delivery.frame,
                };
                CODEC.append_message(&mut out, message);
            }
        });
        self.ctx.metrics.deliveries.inc_by(delivered);
        for control in taken.controls {
            // Boxed: rare, and its state would otherwise size every idle
            // connection's future.
            if let Some(close) = Box::pin(self.apply_control(control, &mut out)).await {
                return Some(Output {
                    frame: (!out.is_empty()).then_some(out),
                    close: Some(close),
                });
            }
        }
        if let Some(reason) = taken.closed {
            let code = match reason {
                CloseReason::Slow => DisconnectCode::Slow,
                CloseReason::Shutdown => DisconnectCode::Shutdown,
            };
            self.ctx.metrics.disconnected(reason.as_str());
            let mut output = self.close(code);
            output.frame = (!out.is_empty()).then_some(out);
            return Some(output);
        }
        (!out.is_empty()).then(|| self.wrote(out))
    }

    /// Carries out a server API instruction, appending any push to `out`; returns
    /// the disconnect to perform, if any.
    async fn apply_control(&mut self, control: Control, out: &mut Vec<u8>) -> Option<Disconnect> {
        self.connected.as_ref()?;
        match control {
            Control::Subscribe(channel) => {
                let request = proto::SubscribeRequest {
                    channel: channel.to_string(),
                    ..Default::default()
                };
                match self.subscribe_checked(request, None).await {
                    Ok(result) => {
                        let push = proto::Subscribe {
                            recoverable: result.recoverable,
                            epoch: result.epoch,
                            offset: result.offset,
                            positioned: result.positioned,
                            data: None,
                        };
                        let push =
                            proto::Push::new(channel.to_string(), proto::PushBody::Subscribe(push));
                        self.append_push(out, &push);
                    }
                    Err(error) => tracing::debug!(%channel, ?error, "server-side subscribe failed"),
                }
                None
            }
            Control::Unsubscribe(channel) => {
                if self.subscribed(&channel) {
                    self.unsubscribe(&channel).await;
                    let body = proto::PushBody::Unsubscribe(proto::UnsubscribeCode::Server.into());
                    self.append_push(out, &proto::Push::new(channel.to_string(), body));
                }
                None
            }
            Control::Disconnect { code, reason } => {
                self.ctx.metrics.disconnected("disconnect");
                Some(Disconnect {
                    code,
                    reason: reason.to_string(),
                })
            }
            Control::Refresh { expire_at, expired } => {
                if expired {
                    self.ctx.metrics.disconnected("expired");
                    return Some(Disconnect::from_code(DisconnectCode::Expired));
                }
                if let Some(connected) = self.connected.as_mut() {
                    connected.expires_at = expire_at;
                }
                None
            }
        }
    }

    /// The ping interval passed, or the client missed its deadline.
    fn on_timer(&mut self) -> Output {
        if self.connected.is_none() {
            self.ctx.metrics.disconnected("connect_timeout");
            return self.close(DisconnectCode::Stale);
        }
        if self.pong_deadline.is_some() {
            self.ctx.metrics.disconnected("no_pong");
            return self.close(DisconnectCode::NoPong);
        }
        if let Some(expires_at) = self.connected.as_ref().and_then(|c| c.expires_at)
            && unix_now() >= expires_at
        {
            self.ctx.metrics.disconnected("expired");
            return self.close(DisconnectCode::Expired);
        }
        let now = Instant::now();
        self.next_ping = now + self.ctx.config.client_ping_interval;
        if !self.mode.is_unidirectional() {
            self.pong_deadline = Some(now + self.ctx.config.client_pong_timeout);
        }
        let mut out = Vec::new();
        CODEC.append_message(&mut out, CODEC.ping());
        self.wrote(out)
    }

    fn wrote(&mut self, out: Vec<u8>) -> Output {
        self.next_write =
            crate::coalesce::next_write(Instant::now(), self.ctx.config.write_coalesce);
        self.ctx.metrics.wrote(self.transport, out.len());
        Output {
            frame: Some(out),
            close: None,
        }
    }

    fn close(&self, code: DisconnectCode) -> Output {
        Output {
            frame: None,
            close: Some(Disconnect::from_code(code)),
        }
    }

    /// Answers one command: `Ok(None)` when it has no reply, `Err` to disconnect.
    async fn handle_command(&mut self, command: Command) -> Result<Option<Reply>, DisconnectCode> {
        let id = command.id;
        let Some(request) = command.request else {
            return Ok(None);
        };
        if self.connected.is_none() {
            return match request {
                Request::Connect(connect) => self.connect(connect).await.map(|result| {
                    Some(match result {
                        Ok(result) => Reply::ok(id, result),
                        Err(error) => Reply::error(id, wire_error(error)),
                    })
                }),
                // Anything before connect is a protocol violation.
                _ => Err(DisconnectCode::BadRequest),
            };
        }
        if id == 0 && !matches!(request, Request::Send(_)) {
            // Only `send` goes without an id; anything else cannot be answered.
            return Err(DisconnectCode::BadRequest);
        }
        let result: Result<proto::ReplyResult, ErrorReply> = match request {
            Request::Connect(_) => return Err(DisconnectCode::BadRequest),
            Request::Subscribe(request) => self.subscribe(request).await.map(Into::into),
            Request::Unsubscribe(request) => {
                self.unsubscribe(&request.channel).await;
                Ok(proto::UnsubscribeResult {}.into())
            }
            Request::Publish(request) => self
                .publish(request)
                .await
                .map(|()| proto::PublishResult {}.into()),
            Request::Presence(request) => self.presence(&request.channel).await.map(Into::into),
            Request::PresenceStats(request) => {
                self.presence_stats(&request.channel).await.map(Into::into)
            }
            Request::History(request) => self.history(request).await.map(Into::into),
            Request::Refresh(request) => self.refresh(&request.token).await.map(Into::into),
            Request::SubRefresh(request) => self
                .sub_refresh(&request.channel, &request.token)
                .await
                .map(Into::into),
            Request::Ping(_) => Ok(proto::PingResult {}.into()),
            Request::Send(_) if id == 0 => return Ok(None),
            Request::Send(_) | Request::Rpc(_) => Err(ErrorCode::NotAvailable
                .reply("no RPC or message handler is configured on this server")),
        };
        Ok(Some(match result {
            Ok(result) => Reply::ok(id, result),
            Err(error) => Reply::error(id, wire_error(error)),
        }))
    }

    /// Establishes the connection: `Ok(Err(_))` is an error reply (the client may
    /// retry), `Err` a disconnect.
    async fn connect(
        &mut self,
        request: proto::ConnectRequest,
    ) -> Result<Result<proto::ConnectResult, ErrorReply>, DisconnectCode> {
        let claims = if request.token.is_empty() {
            if !self.ctx.config.allow_anonymous_connect {
                return Ok(Err(
                    ErrorCode::Unauthorized.reply("a connection token is required")
                ));
            }
            Claims::default()
        } else {
            match self.ctx.tokens.verify_async(&request.token).await {
                Ok(claims) => claims,
                Err(e) if e.is_expired() => {
                    return Ok(Err(ErrorCode::TokenExpired.reply(e.to_string())));
                }
                Err(e) if e.is_temporary() => {
                    return Ok(Err(ErrorCode::Internal.reply(e.to_string())));
                }
                Err(e) => {
                    tracing::debug!(error = %e, "connection token refused");
                    return Err(DisconnectCode::InvalidToken);
                }
            }
        };
        let client = new_client_id();
        let info = ClientInfo {
            client: client.clone(),
            user: Arc::from(claims.sub.as_str()),
            conn_info: conn_info(&claims),
            chan_info: None,
        };
        if !info.user.is_empty() {
            self.ctx
                .node
                .hub()
                .add_user_connection(&info.user, Some(&info.client), &self.outbox);
        }
        let expires_at = claims.exp;
        // Server-side subscriptions from the token, recovering where the client
        // asks (`subs` in the connect request).
        let server_side: Vec<String> = claims
            .channels
            .iter()
            .chain(claims.subs.keys())
            .filter(|c| !c.ends_with('*'))
            .cloned()
            .collect();
        self.connected = Some(Connected {
            info,
            grants: ReadGrants::from(claims),
            expires_at,
        });
        self.next_ping = Instant::now() + self.ctx.config.client_ping_interval;

        let mut subs = std::collections::BTreeMap::new();
        for channel in server_side {
            let recover = request.subs.get(&channel);
            let subscribe = proto::SubscribeRequest {
                channel: channel.clone(),
                recover: recover.is_some_and(|r| r.recover),
                epoch: recover.map(|r| r.epoch.clone()).unwrap_or_default(),
                offset: recover.map_or(0, |r| r.offset),
                ..Default::default()
            };
            match self.subscribe_checked(subscribe, None).await {
                Ok(result) => {
                    subs.insert(channel, result);
                }
                Err(error) => tracing::debug!(%channel, ?error, "server-side subscription failed"),
            }
        }
        let ttl = expires_at.map(|at| at.saturating_sub(unix_now()));
        let (session, node) = match &self.mode {
            Mode::Bidirectional => (String::new(), String::new()),
            Mode::Emulation { session } => (session.to_string(), self.ctx.uid.clone()),
            Mode::Unidirectional { session } => (session.to_string(), String::new()),
        };
        Ok(Ok(proto::ConnectResult {
            client: client.to_string(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            expires: ttl.is_some(),
            ttl: ttl.unwrap_or(0) as u32,
            ping: self.ctx.config.client_ping_interval.as_secs() as u32,
            pong: !self.mode.is_unidirectional(),
            subs,
            session,
            node,
            ..Default::default()
        }))
    }

    /// Connects a unidirectional session with the client's bare connect request
    /// (no command envelope): the output is the `connect` push, or the disconnect
    /// a refusal turns into (there is no error reply one way).
    pub async fn connect_unidirectional(&mut self, request: proto::ConnectRequest) -> Output {
        debug_assert!(self.mode.is_unidirectional());
        if self.connected.is_some() {
            return self.close(DisconnectCode::BadRequest);
        }
        match self.connect(request).await {
            Ok(Ok(result)) => {
                let mut out = Vec::new();
                self.append_push(
                    &mut out,
                    &proto::Push::new("", proto::PushBody::Connect(result)),
                );
                self.wrote(out)
            }
            Ok(Err(error)) => {
                // As Centrifugo maps errors of unidirectional connects.
                let is = |code: ErrorCode| error.code == code.code();
                let code = if is(ErrorCode::TokenExpired) || is(ErrorCode::Expired) {
                    DisconnectCode::Expired
                } else if is(ErrorCode::PermissionDenied) {
                    DisconnectCode::PermissionDenied
                } else if is(ErrorCode::TooManyRequests) {
                    DisconnectCode::TooManyRequests
                } else if is(ErrorCode::Unauthorized) {
                    DisconnectCode::InvalidToken
                } else {
                    DisconnectCode::ServerError
                };
                Output {
                    frame: None,
                    close: Some(Disconnect {
                        code: code.code(),
                        reason: error.message,
                    }),
                }
            }
            Err(code) => self.close(code),
        }
    }

    /// The `disconnect` push telling the client why the server closes, for
    /// transports without close frames (emulation and unidirectional streams):
    /// `{"push":{"disconnect":…}}`, or the bare push on a unidirectional session.
    pub fn disconnect_message(&self, disconnect: &Disconnect) -> Vec<u8> {
        let body = proto::PushBody::Disconnect(proto::Disconnect {
            code: u32::from(disconnect.code),
            reason: disconnect.reason.clone(),
            reconnect: proto::reconnects(u32::from(disconnect.code)),
        });
        let mut out = Vec::new();
        self.append_push(&mut out, &proto::Push::new("", body));
        out
    }

    /// Appends `push` to `out` as this session's transport carries pushes.
    fn append_push(&self, out: &mut Vec<u8>, push: &proto::Push) {
        if self.mode.is_unidirectional() {
            let mut enveloped = Vec::new();
            CODEC.append_push(&mut enveloped, push);
            CODEC.append_message(out, bare_push(&enveloped));
        } else {
            CODEC.append_push(out, push);
        }
    }

    fn connection(&self) -> &Connected {
        self.connected
            .as_ref()
            .expect("commands after connect only")
    }

    /// Verifies a subscription token (JWKS keys may need fetching).
    async fn verify_subscription_token(&self, token: &str) -> Result<Claims, ErrorReply> {
        self.ctx.tokens.verify_async(token).await.map_err(|e| {
            if e.is_expired() {
                ErrorCode::TokenExpired.reply(e.to_string())
            } else if e.is_temporary() {
                ErrorCode::Internal.reply(e.to_string())
            } else {
                ErrorCode::PermissionDenied.reply(e.to_string())
            }
        })
    }

    /// Checks that the client may subscribe `channel` (with the claims of a verified
    /// subscription token, if it gave one), returning the channel's options and the
    /// channel info to announce.
    fn authorize_subscribe(
        &self,
        channel: &str,
        token_claims: Option<Claims>,
    ) -> Result<(&ChannelOptions, Option<Bytes>), ErrorReply> {
        let options = self
            .ctx
            .node
            .options(channel)
            .map_err(|e| e.code().reply(e.to_string()))?;
        let connection = self.connection();
        let user = &*connection.info.user;
        if let Some(claims) = token_claims {
            if claims.channel.as_deref() != Some(channel) || claims.sub != user {
                return Err(ErrorCode::PermissionDenied
                    .reply("the subscription token is for another channel or user"));
            }
            return Ok((options, conn_info(&claims)));
        }
        let granted = connection.grants.can_read(channel)
            || (options.allow_user_limited_channels
                && channel_users(channel).is_some_and(|mut users| users.any(|u| u == user)))
            || (options.allow_subscribe_for_client && !user.is_empty())
            || options.allow_anonymous;
        if granted {
            Ok((options, None))
        } else {
            Err(ErrorCode::PermissionDenied.reply(format!(
                "no permission to subscribe to {channel:?}: needs a subscription token or a grant"
            )))
        }
    }

    async fn subscribe(
        &mut self,
        request: proto::SubscribeRequest,
    ) -> Result<proto::SubscribeResult, ErrorReply> {
        let token_claims = if request.token.is_empty() {
            None
        } else {
            Some(self.verify_subscription_token(&request.token).await?)
        };
        let (_, chan_info) = self.authorize_subscribe(&request.channel, token_claims)?;
        self.subscribe_checked(request, chan_info).await
    }

    /// Subscribes an authorized channel: registers with the hub, resumes from the
    /// client's position when asked, announces the join.
    async fn subscribe_checked(
        &mut self,
        request: proto::SubscribeRequest,
        chan_info: Option<Bytes>,
    ) -> Result<proto::SubscribeResult, ErrorReply> {
        let channel: Arc<str> = Arc::from(request.channel.as_str());
        if self.subscriptions.iter().any(|s| s.channel == channel) {
            return Err(ErrorCode::AlreadySubscribed.reply(""));
        }
        let options = self
            .ctx
            .node
            .options(&channel)
            .map_err(|e| e.code().reply(e.to_string()))?
            .clone();
        let recoverable = options.history_size > 0 && !options.history_ttl.is_zero();
        let recovering = (request.recover || options.force_recovery) && !request.epoch.is_empty();
        let since = recovering.then(|| StreamPosition {
            offset: request.offset,
            epoch: request.epoch.clone(),
        });
        let slot = self.next_slot;
        self.next_slot += 1;
        let tag = SubscriberTag {
            slot,
            format: WireFormat::ClientJson,
            join_leave: request.join_leave && options.join_leave,
        };
        let resume = self
            .ctx
            .node
            .subscribe(&channel, &self.outbox, tag, since.as_ref())
            .await
            .map_err(|e| e.code().reply(e.to_string()))?;
        let (position, publications, recovered) = match resume {
            Resume::Fresh { position } => (position, Vec::new(), false),
            Resume::Recovered {
                position,
                publications,
            } => (position, publications, true),
            Resume::Failed { position, .. } => (position, Vec::new(), false),
        };
        let mut info = self.connection().info.clone();
        info.chan_info = chan_info;
        if let Err(e) = self.ctx.node.join(&channel, &info).await {
            tracing::warn!(%channel, error = %e, "join failed");
        }
        // Most connections hold one or two subscriptions: grow one at a time.
        self.subscriptions.reserve_exact(1);
        self.subscriptions.push(Subscription {
            slot,
            channel,
            position: position.clone(),
            info,
        });
        Ok(proto::SubscribeResult {
            recoverable,
            epoch: position.epoch,
            offset: position.offset,
            positioned: recoverable,
            publications: wire_publications(&publications),
            recovered,
            was_recovering: recovering,
            ..Default::default()
        })
    }

    async fn unsubscribe(&mut self, channel: &str) {
        let Some(at) = self
            .subscriptions
            .iter()
            .position(|s| &*s.channel == channel)
        else {
            return;
        };
        let subscription = self.subscriptions.swap_remove(at);
        self.ctx.node.unsubscribe(channel, &self.outbox);
        if let Err(e) = self.ctx.node.leave(channel, &subscription.info).await {
            tracing::warn!(%channel, error = %e, "leave failed");
        }
    }

    fn subscribed(&self, channel: &str) -> bool {
        self.subscriptions.iter().any(|s| &*s.channel == channel)
    }

    async fn publish(&mut self, request: proto::PublishRequest) -> Result<(), ErrorReply> {
        let options = self
            .ctx
            .node
            .options(&request.channel)
            .map_err(|e| e.code().reply(e.to_string()))?;
        if !options.allow_publish {
            return Err(
                ErrorCode::PermissionDenied.reply("clients may not publish to this channel")
            );
        }
        if !self.subscribed(&request.channel)
            && self.authorize_subscribe(&request.channel, None).is_err()
        {
            return Err(ErrorCode::PermissionDenied.reply("no permission for this channel"));
        }
        let raw = request
            .data
            .as_deref()
            .ok_or_else(|| ErrorCode::BadRequest.reply("data is required"))?;
        let data = Payload::json(raw.get().as_bytes())
            .map_err(|e| ErrorCode::BadRequest.reply(e.to_string()))?;
        let publisher = Arc::new(self.connection().info.clone());
        self.ctx
            .node
            .publish_as(&request.channel, data, Some(publisher))
            .await
            .map_err(|e| e.code().reply(e.to_string()))?;
        self.ctx.metrics.publications.inc();
        Ok(())
    }

    /// Checks a presence or history read: subscribed, and allowed by the options.
    fn check_read(
        &self,
        channel: &str,
        allowed: impl Fn(&ChannelOptions) -> bool,
    ) -> Result<(), ErrorReply> {
        let options = self
            .ctx
            .node
            .options(channel)
            .map_err(|e| e.code().reply(e.to_string()))?;
        if !allowed(options) {
            return Err(ErrorCode::NotAvailable.reply("not enabled for this channel's namespace"));
        }
        if !self.subscribed(channel) {
            return Err(ErrorCode::PermissionDenied.reply("subscribe to the channel first"));
        }
        Ok(())
    }

    async fn presence(&self, channel: &str) -> Result<proto::PresenceResult, ErrorReply> {
        self.check_read(channel, |o| o.presence && o.allow_presence_for_client)?;
        let present = self
            .ctx
            .node
            .presence(channel)
            .await
            .map_err(|e| e.code().reply(e.to_string()))?;
        Ok(proto::PresenceResult {
            presence: present
                .iter()
                .map(|info| (info.client.to_string(), proto::ClientInfo::from(info)))
                .collect(),
        })
    }

    async fn presence_stats(
        &self,
        channel: &str,
    ) -> Result<proto::PresenceStatsResult, ErrorReply> {
        self.check_read(channel, |o| o.presence && o.allow_presence_for_client)?;
        let (clients, users) = self
            .ctx
            .node
            .presence_stats(channel)
            .await
            .map_err(|e| e.code().reply(e.to_string()))?;
        Ok(proto::PresenceStatsResult {
            num_clients: clients as u32,
            num_users: users as u32,
        })
    }

    async fn history(
        &self,
        request: proto::HistoryRequest,
    ) -> Result<proto::HistoryResult, ErrorReply> {
        self.check_read(&request.channel, |o| o.allow_history_for_client)?;
        let limit = match request.limit {
            0 => Some(0),
            n if n < 0 => None,
            n => Some(n as usize),
        };
        let since = request.since.as_ref();
        let read_limit = if request.reverse { None } else { limit };
        let page = self
            .ctx
            .node
            .history(&request.channel, since.map(|s| s.offset), read_limit)
            .await
            .map_err(|e| e.code().reply(e.to_string()))?;
        if let Some(since) = since
            && !since.epoch.is_empty()
            && since.epoch != page.top.epoch
        {
            return Err(ErrorCode::UnrecoverablePosition.reply("epoch changed"));
        }
        let mut publications = page.publications;
        if request.reverse {
            publications.reverse();
            publications.truncate(limit.unwrap_or(usize::MAX));
        }
        Ok(proto::HistoryResult {
            publications: wire_publications(&publications),
            epoch: page.top.epoch,
            offset: page.top.offset,
        })
    }

    async fn refresh(&mut self, token: &str) -> Result<proto::RefreshResult, ErrorReply> {
        let claims = self.ctx.tokens.verify_async(token).await.map_err(|e| {
            if e.is_expired() {
                ErrorCode::TokenExpired.reply(e.to_string())
            } else if e.is_temporary() {
                ErrorCode::Internal.reply(e.to_string())
            } else {
                ErrorCode::Unauthorized.reply(e.to_string())
            }
        })?;
        let connected = self
            .connected
            .as_mut()
            .expect("commands after connect only");
        if claims.sub != *connected.info.user {
            return Err(ErrorCode::Unauthorized.reply("the new token is for another user"));
        }
        connected.expires_at = claims.exp;
        let ttl = claims.exp.map(|at| at.saturating_sub(unix_now()));
        connected.grants = ReadGrants::from(claims);
        Ok(proto::RefreshResult {
            client: connected.info.client.to_string(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            expires: ttl.is_some(),
            ttl: ttl.unwrap_or(0) as u32,
        })
    }

    async fn sub_refresh(
        &self,
        channel: &str,
        token: &str,
    ) -> Result<proto::SubRefreshResult, ErrorReply> {
        if !self.subscribed(channel) {
            return Err(ErrorCode::PermissionDenied.reply("not subscribed to this channel"));
        }
        let claims = self.verify_subscription_token(token).await?;
        if claims.channel.as_deref() != Some(channel) || claims.sub != *self.connection().info.user
        {
            return Err(
                ErrorCode::PermissionDenied.reply("the token is for another channel or user")
            );
        }
        let ttl = claims.exp.map(|at| at.saturating_sub(unix_now()));
        Ok(proto::SubRefreshResult {
            expires: ttl.is_some(),
            ttl: ttl.unwrap_or(0) as u32,
        })
    }
}

impl Drop for ClientSession {
    fn drop(&mut self) {
        self.ctx
            .metrics
            .connection_closed(self.transport, self.http_version);
        if let Some(listed) = self.listed.take() {
            self.ctx.open_outboxes.remove(listed);
        }
        let Some(connected) = self.connected.take() else {
            return;
        };
        if !connected.info.user.is_empty() {
            self.ctx
                .node
                .hub()
                .remove_user_connection(&connected.info.user, &self.outbox);
        }
        let subscriptions = std::mem::take(&mut self.subscriptions);
        for subscription in &subscriptions {
            self.ctx
                .node
                .unsubscribe(&subscription.channel, &self.outbox);
        }
        // Presence and leave events may wait on the engine: finish them apart.
        let node = self.ctx.node.clone();
        tokio::spawn(async move {
            for subscription in subscriptions {
                let _ = node.leave(&subscription.channel, &subscription.info).await;
            }
        });
    }
}

/// The client protocol encoding (JSON; Protobuf would be chosen per connection).
const CODEC: Codec = Codec::Json;

/// The protocol error for `error`; internal errors are temporary, so SDKs retry.
fn wire_error(error: ErrorReply) -> proto::Error {
    let temporary = [ErrorCode::Internal, ErrorCode::TooManyRequests]
        .iter()
        .any(|code| code.code() == error.code);
    proto::Error {
        code: error.code,
        message: error.message,
        temporary,
    }
}

/// Publications in the JSON encoding; binary ones cannot be carried and are left
/// out.
fn wire_publications(publications: &[herald_protocol::Publication]) -> Vec<proto::Publication> {
    publications
        .iter()
        .filter_map(|p| proto::Publication::try_from(p).ok())
        .collect()
}

/// The connection info of a token: `info` as JSON, else `b64info` decoded.
fn conn_info(claims: &Claims) -> Option<Bytes> {
    if let Some(info) = &claims.info {
        return serde_json::to_vec(info).ok().map(Bytes::from);
    }
    use base64::Engine as _;
    claims
        .b64info
        .as_deref()
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
        .map(Bytes::from)
}

/// The push inside a `{"push":…}` message, as unidirectional transports send it.
/// Every push the JSON codec encodes has exactly that envelope; anything else is
/// returned unchanged.
fn bare_push(message: &[u8]) -> &[u8] {
    message
        .strip_prefix(b"{\"push\":")
        .and_then(|inner| inner.strip_suffix(b"}"))
        .unwrap_or(message)
}

/// A random client (or session) id in UUID v4 form, as Centrifugo's.
pub(crate) fn new_client_id() -> Arc<str> {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut bytes: [u8; 16] = rand::random();
    // Version 4, variant 10 (RFC 9562).
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    // Written on the stack: the `Arc` is the id's one allocation.
    let mut id = [b'-'; 36];
    let mut at = 0;
    for (i, byte) in bytes.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            at += 1; // past a '-'
        }
        id[at] = HEX[usize::from(byte >> 4)];
        id[at + 1] = HEX[usize::from(byte & 0x0f)];
        at += 2;
    }
    Arc::from(std::str::from_utf8(&id).expect("hex digits and dashes are ASCII"))
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::new_client_id;

    #[test]
    fn client_ids_are_distinct_uuid_v4_strings() {
        let id = new_client_id();
        let parsed: Vec<&str> = id.split('-').collect();
        let lengths: Vec<usize> = parsed.iter().map(|part| part.len()).collect();
        assert_eq!(lengths, [8, 4, 4, 4, 12], "{id}");
        assert!(
            id.chars()
                .all(|c| c == '-' || c.is_ascii_digit() || ('a'..='f').contains(&c)),
            "{id}"
        );
        assert!(parsed[2].starts_with('4'), "version 4: {id}");
        assert!(
            parsed[3].starts_with(['8', '9', 'a', 'b']),
            "RFC 9562 variant: {id}"
        );
        assert_ne!(new_client_id(), id);
    }
}
