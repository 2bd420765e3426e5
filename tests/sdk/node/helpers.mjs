// Helpers for the Node SDK tests: start the real herald binary on a free
// loopback port with the suite's API key, HMAC secret and TOML config, sign
// HS256 JWTs with that secret, call the server API, and create real npm
// `centrifuge` clients for one transport (WebSocket through npm `ws`, HTTP
// streaming through Node's fetch, SSE through npm `eventsource`). The harness
// itself is tests/support/herald.mjs, shared with the browser tests.
//
// Every client is tapped: the JSON frames it sends and receives are kept (see
// tapFrames) so that a failing test can print the exact protocol exchange.

import http from 'node:http';

import { Centrifuge } from 'centrifuge';
import { WebSocket } from 'ws';
import { EventSource } from 'eventsource';

import * as shared from '../../support/herald.mjs';

export {
  REPO_ROOT, freePort, heraldBin, request, tail,
} from '../../support/herald.mjs';

export const API_KEY = 'sdk-test-api-key';
export const HMAC_SECRET = 'sdk-test-hmac-secret';

/** Signs an HS256 JWT with `secret` (default: the suite's HMAC secret). */
export function signJwt(claims, secret = HMAC_SECRET) {
  return shared.signJwt(claims, secret);
}

/** Seconds since the epoch. */
export const now = () => Math.floor(Date.now() / 1000);

/** A connection token for `sub`, valid `ttl` seconds (extra claims merged in). */
export function connToken(sub, ttl = 3600, extra = {}) {
  return signJwt({ sub, exp: now() + ttl, ...extra });
}

/** A subscription token for `sub` on `channel`, valid `ttl` seconds. */
export function subToken(sub, channel, ttl = 3600, extra = {}) {
  return signJwt({ sub, channel, exp: now() + ttl, ...extra });
}

/** A short unique suffix for channel and user names. */
export function uniq() {
  return `${Date.now().toString(36)}${Math.random().toString(36).slice(2, 7)}`;
}

// A keep-alive agent for the server API: the recovery test publishes 1,000 times.
const apiAgent = new http.Agent({ keepAlive: true, maxSockets: 4 });

/** POST /api/<method> with the suite's API key; returns the parsed answer or throws. */
export function api(herald, method, body) {
  return shared.api(herald, method, body, API_KEY, { agent: apiAgent });
}

/** Publishes `data` to `channel` through the server API; returns { offset, epoch }. */
export function publish(herald, channel, data) {
  return shared.publish(herald, channel, data, API_KEY, { agent: apiAgent });
}

/**
 * The namespaces every SDK suite runs against (TOML). Channels:
 *   chat:*    anyone authenticated subscribes; client publish, presence,
 *             history and presence for clients, join/leave
 *   feed:*    anyone authenticated subscribes; forced recovery, history 2000
 *   private:* needs a subscription token (or a grant in the connection token)
 */
export const SUITE_CONFIG = `
[[namespaces]]
name = "chat"
allow_subscribe_for_client = true
allow_publish = true
presence = true
join_leave = true
allow_presence_for_client = true
allow_history_for_client = true
history_size = 100
history_ttl = "300s"

[[namespaces]]
name = "feed"
allow_subscribe_for_client = true
force_recovery = true
history_size = 2000
history_ttl = "300s"

[[namespaces]]
name = "private"
history_size = 100
history_ttl = "300s"
`;

/**
 * Starts herald with `--listen 127.0.0.1:PORT --config FILE (config) --api-key
 * --token-hmac-secret` plus `args`, and waits until GET /healthz answers 200.
 * HERALD_* variables of the test's own environment are not passed on; herald
 * gets NO_COLOR=1 and HERALD_LOG from the test's $HERALD_LOG (default info).
 *
 * Returns { port, baseUrl, wsUrl, cmdline, logs(), stop() }.
 */
export function startHerald({ config = SUITE_CONFIG, args = [], env = {}, readyTimeoutMs = 20_000 } = {}) {
  return shared.startHerald({
    config,
    args: ['--api-key', API_KEY, '--token-hmac-secret', HMAC_SECRET, ...args],
    env: { NO_COLOR: '1', HERALD_LOG: process.env.HERALD_LOG || 'info', ...env },
    readyTimeoutMs,
    maxLogChars: 512 * 1024,
  });
}

/**
 * Whether herald serves the endpoint of an emulation transport: anything but
 * 404/405 to the request the SDK would make counts as served.
 */
export async function transportServed(herald, transport) {
  if (transport === 'websocket') return true;
  const connect = JSON.stringify({ id: 1, connect: { token: connToken('probe', 60) } });
  let res;
  if (transport === 'http_stream') {
    res = await requestHead(`${herald.baseUrl}/connection/http_stream`, 'POST', connect);
  } else {
    const url = `${herald.baseUrl}/connection/sse?cf_connect=${encodeURIComponent(connect)}`;
    res = await requestHead(url, 'GET');
  }
  return res.status !== 404 && res.status !== 405;
}

/** Sends a request and resolves with the status as soon as the headers arrive (streams stay open otherwise). */
function requestHead(url, method, body) {
  return new Promise((resolve, reject) => {
    const headers = body === undefined ? {} : {
      'content-type': 'application/json',
      'content-length': Buffer.byteLength(body),
    };
    const req = http.request(url, { method, headers, agent: false, timeout: 5_000 }, (res) => {
      resolve({ status: res.statusCode, headers: res.headers });
      req.destroy();
    });
    req.on('timeout', () => req.destroy(new Error(`${method} ${url} timed out`)));
    req.on('error', (err) => (err.code === 'ECONNRESET' ? null : reject(err)));
    req.end(body);
  });
}

/**
 * Creates (does not connect) a real `centrifuge` client limited to `transport`.
 * The client's frames are tapped (client.frames); `opts` go to the SDK.
 */
export function newClient(herald, transport, opts = {}) {
  const common = {
    websocket: WebSocket,
    eventsource: EventSource,
    fetch: globalThis.fetch,
    readableStream: globalThis.ReadableStream,
    emulationEndpoint: `${herald.baseUrl}/emulation`,
    timeout: 5_000,
    minReconnectDelay: 200,
    maxReconnectDelay: 2_000,
    ...opts,
  };
  let endpoint;
  if (transport === 'websocket') {
    endpoint = herald.wsUrl;
  } else {
    endpoint = [{ transport, endpoint: `${herald.baseUrl}/connection/${transport}` }];
  }
  const client = new Centrifuge(endpoint, common);
  tapFrames(client);
  client.events = [];
  for (const ev of ['connecting', 'connected', 'disconnected', 'error']) {
    client.on(ev, (ctx) => {
      client.events.push({ t: Date.now(), ev, ctx: summarize(ctx) });
    });
  }
  return client;
}

function summarize(ctx) {
  if (!ctx) return ctx;
  const out = {};
  for (const [k, v] of Object.entries(ctx)) {
    if (v instanceof Error) out[k] = `${v.name}: ${v.message}`;
    else if (v && typeof v === 'object' && 'code' in v && 'message' in v) out[k] = { code: v.code, message: v.message };
    else if (v && typeof v === 'object' && v.constructor && v.constructor.name && v.constructor.name !== 'Object') out[k] = `[${v.constructor.name}]`;
    else out[k] = v;
  }
  return out;
}

/**
 * Records every JSON frame the client sends ('->') and receives ('<-'), through the
 * SDK's own codec and receive path, whatever the transport. Keeps the last 400.
 */
export function tapFrames(client) {
  const frames = [];
  client.frames = frames;
  const push = (dir, data) => {
    let text = typeof data === 'string' ? data
      : Buffer.isBuffer(data) || data instanceof Uint8Array ? Buffer.from(data).toString('utf8')
        : JSON.stringify(data);
    if (text.trim() === '') return; // the SDK encodes an empty batch before connecting
    if (text.length > 600) text = `${text.slice(0, 600)}… (${text.length} chars)`;
    frames.push(`${new Date().toISOString().slice(11, 23)} ${dir} ${text.trimEnd()}`);
    if (frames.length > 400) frames.splice(0, frames.length - 400);
  };
  const wrapCodec = (codec) => {
    if (!codec || codec.__heraldTapped || typeof codec.encodeCommands !== 'function') return;
    const encode = codec.encodeCommands.bind(codec);
    codec.encodeCommands = (commands) => {
      const data = encode(commands);
      push('->', data);
      return data;
    };
    codec.__heraldTapped = true;
  };
  // The SDK may replace its codec on connect: re-wrap whenever it is set.
  let codec = client._codec;
  wrapCodec(codec);
  Object.defineProperty(client, '_codec', {
    configurable: true,
    get: () => codec,
    set: (v) => { codec = v; wrapCodec(v); },
  });
  if (typeof client._dataReceived === 'function') {
    const received = client._dataReceived.bind(client);
    client._dataReceived = (data, ...rest) => {
      push('<-', data);
      return received(data, ...rest);
    };
  }
  return frames;
}

/** Resolves once `client` is connected (or rejects after `timeoutMs`). */
export function connected(client, timeoutMs = 10_000) {
  const ready = client.ready(timeoutMs).catch((e) => {
    throw new Error(`client did not connect within ${timeoutMs} ms: ${JSON.stringify(e)}`);
  });
  return withTimeout(ready, timeoutMs + 500, 'client connect');
}

/** Resolves with the next `event` of `emitter` matching `pred`, or rejects after `timeoutMs`. */
export function nextEvent(emitter, event, { pred = () => true, timeoutMs = 10_000 } = {}) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      emitter.off(event, on);
      reject(new Error(`no '${event}' event within ${timeoutMs} ms`));
    }, timeoutMs);
    function on(ctx) {
      if (!pred(ctx)) return;
      clearTimeout(timer);
      emitter.off(event, on);
      resolve(ctx);
    }
    emitter.on(event, on);
  });
}

/** Subscribes `sub` and resolves with its 'subscribed' context. */
export async function subscribed(sub, timeoutMs = 10_000) {
  const p = nextEvent(sub, 'subscribed', { timeoutMs });
  const failed = new Promise((_, reject) => {
    sub.once('unsubscribed', (ctx) => {
      reject(new Error(`subscription to ${sub.channel} ended: ${JSON.stringify(ctx)}`));
    });
  });
  failed.catch(() => {});
  sub.subscribe();
  return Promise.race([p, failed]);
}

/** Rejects with `what` timed out unless `promise` settles within `ms`. */
export function withTimeout(promise, ms, what) {
  let timer;
  return Promise.race([
    promise,
    new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${what} timed out after ${ms} ms`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

/** Polls `fn` until it returns truthy or `timeoutMs` passes (every 50 ms by default); returns the last value. */
export function waitFor(fn, { timeoutMs, intervalMs = 50 } = {}) {
  return shared.waitFor(fn, { timeoutMs, intervalMs });
}

/**
 * A per-test context: tracks the clients it creates, and on failure prints
 * every client's frames and events plus herald's log tail as diagnostics.
 * Use: `const h = scope(t, herald, transport); const c = h.client({...});`
 */
export function scope(t, herald, transport) {
  const clients = [];
  const self = {
    client(opts = {}, name = `client${clients.length + 1}`) {
      const c = newClient(herald, transport, opts);
      c.label = name;
      clients.push(c);
      return c;
    },
    /** Diagnostics for an assertion message. */
    dump(extra = '') {
      const parts = [];
      if (extra) parts.push(extra);
      for (const c of clients) {
        parts.push(`--- ${c.label} (${transport}) state=${c.state} events:\n` +
          c.events.map((e) => `${new Date(e.t).toISOString().slice(11, 23)} ${e.ev} ${JSON.stringify(e.ctx)}`).join('\n'));
        parts.push(`--- ${c.label} frames (-> sent, <- received), last 60:\n${c.frames.slice(-60).join('\n')}`);
      }
      parts.push(`--- herald log tail:\n${shared.tail(herald.logs(), 60)}`);
      return parts.join('\n');
    },
    /** Runs `fn`; on failure rethrows with the diagnostics appended. */
    async run(fn) {
      try {
        await fn();
      } catch (err) {
        // The SDK rejects with plain { code, message } objects: make them Errors.
        const e = err instanceof Error ? err : new Error(`SDK error ${JSON.stringify(err)}`);
        // The reporter prints the stack, computed when the error was made.
        const dump = self.dump();
        e.message = `${e.message}\n${dump}`;
        if (typeof e.stack === 'string') e.stack = `${e.stack}\n${dump}`;
        throw e;
      } finally {
        for (const c of clients) {
          try { c.disconnect(); } catch { /* already gone */ }
        }
      }
    },
  };
  return self;
}
