// Harness shared by Herald's Node test suites (tests/browser, tests/sdk/node):
// find and start the real herald binary on a free loopback port, wait for
// /healthz, capture its output, stop it; sign HS256 JWTs; make a self-signed
// cert; plain HTTP(S) requests and Herald's server API; polling and log tails.
//
// Plain Node ESM with no dependencies, so every suite can import it whatever
// its own node_modules hold. What only one suite needs stays in its helpers.mjs.

import { spawn, execFileSync } from 'node:child_process';
import { createHmac } from 'node:crypto';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';

const HERE = path.dirname(fileURLToPath(import.meta.url));

/** The repository's root directory. */
export const REPO_ROOT = path.resolve(HERE, '..', '..');

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

/** Creates a fresh temp dir under the OS temp dir (the caller removes it). */
export function tempDir(prefix) {
  return mkdtempSync(path.join(os.tmpdir(), prefix));
}

/**
 * Generates a self-signed P-256 cert for localhost / 127.0.0.1 with openssl.
 * Returns { dir, cert, key, cleanup }.
 */
export function makeSelfSignedCert() {
  const dir = tempDir('herald-tls-');
  const cert = path.join(dir, 'cert.pem');
  const key = path.join(dir, 'key.pem');
  try {
    execFileSync(
      'openssl',
      [
        'req', '-x509',
        '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1',
        '-nodes', '-days', '1',
        '-subj', '/CN=localhost',
        '-addext', 'subjectAltName=DNS:localhost,IP:127.0.0.1',
        '-keyout', key, '-out', cert,
      ],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
  } catch (err) {
    rmSync(dir, { recursive: true, force: true });
    const detail = err.code === 'ENOENT'
      ? 'openssl is not installed (run scripts/install-test-deps.sh)'
      : `${err.message}\n${err.stderr ?? ''}`;
    throw new Error(`cannot generate a self-signed certificate: ${detail}`);
  }
  return { dir, cert, key, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

/** base64url (no padding) of a Buffer or string. */
export function base64url(buf) {
  return Buffer.from(buf).toString('base64url');
}

/** Signs an HS256 JWT carrying `claims` with `secret`. */
export function signJwt(claims, secret) {
  const header = base64url(JSON.stringify({ alg: 'HS256', typ: 'JWT' }));
  const payload = base64url(JSON.stringify(claims));
  const sig = createHmac('sha256', secret).update(`${header}.${payload}`).digest('base64url');
  return `${header}.${payload}.${sig}`;
}

/**
 * One HTTP(S) request from node. TLS certificates are not verified (tests use
 * self-signed certs). A body that is not a string or Buffer is sent as JSON.
 * `agent` defaults to false (a fresh connection); pass a keep-alive
 * http.Agent to reuse connections. Resolves { status, headers, text, json }
 * (json is undefined when the body is not JSON).
 */
export function request(url, { method = 'GET', headers = {}, body, timeoutMs = 10_000, agent = false } = {}) {
  const u = new URL(url);
  const lib = u.protocol === 'https:' ? https : http;
  const payload = body === undefined ? undefined
    : typeof body === 'string' || Buffer.isBuffer(body) ? body : JSON.stringify(body);
  const hdrs = { ...headers };
  if (payload !== undefined) {
    hdrs['content-length'] = Buffer.byteLength(payload);
    if (!Object.keys(hdrs).some((h) => h.toLowerCase() === 'content-type')) {
      hdrs['content-type'] = 'application/json';
    }
  }
  return new Promise((resolve, reject) => {
    const req = lib.request(
      u,
      { method, headers: hdrs, rejectUnauthorized: false, agent, timeout: timeoutMs },
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

/**
 * Starts herald with `--listen 127.0.0.1:PORT` (and `--config FILE` when
 * `config`, a TOML string, is given: it is written to a temp file removed on
 * stop) plus `args`, and waits until GET /healthz answers 200 (at most
 * `readyTimeoutMs`). HERALD_* variables of the test's own environment are not
 * passed on, so only `args`/`env` count; RUST_LOG defaults to `info`. `tls`
 * only picks the https:// / wss:// scheme: the caller passes the cert args.
 * Herald's stdout and stderr are kept (the last `maxLogChars` characters).
 *
 * Returns { port, baseUrl, wsUrl, proc, cmdline, logs(), stop() }; stop()
 * sends SIGTERM, then SIGKILL after 5 s, and resolves with how it exited.
 */
export async function startHerald({
  args = [], env = {}, config, tls = false, readyTimeoutMs = 20_000, maxLogChars = 256 * 1024,
} = {}) {
  const bin = heraldBin();
  const port = await freePort();
  const baseUrl = `${tls ? 'https' : 'http'}://127.0.0.1:${port}`;
  const wsUrl = `${tls ? 'wss' : 'ws'}://127.0.0.1:${port}/connection/websocket`;
  const childEnv = Object.fromEntries(
    Object.entries(process.env).filter(([k]) => !k.startsWith('HERALD_')),
  );
  if (!childEnv.RUST_LOG) childEnv.RUST_LOG = 'info';
  Object.assign(childEnv, env);

  let dir = null;
  const configArgs = [];
  if (config !== undefined) {
    dir = tempDir('herald-config-');
    const configPath = path.join(dir, 'herald.toml');
    writeFileSync(configPath, config);
    configArgs.push('--config', configPath);
  }
  const cleanup = () => {
    if (dir) rmSync(dir, { recursive: true, force: true });
  };

  const fullArgs = ['--listen', `127.0.0.1:${port}`, ...configArgs, ...args];
  const proc = spawn(bin, fullArgs, { env: childEnv, stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  const keep = (chunk) => {
    output += chunk.toString('utf8');
    if (output.length > maxLogChars) output = output.slice(output.length - maxLogChars);
  };
  proc.stdout.on('data', keep);
  proc.stderr.on('data', keep);
  let exited = null;
  const exitPromise = new Promise((resolve) => {
    proc.on('exit', (code, signal) => { exited = { code, signal }; resolve(exited); });
    proc.on('error', (err) => { exited = { error: String(err) }; resolve(exited); });
  });

  const cmdline = [bin, ...fullArgs].join(' ');
  const configNote = config === undefined ? '' : `config:\n${config}\n`;
  const logs = () => output;
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
    cleanup();
    return exited;
  };

  const deadline = Date.now() + readyTimeoutMs;
  let lastErr = 'no answer yet';
  for (;;) {
    if (exited) {
      cleanup();
      throw new Error(
        `herald exited before it was ready (${JSON.stringify(exited)})\n` +
          `command: ${cmdline}\n${configNote}--- herald output ---\n${output}`,
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
          `command: ${cmdline}\n${configNote}--- herald output ---\n${output}`,
      );
    }
    await sleep(100);
  }
  return { port, baseUrl, wsUrl, proc, cmdline, logs, stop };
}

/**
 * POST /api/<method> of `herald` with `body` and the API key `apiKey`;
 * resolves with the parsed answer, or throws unless it is a 200 without an
 * `error`. `agent` as for request().
 */
export async function api(herald, method, body, apiKey, { agent = false } = {}) {
  const res = await request(`${herald.baseUrl}/api/${method}`, {
    method: 'POST',
    headers: { 'x-api-key': apiKey },
    body,
    agent,
  });
  if (res.status !== 200 || !res.json || res.json.error) {
    throw new Error(
      `POST /api/${method} ${JSON.stringify(body)} -> ${res.status} ${res.text}`,
    );
  }
  return res.json;
}

/** Publishes `data` to `channel` through the server API; resolves { offset, epoch }. */
export async function publish(herald, channel, data, apiKey, { agent = false } = {}) {
  const res = await api(herald, 'publish', { channel, data }, apiKey, { agent });
  if (!res.result || typeof res.result.offset !== 'number') {
    throw new Error(`publish to ${channel}: unexpected answer ${JSON.stringify(res)}`);
  }
  return res.result;
}

/** Polls `fn` (may be async) until it returns truthy or `timeoutMs` passes; returns the last value. */
export async function waitFor(fn, { timeoutMs = 10_000, intervalMs = 100 } = {}) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v || Date.now() > deadline) return v;
    await sleep(intervalMs);
  }
}

/** The last `lines` lines of `text` (herald's log, say), ANSI colours removed, for an assertion message. */
export function tail(text, lines = 80) {
  // eslint-disable-next-line no-control-regex
  const all = text.replace(/\x1b\[[0-9;]*m/g, '').split('\n');
  return all.slice(Math.max(0, all.length - lines)).join('\n');
}
