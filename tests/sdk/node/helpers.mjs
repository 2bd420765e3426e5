// Shared helpers for the Node SDK tests: start the real herald binary on a free
// loopback port with a TOML config, sign HS256 JWTs, call the server API, and
// create real npm `centrifuge` clients for one transport (WebSocket through npm
// `ws`, HTTP streaming through Node's fetch, SSE through npm `eventsource`).
//
// Every client is tapped: the JSON frames it sends and receives are kept (see
// tapFrames) so that a failing test can print the exact protocol exchange.

import { spawn } from 'node:child_process';
import { createHmac } from 'node:crypto';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';

import { Centrifuge } from 'centrifuge';
import { WebSocket } from 'ws';
import { EventSource } from 'eventsource';

const HERE = path.dirname(fileURLToPath(import.meta.url));
export const REPO_ROOT = path.resolve(HERE, '..', '..', '..');

export const API_KEY = 'sdk-test-api-key';
export const HMAC_SECRET = 'sdk-test-hmac-secret';

/** Path of the herald binary under test: $HERALD_BIN, else target/release/herald. */
export function heraldBin() {
  const bin = process.env.HERALD_BIN
    ? path.resolve(process.env.HERALD_BIN)
    : path.join(REPO_ROOT, 'target', 'release', 'herald');
  if (!existsSync(bin)) {
    throw new Error(
      `herald binary not found at ${bin}; build it with ` +
        '`cargo build --release -p herald` or set HERALD_BIN',
    );
  }
  return bin;
}

/** A TCP port on 127.0.0.1 that was free a moment ago. */
export function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

/** Signs an HS256 JWT with `secret` (default: the suite's HMAC secret). */
export function signJwt(claims, secret = HMAC_SECRET) {
  const b64url = (s) => Buffer.from(s).toString('base64url');
  const header = b64url(JSON.stringify({ alg: 'HS256', typ: 'JWT' }));
  const payload = b64url(JSON.stringify(claims));
  const sig = createHmac('sha256', secret).update(`${header}.${payload}`).digest('base64url');
  return `${header}.${payload}.${sig}`;
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

/** One plain HTTP request. Resolves { status, headers, text, json }. */
export function request(url, { method = 'GET', headers = {}, body, timeoutMs = 10_000 } = {}) {
  const payload = body === undefined ? undefined
    : typeof body === 'string' ? body : JSON.stringify(body);
  const hdrs = { ...headers };
  if (payload !== undefined) {
    hdrs['content-length'] = Buffer.byteLength(payload);
    if (!Object.keys(hdrs).some((h) => h.toLowerCase() === 'content-type')) {
      hdrs['content-type'] = 'application/json';
    }
  }
  return new Promise((resolve, reject) => {
    const req = http.request(
      url,
      { method, headers: hdrs, agent: false, timeout: timeoutMs },
      (res) => {
        const chunks = [];
        res.on('data', (c) => chunks.push(c));
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          let json;
          try { json = JSON.parse(text); } catch { json = undefined; }
          resolve({ status: res.statusCode, headers: res.headers, text, json });
        });
        res.on('error', reject);
      },
    );
    req.on('timeout', () => req.destroy(new Error(`${method} ${url} timed out after ${timeoutMs} ms`)));
    req.on('error', reject);
    if (payload !== undefined) req.write(payload);
    req.end();
  });
}

// A keep-alive agent for the server API: the recovery test publishes 1,000 times.
const apiAgent = new http.Agent({ keepAlive: true, maxSockets: 4 });

/** POST /api/<method> with the API key; returns the parsed answer or throws. */
export function api(herald, method, body) {
  const payload = JSON.stringify(body);
  return new Promise((resolve, reject) => {
    const req = http.request(
      `${herald.baseUrl}/api/${method}`,
      {
        method: 'POST',
        agent: apiAgent,
        timeout: 10_000,
        headers: {
          'content-type': 'application/json',
          'content-length': Buffer.byteLength(payload),
          'x-api-key': API_KEY,
        },
      },
      (res) => {
        const chunks = [];
        res.on('data', (c) => chunks.push(c));
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          let json;
          try { json = JSON.parse(text); } catch { json = undefined; }
          if (res.statusCode !== 200 || !json || json.error) {
            reject(new Error(`POST /api/${method} ${payload} -> ${res.statusCode} ${text}`));
          } else {
            resolve(json);
          }
        });
        res.on('error', reject);
      },
    );
    req.on('timeout', () => req.destroy(new Error(`POST /api/${method} timed out`)));
    req.on('error', reject);
    req.end(payload);
  });
}

/** Publishes `data` to `channel` through the server API; returns { offset, epoch }. */
export async function publish(herald, channel, data) {
  const res = await api(herald, 'publish', { channel, data });
  if (!res.result || typeof res.result.offset !== 'number') {
    throw new Error(`publish to ${channel}: unexpected answer ${JSON.stringify(res)}`);
  }
  return res.result;
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
 * Starts herald with `--listen 127.0.0.1:PORT --api-key --token-hmac-secret
 * --config FILE` plus `args`, and waits until GET /healthz answers 200.
 * HERALD_* variables of the test's own environment are not passed on.
 *
 * Returns { port, baseUrl, wsUrl, cmdline, logs(), stop() }.
 */
export async function startHerald({ config = SUITE_CONFIG, args = [], env = {}, readyTimeoutMs = 20_000 } = {}) {
  const bin = heraldBin();
  const port = await freePort();
  const dir = mkdtempSync(path.join(os.tmpdir(), 'herald-sdk-'));
  const configPath = path.join(dir, 'herald.toml');
  writeFileSync(configPath, config);
  const baseUrl = `http://127.0.0.1:${port}`;
  const childEnv = Object.fromEntries(
    Object.entries(process.env).filter(([k]) => !k.startsWith('HERALD_')),
  );
  if (!childEnv.RUST_LOG) childEnv.RUST_LOG = 'info';
  childEnv.NO_COLOR = '1';
  if (!env.HERALD_LOG) childEnv.HERALD_LOG = process.env.HERALD_LOG || 'info';
  Object.assign(childEnv, env);

  const fullArgs = [
    '--listen', `127.0.0.1:${port}`,
    '--api-key', API_KEY,
    '--token-hmac-secret', HMAC_SECRET,
    '--config', configPath,
    ...args,
  ];
  const proc = spawn(bin, fullArgs, { env: childEnv, stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  const MAX = 512 * 1024;
  const keep = (chunk) => {
    output += chunk.toString('utf8');
    if (output.length > MAX) output = output.slice(output.length - MAX);
  };
  proc.stdout.on('data', keep);
  proc.stderr.on('data', keep);
  let exited = null;
  const exitPromise = new Promise((resolve) => {
    proc.on('exit', (code, signal) => { exited = { code, signal }; resolve(exited); });
    proc.on('error', (err) => { exited = { error: String(err) }; resolve(exited); });
  });
  const cmdline = [bin, ...fullArgs].join(' ');
  const stop = async () => {
    if (!exited) {
      proc.kill('SIGTERM');
      let timer;
      const res = await Promise.race([
        exitPromise,
        new Promise((resolve) => { timer = setTimeout(() => resolve(null), 5_000); }),
      ]);
      clearTimeout(timer);
      if (!res) {
        proc.kill('SIGKILL');
        await exitPromise;
      }
    }
    rmSync(dir, { recursive: true, force: true });
    return exited;
  };

  const deadline = Date.now() + readyTimeoutMs;
  let lastErr = 'no answer yet';
  for (;;) {
    if (exited) {
      rmSync(dir, { recursive: true, force: true });
      throw new Error(
        `herald exited before it was ready (${JSON.stringify(exited)})\n` +
          `command: ${cmdline}\nconfig:\n${config}\n--- herald output ---\n${output}`,
      );
    }
    try {
      const res = await request(`${baseUrl}/healthz`, { timeoutMs: 1_000 });
      if (res.status === 200) break;
      lastErr = `GET /healthz -> ${res.status} ${res.text.slice(0, 200)}`;
    } catch (err) {
      lastErr = err.message;
    }
    if (Date.now() > deadline) {
      await stop();
      throw new Error(
        `herald not ready after ${readyTimeoutMs} ms (last: ${lastErr})\n` +
          `command: ${cmdline}\n--- herald output ---\n${output}`,
      );
    }
    await sleep(100);
  }
  return {
    port,
    baseUrl,
    wsUrl: `ws://127.0.0.1:${port}/connection/websocket`,
    cmdline,
    logs: () => output,
    stop,
  };
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

/** Polls `fn` until it returns truthy or `timeoutMs` passes; returns the last value. */
export async function waitFor(fn, { timeoutMs = 10_000, intervalMs = 50 } = {}) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v || Date.now() > deadline) return v;
    await sleep(intervalMs);
  }
}

/** The last `lines` lines of `text`. */
export function tail(text, lines = 60) {
  // eslint-disable-next-line no-control-regex
  const all = text.replace(/\x1b\[[0-9;]*m/g, '').split('\n');
  return all.slice(Math.max(0, all.length - lines)).join('\n');
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
      parts.push(`--- herald log tail:\n${tail(herald.logs(), 60)}`);
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
