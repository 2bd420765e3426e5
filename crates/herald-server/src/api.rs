//! The server API: `POST /api/<method>` with a JSON body, authenticated by
//! `X-API-Key: KEY` or `Authorization: apikey KEY` (Centrifugo's shapes; see
//! `herald_protocol::api`).
//!
//! Statuses: 401 without a valid key, 404 for an unknown method, 400 when the body is
//! not the method's JSON, 413 when it is too large; otherwise 200 with `result` or,
//! for errors about the request's content (unknown channel, …), `error` — as
//! Centrifugo does, so its SDKs read the error code.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use herald_core::Control;
use herald_protocol::api::{self as shapes, ChannelInfo, glob_match};
use herald_protocol::centrifuge::DisconnectCode;
use herald_protocol::{ErrorCode, ErrorReply, Payload};
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use serde::de::DeserializeOwned;

use crate::http_util::{Body, Refusal, error, error_response, result_response};
use crate::metrics::ApiLabels;
use crate::routes::{Context, read_body};

/// Handles `POST /api/{method}`.
pub async fn handle(
    ctx: &Arc<Context>,
    method: &str,
    peer: SocketAddr,
    request: Request<Incoming>,
) -> Response<Body> {
    let body = match authenticate(ctx, peer, request.headers()) {
        Ok(()) => read_body(ctx, request.into_body()).await,
        Err(refusal) => Err(refusal),
    };
    let response = match body {
        Ok(body) => dispatch(ctx, method, &body).await,
        Err(refusal) => refusal.into_response(),
    };
    let result = if response.status() == StatusCode::OK {
        "ok".to_owned()
    } else {
        response.status().as_u16().to_string()
    };
    let method = if KNOWN_METHODS.contains(&method) {
        method
    } else {
        "unknown"
    };
    ctx.metrics
        .api_requests
        .get_or_create(&ApiLabels {
            method: method.to_owned(),
            result,
        })
        .inc();
    response
}

const KNOWN_METHODS: &[&str] = &[
    "publish",
    "broadcast",
    "history",
    "history_remove",
    "channels",
    "info",
    "presence",
    "presence_stats",
    "disconnect",
    "subscribe",
    "unsubscribe",
    "refresh",
];

/// With a configured key the request must carry it; without one, only loopback
/// clients may use the API (safe local development with no setup).
fn authenticate(ctx: &Context, peer: SocketAddr, headers: &http::HeaderMap) -> Result<(), Refusal> {
    match &ctx.config.api_key {
        Some(key) => match herald_auth::api_key_from_headers(headers) {
            Some(presented) if herald_auth::api_key_matches(presented, key) => Ok(()),
            Some(_) => Err(Refusal::new(ErrorCode::Unauthorized, "invalid API key")),
            None => Err(Refusal::new(
                ErrorCode::Unauthorized,
                "API key required: X-API-Key: KEY or Authorization: apikey KEY",
            )),
        },
        None if peer.ip().is_loopback() => Ok(()),
        None => Err(Refusal::new(
            ErrorCode::Unauthorized,
            "no API key is configured, so the API only answers loopback clients",
        )),
    }
}

async fn dispatch(ctx: &Context, method: &str, body: &[u8]) -> Response<Body> {
    match method {
        "publish" => with_request(body, |r| publish(ctx, r)).await,
        "broadcast" => with_request(body, |r| broadcast(ctx, r)).await,
        "history" => with_request(body, |r| history(ctx, r)).await,
        "history_remove" => with_request(body, |r| history_remove(ctx, r)).await,
        "channels" => with_request(body, |r| channels(ctx, r)).await,
        "info" => info(ctx),
        "presence" => with_request(body, |r| presence(ctx, r)).await,
        "presence_stats" => with_request(body, |r| presence_stats(ctx, r)).await,
        "disconnect" => with_request(body, |r| disconnect(ctx, r)).await,
        "subscribe" => with_request(body, |r| subscribe(ctx, r)).await,
        "unsubscribe" => with_request(body, |r| unsubscribe(ctx, r)).await,
        "refresh" => with_request(body, |r| refresh(ctx, r)).await,
        other => error(
            ErrorCode::MethodNotFound,
            format!("unknown API method {other:?}"),
        ),
    }
}

/// Parses the body as `T` (an empty body counts as `{}`) and runs `f`, or answers
/// 400 saying what is wrong with the JSON.
async fn with_request<T, F, Fut>(body: &[u8], f: F) -> Response<Body>
where
    T: DeserializeOwned,
    F: FnOnce(T) -> Fut,
    Fut: Future<Output = Result<Response<Body>, ErrorReply>>,
{
    let body = if body.trim_ascii().is_empty() {
        b"{}"
    } else {
        body
    };
    match serde_json::from_slice::<T>(body) {
        Ok(request) => match f(request).await {
            Ok(response) => response,
            Err(reply) => error_response(StatusCode::OK, reply),
        },
        Err(e) => error(ErrorCode::BadRequest, format!("invalid request JSON: {e}")),
    }
}

fn core_error(e: herald_core::CoreError) -> ErrorReply {
    e.code().reply(e.to_string())
}

async fn publish(
    ctx: &Context,
    request: shapes::PublishRequest,
) -> Result<Response<Body>, ErrorReply> {
    let payload = shapes::payload_of(request.data.as_deref(), request.b64data.as_deref())
        .map_err(|e| ErrorCode::BadRequest.reply(e.to_string()))?;
    let result = publish_one(ctx, &request.channel, payload).await?;
    Ok(result_response(&result))
}

async fn publish_one(
    ctx: &Context,
    channel: &str,
    payload: Payload,
) -> Result<shapes::PublishResult, ErrorReply> {
    let position = ctx
        .node
        .publish(channel, payload)
        .await
        .map_err(core_error)?;
    ctx.metrics.publications.inc();
    Ok(shapes::PublishResult {
        offset: position.offset,
        epoch: position.epoch,
    })
}

async fn broadcast(
    ctx: &Context,
    request: shapes::BroadcastRequest,
) -> Result<Response<Body>, ErrorReply> {
    if request.channels.is_empty() {
        return Err(ErrorCode::BadRequest.reply("channels is required"));
    }
    let payload = shapes::payload_of(request.data.as_deref(), request.b64data.as_deref())
        .map_err(|e| ErrorCode::BadRequest.reply(e.to_string()))?;
    let mut responses = Vec::with_capacity(request.channels.len());
    for channel in &request.channels {
        responses.push(match publish_one(ctx, channel, payload.clone()).await {
            Ok(result) => shapes::BroadcastResponse {
                result: Some(result),
                error: None,
            },
            Err(reply) => shapes::BroadcastResponse {
                result: None,
                error: Some(reply),
            },
        });
    }
    Ok(result_response(&shapes::BroadcastResult { responses }))
}

async fn history(
    ctx: &Context,
    request: shapes::HistoryRequest,
) -> Result<Response<Body>, ErrorReply> {
    let limit = match request.limit {
        0 => Some(0),
        n if n < 0 => None,
        n => Some(usize::try_from(n).unwrap_or(usize::MAX)),
    };
    // Reverse needs the newest `limit`, so read everything retained and cut here.
    let read_limit = if request.reverse { None } else { limit };
    let since = request.since.as_ref();
    let page = ctx
        .node
        .history(&request.channel, since.map(|s| s.offset), read_limit)
        .await
        .map_err(core_error)?;
    if let Some(since) = since
        && since.epoch != page.top.epoch
    {
        return Err(ErrorCode::UnrecoverablePosition.reply(format!(
            "epoch {:?} is not the channel's current epoch {:?}",
            since.epoch, page.top.epoch
        )));
    }
    let mut publications = page.publications;
    if request.reverse {
        publications.reverse();
        publications.truncate(limit.unwrap_or(usize::MAX));
    }
    Ok(result_response(&shapes::HistoryResult {
        publications: publications.iter().map(Into::into).collect(),
        offset: page.top.offset,
        epoch: page.top.epoch,
    }))
}

async fn history_remove(
    ctx: &Context,
    request: shapes::ChannelRequest,
) -> Result<Response<Body>, ErrorReply> {
    ctx.node
        .remove_history(&request.channel)
        .await
        .map_err(core_error)?;
    Ok(result_response(&serde_json::json!({})))
}

async fn channels(
    ctx: &Context,
    request: shapes::ChannelsRequest,
) -> Result<Response<Body>, ErrorReply> {
    let channels: BTreeMap<String, ChannelInfo> = ctx
        .node
        .hub()
        .channels()
        .into_iter()
        .filter(|(name, _)| {
            request
                .pattern
                .as_deref()
                .is_none_or(|p| p.is_empty() || glob_match(p, name))
        })
        .map(|(name, n)| {
            (
                name,
                ChannelInfo {
                    num_clients: n as u64,
                },
            )
        })
        .collect();
    Ok(result_response(&shapes::ChannelsResult { channels }))
}

fn info(ctx: &Context) -> Response<Body> {
    let hub = ctx.node.hub();
    let num_clients: i64 = ctx.metrics.open_connections();
    result_response(&shapes::InfoResult {
        nodes: vec![shapes::NodeInfo {
            uid: ctx.uid.clone(),
            name: hostname(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            num_clients: u64::try_from(num_clients).unwrap_or(0),
            num_users: hub.num_users() as u64,
            num_channels: hub.channels().len() as u64,
            num_subs: hub.num_subscriptions(),
            uptime: ctx.started.elapsed().as_secs(),
        }],
    })
}

async fn presence(
    ctx: &Context,
    request: shapes::ChannelRequest,
) -> Result<Response<Body>, ErrorReply> {
    let present = ctx
        .node
        .presence(&request.channel)
        .await
        .map_err(core_error)?;
    let presence = present
        .iter()
        .map(|info| (info.client.to_string(), client_info_json(info)))
        .collect();
    Ok(result_response(&shapes::PresenceResult { presence }))
}

/// `{"client","user","conn_info","chan_info"}` as Centrifugo's API returns it.
fn client_info_json(info: &herald_core::ClientInfo) -> serde_json::Value {
    let raw = |bytes: &Option<bytes::Bytes>| {
        bytes
            .as_deref()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(b).ok())
    };
    let mut object = serde_json::json!({"client": &*info.client, "user": &*info.user});
    if let Some(conn_info) = raw(&info.conn_info) {
        object["conn_info"] = conn_info;
    }
    if let Some(chan_info) = raw(&info.chan_info) {
        object["chan_info"] = chan_info;
    }
    object
}

async fn presence_stats(
    ctx: &Context,
    request: shapes::ChannelRequest,
) -> Result<Response<Body>, ErrorReply> {
    let (clients, users) = ctx
        .node
        .presence_stats(&request.channel)
        .await
        .map_err(core_error)?;
    Ok(result_response(&shapes::PresenceStatsResult {
        num_clients: clients as u64,
        num_users: users as u64,
    }))
}

/// Sends `control` to the user's connections (one client when given).
fn control_user(
    ctx: &Context,
    user: &str,
    client: Option<&str>,
    control: Control,
) -> Result<Response<Body>, ErrorReply> {
    if user.is_empty() {
        return Err(ErrorCode::BadRequest.reply("user is required"));
    }
    ctx.node.hub().control_user(user, client, &control);
    Ok(result_response(&serde_json::json!({})))
}

async fn subscribe(
    ctx: &Context,
    request: shapes::UserChannelRequest,
) -> Result<Response<Body>, ErrorReply> {
    ctx.node.options(&request.channel).map_err(core_error)?;
    let control = Control::Subscribe(Arc::from(request.channel.as_str()));
    control_user(ctx, &request.user, request.client.as_deref(), control)
}

async fn unsubscribe(
    ctx: &Context,
    request: shapes::UserChannelRequest,
) -> Result<Response<Body>, ErrorReply> {
    let control = Control::Unsubscribe(Arc::from(request.channel.as_str()));
    control_user(ctx, &request.user, request.client.as_deref(), control)
}

async fn disconnect(
    ctx: &Context,
    request: shapes::DisconnectRequest,
) -> Result<Response<Body>, ErrorReply> {
    let (code, reason) = match request.disconnect {
        Some(spec) if (3000..5000).contains(&spec.code) => (spec.code, spec.reason),
        Some(spec) => {
            return Err(ErrorCode::BadRequest.reply(format!(
                "disconnect code {} is outside 3000-4999",
                spec.code
            )));
        }
        None => (
            DisconnectCode::ForceNoReconnect.code(),
            DisconnectCode::ForceNoReconnect.reason().to_owned(),
        ),
    };
    let control = Control::Disconnect {
        code,
        reason: Arc::from(reason),
    };
    control_user(ctx, &request.user, request.client.as_deref(), control)
}

async fn refresh(
    ctx: &Context,
    request: shapes::RefreshRequest,
) -> Result<Response<Body>, ErrorReply> {
    let control = Control::Refresh {
        expire_at: request.expire_at,
        expired: request.expired,
    };
    control_user(ctx, &request.user, request.client.as_deref(), control)
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "herald".to_owned())
}
